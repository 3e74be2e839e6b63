//! `triage hotspots`, `triage alerts` and `triage digest`: flags in, the pipeline's use cases out
//! (`Pipeline::hotspots`, `alerts`, `digest`; the method is `triage_core::hotspots`), written as
//! JSON, Markdown and SVG charts, and for `hotspots --gold` an evaluation against a hand-checked
//! gold and the baseline (`triage_eval::hotspots`).

use crate::app::{progress_bar, GlobalArgs};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use triage_core::digest::{Change, Period};
use triage_core::hotspots::{AlertKind, AlertParams, Deadline, Hotspot, HotspotParams};
use triage_core::ingest::parse_case_line;
use triage_core::pipeline::{
    AlertRequest, CaseSource, DigestRequest, HotspotRequest, Loaded, Pipeline, Scope,
};
use triage_core::text::markdown_cell;
use triage_core::Case;
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
    /// The defaults with the options given (the pipeline adds the district hierarchy).
    fn params(&self) -> HotspotParams {
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
        p
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

impl Source {
    fn scope(&self) -> Result<Scope> {
        Ok(Scope::parse(
            self.from.as_deref(),
            self.to.as_deref(),
            self.district.clone(),
            self.category.clone(),
        )?)
    }
}

/// The pipeline of one command and the scratch folder of its store, if any. Fields drop in
/// order: the store is closed (and flushed) before its folder is removed.
struct Opened {
    pipeline: Pipeline,
    _scratch: Option<tempfile::TempDir>,
}

/// A pipeline for these commands: the configured store, or (with a file to analyse) an empty
/// one in a temporary folder, so that mining a file neither needs nor locks the store; the
/// current classifier when there is one (for categories), none otherwise.
fn pipeline(global: &GlobalArgs, file: bool) -> Result<Opened> {
    let embedder = global.load_embedder()?;
    let (store, scratch) = if file {
        let dir = tempfile::tempdir().context("creating a scratch store")?;
        (global.open_edge(dir.path(), embedder.dim())?, Some(dir))
    } else {
        (global.open_store(embedder.dim())?, None)
    };
    let classifier = match global.load_classifier() {
        Ok(c) => Some(c),
        Err(e) => {
            if global.classifier_dir().join("current").exists() {
                eprintln!("note: the current classifier did not load ({e:#}); categories come from labels and stored predictions only");
            }
            None
        }
    };
    let pipeline = global
        .parts(embedder)?
        .store(store)
        .classifier(classifier)
        .build()?;
    Ok(Opened {
        pipeline,
        _scratch: scratch,
    })
}

/// The cases to analyse: a JSONL file (vectors cached under `--data-dir/cache/hotspot-vectors`
/// by model, token limit and text, so a second run skips the embedding), or the stored cases.
fn source(global: &GlobalArgs, pipeline: &Pipeline, input: Option<&Path>) -> Result<CaseSource> {
    let Some(path) = input else {
        return Ok(CaseSource::Stored);
    };
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut cases = Vec::new();
    let mut skipped = 0usize;
    for (n, line) in raw.split(|b| *b == b'\n').enumerate() {
        let parsed = std::str::from_utf8(line)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(|l| {
                let l = l.trim().trim_start_matches('\u{feff}');
                if l.is_empty() {
                    Ok(None)
                } else {
                    parse_case_line(l).map(Some)
                }
            });
        match parsed {
            Ok(Some(case)) => cases.push(case),
            Ok(None) => {}
            Err(reason) => {
                skipped += 1;
                if skipped <= 5 {
                    eprintln!("{}: line {}: {reason} (skipped)", path.display(), n + 1);
                }
            }
        }
    }
    if skipped > 5 {
        eprintln!("{}: {skipped} lines skipped in all", path.display());
    }
    let vectors = embed_cached(global, pipeline, &cases)?;
    Ok(CaseSource::Given {
        name: path.display().to_string(),
        cases: cases.into_iter().zip(vectors).collect(),
    })
}

/// Embeds the cases as the pipeline embeds stored cases, reusing a cached file of the vectors.
fn embed_cached(global: &GlobalArgs, pipeline: &Pipeline, cases: &[Case]) -> Result<Vec<Vec<f32>>> {
    let info = pipeline.info();
    let dim = info.dim;
    let texts: Vec<String> = cases.iter().map(Case::full_text).collect();
    let mut key = Fnv::default();
    key.add(info.embedder.as_bytes());
    key.add(&info.max_tokens.to_le_bytes());
    for t in &texts {
        key.add(t.as_bytes());
        key.add(&[0]);
    }
    let dir = global.data_dir().join("cache").join("hotspot-vectors");
    let path = dir.join(format!("{:016x}.f32", key.0));
    if let Ok(bytes) = std::fs::read(&path) {
        if bytes.len() == texts.len() * dim * 4 {
            return Ok(bytes
                .chunks_exact(dim * 4)
                .map(|v| {
                    v.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect()
                })
                .collect());
        }
    }
    let bar = progress_bar(
        texts.len() as u64,
        "embed",
        "{prefix:>8} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}",
    );
    let mut vectors = Vec::with_capacity(texts.len());
    let mut bytes = Vec::with_capacity(texts.len() * dim * 4);
    for chunk in texts.chunks(64) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for embedded in pipeline.embed_complaints(&refs)? {
            let v = embedded.vector;
            for x in &v {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
            vectors.push(v);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = triage_core::fsutil::write_atomic(&path, &bytes);
    }
    Ok(vectors)
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

fn create(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

pub fn run(global: &GlobalArgs, args: HotspotsArgs) -> Result<()> {
    let started = Instant::now();
    let scope = args.source.scope()?;
    let opened = pipeline(global, args.source.input.is_some())?;
    let pipeline = &opened.pipeline;
    let source = source(global, pipeline, args.source.input.as_deref())?;
    let request = HotspotRequest {
        params: args.tuning.params(),
        top: args.top.max(args.eval_k),
        keep_cases: args.gold.is_some(),
    };
    let report = pipeline.hotspots(source, &scope, &request, &Deadline::none())?;
    if report.input.analysed == 0 {
        bail!("no cases to analyse in {}", report.input.source);
    }
    create(&args.out)?;
    let written: Vec<Hotspot> = report.hotspots.iter().take(args.top).cloned().collect();
    let json = serde_json::json!({
        "hotspots": written,
        "params": report.params,
        "scope": report.scope,
        "found": report.found,
        "input": report.input,
        "mining_seconds": report.mining_seconds,
    });
    write(
        &args.out,
        "hotspots.json",
        &serde_json::to_string_pretty(&json)?,
    )?;
    write(
        &args.out,
        "hotspots.md",
        &markdown(&written, &report.params, &report.input),
    )?;
    write(
        &args.out,
        "heat_over_time.svg",
        &triage_eval::hotspot_charts::heat_over_time(&written, 10, &report.params.heat),
    )?;
    write(
        &args.out,
        "district_category.svg",
        &triage_eval::hotspot_charts::district_category_grid(&written),
    )?;
    println!(
        "{} cases, {} hotspots with ≥ {} distinct messages; mining {:.2} s",
        report.input.analysed, report.found, report.params.min_distinct, report.mining_seconds
    );
    for h in written.iter().take(10) {
        println!(
            "{:>3}. heat {:>6.1}  n {:>3}  {}  [{}]",
            h.rank, h.heat, h.n, h.title, h.place
        );
    }
    if let Some(gold_path) = &args.gold {
        let cases = report.cases.as_deref().unwrap_or_default();
        let reports = evaluate(&args, gold_path, cases, &report.hotspots, &report.params)?;
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

/// This method and the baseline against the gold, into eval.json and eval.md.
fn evaluate(
    args: &HotspotsArgs,
    gold_path: &Path,
    cases: &[(Case, Vec<f32>)],
    ranked: &[Hotspot],
    params: &HotspotParams,
) -> Result<Vec<GoldReport>> {
    let gold: Vec<GoldCluster> = triage_eval::hotspots::read_jsonl(gold_path)?;
    let broad_path = args.broad.clone().unwrap_or_else(|| {
        gold_path
            .parent()
            .unwrap_or(Path::new("."))
            .join("hotspots-broad-themes.jsonl")
    });
    let broad: Vec<BroadTheme> = if broad_path.exists() {
        triage_eval::hotspots::read_jsonl(&broad_path)?
    } else {
        Vec::new()
    };
    let started = Instant::now();
    let reports = triage_eval::hotspots::evaluate(
        cases,
        ranked,
        &triage_eval::hotspots::Gold {
            clusters: &gold,
            broad: &broad,
        },
        args.eval_k,
        &triage_eval::hotspots::Baseline {
            thresholds: &args.baseline_thresholds,
            heat: &params.heat,
            min_size: params.min_distinct,
        },
    );
    let json = serde_json::json!({
        "gold": gold_path.display().to_string(),
        "broad_themes": broad_path.display().to_string(),
        "gold_clusters": gold.len(),
        "baseline": "average-linkage agglomerative clustering of the same embeddings, cut at one cosine threshold; clusters ranked by the same heat formula (every member distinct)",
        "seconds": started.elapsed().as_secs_f64(),
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

pub fn run_alerts(global: &GlobalArgs, args: AlertsArgs) -> Result<()> {
    let started = Instant::now();
    let scope = args.source.scope()?;
    let mut alert = AlertParams::default();
    if let Some(v) = args.recent_days {
        alert.recent_days = v;
    }
    if let Some(v) = args.baseline_days {
        alert.baseline_days = v;
    }
    if let Some(v) = args.max_p {
        alert.max_p = v;
    }
    if let Some(v) = args.min_observed {
        alert.min_observed = v;
    }
    let opened = pipeline(global, args.source.input.is_some())?;
    let pipeline = &opened.pipeline;
    let source = source(global, pipeline, args.source.input.as_deref())?;
    let request = AlertRequest {
        params: args.tuning.params(),
        alert,
        early_warning_top: args.replay.then_some(args.top),
    };
    let report = pipeline.alerts(source, &scope, &request, &Deadline::none())?;
    if report.input.analysed == 0 {
        bail!("no cases to analyse in {}", report.input.source);
    }
    create(&args.out)?;
    write(
        &args.out,
        "alerts.json",
        &serde_json::to_string_pretty(&report)?,
    )?;
    let all = &report.replay;
    let place = all.iter().filter(|a| a.kind == AlertKind::Place).count();
    println!(
        "{} cases; {} alerts in the replay ({} place, {} district × category); {} in the last {} days",
        report.input.analysed,
        all.len(),
        place,
        all.len() - place,
        report.alerts.len(),
        report.params.recent_days
    );
    if let Some(early) = &report.early_warning {
        // The early-warning fields at the top, beside the replay's own.
        let mut json = serde_json::to_value(early)?;
        if let Some(object) = json.as_object_mut() {
            object.insert("replay_seconds".into(), report.replay_seconds.into());
            object.insert("params".into(), serde_json::to_value(&report.params)?);
            object.insert("alerts".into(), serde_json::to_value(all)?);
        }
        write(
            &args.out,
            "replay.json",
            &serde_json::to_string_pretty(&json)?,
        )?;
        let md = replay_markdown(report.input.analysed, early);
        write(&args.out, "replay.md", &md)?;
        print!("{md}");
    }
    println!(
        "output: {} ({:.1} s)",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    std::io::stdout().flush()?;
    Ok(())
}

fn replay_markdown(messages: usize, early: &triage_core::hotspots::EarlyWarning) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Early-warning replay\n");
    let _ = writeln!(
        md,
        "{messages} messages replayed in time order; {} place alerts ({} of them in no final hotspot, {} outside the final top 10), {} district × category alerts.\n",
        early.place_alerts,
        early.place_alerts_not_in_a_final_hotspot,
        early.place_alerts_not_in_final_top10,
        early.district_category_alerts
    );
    let _ = writeln!(
        md,
        "| rank | hotspot | n | first message | flagged | after | at its message # | distinct # | rule: observed / expected |"
    );
    let _ = writeln!(md, "|---:|---|---:|---|---|---:|---:|---:|---|");
    for f in &early.flagged {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f.rank,
            markdown_cell(&f.title),
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
    md
}

pub fn run_digest(global: &GlobalArgs, args: DigestArgs) -> Result<()> {
    let (period, date) = match (&args.day, &args.week, &args.month) {
        (Some(d), _, _) => (Period::Day, d),
        (_, Some(d), _) => (Period::Week, d),
        (_, _, Some(d)) => (Period::Month, d),
        _ => bail!("give --day, --week or --month"),
    };
    let date = chrono::NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d")
        .with_context(|| format!("not a date (YYYY-MM-DD): {date}"))?;
    let opened = pipeline(global, args.input.is_some())?;
    let pipeline = &opened.pipeline;
    let source = source(global, pipeline, args.input.as_deref())?;
    let request = DigestRequest {
        period,
        date,
        utc_offset_hours: args.utc_offset,
        top: args.top,
    };
    let report = pipeline.digest(source, &request, args.tuning.params(), &Deadline::none())?;
    let d = &report.digest;
    create(&args.out)?;
    write(
        &args.out,
        "digest.json",
        &serde_json::to_string_pretty(&report)?,
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
        &triage_eval::hotspot_charts::heat_over_time(&d.hotspots, 10, &report.params.heat),
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
    let _ = writeln!(
        md,
        "## Hotspots of the period\n\n| rank | heat | n | place | title |\n|---:|---:|---:|---|---|"
    );
    for h in &d.hotspots {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {} | {} | {} |",
            h.rank,
            h.heat,
            h.n,
            markdown_cell(&h.place),
            markdown_cell(&h.title)
        );
    }
    write(&args.out, "digest.md", &md)?;
    print!("{md}");
    println!("output: {}", args.out.display());
    Ok(())
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
            markdown_cell(&h.place),
            markdown_cell(h.category.as_deref().unwrap_or("-")),
            markdown_cell(&h.title),
            h.example_ids.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\nCharts: `heat_over_time.svg` (heat of each top hotspot as its messages arrive), `district_category.svg`."
    );
    out
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
