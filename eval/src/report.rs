//! The evaluation report: what `report.json` holds, built from per-case records.

use crate::metrics::{self, Bin, ClassMetrics, Confusion};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use triage_core::classify::calibrate::threshold_for_accuracy;

/// What the system said about one test case (with a category label, a gold unit, or both).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EvalRecord {
    pub id: String,
    /// The gold category; empty (with no `methods`) when the case has no label.
    pub gold: String,
    /// Per method (and "ensemble"): (label, probability), in any order (sorted here, best first).
    pub methods: BTreeMap<String, Vec<(String, f32)>>,
    /// The units that handled the case (its `unit`, or the handlers its reply names); empty when
    /// unknown. A suggestion naming any of them is right.
    pub gold_units: Vec<String>,
    /// The router's units, best first, and the top one's probability.
    pub predicted_units: Vec<String>,
    pub unit_probability: Option<f32>,
    /// The baselines' units, best first, by baseline name.
    pub baseline_units: BTreeMap<String, Vec<String>>,
    pub duplicate_flag: Option<bool>,
    pub duplicate_gold: Option<bool>,
    pub stage_ms: BTreeMap<String, f64>,
}

/// A line of the test file that could not be evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Coverage {
    /// Share of cases at or above the threshold.
    pub coverage: f64,
    pub threshold: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AtThreshold {
    pub threshold: f64,
    pub coverage: f64,
    /// Accuracy of the cases at or above the threshold (the auto-routed ones).
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// The headline metrics of one method.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodMetrics {
    pub n: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub weighted_f1: f64,
    pub top3_accuracy: f64,
    pub ece: f64,
    pub per_class: BTreeMap<String, ClassMetrics>,
    pub confusion: Confusion,
    pub reliability: Vec<Bin>,
    /// "0.95" / "0.99" → the largest share of cases routable at that accuracy; null if none.
    pub coverage_at_accuracy: BTreeMap<String, Option<Coverage>>,
    /// (coverage, accuracy) as the threshold sweeps from the most confident case down.
    pub coverage_curve: Vec<(f64, f64)>,
}

/// How often the right unit is the first, or among the first three, suggested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitMetrics {
    pub top1: f64,
    pub top3: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub n: usize,
    pub method: String,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub weighted_f1: f64,
    pub top3_accuracy: f64,
    pub per_class: BTreeMap<String, ClassMetrics>,
    pub confusion: Confusion,
    pub ece: f64,
    pub coverage_at_accuracy: BTreeMap<String, Option<Coverage>>,
    pub at_threshold: Option<AtThreshold>,
    pub latency_ms: BTreeMap<String, Latency>,
    pub throughput_per_s: f64,
    pub methods: BTreeMap<String, MethodMetrics>,
    /// Share of the test cases with a gold unit whose first (first three) suggested units
    /// include it, over `unit_n` such cases; absent when none has one.
    pub unit_top1: Option<f64>,
    pub unit_top3: Option<f64>,
    pub unit_n: usize,
    /// Calibration of the top unit's score (15 bins), as `ece` for categories.
    pub unit_ece: Option<f64>,
    /// The same for the baselines of the same run: `directory_rule` (the directory's rule from
    /// the predicted category and extracted district) and `nearest_case` (the unit of the most
    /// similar past case with one).
    pub unit_baselines: BTreeMap<String, UnitMetrics>,
    /// The records of the cases with a gold unit (gold, router and baselines per case), written
    /// as `units.jsonl` beside the report to see where routing fails; not in `report.json`.
    #[serde(skip)]
    pub unit_records: Vec<EvalRecord>,
    pub duplicate_precision: Option<f64>,
    pub skipped: Vec<Skipped>,
    /// Gold labels of the test set that the training data never had, with counts.
    pub unknown_labels: BTreeMap<String, usize>,
    pub meta: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cv: Option<serde_json::Value>,
}

const ECE_BINS: usize = 15;
const TARGETS: [f64; 2] = [0.95, 0.99];

/// The predictions of `method` best first (callers may pass them in any order); None when absent.
fn ranked(r: &EvalRecord, method: &str) -> Option<Vec<(String, f32)>> {
    let mut p = r.methods.get(method).filter(|p| !p.is_empty())?.clone();
    p.sort_by(|a, b| b.1.total_cmp(&a.1));
    Some(p)
}

/// A confidence as the bins and thresholds see it: NaN counts as 0, the rest is clamped to [0, 1],
/// so every case lands in exactly one reliability bin.
fn confidence(p: f32) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0) as f64
    }
}

/// An f32 as the f64 with the same shortest decimal form (0.7, not 0.699999988079071).
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

pub fn method_metrics(records: &[EvalRecord], method: &str) -> Option<MethodMetrics> {
    let rows: Vec<(&str, Vec<(String, f32)>)> = records
        .iter()
        .filter_map(|r| Some((r.gold.as_str(), ranked(r, method)?)))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let gold: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let ranked: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.1.iter().map(|(l, _)| l.as_str()).collect())
        .collect();
    let predicted: Vec<&str> = ranked.iter().map(|r| r[0]).collect();
    let confidence_correct: Vec<(f64, bool)> = rows
        .iter()
        .map(|(g, p)| (confidence(p[0].1), p[0].0 == *g))
        .collect();
    let confusion = metrics::confusion(&gold, &predicted);
    let per_class = metrics::per_class(&confusion);
    let as_f32: Vec<(f32, bool)> = confidence_correct
        .iter()
        .map(|(c, ok)| (*c as f32, *ok))
        .collect();
    let coverage_at_accuracy = TARGETS
        .iter()
        .map(|t| {
            let found =
                threshold_for_accuracy(&as_f32, *t as f32).map(|(threshold, coverage)| Coverage {
                    coverage: coverage as f64,
                    threshold: decimal(threshold),
                });
            (format!("{t}"), found)
        })
        .collect();
    Some(MethodMetrics {
        n: rows.len(),
        accuracy: metrics::accuracy(&gold, &predicted),
        macro_f1: metrics::macro_f1(&per_class),
        weighted_f1: metrics::weighted_f1(&per_class),
        top3_accuracy: metrics::top_k_accuracy(&gold, &ranked, 3),
        ece: metrics::ece(&confidence_correct, ECE_BINS),
        reliability: metrics::reliability(&confidence_correct, ECE_BINS),
        per_class,
        confusion,
        coverage_at_accuracy,
        coverage_curve: coverage_curve(&confidence_correct),
    })
}

fn coverage_curve(confidence_correct: &[(f64, bool)]) -> Vec<(f64, f64)> {
    let mut sorted = confidence_correct.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let n = sorted.len();
    let step = (n / 100).max(1);
    let mut right = 0;
    let mut out = Vec::new();
    for (i, (_, ok)) in sorted.iter().enumerate() {
        right += *ok as usize;
        if (i + 1) % step == 0 || i + 1 == n {
            out.push(((i + 1) as f64 / n as f64, right as f64 / (i + 1) as f64));
        }
    }
    out
}

/// Builds the report. `primary` is the method the headline numbers describe (the ensemble);
/// `threshold` the classifier's abstain threshold; `seconds` the wall time of classification.
pub fn build_report(
    records: &[EvalRecord],
    primary: &str,
    threshold: Option<f64>,
    seconds: f64,
    skipped: Vec<Skipped>,
    unknown_labels: BTreeMap<String, usize>,
    meta: serde_json::Value,
) -> Report {
    let mut names: Vec<&String> = records.iter().flat_map(|r| r.methods.keys()).collect();
    names.sort();
    names.dedup();
    let methods: BTreeMap<String, MethodMetrics> = names
        .into_iter()
        .filter_map(|m| method_metrics(records, m).map(|mm| (m.clone(), mm)))
        .collect();
    // The headline falls back to the first method when `primary` produced nothing; `method` names
    // the one the numbers actually describe.
    let method = if methods.contains_key(primary) || methods.is_empty() {
        primary.to_string()
    } else {
        methods.keys().next().cloned().unwrap_or_default()
    };
    let head = methods.get(&method).cloned();
    // Scored over the cases the headline method answered, as its accuracy is.
    let at_threshold = threshold.map(|t| {
        let top: Vec<(f64, bool)> = records
            .iter()
            .filter_map(|r| {
                let p = ranked(r, &method)?;
                Some((confidence(p[0].1), p[0].0 == r.gold))
            })
            .collect();
        let kept: Vec<bool> = top.iter().filter(|c| c.0 >= t).map(|c| c.1).collect();
        AtThreshold {
            threshold: t,
            coverage: kept.len() as f64 / top.len().max(1) as f64,
            accuracy: kept.iter().filter(|k| **k).count() as f64 / kept.len().max(1) as f64,
        }
    });
    let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in records {
        for (stage, ms) in &r.stage_ms {
            stages.entry(stage.clone()).or_default().push(*ms);
        }
    }
    let latency_ms = stages
        .into_iter()
        .map(|(s, v)| {
            let l = Latency {
                p50: metrics::percentile(&v, 50.0),
                p95: metrics::percentile(&v, 95.0),
                p99: metrics::percentile(&v, 99.0),
            };
            (s, l)
        })
        .collect();
    let with_unit: Vec<&EvalRecord> = records
        .iter()
        .filter(|r| !r.gold_units.is_empty())
        .collect();
    let unit_metrics = |predicted: &dyn Fn(&EvalRecord) -> &[String]| -> Option<UnitMetrics> {
        if with_unit.is_empty() {
            return None;
        }
        let n = with_unit.len() as f64;
        let hit = |r: &EvalRecord, k: usize| {
            predicted(r)
                .iter()
                .take(k)
                .any(|u| r.gold_units.contains(u))
        };
        Some(UnitMetrics {
            top1: with_unit.iter().filter(|r| hit(r, 1)).count() as f64 / n,
            top3: with_unit.iter().filter(|r| hit(r, 3)).count() as f64 / n,
        })
    };
    let router = unit_metrics(&|r| &r.predicted_units);
    let mut baseline_names: Vec<&String> = with_unit
        .iter()
        .flat_map(|r| r.baseline_units.keys())
        .collect();
    baseline_names.sort();
    baseline_names.dedup();
    let unit_baselines = baseline_names
        .into_iter()
        .filter_map(|name| {
            let m = unit_metrics(&|r| {
                r.baseline_units
                    .get(name)
                    .map_or(&[] as &[String], |v| v.as_slice())
            })?;
            Some((name.clone(), m))
        })
        .collect();
    let unit_confidence: Vec<(f64, bool)> = with_unit
        .iter()
        .filter_map(|r| {
            let p = r.unit_probability?;
            let right = r
                .predicted_units
                .first()
                .is_some_and(|u| r.gold_units.contains(u));
            Some((confidence(p), right))
        })
        .collect();
    let flagged: Vec<bool> = records
        .iter()
        .filter(|r| r.duplicate_flag == Some(true))
        .filter_map(|r| r.duplicate_gold)
        .collect();
    let share = |v: &[bool]| {
        (!v.is_empty()).then(|| v.iter().filter(|x| **x).count() as f64 / v.len() as f64)
    };
    let empty = || MethodMetrics {
        n: 0,
        accuracy: 0.0,
        macro_f1: 0.0,
        weighted_f1: 0.0,
        top3_accuracy: 0.0,
        ece: 0.0,
        per_class: BTreeMap::new(),
        confusion: Confusion {
            labels: vec![],
            matrix: vec![],
        },
        reliability: vec![],
        coverage_at_accuracy: BTreeMap::new(),
        coverage_curve: vec![],
    };
    let head = head.unwrap_or_else(empty);
    Report {
        // Cases with a category label (those the category metrics describe).
        n: records.iter().filter(|r| !r.methods.is_empty()).count(),
        method,
        accuracy: head.accuracy,
        macro_f1: head.macro_f1,
        weighted_f1: head.weighted_f1,
        top3_accuracy: head.top3_accuracy,
        per_class: head.per_class.clone(),
        confusion: head.confusion.clone(),
        ece: head.ece,
        coverage_at_accuracy: head.coverage_at_accuracy.clone(),
        at_threshold,
        latency_ms,
        throughput_per_s: records.len() as f64 / seconds.max(1e-9),
        methods,
        unit_top1: router.as_ref().map(|m| m.top1),
        unit_top3: router.as_ref().map(|m| m.top3),
        unit_n: with_unit.len(),
        unit_ece: (!unit_confidence.is_empty()).then(|| metrics::ece(&unit_confidence, ECE_BINS)),
        unit_baselines,
        unit_records: with_unit.iter().map(|r| (*r).clone()).collect(),
        duplicate_precision: share(&flagged),
        skipped,
        unknown_labels,
        meta,
        baseline: None,
        cv: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(gold: &str, ranked: &[(&str, f32)]) -> EvalRecord {
        let mut methods = BTreeMap::new();
        methods.insert(
            "ensemble".to_string(),
            ranked.iter().map(|(l, p)| (l.to_string(), *p)).collect(),
        );
        EvalRecord {
            id: gold.into(),
            gold: gold.into(),
            methods,
            ..Default::default()
        }
    }

    #[test]
    fn report_headline_threshold_and_coverage() {
        let records = vec![
            record("a", &[("a", 0.9), ("b", 0.1)]),
            record("a", &[("b", 0.6), ("a", 0.4)]),
            record("b", &[("b", 0.8), ("a", 0.2)]),
            record("b", &[("b", 0.7), ("a", 0.3)]),
        ];
        let r = build_report(
            &records,
            "ensemble",
            Some(0.75),
            2.0,
            vec![],
            BTreeMap::new(),
            serde_json::json!({}),
        );
        assert_eq!(r.n, 4);
        assert!((r.accuracy - 0.75).abs() < 1e-9);
        assert!((r.top3_accuracy - 1.0).abs() < 1e-9);
        assert!((r.throughput_per_s - 2.0).abs() < 1e-9);
        let t = r.at_threshold.unwrap();
        assert!((t.coverage - 0.5).abs() < 1e-9 && (t.accuracy - 1.0).abs() < 1e-9);
        // Sorted by confidence: .9 ok, .8 ok, .7 ok, .6 wrong → 95% reachable with 3 of 4.
        let c = r.coverage_at_accuracy["0.95"].as_ref().unwrap();
        assert!((c.coverage - 0.75).abs() < 1e-9 && (c.threshold - 0.7).abs() < 1e-6);
        assert_eq!(r.unit_top1, None);
        assert_eq!(r.unit_n, 0);
    }

    #[test]
    fn predictions_in_any_order_are_ranked() {
        // Worst first: the library ranks them, so "a" (0.9) is the prediction and it is right.
        let r = build_report(
            &[record("a", &[("b", 0.1), ("a", 0.9)])],
            "ensemble",
            Some(0.5),
            1.0,
            vec![],
            BTreeMap::new(),
            serde_json::json!({}),
        );
        assert_eq!(r.accuracy, 1.0);
        let t = r.at_threshold.unwrap();
        assert_eq!((t.coverage, t.accuracy), (1.0, 1.0));
        // One bin holds the case: |1 − 0.9| (f32 0.9 widened).
        assert!((r.ece - 0.1).abs() < 1e-6);
    }

    #[test]
    fn odd_confidences_land_in_a_bin() {
        // NaN counts as 0 and 1.5 as 1: three right cases, confidences 0, 1, 0.5 → bins 0, 14, 7;
        // ECE = (1/3)(1 − 0) + (1/3)(1 − 1) + (1/3)(1 − 0.5) = 0.5.
        let records = vec![
            record("a", &[("a", f32::NAN)]),
            record("a", &[("a", 1.5)]),
            record("a", &[("a", 0.5)]),
        ];
        let r = build_report(
            &records,
            "ensemble",
            None,
            1.0,
            vec![],
            BTreeMap::new(),
            serde_json::json!({}),
        );
        let bins = &r.methods["ensemble"].reliability;
        assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), 3);
        assert!((r.ece - 0.5).abs() < 1e-9, "{}", r.ece);
    }

    #[test]
    fn headline_names_the_method_it_describes() {
        let r = build_report(
            &[record("a", &[("a", 0.9)])],
            "missing",
            None,
            1.0,
            vec![],
            BTreeMap::new(),
            serde_json::json!({}),
        );
        assert_eq!((r.method.as_str(), r.accuracy), ("ensemble", 1.0));
        let none = build_report(
            &[],
            "ensemble",
            Some(0.5),
            1.0,
            vec![],
            BTreeMap::new(),
            serde_json::json!({}),
        );
        assert_eq!(
            (none.n, none.accuracy, none.method.as_str()),
            (0, 0.0, "ensemble")
        );
    }

    #[test]
    fn thresholds_keep_their_decimal_form() {
        let records = vec![
            record("a", &[("a", 0.7)]),
            record("a", &[("b", 0.6), ("a", 0.4)]),
        ];
        let r = build_report(
            &records,
            "ensemble",
            None,
            1.0,
            vec![],
            BTreeMap::new(),
            serde_json::json!({}),
        );
        let c = r.coverage_at_accuracy["0.95"].as_ref().unwrap();
        assert_eq!((c.threshold, c.coverage), (0.7, 0.5));
    }
}
