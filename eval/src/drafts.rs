//! Reply drafts measured side by side (`triage eval-drafts`): for held-out complaints of
//! `replies.jsonl` whose official replies never enter the store the drafts are grounded on, every
//! method writes a draft (`reply::DraftMethod`: the drafts before issue 13, the nearest past reply
//! copied, the template alone, the template with the model's restatement) and each is scored
//! before and after the faithfulness guard: unsupported facts and investigative statements (the
//! guard's definitions: what `guard::check_draft` would change), length, time, and ROUGE-L / chrF
//! on characters against the official reply.

use crate::textsim::{chrf, rouge_l_chars};
use crate::workorder::percentile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;
use triage_core::guard::{Checked, DraftCheck};
use triage_core::pipeline::{Complaint, Pipeline};
use triage_core::reply::DraftMethod;
use triage_core::text::markdown_cell;
use triage_core::Case;

/// Whether a draft is scored as written or as the guard left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    BeforeGuard,
    AfterGuard,
}

/// One draft's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DraftScore {
    pub unsupported_facts: usize,
    pub investigative: usize,
    pub chars: usize,
    pub rouge_l: f64,
    pub chrf: f64,
}

/// What the guard would change, split into facts and investigative statements.
fn count(checked: &Checked) -> (usize, usize) {
    let mut facts = 0;
    let mut claims = 0;
    for c in &checked.changes {
        match c {
            DraftCheck::InvestigativeClaim { .. } => claims += 1,
            DraftCheck::UnsupportedNumber { .. }
            | DraftCheck::UnsupportedHandle { .. }
            | DraftCheck::UnsupportedPerson { .. }
            | DraftCheck::UnsupportedName { .. } => facts += 1,
            _ => {}
        }
    }
    (facts, claims)
}

/// One method's numbers at one stage, over the complaints it ran on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodRow {
    pub method: DraftMethod,
    pub stage: Stage,
    pub drafts: usize,
    pub unsupported_facts_per_draft: f64,
    pub drafts_with_unsupported_facts: usize,
    pub investigative_per_draft: f64,
    pub mean_chars: f64,
    /// Drafts under 20 characters.
    pub short: usize,
    pub ms_mean: f64,
    pub ms_p50: f64,
    /// From the start of the draft call to the first text passed on (streaming).
    pub first_text_ms_p50: f64,
    pub rouge_l: f64,
    pub chrf: f64,
}

/// A complaint with every method's draft, for the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DraftSample {
    pub id: String,
    pub complaint: String,
    pub official: String,
    /// Method → (before the guard, after the guard).
    pub drafts: BTreeMap<String, (String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DraftsReport {
    pub held_out: usize,
    pub grounding_replies: usize,
    pub labeled_cases: usize,
    /// Complaints the model methods ran on (the first `model_n` held-out ones).
    pub model_n: usize,
    pub seed: u64,
    pub rows: Vec<MethodRow>,
    pub work_order_ms_p50: f64,
    pub analyze_ms_p50: f64,
    pub samples: Vec<DraftSample>,
}

/// Per method: scores and times of each draft at both stages.
#[derive(Default)]
struct Acc {
    before: Vec<DraftScore>,
    after: Vec<DraftScore>,
    ms: Vec<f64>,
    first_ms: Vec<f64>,
}

fn score(text: &str, checked: &Checked, official: &str) -> DraftScore {
    let (unsupported_facts, investigative) = count(checked);
    DraftScore {
        unsupported_facts,
        investigative,
        chars: text.chars().count(),
        rouge_l: rouge_l_chars(text, official),
        chrf: chrf(text, official),
    }
}

fn row(method: DraftMethod, stage: Stage, scores: &[DraftScore], acc: &Acc) -> MethodRow {
    let n = scores.len().max(1) as f64;
    let mean = |f: &dyn Fn(&DraftScore) -> f64| scores.iter().map(f).sum::<f64>() / n;
    let mut ms = acc.ms.clone();
    ms.sort_by(f64::total_cmp);
    let mut first = acc.first_ms.clone();
    first.sort_by(f64::total_cmp);
    MethodRow {
        method,
        stage,
        drafts: scores.len(),
        unsupported_facts_per_draft: mean(&|s| s.unsupported_facts as f64),
        drafts_with_unsupported_facts: scores.iter().filter(|s| s.unsupported_facts > 0).count(),
        investigative_per_draft: mean(&|s| s.investigative as f64),
        mean_chars: mean(&|s| s.chars as f64),
        short: scores.iter().filter(|s| s.chars < 20).count(),
        ms_mean: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
        ms_p50: percentile(&ms, 0.5),
        first_text_ms_p50: percentile(&first, 0.5),
        rouge_l: mean(&|s| s.rouge_l),
        chrf: mean(&|s| s.chrf),
    }
}

/// Writes every method's draft for each held-out case, scoring each against the case's official
/// reply: first the methods without a model on every case, then the model methods on the first
/// `model_n` (the LLM is slow on a CPU). `on_progress` is called after each draft round with the
/// report so far (a long run can be stopped and still reports what it measured).
pub fn run(
    pipeline: &Pipeline,
    held_out: &[Case],
    methods: &[DraftMethod],
    model_n: usize,
    samples: usize,
    on_progress: &mut dyn FnMut(usize, &DraftsReport),
    mut report: DraftsReport,
) -> triage_core::Result<DraftsReport> {
    let mut accs: BTreeMap<DraftMethod, Acc> = BTreeMap::new();
    let (mut wo_ms, mut analyze_ms) = (Vec::new(), Vec::new());
    let mut analyses = Vec::with_capacity(held_out.len());
    for case in held_out {
        let complaint = Complaint {
            id: None,
            text: case.text.clone(),
            title: case.title.clone(),
            district: None,
            time: None,
        };
        let started = Instant::now();
        let analysis = pipeline.analyze(&complaint)?;
        analyze_ms.push(started.elapsed().as_secs_f64() * 1e3);
        if let Some(ms) = analysis.suggestion.timings_ms.get("work_order") {
            wo_ms.push(*ms);
        }
        analyses.push(analysis);
    }
    for v in [&mut wo_ms, &mut analyze_ms] {
        v.sort_by(f64::total_cmp);
    }
    report.work_order_ms_p50 = percentile(&wo_ms, 0.5);
    report.analyze_ms_p50 = percentile(&analyze_ms, 0.5);
    report.samples = held_out
        .iter()
        .take(samples)
        .map(|case| DraftSample {
            id: case.id.clone(),
            complaint: case.full_text(),
            official: case.reply.clone().unwrap_or_default(),
            drafts: BTreeMap::new(),
        })
        .collect();
    let (fast, slow): (Vec<DraftMethod>, Vec<DraftMethod>) =
        methods.iter().partition(|m| !m.uses_model());
    let mut done = 0;
    for (pass, n) in [
        (&fast, held_out.len()),
        (&slow, model_n.min(held_out.len())),
    ] {
        if pass.is_empty() {
            continue;
        }
        for (i, (case, analysis)) in held_out.iter().zip(&analyses).take(n).enumerate() {
            let official = case.reply.as_deref().unwrap_or_default();
            for &method in pass {
                let started = Instant::now();
                let mut first: Option<f64> = None;
                let draft = pipeline.draft_with(analysis, method, &mut |_| {
                    first.get_or_insert(started.elapsed().as_secs_f64() * 1e3);
                    true
                })?;
                let ms = started.elapsed().as_secs_f64() * 1e3;
                let before = pipeline.check_draft_text(analysis, &draft.raw, &draft.passages);
                let after = pipeline.check_draft_text(analysis, &draft.text, &draft.passages);
                let acc = accs.entry(method).or_default();
                acc.before.push(score(&draft.raw, &before, official));
                acc.after.push(score(&draft.text, &after, official));
                acc.ms.push(ms);
                acc.first_ms.push(first.unwrap_or(ms));
                if let Some(sample) = report.samples.get_mut(i) {
                    sample
                        .drafts
                        .insert(method.to_string(), (draft.raw.clone(), draft.text.clone()));
                }
            }
            if pass.iter().any(|m| m.uses_model()) {
                report.model_n = i + 1;
            }
            report.rows = accs
                .iter()
                .flat_map(|(&m, acc)| {
                    [
                        row(m, Stage::BeforeGuard, &acc.before, acc),
                        row(m, Stage::AfterGuard, &acc.after, acc),
                    ]
                })
                .collect();
            done += 1;
            on_progress(done, &report);
        }
    }
    Ok(report)
}

/// The report as Markdown: the table, then a few complaints with every method's draft.
pub fn markdown(report: &DraftsReport) -> String {
    let mut out = String::from("# Reply drafts, side by side\n\n");
    out.push_str(&format!(
        "{} held-out complaints of replies.jsonl (seed {}), grounded on a store of the other {} replies \
         (and {} labeled cases for the classifier); the model methods ran on the first {}. \
         Unsupported facts and investigative statements are what the faithfulness guard would change \
         (its definitions). Work order p50 {:.2} ms, analysis p50 {:.0} ms.\n\n",
        report.held_out,
        report.seed,
        report.grounding_replies,
        report.labeled_cases,
        report.model_n,
        report.work_order_ms_p50,
        report.analyze_ms_p50
    ));
    out.push_str(&table(report));
    for s in &report.samples {
        out.push_str(&format!(
            "\n## Case {}\n\n**Complaint:** {}\n\n**Official reply:** {}\n\n",
            s.id,
            clip(&s.complaint, 300),
            clip(&s.official, 300)
        ));
        out.push_str("| method | before the guard | after the guard |\n|---|---|---|\n");
        for (m, (raw, text)) in &s.drafts {
            out.push_str(&format!("| {m} | {} | {} |\n", cell(raw), cell(text)));
        }
    }
    out
}

/// The numbers as a Markdown table.
pub fn table(report: &DraftsReport) -> String {
    let mut out = String::from(
        "| method | stage | drafts | unsupported facts / draft | drafts with any | investigative / draft | chars | < 20 chars | ms / draft (p50) | first text ms (p50) | ROUGE-L | chrF |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &report.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {} | {:.2} | {:.0} | {} | {:.0} | {:.0} | {:.3} | {:.3} |\n",
            r.method,
            match r.stage {
                Stage::BeforeGuard => "before guard",
                Stage::AfterGuard => "after guard",
            },
            r.drafts,
            r.unsupported_facts_per_draft,
            r.drafts_with_unsupported_facts,
            r.investigative_per_draft,
            r.mean_chars,
            r.short,
            r.ms_p50,
            r.first_text_ms_p50,
            r.rouge_l,
            r.chrf
        ));
    }
    out
}

fn clip(text: &str, chars: usize) -> String {
    let mut s: String = text.chars().take(chars).collect();
    if text.chars().count() > chars {
        s.push('…');
    }
    s
}

fn cell(text: &str) -> String {
    markdown_cell(&clip(text, 400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_changes_are_counted_as_facts_or_claims() {
        let checked = Checked {
            text: String::new(),
            changes: vec![
                DraftCheck::UnsupportedNumber {
                    text: "2018年8月1日".into(),
                    replacement: "【日期】".into(),
                },
                DraftCheck::UnsupportedHandle {
                    text: "网友“A0001”".into(),
                    replacement: "网友".into(),
                },
                DraftCheck::InvestigativeClaim {
                    sentence: "经核实，未发现路灯不亮。".into(),
                    marker: "经核实".into(),
                    replacement: "【核实情况与处理结果】。".into(),
                },
                DraftCheck::StrayMarker { text: "###".into() },
            ],
        };
        assert_eq!(count(&checked), (2, 1));
        let s = score("您好，路灯", &checked, "您好，路灯已修复");
        assert_eq!(s.chars, 5);
        assert!(s.rouge_l > 0.5 && s.chrf > 0.0);
    }
}
