//! Classification metrics, computed from (gold, predicted) pairs and confidences.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    /// Row and column labels: gold labels first (sorted), then labels only ever predicted.
    pub labels: Vec<String>,
    /// `matrix[gold][predicted]` counts.
    pub matrix: Vec<Vec<usize>>,
}

pub fn confusion(gold: &[&str], predicted: &[&str]) -> Confusion {
    let mut labels: Vec<String> = gold.iter().map(|s| s.to_string()).collect();
    labels.sort();
    labels.dedup();
    let mut extra: Vec<String> = predicted
        .iter()
        .filter(|p| !labels.iter().any(|l| l == *p))
        .map(|s| s.to_string())
        .collect();
    extra.sort();
    extra.dedup();
    labels.extend(extra);
    let index: BTreeMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut matrix = vec![vec![0; labels.len()]; labels.len()];
    for (g, p) in gold.iter().zip(predicted) {
        matrix[index[g]][index[p]] += 1;
    }
    Confusion { labels, matrix }
}

/// Precision, recall and F1 of every label that occurs as gold. A class never predicted has
/// precision 0 (not undefined), as scikit-learn reports with `zero_division=0`.
pub fn per_class(c: &Confusion) -> BTreeMap<String, ClassMetrics> {
    let n = c.labels.len();
    let mut out = BTreeMap::new();
    for i in 0..n {
        let support: usize = c.matrix[i].iter().sum();
        if support == 0 {
            continue;
        }
        let tp = c.matrix[i][i] as f64;
        let predicted: usize = (0..n).map(|r| c.matrix[r][i]).sum();
        let precision = if predicted == 0 {
            0.0
        } else {
            tp / predicted as f64
        };
        let recall = tp / support as f64;
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        out.insert(
            c.labels[i].clone(),
            ClassMetrics {
                precision,
                recall,
                f1,
                support,
            },
        );
    }
    out
}

pub fn accuracy(gold: &[&str], predicted: &[&str]) -> f64 {
    let right = gold.iter().zip(predicted).filter(|(g, p)| g == p).count();
    right as f64 / gold.len().max(1) as f64
}

/// Mean F1 over the labels `per_class` scores (those that occur as gold). A label that is only ever
/// predicted does not count as a class here; scikit-learn's default (`labels=None`) would add it with
/// F1 0, so the two differ when a test set lacks some trained labels.
pub fn macro_f1(classes: &BTreeMap<String, ClassMetrics>) -> f64 {
    classes.values().map(|c| c.f1).sum::<f64>() / classes.len().max(1) as f64
}

pub fn weighted_f1(classes: &BTreeMap<String, ClassMetrics>) -> f64 {
    let total: usize = classes.values().map(|c| c.support).sum();
    classes
        .values()
        .map(|c| c.f1 * c.support as f64)
        .sum::<f64>()
        / total.max(1) as f64
}

/// Share of cases whose gold label is among the first `k` of the ranked predictions.
pub fn top_k_accuracy(gold: &[&str], ranked: &[Vec<&str>], k: usize) -> f64 {
    let hits = gold
        .iter()
        .zip(ranked)
        .filter(|(g, r)| r.iter().take(k).any(|p| p == *g))
        .count();
    hits as f64 / gold.len().max(1) as f64
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub mean_confidence: f64,
    pub accuracy: f64,
}

/// Equal-width bins over [0, 1]; a confidence of exactly 1 falls in the last bin.
pub fn reliability(confidence_correct: &[(f64, bool)], bins: usize) -> Vec<Bin> {
    (0..bins)
        .map(|b| {
            let (lower, upper) = (b as f64 / bins as f64, (b + 1) as f64 / bins as f64);
            let members: Vec<&(f64, bool)> = confidence_correct
                .iter()
                .filter(|(c, _)| (*c >= lower && *c < upper) || (b == bins - 1 && *c == upper))
                .collect();
            let count = members.len();
            let mean = |f: &dyn Fn(&(f64, bool)) -> f64| {
                members.iter().map(|m| f(m)).sum::<f64>() / count.max(1) as f64
            };
            Bin {
                lower,
                upper,
                count,
                mean_confidence: mean(&|m| m.0),
                accuracy: mean(&|m| if m.1 { 1.0 } else { 0.0 }),
            }
        })
        .collect()
}

/// Expected calibration error: the count-weighted mean of |accuracy − confidence| over bins.
pub fn ece(confidence_correct: &[(f64, bool)], bins: usize) -> f64 {
    let n = confidence_correct.len().max(1) as f64;
    reliability(confidence_correct, bins)
        .iter()
        .map(|b| b.count as f64 / n * (b.accuracy - b.mean_confidence).abs())
        .sum()
}

/// Nearest-rank percentile (p in 0..=100) of unsorted values; 0 for none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn hand_computed_three_classes_one_never_predicted() {
        // gold:      a a a b b c
        // predicted: a a b b b a   → c is never predicted.
        let gold = ["a", "a", "a", "b", "b", "c"];
        let pred = ["a", "a", "b", "b", "b", "a"];
        let c = confusion(&gold, &pred);
        assert_eq!(c.labels, ["a", "b", "c"]);
        assert_eq!(c.matrix, vec![vec![2, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]);
        let m = per_class(&c);
        // a: tp 2, predicted 3, support 3 → p 2/3, r 2/3, f1 2/3
        close(m["a"].precision, 2.0 / 3.0);
        close(m["a"].f1, 2.0 / 3.0);
        // b: tp 2, predicted 3, support 2 → p 2/3, r 1, f1 0.8
        close(m["b"].f1, 0.8);
        // c: never predicted → p 0, r 0, f1 0
        assert_eq!((m["c"].precision, m["c"].f1, m["c"].support), (0.0, 0.0, 1));
        close(accuracy(&gold, &pred), 4.0 / 6.0);
        close(macro_f1(&m), (2.0 / 3.0 + 0.8 + 0.0) / 3.0);
        close(weighted_f1(&m), (3.0 * 2.0 / 3.0 + 2.0 * 0.8) / 6.0);
    }

    #[test]
    fn single_class_and_predicted_only_labels() {
        let c = confusion(&["x", "x"], &["x", "y"]);
        assert_eq!(c.labels, ["x", "y"]);
        let m = per_class(&c);
        assert_eq!(m.len(), 1, "only gold labels are scored");
        close(m["x"].precision, 1.0);
        close(m["x"].recall, 0.5);
    }

    #[test]
    fn top_k_with_ties_in_order_given() {
        let ranked = vec![vec!["b", "a", "c"], vec!["c", "b", "a"]];
        close(top_k_accuracy(&["a", "a"], &ranked, 1), 0.0);
        close(top_k_accuracy(&["a", "a"], &ranked, 2), 0.5);
        close(top_k_accuracy(&["a", "a"], &ranked, 3), 1.0);
    }

    #[test]
    fn ece_by_hand() {
        // Two bins. [0, .5): conf .2 (wrong), .4 (right) → acc .5, conf .3, |.2|
        // [.5, 1]: conf .9 right, 1.0 right → acc 1, conf .95, |.05|
        let cc = [(0.2, false), (0.4, true), (0.9, true), (1.0, true)];
        close(ece(&cc, 2), 0.5 * 0.2 + 0.5 * 0.05);
        let bins = reliability(&cc, 2);
        assert_eq!((bins[0].count, bins[1].count), (2, 2));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        close(percentile(&v, 50.0), 3.0);
        close(percentile(&v, 95.0), 5.0);
        close(percentile(&v, 0.0), 1.0);
        close(percentile(&[], 50.0), 0.0);
    }
}
