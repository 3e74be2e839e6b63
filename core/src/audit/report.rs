//! `report`: what an algorithm audit asks of the log — how often call-takers kept or changed
//! the suggestions, per category, unit, district and model version.

use super::segment::{
    check_line, list_segments, list_streams, read_first_line, read_tail, Checked,
};
use super::{Entry, Incident, Models, Outcome};
use crate::text::markdown_cell;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::Path;

/// Decisions are matched to suggestions up to this long before the period starts.
const JOIN_WINDOW_DAYS: i64 = 30;

/// Acceptance and correction figures for one value of one dimension (a category, a unit, …).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RateRow {
    pub key: String,
    /// Suggestions served in the period with this value.
    pub suggestions: u64,
    pub abstained: u64,
    /// Decisions in the period on suggestions with this value.
    pub decisions: u64,
    /// Decisions whose category was kept / changed (decisions with no known suggestion count
    /// in neither).
    pub accepted: u64,
    pub corrected: u64,
    /// accepted / (accepted + corrected)
    pub acceptance_rate: Option<f64>,
    pub correction_rate: Option<f64>,
    /// The same for the unit, over decisions that name one.
    pub unit_accepted: u64,
    pub unit_corrected: u64,
    pub unit_acceptance_rate: Option<f64>,
}

impl RateRow {
    fn finish(mut self) -> Self {
        let rate = |a: u64, b: u64| (a + b > 0).then(|| a as f64 / (a + b) as f64);
        self.acceptance_rate = rate(self.accepted, self.corrected);
        self.correction_rate = rate(self.corrected, self.accepted);
        self.unit_acceptance_rate = rate(self.unit_accepted, self.unit_corrected);
        self
    }
}

/// How often a suggested value was changed into another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Correction {
    pub from: String,
    pub to: String,
    pub n: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportIncident {
    pub stream: String,
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub incident: Incident,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub streams: Vec<String>,
    /// Lines read, and lines that were not readable records (run `verify` for what they are).
    pub records_read: u64,
    pub unreadable: u64,
    pub suggestions: u64,
    pub decisions: u64,
    /// Decisions matched to their suggestion (by request id, else case id).
    pub decisions_matched: u64,
    /// Decisions with no known suggestion: in no rate.
    pub decisions_without_suggestion: u64,
    pub overall: RateRow,
    pub per_category: Vec<RateRow>,
    pub per_unit: Vec<RateRow>,
    pub per_district: Vec<RateRow>,
    pub per_model: Vec<RateRow>,
    pub per_classifier_version: Vec<RateRow>,
    /// Most frequent corrections, most frequent first.
    pub category_corrections: Vec<Correction>,
    pub unit_corrections: Vec<Correction>,
    /// Requests served without an audit record in the period (from the log's own incidents).
    pub refused_appends: u64,
    pub incidents: Vec<ReportIncident>,
}

/// What a decision is matched against.
#[derive(Clone)]
struct Suggested {
    category: Option<String>,
    unit: Option<String>,
    district: Option<String>,
    models: Models,
}

#[derive(Default)]
struct Tally {
    rows: [BTreeMap<String, RateRow>; 5],
    category_corrections: BTreeMap<(String, String), u64>,
    unit_corrections: BTreeMap<(String, String), u64>,
    overall: RateRow,
}

const CATEGORY: usize = 0;
const UNIT: usize = 1;
const DISTRICT: usize = 2;
const MODEL: usize = 3;
const CLASSIFIER: usize = 4;

impl Tally {
    /// The row of each dimension for these keys, and the overall row.
    fn rows(&mut self, keys: [&str; 5]) -> Vec<&mut RateRow> {
        let mut out: Vec<&mut RateRow> = self
            .rows
            .iter_mut()
            .zip(keys)
            .map(|(rows, key)| {
                rows.entry(key.to_string()).or_insert_with(|| RateRow {
                    key: key.to_string(),
                    ..Default::default()
                })
            })
            .collect();
        out.push(&mut self.overall);
        out
    }
}

const NONE: &str = "(none)";

/// Acceptance and correction rates for decisions and suggestions with `from <= time < to`.
pub fn report(audit_dir: &Path, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<AuditReport> {
    let join_from = from - chrono::Duration::days(JOIN_WINDOW_DAYS);
    let mut by_request: HashMap<String, Suggested> = HashMap::new();
    let mut by_case: HashMap<String, Suggested> = HashMap::new();
    let mut tally = Tally::default();
    let mut out = AuditReport {
        from,
        to,
        streams: Vec::new(),
        records_read: 0,
        unreadable: 0,
        suggestions: 0,
        decisions: 0,
        decisions_matched: 0,
        decisions_without_suggestion: 0,
        overall: RateRow::default(),
        per_category: Vec::new(),
        per_unit: Vec::new(),
        per_district: Vec::new(),
        per_model: Vec::new(),
        per_classifier_version: Vec::new(),
        category_corrections: Vec::new(),
        unit_corrections: Vec::new(),
        refused_appends: 0,
        incidents: Vec::new(),
    };
    // Decisions are tallied after every stream is read: a decision may be served by another
    // replica than its suggestion.
    let mut decisions = Vec::new();
    for (stream, dir) in list_streams(audit_dir)? {
        for (_, path) in list_segments(&dir)? {
            if !overlaps(&path, join_from, to) {
                continue;
            }
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                if reader
                    .read_until(b'\n', &mut buf)
                    .map_err(|e| Error::io(&path, e))?
                    == 0
                {
                    break;
                }
                out.records_read += 1;
                let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
                let Checked::Record { record, .. } = check_line(line) else {
                    out.unreadable += 1;
                    continue;
                };
                let in_period = from <= record.time && record.time < to;
                match record.entry {
                    Entry::Suggestion {
                        request,
                        suggestion,
                    } => {
                        let suggested = Suggested {
                            category: suggestion.category.clone(),
                            unit: suggestion.units.first().cloned(),
                            district: request.district.clone(),
                            models: request.models.clone(),
                        };
                        if in_period {
                            out.suggestions += 1;
                            let keys = keys(&suggested, suggested.district.as_deref());
                            for row in tally.rows(keys.each()) {
                                row.suggestions += 1;
                                row.abstained += u64::from(suggestion.abstain);
                            }
                        }
                        if let Some(case) = &request.case_id {
                            by_case.insert(case.clone(), suggested.clone());
                        }
                        by_request.insert(request.request_id, suggested);
                    }
                    Entry::Decision { request, decision } if in_period => {
                        decisions.push((request, decision));
                    }
                    Entry::Incident { incident } if in_period => {
                        if let Incident::Dropped { count } = incident {
                            out.refused_appends += count;
                        }
                        out.incidents.push(ReportIncident {
                            stream: stream.clone(),
                            seq: record.seq,
                            time: record.time,
                            incident,
                        });
                    }
                    Entry::Decision { .. } | Entry::Incident { .. } | Entry::Retention { .. } => {}
                }
            }
        }
        out.streams.push(stream);
    }

    for (request, decision) in decisions {
        out.decisions += 1;
        let joined = decision
            .suggestion_request_id
            .as_ref()
            .and_then(|id| by_request.get(id))
            .or_else(|| request.case_id.as_ref().and_then(|c| by_case.get(c)));
        if joined.is_some() {
            out.decisions_matched += 1;
        }
        let suggested = Suggested {
            category: decision
                .category
                .suggested
                .clone()
                .or_else(|| joined.and_then(|j| j.category.clone())),
            unit: decision
                .unit
                .as_ref()
                .and_then(|u| u.suggested.clone())
                .or_else(|| joined.and_then(|j| j.unit.clone())),
            district: request
                .district
                .clone()
                .or_else(|| joined.and_then(|j| j.district.clone())),
            models: joined.map_or(request.models.clone(), |j| j.models.clone()),
        };
        let category = outcome(
            decision.category.outcome,
            &decision.category.chosen,
            suggested.category.as_deref(),
        );
        let unit = decision.unit.as_ref().and_then(|u| {
            outcome(u.outcome, &u.chosen, suggested.unit.as_deref()).map(|o| (o, &u.chosen))
        });
        if category.is_none() {
            out.decisions_without_suggestion += 1;
        }
        if category == Some(Outcome::Corrected) {
            let pair = (
                suggested.category.clone().unwrap_or_default(),
                decision.category.chosen.clone(),
            );
            *tally.category_corrections.entry(pair).or_default() += 1;
        }
        if let Some((Outcome::Corrected, chosen)) = unit {
            let pair = (suggested.unit.clone().unwrap_or_default(), chosen.clone());
            *tally.unit_corrections.entry(pair).or_default() += 1;
        }
        let keys = keys(&suggested, suggested.district.as_deref());
        for row in tally.rows(keys.each()) {
            row.decisions += 1;
            match category {
                Some(Outcome::Accepted) => row.accepted += 1,
                Some(Outcome::Corrected) => row.corrected += 1,
                Some(Outcome::Unknown) | None => {}
            }
            match unit {
                Some((Outcome::Accepted, _)) => row.unit_accepted += 1,
                Some((Outcome::Corrected, _)) => row.unit_corrected += 1,
                Some((Outcome::Unknown, _)) | None => {}
            }
        }
    }

    let [category, unit, district, model, classifier] = tally.rows;
    let finish = |rows: BTreeMap<String, RateRow>| -> Vec<RateRow> {
        let mut rows: Vec<RateRow> = rows.into_values().map(RateRow::finish).collect();
        rows.sort_by(|a, b| {
            (b.decisions + b.suggestions)
                .cmp(&(a.decisions + a.suggestions))
                .then_with(|| a.key.cmp(&b.key))
        });
        rows
    };
    out.per_category = finish(category);
    out.per_unit = finish(unit);
    out.per_district = finish(district);
    out.per_model = finish(model);
    out.per_classifier_version = finish(classifier);
    out.overall = RateRow {
        key: "all".into(),
        ..tally.overall
    }
    .finish();
    out.category_corrections = top_corrections(tally.category_corrections);
    out.unit_corrections = top_corrections(tally.unit_corrections);
    Ok(out)
}

/// The outcome as recorded, or worked out from the suggestion the report matched.
fn outcome(recorded: Outcome, chosen: &str, suggested: Option<&str>) -> Option<Outcome> {
    match (recorded, suggested) {
        (Outcome::Accepted | Outcome::Corrected, _) => Some(recorded),
        (Outcome::Unknown, Some(s)) if s == chosen => Some(Outcome::Accepted),
        (Outcome::Unknown, Some(_)) => Some(Outcome::Corrected),
        (Outcome::Unknown, None) => None,
    }
}

struct Keys {
    category: String,
    unit: String,
    district: String,
    model: String,
    classifier: String,
}

impl Keys {
    fn each(&self) -> [&str; 5] {
        let mut keys = [""; 5];
        keys[CATEGORY] = &self.category;
        keys[UNIT] = &self.unit;
        keys[DISTRICT] = &self.district;
        keys[MODEL] = &self.model;
        keys[CLASSIFIER] = &self.classifier;
        keys
    }
}

fn keys(s: &Suggested, district: Option<&str>) -> Keys {
    Keys {
        category: s.category.clone().unwrap_or_else(|| NONE.into()),
        unit: s.unit.clone().unwrap_or_else(|| NONE.into()),
        district: district.unwrap_or(NONE).to_string(),
        model: s.models.label(),
        classifier: s.models.classifier_version.clone(),
    }
}

fn top_corrections(pairs: BTreeMap<(String, String), u64>) -> Vec<Correction> {
    let mut out: Vec<Correction> = pairs
        .into_iter()
        .map(|((from, to), n)| Correction { from, to, n })
        .collect();
    out.sort_by(|a, b| {
        b.n.cmp(&a.n)
            .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
    });
    out.truncate(20);
    out
}

/// Whether a segment may hold records in `from..to` (by its first and last record's times;
/// when they cannot be read, it is read).
fn overlaps(path: &Path, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    let time = |line: Option<Vec<u8>>| match line.as_deref().map(check_line) {
        Some(Checked::Record { record, .. }) => Some(record.time),
        _ => None,
    };
    let first = time(read_first_line(path).ok().flatten());
    let last = time(read_tail(path).ok().and_then(|t| t.line));
    !(last.is_some_and(|t| t < from) || first.is_some_and(|t| t >= to))
}

impl AuditReport {
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let pct = |r: Option<f64>| r.map_or("–".to_string(), |r| format!("{:.1}%", r * 100.0));
        let _ = writeln!(md, "# Audit report\n");
        let _ = writeln!(
            md,
            "Period: {} to {} (UTC, end excluded). Streams: {}.\n",
            self.from.to_rfc3339(),
            self.to.to_rfc3339(),
            if self.streams.is_empty() {
                "none".into()
            } else {
                self.streams.join(", ")
            }
        );
        let _ = writeln!(
            md,
            "- Suggestions served: {}\n- Decisions recorded: {} ({} matched to their suggestion, {} with no known suggestion)\n- Category acceptance: {} (correction {}); unit acceptance: {}\n- Requests served without an audit record: {}\n- Unreadable lines: {} (run `triage audit verify`)\n",
            self.suggestions,
            self.decisions,
            self.decisions_matched,
            self.decisions_without_suggestion,
            pct(self.overall.acceptance_rate),
            pct(self.overall.correction_rate),
            pct(self.overall.unit_acceptance_rate),
            self.refused_appends,
            self.unreadable,
        );
        for (title, rows) in [
            ("Per suggested category", &self.per_category),
            ("Per suggested unit", &self.per_unit),
            ("Per district", &self.per_district),
            (
                "Per model (embedder / generator / classifier)",
                &self.per_model,
            ),
            ("Per classifier version", &self.per_classifier_version),
        ] {
            let _ = writeln!(md, "## {title}\n");
            let _ = writeln!(
                md,
                "| | suggestions | abstained | decisions | accepted | corrected | acceptance | correction | unit acceptance |"
            );
            let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|--:|--:|--:|");
            for r in rows {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    markdown_cell(&r.key),
                    r.suggestions,
                    r.abstained,
                    r.decisions,
                    r.accepted,
                    r.corrected,
                    pct(r.acceptance_rate),
                    pct(r.correction_rate),
                    pct(r.unit_acceptance_rate)
                );
            }
            let _ = writeln!(md);
        }
        for (title, rows) in [
            (
                "Most frequent category corrections",
                &self.category_corrections,
            ),
            ("Most frequent unit corrections", &self.unit_corrections),
        ] {
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(
                md,
                "## {title}\n\n| suggested | chosen | n |\n|---|---|--:|"
            );
            for c in rows {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    markdown_cell(&c.from),
                    markdown_cell(&c.to),
                    c.n
                );
            }
            let _ = writeln!(md);
        }
        if !self.incidents.is_empty() {
            let _ = writeln!(md, "## Incidents recorded by the log\n");
            for i in &self.incidents {
                let _ = writeln!(
                    md,
                    "- {} seq {} at {}: {}",
                    i.stream,
                    i.seq,
                    i.time.to_rfc3339(),
                    serde_json::to_string(&i.incident).unwrap_or_default()
                );
            }
        }
        md
    }
}
