//! Work-order evaluation: titles against human titles (ROUGE-L and chrF on characters) beside
//! baselines, and locations against a hand-checked gold standard (precision, recall).

use crate::textsim::{chrf, rouge_l_chars};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use triage_core::places::{Location, PlaceLevel};
use triage_core::work_order::clauses;

/// The lead baseline: the complaint's first clause cut to `chars` characters (the evaluation
/// cuts it to the length of the human title, which favours the baseline).
pub fn lead_title(text: &str, chars: usize) -> String {
    let text = triage_core::text::normalize(text);
    clauses(&text)
        .first()
        .map(|c| triage_core::text::truncate_chars(c.text, chars).to_string())
        .unwrap_or_default()
}

/// Mean similarity of candidate titles to the human ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TitleScores {
    pub n: usize,
    /// Mean ROUGE-L F1 on characters.
    pub rouge_l: f64,
    /// Mean chrF (β = 2), 0..1.
    pub chrf: f64,
    pub mean_chars: f64,
    /// Candidates longer than 30 characters.
    pub over_30: usize,
}

pub fn score_titles(references: &[&str], candidates: &[String]) -> TitleScores {
    assert_eq!(references.len(), candidates.len());
    let n = references.len().max(1) as f64;
    let pairs = || references.iter().zip(candidates);
    TitleScores {
        n: references.len(),
        rouge_l: pairs().map(|(r, c)| rouge_l_chars(c, r)).sum::<f64>() / n,
        chrf: pairs().map(|(r, c)| chrf(c, r)).sum::<f64>() / n,
        mean_chars: candidates.iter().map(|c| c.chars().count()).sum::<usize>() as f64 / n,
        over_30: candidates.iter().filter(|c| c.chars().count() > 30).count(),
    }
}

/// The title of the most similar past case: cosine of character-bigram TF-IDF vectors, a cheap
/// stand-in for the service's embedding search.
pub struct NearestTitle {
    titles: Vec<String>,
    postings: HashMap<[char; 2], Vec<(u32, f32)>>,
    idf: HashMap<[char; 2], f32>,
}

fn bigram_counts(text: &str) -> HashMap<[char; 2], f32> {
    let chars: Vec<char> = text.chars().filter(|c| c.is_alphanumeric()).collect();
    let mut out = HashMap::new();
    for w in chars.windows(2) {
        *out.entry([w[0], w[1]]).or_insert(0.0) += 1.0;
    }
    out
}

impl NearestTitle {
    /// `cases` are (text, title) of past cases.
    pub fn new(cases: &[(&str, &str)]) -> Self {
        let counts: Vec<_> = cases.iter().map(|(t, _)| bigram_counts(t)).collect();
        let mut df: HashMap<[char; 2], f32> = HashMap::new();
        for c in &counts {
            for g in c.keys() {
                *df.entry(*g).or_insert(0.0) += 1.0;
            }
        }
        let n = cases.len() as f32;
        let idf: HashMap<_, _> = df
            .into_iter()
            .map(|(g, d)| (g, ((1.0 + n) / (1.0 + d)).ln() + 1.0))
            .collect();
        let mut postings: HashMap<[char; 2], Vec<(u32, f32)>> = HashMap::new();
        for (doc, c) in counts.iter().enumerate() {
            let v = weigh(c, &idf);
            for (g, w) in v {
                postings.entry(g).or_default().push((doc as u32, w));
            }
        }
        Self {
            titles: cases.iter().map(|(_, t)| t.to_string()).collect(),
            postings,
            idf,
        }
    }

    pub fn title(&self, text: &str) -> String {
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for (g, w) in weigh(&bigram_counts(text), &self.idf) {
            for (doc, dw) in self.postings.get(&g).into_iter().flatten() {
                *scores.entry(*doc).or_insert(0.0) += w * dw;
            }
        }
        scores
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(doc, _)| self.titles[doc as usize].clone())
            .unwrap_or_default()
    }
}

/// Sublinear TF × IDF, L2-normalised.
fn weigh(counts: &HashMap<[char; 2], f32>, idf: &HashMap<[char; 2], f32>) -> Vec<([char; 2], f32)> {
    let mut v: Vec<_> = counts
        .iter()
        .filter_map(|(g, c)| idf.get(g).map(|i| (*g, (1.0 + c.ln()) * i)))
        .collect();
    let norm = v.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|(_, w)| *w /= norm);
    }
    v
}

/// One record of `data/eval/locations-gold.jsonl` (fields beyond these are kept in the file,
/// not needed here).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocationGold {
    pub id: String,
    /// 0-based line of the record's message in `dev.jsonl`.
    pub line: usize,
    /// Accepted answers; empty when the complaint names no place below its district.
    pub most_specific: Vec<String>,
    #[serde(default)]
    pub about_place: bool,
}

/// Location precision and recall, scored as the gold's METHOD.md suggests: an output is correct
/// when it contains one of the accepted answers; where there is none, an output with nothing
/// below district level is correct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationScores {
    pub n: usize,
    /// Complaints given a location (any level).
    pub predicted: usize,
    pub predicted_correct: usize,
    /// Correct predictions / predictions.
    pub precision: f64,
    /// Complaints whose gold has an answer.
    pub with_answer: usize,
    pub found: usize,
    /// Gold answers found / complaints with an answer.
    pub recall: f64,
    /// Correct over all complaints (no location counts as correct where there is no answer).
    pub accuracy: f64,
    /// Predictions below district level, and how many of them are correct.
    pub below_district: usize,
    pub below_district_correct: usize,
}

/// Whether `output` is right for `gold` (see `LocationScores`).
pub fn location_correct(gold: &LocationGold, output: Option<&Location>) -> bool {
    if gold.most_specific.is_empty() {
        return output.is_none_or(|l| l.level <= PlaceLevel::District);
    }
    output.is_some_and(|l| {
        gold.most_specific
            .iter()
            .any(|a| l.text.contains(a.as_str()))
    })
}

pub fn score_locations(gold: &[LocationGold], outputs: &[Option<Location>]) -> LocationScores {
    assert_eq!(gold.len(), outputs.len());
    let mut s = LocationScores {
        n: gold.len(),
        predicted: 0,
        predicted_correct: 0,
        precision: 0.0,
        with_answer: 0,
        found: 0,
        recall: 0.0,
        accuracy: 0.0,
        below_district: 0,
        below_district_correct: 0,
    };
    let mut correct_all = 0;
    for (g, o) in gold.iter().zip(outputs) {
        let correct = location_correct(g, o.as_ref());
        correct_all += usize::from(correct);
        if let Some(l) = o {
            s.predicted += 1;
            s.predicted_correct += usize::from(correct);
            if l.level > PlaceLevel::District {
                s.below_district += 1;
                s.below_district_correct += usize::from(correct);
            }
        }
        if !g.most_specific.is_empty() {
            s.with_answer += 1;
            s.found += usize::from(correct);
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    s.precision = ratio(s.predicted_correct, s.predicted);
    s.recall = ratio(s.found, s.with_answer);
    s.accuracy = ratio(correct_all, s.n);
    s
}

/// A weak check of `location` that needs no hand labels: on messages whose human title names a
/// place below district level that the text names too, the share whose location contains it.
/// Returns (messages checked, agreeing).
pub fn title_place_agreement(
    cases: &[TitledCase],
    directory: &triage_core::units::UnitDirectory,
) -> (usize, usize) {
    let (mut n, mut agree) = (0, 0);
    for case in cases {
        let text = triage_core::text::normalize(&case.text);
        let wanted: Vec<String> = triage_core::places::extract(&case.title, directory)
            .into_iter()
            .filter(|p| p.level > PlaceLevel::District && text.contains(p.name.as_str()))
            .map(|p| p.name)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        n += 1;
        let got = triage_core::places::locate(&text, directory);
        if got.is_some_and(|l| wanted.iter().any(|w| l.text.contains(w.as_str()))) {
            agree += 1;
        }
    }
    (n, agree)
}

/// Percentiles of a list of durations (milliseconds).
pub fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return 0.0;
    }
    let i = ((sorted_ms.len() as f64 - 1.0) * p).round() as usize;
    sorted_ms[i.min(sorted_ms.len() - 1)]
}

/// A test complaint with its human title.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TitledCase {
    pub id: String,
    pub text: String,
    pub title: String,
}

/// Reads `id`, `text` and `title` from a JSONL file; lines without a title are skipped.
pub fn read_titled(path: &std::path::Path) -> std::io::Result<Vec<TitledCase>> {
    let raw = std::fs::read_to_string(path)?;
    Ok(raw
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            let title = get("title").filter(|t| !t.trim().is_empty())?;
            Some(TitledCase {
                id: get("id")?,
                text: get("text")?,
                title,
            })
        })
        .collect())
}

pub fn read_location_gold(path: &std::path::Path) -> std::io::Result<Vec<LocationGold>> {
    let raw = std::fs::read_to_string(path)?;
    raw.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}

/// What `run` measures on.
pub struct WorkOrderEval<'a> {
    /// Complaints with human titles (dev.jsonl): titles are measured here, never learned.
    pub test: &'a [TitledCase],
    /// Past cases with titles (train.jsonl): the title scorer is fitted on them and the nearest
    /// case's title comes from them.
    pub past: &'a [TitledCase],
    /// Hand-checked locations; each record's `line` indexes `test_lines`.
    pub gold: &'a [LocationGold],
    /// Every line of the test file (including untitled ones), for the gold's `line`.
    pub test_lines: &'a [TitledCase],
    pub directory: &'a triage_core::units::UnitDirectory,
}

/// A title generator under test (the LLM): text in, title out.
pub type TitleFn<'a> = dyn FnMut(&str) -> Result<String, String> + 'a;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TitleExample {
    pub id: String,
    pub human: String,
    pub methods: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkOrderReport {
    /// Per method on every test complaint.
    pub titles: std::collections::BTreeMap<String, TitleScores>,
    /// Per method on the first `llm_n` complaints, when an LLM was measured (same complaints for
    /// every method).
    pub titles_llm_subset: std::collections::BTreeMap<String, TitleScores>,
    pub llm_n: usize,
    /// Milliseconds per LLM title (p50, p95).
    pub llm_ms: Option<(f64, f64)>,
    /// From the complaint text alone (as a call arrives).
    pub locations: LocationScores,
    /// With the message's title in front of its text.
    pub locations_with_title: LocationScores,
    /// Milliseconds per whole work order (title, location, request, flags): p50, p95, p99.
    pub work_order_ms: (f64, f64, f64),
    pub examples: Vec<TitleExample>,
    pub location_misses: Vec<serde_json::Value>,
    /// `title_place_agreement` on the past cases: (checked, agreeing).
    pub title_place_agreement: (usize, usize),
    /// The title scorer fitted on `past` (to refresh the shipped defaults).
    pub fitted_title_weights: Vec<f32>,
}

/// Runs every measurement. `llm` (optional) writes a title for a complaint; it is run on the
/// first `llm_n` test complaints only.
pub fn run(input: &WorkOrderEval, mut llm: Option<&mut TitleFn>, llm_n: usize) -> WorkOrderReport {
    use std::collections::BTreeMap;
    use triage_core::work_order::{self, TitleModel};
    let directory = input.directory;
    let pairs: Vec<(&str, &str)> = input
        .past
        .iter()
        .map(|c| (c.text.as_str(), c.title.as_str()))
        .collect();
    let fitted = TitleModel::fit(&pairs, directory, 10.0, rouge_l_chars);
    let nearest = NearestTitle::new(&pairs);

    let mut outputs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut timings = Vec::new();
    for case in input.test {
        let started = std::time::Instant::now();
        let order = work_order::build(&case.text, directory, &work_order::Hints::default());
        timings.push(started.elapsed().as_secs_f64() * 1e3);
        let len = case.title.chars().count();
        let mut put = |k: &str, v: String| outputs.entry(k.to_string()).or_default().push(v);
        put(
            "lead (first clause, cut to the human title's length)",
            lead_title(&case.text, len),
        );
        put("nearest past case's title", nearest.title(&case.text));
        put("clause scorer (shipped weights)", order.title);
        put(
            "clause scorer (fitted now on --past)",
            fitted.title(&triage_core::text::normalize(&case.text), directory),
        );
    }
    let references: Vec<&str> = input.test.iter().map(|c| c.title.as_str()).collect();
    let titles = outputs
        .iter()
        .map(|(k, v)| (k.clone(), score_titles(&references, v)))
        .collect();

    let mut titles_llm_subset = BTreeMap::new();
    let mut llm_ms = None;
    let mut llm_titles = Vec::new();
    let n = llm_n.min(input.test.len());
    if let Some(generate) = llm.as_mut() {
        let mut ms = Vec::new();
        for case in &input.test[..n] {
            let started = std::time::Instant::now();
            let t = generate(&case.text).unwrap_or_default();
            ms.push(started.elapsed().as_secs_f64() * 1e3);
            llm_titles.push(t);
        }
        ms.sort_by(f64::total_cmp);
        llm_ms = Some((percentile(&ms, 0.5), percentile(&ms, 0.95)));
        for (k, v) in &outputs {
            titles_llm_subset.insert(k.clone(), score_titles(&references[..n], &v[..n]));
        }
        titles_llm_subset.insert(
            "local LLM (few-shot)".to_string(),
            score_titles(&references[..n], &llm_titles),
        );
    }

    let mut examples = Vec::new();
    for (i, case) in input.test.iter().enumerate().take(8) {
        let mut methods: BTreeMap<String, String> = outputs
            .iter()
            .map(|(k, v)| (k.clone(), v[i].clone()))
            .collect();
        if let Some(t) = llm_titles.get(i) {
            methods.insert("local LLM (few-shot)".into(), t.clone());
        }
        examples.push(TitleExample {
            id: case.id.clone(),
            human: case.title.clone(),
            methods,
        });
    }

    let mut plain = Vec::new();
    let mut titled = Vec::new();
    let mut location_misses = Vec::new();
    for g in input.gold {
        let case = &input.test_lines[g.line];
        let text = triage_core::text::normalize(&case.text);
        let l = triage_core::places::locate(&text, directory);
        if !location_correct(g, l.as_ref()) {
            location_misses.push(serde_json::json!({
                "id": g.id, "gold": g.most_specific, "got": l.as_ref().map(|l| &l.text),
            }));
        }
        plain.push(l);
        let with_title = triage_core::text::normalize(&format!("{}\n{}", case.title, case.text));
        titled.push(triage_core::places::locate(&with_title, directory));
    }
    timings.sort_by(f64::total_cmp);
    WorkOrderReport {
        titles,
        titles_llm_subset,
        llm_n: if llm_titles.is_empty() { 0 } else { n },
        llm_ms,
        locations: score_locations(input.gold, &plain),
        locations_with_title: score_locations(input.gold, &titled),
        work_order_ms: (
            percentile(&timings, 0.5),
            percentile(&timings, 0.95),
            percentile(&timings, 0.99),
        ),
        examples,
        location_misses,
        fitted_title_weights: fitted.weights.clone(),
        title_place_agreement: title_place_agreement(input.past, directory),
    }
}

/// The report as a few lines of text.
pub fn summary(report: &WorkOrderReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let table = |out: &mut String, rows: &std::collections::BTreeMap<String, TitleScores>| {
        let _ = writeln!(
            out,
            "  {:<56} {:>5} {:>8} {:>6} {:>6}",
            "method", "n", "ROUGE-L", "chrF", "chars"
        );
        for (k, s) in rows {
            let _ = writeln!(
                out,
                "  {:<56} {:>5} {:>8.3} {:>6.3} {:>6.1}",
                k, s.n, s.rouge_l, s.chrf, s.mean_chars
            );
        }
    };
    let _ = writeln!(
        out,
        "titles (ROUGE-L F1 and chrF on characters, against the human titles):"
    );
    table(&mut out, &report.titles);
    if report.llm_n > 0 {
        let _ = writeln!(
            out,
            "titles on the first {} complaints, with the LLM:",
            report.llm_n
        );
        table(&mut out, &report.titles_llm_subset);
        if let Some((p50, p95)) = report.llm_ms {
            let _ = writeln!(out, "  LLM title time: p50 {p50:.0} ms, p95 {p95:.0} ms");
        }
    }
    for (what, s) in [
        ("text only", &report.locations),
        ("title + text", &report.locations_with_title),
    ] {
        let _ = writeln!(
            out,
            "location ({what}): precision {:.3} ({}/{}), recall {:.3} ({}/{}), accuracy {:.3}; below district: {}/{} correct",
            s.precision, s.predicted_correct, s.predicted, s.recall, s.found, s.with_answer, s.accuracy,
            s.below_district_correct, s.below_district
        );
    }
    let (n, agree) = report.title_place_agreement;
    let _ = writeln!(
        out,
        "location vs the place the human title names (past cases, no hand labels): {agree}/{n} = {:.3}",
        agree as f64 / n.max(1) as f64
    );
    let (p50, p95, p99) = report.work_order_ms;
    let _ = writeln!(
        out,
        "work order (rules): p50 {p50:.2} ms, p95 {p95:.2} ms, p99 {p99:.2} ms"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(text: &str, level: PlaceLevel) -> Option<Location> {
        Some(Location {
            text: text.into(),
            level,
            district: None,
        })
    }

    fn gold(answers: &[&str]) -> LocationGold {
        LocationGold {
            id: "x".into(),
            line: 0,
            most_specific: answers.iter().map(|s| s.to_string()).collect(),
            about_place: true,
        }
    }

    #[test]
    fn location_scoring_follows_the_method() {
        use PlaceLevel::*;
        let golds = [
            gold(&["米兰春天G2栋", "米兰春天"]),
            gold(&["葛竹坪镇"]),
            gold(&[]),
            gold(&[]),
            gold(&["G8县"]),
        ];
        let outputs = [
            loc("A3区联丰路米兰春天G2栋", CompoundBuilding), // contains an answer
            loc("吴合村", VillageCommunity),                 // wrong
            loc("G8县", District),                           // nothing below district: right
            None,                                            // right
            None,                                            // missed
        ];
        let s = score_locations(&golds, &outputs);
        assert_eq!((s.predicted, s.predicted_correct), (3, 2));
        assert_eq!((s.with_answer, s.found), (3, 1));
        assert!((s.accuracy - 3.0 / 5.0).abs() < 1e-9);
        assert_eq!((s.below_district, s.below_district_correct), (2, 1));
    }

    #[test]
    fn lead_is_first_clause_cut() {
        assert_eq!(lead_title("您好！路灯坏了，请修", 3), "您好");
        assert_eq!(lead_title("路灯坏了很久了，请修", 3), "路灯坏");
    }

    #[test]
    fn nearest_title_finds_the_similar_case() {
        let nearest = NearestTitle::new(&[
            ("小区路灯坏了很久没人修", "路灯坏了"),
            ("学校乱收补课费", "学校乱收费"),
        ]);
        assert_eq!(nearest.title("我们小区的路灯坏了"), "路灯坏了");
        assert_eq!(nearest.title("补课费乱收"), "学校乱收费");
    }

    #[test]
    fn title_scores_average() {
        let s = score_titles(&["路灯坏了", "噪音"], &["路灯坏了".into(), "路灯".into()]);
        assert!((s.rouge_l - 0.5).abs() < 1e-9);
        assert_eq!(s.n, 2);
    }
}
