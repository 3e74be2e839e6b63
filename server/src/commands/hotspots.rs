//! `triage hotspots` and `triage alerts`: hotspot mining and early warning over the stored cases
//! or a JSONL file (see `triage_core::hotspots` for the method), with files and charts, and an
//! evaluation against a hand-checked gold.

use crate::app::{progress_bar, GlobalArgs};
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use triage_core::hotspots::{self, Alert, AlertKind, AlertParams, Hotspot, HotspotParams};
use triage_core::ingest::{enrich, parse_case_line, parse_time};
use triage_core::{Case, CaseFilter, EmbedKind, Embedder, Prediction};
use triage_eval::hotspots::{BroadTheme, GoldCluster, GoldReport};

/// Which cases: a JSONL file, or the store; narrowed by time, district and category.
#[derive(clap::Args, Debug, Clone)]
pub struct Source {
    /// Case JSONL to analyse (embedded on the fly; vectors cached under --data-dir/cache).
    /// Without it, the stored cases
    #[arg(long)]
    input: Option<PathBuf>,
    /// Only cases at or after this time (YYYY-MM-DD, or RFC 3339)
    #[arg(long)]
    from: Option<String>,
    /// Only cases at or before this time (a bare date includes the whole day)
    #[arg(long)]
    to: Option<String>,
    /// Only cases of this district
    #[arg(long)]
    district: Option<String>,
    /// Only cases of this category (label, else the current classifier's prediction)
    #[arg(long)]
    category: Option<String>,
}

/// Options of the mining; each defaults to `HotspotParams::default()` (see the README for how
/// the defaults were chosen).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Tuning {
    /// Cosine similarity of two messages for them to be linked [default: 0.92]
    #[arg(long)]
    link_cosine: Option<f32>,
    /// Mean cosine of a newcomer to a cluster's distinct messages [default: 0.92]
    #[arg(long)]
    mean_cosine: Option<f32>,
    /// Summed IDF of the distinctive terms two messages must share [default: 12]
    #[arg(long)]
    min_shared_idf: Option<f32>,
    /// A term in more than this share of messages is not distinctive [default: 0.05]
    #[arg(long)]
    max_df_share: Option<f32>,
    /// Share of a cluster's distinct messages that a key term is in [default: 0.5]
    #[arg(long)]
    key_coverage: Option<f32>,
    /// A cluster closes after this many days without a message [default: 90]
    #[arg(long)]
    window_days: Option<f64>,
    /// Distinct messages a hotspot needs [default: 3]
    #[arg(long)]
    min_distinct: Option<usize>,
    /// Window of the heat's concentration in time, in days [default: 30]
    #[arg(long)]
    burst_days: Option<f64>,
    /// Heat of one e-fold of likes, in messages [default: 3.7]
    #[arg(long)]
    like_weight: Option<f64>,
}

impl Tuning {
    fn params(&self, global: &GlobalArgs) -> Result<HotspotParams> {
        let mut p = HotspotParams::default();
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { p.$field = v; } )* };
        }
        set!(
            link_cosine,
            mean_cosine,
            min_shared_idf,
            max_df_share,
            key_coverage,
            window_days,
            min_distinct
        );
        if let Some(v) = self.burst_days {
            p.heat.burst_days = v;
        }
        if let Some(v) = self.like_weight {
            p.heat.like_weight = v;
        }
        p.district_parents = global
            .units()?
            .districts
            .iter()
            .filter_map(|d| Some((d.name.clone(), d.parent.clone()?)))
            .collect();
        Ok(p)
    }
}

#[derive(clap::Args, Debug)]
pub struct HotspotsArgs {
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    tuning: Tuning,
    /// Output directory for hotspots.json, hotspots.md and the SVG charts
    #[arg(long, default_value = "hotspots")]
    out: PathBuf,
    /// Hotspots written (ranked by heat)
    #[arg(long, default_value_t = 50)]
    top: usize,
    /// Gold clusters (JSONL: cluster, title, ids): writes eval.json and eval.md, this method
    /// against the baseline, for the top --eval-k
    #[arg(long)]
    gold: Option<PathBuf>,
    /// Broad themes that must not be hotspots (JSONL: theme, title, example_ids)
    /// [default: hotspots-broad-themes.jsonl beside --gold, if there]
    #[arg(long, requires = "gold")]
    broad: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    eval_k: usize,
    /// Cosine thresholds of the baseline (average-linkage clustering of the embeddings); each is
    /// reported
    #[arg(long, value_delimiter = ',', default_value = "0.90,0.92,0.94")]
    baseline_thresholds: Vec<f32>,
}

#[derive(clap::Args, Debug)]
pub struct AlertsArgs {
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    tuning: Tuning,
    /// Output directory for alerts.json (and replay.json, replay.md with --replay)
    #[arg(long, default_value = "alerts")]
    out: PathBuf,
    /// Replay all messages in time order and report how early the top hotspots were flagged
    #[arg(long)]
    replay: bool,
    /// Hotspots the replay reports on
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Window of a place's observed count, in days [default: 30]
    #[arg(long)]
    recent_days: Option<f64>,
    /// Trailing baseline before it, in days [default: 180]
    #[arg(long)]
    baseline_days: Option<f64>,
    /// Largest Poisson tail probability that fires an alert [default: 0.001]
    #[arg(long)]
    max_p: Option<f64>,
    /// Fewest distinct messages in the window for a place alert [default: 3]
    #[arg(long)]
    min_observed: Option<usize>,
}

/// What was read, for the output's `input` section.
#[derive(Debug, Default, serde::Serialize)]
struct Loaded {
    source: String,
    read: usize,
    skipped_lines: usize,
    filtered_out: usize,
    analysed: usize,
    embedded: usize,
    from_cache: usize,
    classified: usize,
    seconds: f64,
}

/// Cases with their vectors, as the store holds them.
type Cases = Vec<(Case, Vec<f32>)>;

fn date_bound(text: &str, end: bool) -> Result<i64> {
    let t = parse_time(text).with_context(|| format!("not a date or time: {text}"))?;
    let bare_date = !text.contains(':') && !text.contains('T');
    Ok(if end && bare_date { t + 86_399 } else { t })
}

/// Reads the cases (file or store), with their vectors, narrowed as `source` says. The category
/// filter and `classify_all` use the current classifier for cases without a label or prediction.
fn load(global: &GlobalArgs, source: &Source, classify_all: bool) -> Result<(Cases, Loaded)> {
    let started = Instant::now();
    let from = source
        .from
        .as_deref()
        .map(|t| date_bound(t, false))
        .transpose()?;
    let to = source
        .to
        .as_deref()
        .map(|t| date_bound(t, true))
        .transpose()?;
    let mut info = Loaded::default();
    let mut cases: Vec<(Case, Vec<f32>)> = match &source.input {
        Some(path) => {
            info.source = path.display().to_string();
            let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let units = global.units()?;
            let mut read = Vec::new();
            for (n, line) in raw.split(|b| *b == b'\n').enumerate() {
                let Ok(line) = std::str::from_utf8(line) else {
                    info.skipped_lines += 1;
                    continue;
                };
                if line.trim().is_empty() {
                    continue;
                }
                match parse_case_line(line.trim().trim_start_matches('\u{feff}')) {
                    Ok(mut case) => {
                        if case.district.is_none() {
                            case.district = hotspots::place_district(&units, &case.full_text());
                        }
                        enrich(&mut case, &units);
                        read.push(case);
                    }
                    Err(reason) => {
                        info.skipped_lines += 1;
                        if info.skipped_lines <= 5 {
                            eprintln!("{}: line {}: {reason}", path.display(), n + 1);
                        }
                    }
                }
            }
            info.read = read.len();
            read.retain(|c| in_range(c, from, to) && in_district(c, source.district.as_deref()));
            read.into_iter().map(|c| (c, Vec::new())).collect()
        }
        None => {
            let embedder_dim = global.load_embedder()?.dim();
            let store = global.open_store(embedder_dim)?;
            info.source = format!("store ({})", store.backend());
            let filter = CaseFilter {
                district: source.district.clone(),
                time_from: from,
                time_to: to,
                ..Default::default()
            };
            // The one scan of the store: page by page.
            let mut out = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store.scroll(&filter, after.as_deref(), 2048)?;
                out.extend(page.cases);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            info.read = out.len();
            // A district the import derived from the text is re-derived the way hotspots read
            // places (see `place_district`); one the record gave is kept.
            let units = global.units()?;
            for (case, _) in &mut out {
                let text = case.full_text();
                let derived = units.extract_district(&text).map(|d| d.name.as_str());
                if case.district.is_none() || case.district.as_deref() == derived {
                    case.district = hotspots::place_district(&units, &text);
                }
            }
            out
        }
    };
    if source.category.is_some() || classify_all {
        info.classified = classify(global, &mut cases, None)?;
    }
    if let Some(category) = &source.category {
        let taxonomy = global.taxonomy()?;
        let want = taxonomy
            .resolve(category)
            .map_or(category.clone(), |c| c.id.clone());
        cases.retain(|(c, _)| hotspots::category(c) == Some(want.as_str()));
    }
    info.filtered_out = info.read - cases.len();
    if source.input.is_some() {
        let embedder = global.load_embedder()?;
        let (embedded, cached) = embed_cached(global, embedder.as_ref(), &mut cases)?;
        info.embedded = embedded;
        info.from_cache = cached;
    }
    info.analysed = cases.len();
    info.seconds = started.elapsed().as_secs_f64();
    if cases.is_empty() {
        bail!("no cases to analyse in {}", info.source);
    }
    Ok((cases, info))
}

fn in_range(c: &Case, from: Option<i64>, to: Option<i64>) -> bool {
    match c.time {
        Some(t) => from.is_none_or(|f| t >= f) && to.is_none_or(|e| t <= e),
        None => from.is_none() && to.is_none(),
    }
}

fn in_district(c: &Case, district: Option<&str>) -> bool {
    district.is_none_or(|d| c.district.as_deref() == Some(d))
}

/// Fills `predicted` with the current classifier's lexical prediction on cases that have neither
/// a label nor a prediction (all of them, or those in `only`). Without a classifier, nothing.
fn classify(
    global: &GlobalArgs,
    cases: &mut [(Case, Vec<f32>)],
    only: Option<&HashSet<String>>,
) -> Result<usize> {
    let Ok(classifier) = global.load_classifier() else {
        return Ok(0);
    };
    let mut n = 0;
    for (case, _) in cases.iter_mut() {
        if hotspots::category(case).is_some() || only.is_some_and(|o| !o.contains(&case.id)) {
            continue;
        }
        let Some(p) = classifier.predict_lexical(&case.full_text()) else {
            return Ok(n); // no lexical model (a cold-start classifier)
        };
        let best = triage_core::classify::argmax(&p);
        case.predicted = Some(Prediction {
            category: classifier.labels[best].clone(),
            confidence: p[best],
            unit: None,
            classifier_version: classifier.version.clone(),
        });
        n += 1;
    }
    Ok(n)
}

/// Embeds the cases as passages (as they are stored), reusing vectors cached under
/// `--data-dir/cache/hotspot-vectors` by model, token limit and text. Returns (embedded, cached).
fn embed_cached(
    global: &GlobalArgs,
    embedder: &dyn Embedder,
    cases: &mut [(Case, Vec<f32>)],
) -> Result<(usize, usize)> {
    let dir = global.data_dir().join("cache").join("hotspot-vectors");
    let texts: Vec<String> = cases.iter().map(|(c, _)| c.full_text()).collect();
    let key = {
        let mut h = Fnv::default();
        h.add(embedder.model_id().as_bytes());
        h.add(&embedder.max_tokens().to_le_bytes());
        for t in &texts {
            h.add(t.as_bytes());
            h.add(&[0]);
        }
        h.0
    };
    let path = dir.join(format!("{key:016x}.f32"));
    let dim = embedder.dim();
    if let Ok(bytes) = std::fs::read(&path) {
        if bytes.len() == texts.len() * dim * 4 {
            for (i, (_, v)) in cases.iter_mut().enumerate() {
                *v = bytes[i * dim * 4..(i + 1) * dim * 4]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
            }
            return Ok((0, cases.len()));
        }
    }
    let bar = progress_bar(
        texts.len() as u64,
        "embed",
        "{prefix:>8} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}",
    );
    let mut out = Vec::with_capacity(texts.len() * dim * 4);
    for (chunk, cases) in texts.chunks(64).zip(cases.chunks_mut(64)) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for (v, (_, slot)) in embedder
            .embed(&refs, EmbedKind::Passage)?
            .into_iter()
            .zip(cases.iter_mut())
        {
            for x in &v {
                out.extend_from_slice(&x.to_le_bytes());
            }
            *slot = v;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = triage_core::fsutil::write_atomic(&path, &out);
    }
    Ok((texts.len(), 0))
}

#[derive(Default)]
struct Fnv(u64);

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        if self.0 == 0 {
            self.0 = 0xcbf29ce484222325;
        }
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x100000001b3);
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

pub fn run(global: &GlobalArgs, args: HotspotsArgs) -> Result<()> {
    let started = Instant::now();
    let params = args.tuning.params(global)?;
    let (mut cases, loaded) = load(global, &args.source, false)?;
    let mined_at = Instant::now();
    let mut ranked = hotspots::mine(&cases, &params);
    let mining_seconds = mined_at.elapsed().as_secs_f64();
    ranked.truncate(args.top.max(args.eval_k));
    // Categories for the hotspots written, where the members have none yet.
    if ranked.iter().any(|h| h.category.is_none()) {
        let members: HashSet<String> = ranked.iter().flat_map(|h| h.ids.clone()).collect();
        if classify(global, &mut cases, Some(&members))? > 0 {
            let by_id: HashMap<&str, &Case> =
                cases.iter().map(|(c, _)| (c.id.as_str(), c)).collect();
            for h in &mut ranked {
                h.category =
                    majority_category(h.ids.iter().filter_map(|id| by_id.get(id.as_str())));
            }
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let written: Vec<Hotspot> = ranked.iter().take(args.top).cloned().collect();
    let json = serde_json::json!({
        "hotspots": written,
        "params": params,
        "input": loaded,
        "mining_seconds": mining_seconds,
    });
    write(
        &args.out,
        "hotspots.json",
        &serde_json::to_string_pretty(&json)?,
    )?;
    write(
        &args.out,
        "hotspots.md",
        &markdown(&written, &params, &loaded),
    )?;
    write(
        &args.out,
        "heat_over_time.svg",
        &triage_eval::hotspot_charts::heat_over_time(&written, 10, &params.heat),
    )?;
    write(
        &args.out,
        "district_category.svg",
        &triage_eval::hotspot_charts::district_category_grid(&written),
    )?;
    println!(
        "{} cases, {} hotspots with ≥ {} distinct messages; mining {:.2} s",
        cases.len(),
        ranked.len(),
        params.min_distinct,
        mining_seconds
    );
    for h in written.iter().take(10) {
        println!(
            "{:>3}. heat {:>6.1}  n {:>3}  {}  [{}]",
            h.rank, h.heat, h.n, h.title, h.place
        );
    }
    if let Some(gold_path) = &args.gold {
        let reports = evaluate(&args, gold_path, &cases, &ranked, &params)?;
        for r in &reports {
            println!(
                "{:<22} top {}: {} matched, mean purity {:.3}, mean recall {:.3}, {} broad themes, leaders in top 5: {}",
                r.method, r.k, r.matched, r.mean_purity, r.mean_recall_of_matched, r.broad_in_top, r.leaders_in_top5
            );
        }
        println!("evaluation: {}", args.out.join("eval.md").display());
    }
    println!(
        "output: {} ({:.1} s)",
        args.out.join("hotspots.json").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn majority_category<'a>(members: impl Iterator<Item = &'a &'a Case>) -> Option<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for c in members {
        if let Some(cat) = hotspots::category(c) {
            *counts.entry(cat).or_insert(0) += 1;
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(c, _)| c.to_string())
}

fn markdown(hotspots: &[Hotspot], params: &HotspotParams, loaded: &Loaded) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Hotspots\n");
    let _ = writeln!(
        out,
        "{} cases from {}; ranked by heat = (n + {} · ln(1 + likes)) · (1 + c) / 2, c = largest share of the distinct messages within {} days.\n",
        loaded.analysed, loaded.source, params.heat.like_weight, params.heat.burst_days
    );
    let _ = writeln!(
        out,
        "| rank | heat | n | messages | likes | c | time | place | category | title | examples |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---|---|---|---|---|");
    for h in hotspots {
        let day = |t: &Option<String>| {
            t.as_deref()
                .map_or("?", |t| &t[..10.min(t.len())])
                .to_string()
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {} | {} | {:.2} | {} – {} | {} | {} | {} | {} |",
            h.rank,
            h.heat,
            h.n,
            h.messages,
            h.likes,
            h.concentration,
            day(&h.time_from),
            day(&h.time_to),
            h.place.replace('|', "/"),
            h.category.as_deref().unwrap_or("-"),
            h.title.replace('|', "/"),
            h.example_ids.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\nCharts: `heat_over_time.svg` (heat of each top hotspot as its messages arrive), `district_category.svg`."
    );
    out
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}: line {}", path.display(), i + 1))
        })
        .collect()
}

/// This method and the baseline against the gold, into eval.json and eval.md.
fn evaluate(
    args: &HotspotsArgs,
    gold_path: &Path,
    cases: &[(Case, Vec<f32>)],
    ranked: &[Hotspot],
    params: &HotspotParams,
) -> Result<Vec<GoldReport>> {
    let gold: Vec<GoldCluster> = read_jsonl(gold_path)?;
    let broad_path = args.broad.clone().unwrap_or_else(|| {
        gold_path
            .parent()
            .unwrap_or(Path::new("."))
            .join("hotspots-broad-themes.jsonl")
    });
    let broad: Vec<BroadTheme> = if broad_path.exists() {
        read_jsonl(&broad_path)?
    } else {
        Vec::new()
    };
    let k = args.eval_k;
    let mut reports = vec![triage_eval::hotspots::score(
        "hotspots (this method)",
        ranked,
        &gold,
        &broad,
        k,
    )];
    let started = Instant::now();
    let vectors: Vec<&[f32]> = cases.iter().map(|(_, v)| v.as_slice()).collect();
    let merges = triage_eval::hotspots::average_linkage(&vectors);
    let ids: Vec<String> = cases.iter().map(|(c, _)| c.id.clone()).collect();
    let titles: Vec<String> = cases
        .iter()
        .map(|(c, _)| {
            c.title
                .clone()
                .unwrap_or_else(|| c.text.chars().take(40).collect())
        })
        .collect();
    let times: Vec<Option<i64>> = cases.iter().map(|(c, _)| c.time).collect();
    let likes: Vec<u64> = cases.iter().map(|(c, _)| hotspots::likes(c)).collect();
    for &threshold in &args.baseline_thresholds {
        let clusters = triage_eval::hotspots::cut(cases.len(), &merges, threshold);
        let baseline = triage_eval::hotspots::baseline_hotspots(
            &clusters,
            &ids,
            &titles,
            &times,
            &likes,
            &params.heat,
            params.min_distinct,
        );
        reports.push(triage_eval::hotspots::score(
            &format!("baseline cos ≥ {threshold:.2}"),
            &baseline,
            &gold,
            &broad,
            k,
        ));
    }
    let json = serde_json::json!({
        "gold": gold_path.display().to_string(),
        "broad_themes": broad_path.display().to_string(),
        "gold_clusters": gold.len(),
        "baseline": "average-linkage agglomerative clustering of the same embeddings, cut at one cosine threshold; clusters ranked by the same heat formula (every member distinct)",
        "baseline_seconds": started.elapsed().as_secs_f64(),
        "reports": reports,
    });
    write(
        &args.out,
        "eval.json",
        &serde_json::to_string_pretty(&json)?,
    )?;
    write(
        &args.out,
        "eval.md",
        &triage_eval::hotspots::markdown(&reports),
    )?;
    Ok(reports)
}

/// How early the replay flagged one of the top hotspots.
#[derive(Debug, serde::Serialize)]
struct Flagged {
    rank: usize,
    title: String,
    n: usize,
    first_time: Option<String>,
    alert_time: Option<String>,
    hours_after_first: Option<f64>,
    /// How many of the hotspot's messages (copies included) had arrived when it was flagged.
    at_message_of_hotspot: Option<usize>,
    /// Distinct messages of the hotspot by then.
    at_distinct_message: Option<usize>,
    /// Position of the flagging message in the whole replay.
    at_replay_message: Option<usize>,
    rule: Option<triage_core::hotspots::AlertRule>,
    observed: Option<f64>,
    expected: Option<f64>,
}

pub fn run_alerts(global: &GlobalArgs, args: AlertsArgs) -> Result<()> {
    let started = Instant::now();
    let params = args.tuning.params(global)?;
    let mut alert_params = AlertParams::default();
    if let Some(v) = args.recent_days {
        alert_params.recent_days = v;
    }
    if let Some(v) = args.baseline_days {
        alert_params.baseline_days = v;
    }
    if let Some(v) = args.max_p {
        alert_params.max_p = v;
    }
    if let Some(v) = args.min_observed {
        alert_params.min_observed = v;
    }
    let (cases, loaded) = load(global, &args.source, true)?;
    let replay_at = Instant::now();
    let all = hotspots::alerts(&cases, &params, &alert_params);
    let replay_seconds = replay_at.elapsed().as_secs_f64();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // Current alerts: those fired within the last window of the data.
    let end = cases.iter().filter_map(|(c, _)| c.time).max().unwrap_or(0);
    let since = end - (alert_params.recent_days * 86_400.0) as i64;
    let current: Vec<&Alert> = all
        .iter()
        .filter(|a| a.unix.is_some_and(|t| t > since))
        .collect();
    let json = serde_json::json!({
        "alerts": current,
        "as_of": hotspots::rfc3339(end),
        "params": alert_params,
        "hotspot_params": params,
        "input": loaded,
    });
    write(
        &args.out,
        "alerts.json",
        &serde_json::to_string_pretty(&json)?,
    )?;
    println!(
        "{} cases; {} alerts in the replay ({} place, {} district × category); {} in the last {} days",
        cases.len(),
        all.len(),
        all.iter().filter(|a| a.kind == AlertKind::Place).count(),
        all.iter().filter(|a| a.kind == AlertKind::DistrictCategory).count(),
        current.len(),
        alert_params.recent_days
    );
    if args.replay {
        replay_report(&args, &cases, &params, &alert_params, &all, replay_seconds)?;
    }
    println!(
        "output: {} ({:.1} s)",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    std::io::stdout().flush()?;
    Ok(())
}

fn replay_report(
    args: &AlertsArgs,
    cases: &[(Case, Vec<f32>)],
    params: &HotspotParams,
    alert_params: &AlertParams,
    all: &[Alert],
    replay_seconds: f64,
) -> Result<()> {
    let ranked = hotspots::mine(cases, params);
    let time_of: HashMap<&str, Option<i64>> =
        cases.iter().map(|(c, _)| (c.id.as_str(), c.time)).collect();
    let place_alerts: Vec<&Alert> = all.iter().filter(|a| a.kind == AlertKind::Place).collect();
    // An alert belongs to the hotspot holding most of the messages it counted.
    let owner = |a: &Alert, pool: &[Hotspot]| -> Option<usize> {
        pool.iter()
            .enumerate()
            .map(|(i, h)| (i, a.ids.iter().filter(|id| h.ids.contains(id)).count()))
            .filter(|&(_, n)| n * 2 > a.ids.len())
            .max_by_key(|&(_, n)| n)
            .map(|(i, _)| i)
    };
    let mut flagged = Vec::new();
    for (i, h) in ranked.iter().take(args.top).enumerate() {
        let first = h
            .ids
            .first()
            .and_then(|id| time_of.get(id.as_str()).copied().flatten());
        let alert = place_alerts.iter().find(|a| owner(a, &ranked) == Some(i));
        let (at_message, at_distinct) = match alert.and_then(|a| a.unix) {
            Some(t) => {
                let upto = h
                    .ids
                    .iter()
                    .filter(|id| {
                        time_of
                            .get(id.as_str())
                            .copied()
                            .flatten()
                            .is_some_and(|x| x <= t)
                    })
                    .count();
                let distinct = h.timeline.iter().filter(|(x, _)| *x <= t).count();
                (Some(upto), Some(distinct))
            }
            None => (None, None),
        };
        flagged.push(Flagged {
            rank: h.rank,
            title: h.title.clone(),
            n: h.n,
            first_time: h.time_from.clone(),
            alert_time: alert.and_then(|a| a.time.clone()),
            hours_after_first: match (first, alert.and_then(|a| a.unix)) {
                (Some(f), Some(t)) => Some((t - f) as f64 / 3600.0),
                _ => None,
            },
            at_message_of_hotspot: at_message,
            at_distinct_message: at_distinct,
            at_replay_message: alert.map(|a| a.message),
            rule: alert.map(|a| a.rule),
            observed: alert.map(|a| a.observed),
            expected: alert.map(|a| a.expected),
        });
    }
    let top10: Vec<Hotspot> = ranked.iter().take(10).cloned().collect();
    let not_top10 = place_alerts
        .iter()
        .filter(|a| owner(a, &top10).is_none())
        .count();
    let not_any = place_alerts
        .iter()
        .filter(|a| owner(a, &ranked).is_none())
        .count();
    let json = serde_json::json!({
        "flagged": flagged,
        "place_alerts": place_alerts.len(),
        "place_alerts_not_in_a_final_hotspot": not_any,
        "place_alerts_not_in_final_top10": not_top10,
        "district_category_alerts": all.len() - place_alerts.len(),
        "hotspots_final": ranked.len(),
        "replay_seconds": replay_seconds,
        "params": alert_params,
        "alerts": all,
    });
    write(
        &args.out,
        "replay.json",
        &serde_json::to_string_pretty(&json)?,
    )?;
    let mut md = String::new();
    let _ = writeln!(md, "# Early-warning replay\n");
    let _ = writeln!(
        md,
        "{} messages replayed in time order; {} place alerts ({} of them in no final hotspot, {} outside the final top 10), {} district × category alerts.\n",
        cases.len(),
        place_alerts.len(),
        not_any,
        not_top10,
        all.len() - place_alerts.len()
    );
    let _ = writeln!(
        md,
        "| rank | hotspot | n | first message | flagged | after | at its message # | distinct # | rule: observed / expected |"
    );
    let _ = writeln!(md, "|---:|---|---:|---|---|---:|---:|---:|---|");
    for f in &flagged {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f.rank,
            f.title.replace('|', "/"),
            f.n,
            f.first_time.as_deref().unwrap_or("-"),
            f.alert_time.as_deref().unwrap_or("not flagged"),
            f.hours_after_first.map_or("-".into(), |h| if h < 48.0 {
                format!("{h:.1} h")
            } else {
                format!("{:.1} d", h / 24.0)
            }),
            f.at_message_of_hotspot
                .map_or("-".into(), |n| n.to_string()),
            f.at_distinct_message.map_or("-".into(), |n| n.to_string()),
            match (f.rule, f.observed, f.expected) {
                (Some(r), Some(o), Some(e)) => format!("{r:?}: {o} / {e:.3}"),
                _ => "-".into(),
            }
        );
    }
    write(&args.out, "replay.md", &md)?;
    print!("{md}");
    Ok(())
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("period").required(true).args(["day", "week", "month"])))]
pub struct DigestArgs {
    /// Daily bulletin (日通报) of this date (YYYY-MM-DD)
    #[arg(long)]
    day: Option<String>,
    /// Weekly summary (周汇总) of the week (Monday to Sunday) holding this date
    #[arg(long)]
    week: Option<String>,
    /// Monthly analysis (月分析) of the month holding this date
    #[arg(long)]
    month: Option<String>,
    /// Case JSONL instead of the stored cases (embedded on the fly, as for `hotspots`)
    #[arg(long)]
    input: Option<PathBuf>,
    /// The hotline's UTC offset in hours: where its days begin
    #[arg(long, default_value_t = 8, allow_negative_numbers = true)]
    utc_offset: i32,
    /// Hotspots listed
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[command(flatten)]
    tuning: Tuning,
    /// Output directory for digest.json, digest.md and the SVG charts
    #[arg(long, default_value = "digest")]
    out: PathBuf,
}

pub fn run_digest(global: &GlobalArgs, args: DigestArgs) -> Result<()> {
    use triage_core::digest::{digest, review_rates, Change, Period};
    let (period, date) = match (&args.day, &args.week, &args.month) {
        (Some(d), _, _) => (Period::Day, d),
        (_, Some(d), _) => (Period::Week, d),
        (_, _, Some(d)) => (Period::Month, d),
        _ => bail!("give --day, --week or --month"),
    };
    let date = chrono::NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d")
        .with_context(|| format!("not a date (YYYY-MM-DD): {date}"))?;
    let params = args.tuning.params(global)?;
    let ((from, to), (prev_from, _)) = period.bounds(date, args.utc_offset);
    let rfc = |t: i64| hotspots::rfc3339(t).unwrap_or_default();
    let source = Source {
        input: args.input.clone(),
        from: Some(rfc(prev_from)),
        to: Some(rfc(to - 1)),
        district: None,
        category: None,
    };
    let (mut cases, loaded) = load(global, &source, false)?;
    let threshold = global.load_classifier().ok().map(|c| c.threshold);
    let in_period = |c: &Case| c.time.is_some_and(|t| t >= from && t < to);
    let rates = {
        let current: Vec<&Case> = cases
            .iter()
            .map(|(c, _)| c)
            .filter(|c| in_period(c))
            .collect();
        review_rates(&current, threshold)
    };
    // Categories for counting where a case has neither label nor prediction.
    classify(global, &mut cases, None)?;
    let (current, previous): (Cases, Cases) = cases.into_iter().partition(|(c, _)| in_period(c));
    let previous: Vec<Case> = previous.into_iter().map(|(c, _)| c).collect();
    let d = digest(
        period,
        (from, to),
        &current,
        &previous,
        rates,
        &params,
        args.top,
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json = serde_json::json!({ "digest": d, "input": loaded, "params": params });
    write(
        &args.out,
        "digest.json",
        &serde_json::to_string_pretty(&json)?,
    )?;
    let rows = |m: &std::collections::BTreeMap<String, Change>| {
        let mut v: Vec<(String, usize, usize)> = m
            .iter()
            .map(|(k, c)| (k.clone(), c.current, c.previous))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
        v
    };
    use triage_eval::hotspot_charts::period_bars;
    write(
        &args.out,
        "by_category.svg",
        &period_bars("Messages by category", &rows(&d.by_category)),
    )?;
    write(
        &args.out,
        "by_district.svg",
        &period_bars("Messages by district", &rows(&d.by_district)),
    )?;
    write(
        &args.out,
        "by_unit.svg",
        &period_bars("Messages by unit", &rows(&d.by_unit)),
    )?;
    write(
        &args.out,
        "heat_over_time.svg",
        &triage_eval::hotspot_charts::heat_over_time(&d.hotspots, 10, &params.heat),
    )?;
    let mut md = String::new();
    let name = match period {
        Period::Day => "Daily bulletin (日通报)",
        Period::Week => "Weekly summary (周汇总)",
        Period::Month => "Monthly analysis (月分析)",
    };
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:+.0}%", v * 100.0));
    let _ = writeln!(
        md,
        "# {name}: {} – {}\n",
        d.from.as_deref().unwrap_or("?"),
        d.to.as_deref().unwrap_or("?")
    );
    let _ = writeln!(
        md,
        "{} messages ({} the period before, {}). Abstained (sent to a person): {}. Corrected by a person: {}.\n",
        d.total.current,
        d.total.previous,
        pct(d.total.change),
        d.abstain_rate.map_or("- (no stored predictions)".into(), |r| format!("{:.1}%", r * 100.0)),
        d.correction_rate.map_or("- (no reviewed predictions)".into(), |r| format!("{:.1}%", r * 100.0)),
    );
    for (title, m) in [
        ("category", &d.by_category),
        ("district", &d.by_district),
        ("unit", &d.by_unit),
    ] {
        let _ = writeln!(
            md,
            "## By {title}\n\n| {title} | this period | before | change |\n|---|---:|---:|---:|"
        );
        for (k, now, before) in rows(m).into_iter().take(20) {
            let _ = writeln!(md, "| {k} | {now} | {before} | {} |", pct(m[&k].change));
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "## Hotspots of the period\n\n| rank | heat | n | place | title |\n|---:|---:|---:|---|---|");
    for h in &d.hotspots {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {} | {} | {} |",
            h.rank,
            h.heat,
            h.n,
            h.place,
            h.title.replace('|', "/")
        );
    }
    write(&args.out, "digest.md", &md)?;
    print!("{md}");
    println!("output: {}", args.out.display());
    Ok(())
}
