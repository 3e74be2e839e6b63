//! Turning raw scores into calibrated probabilities, and choosing the abstain threshold.

/// log-softmax of `scores * scale`.
pub fn log_softmax(scores: &[f32], scale: f32) -> Vec<f32> {
    let max = scores
        .iter()
        .fold(f32::NEG_INFINITY, |m, &s| m.max(s * scale));
    let log_sum = scores
        .iter()
        .map(|&s| (s * scale - max).exp())
        .sum::<f32>()
        .ln()
        + max;
    scores.iter().map(|&s| s * scale - log_sum).collect()
}

pub fn softmax(scores: &[f32]) -> Vec<f32> {
    log_softmax(scores, 1.0).into_iter().map(f32::exp).collect()
}

/// Negative log-likelihood of the gold labels under `log_softmax(scores * scale)`.
fn nll(scores: &[Vec<f32>], gold: &[usize], scale: f32) -> f64 {
    scores
        .iter()
        .zip(gold)
        .map(|(s, &g)| -log_softmax(s, scale)[g] as f64)
        .sum::<f64>()
        / scores.len().max(1) as f64
}

/// Temperature scaling (Guo et al., 2017): the one multiplier of the scores that minimises the
/// NLL of held-out predictions. Golden-section search on log(scale); the NLL is convex in scale.
pub fn fit_scale(scores: &[Vec<f32>], gold: &[usize]) -> f32 {
    let (mut lo, mut hi) = (-4.0f64, 8.0f64); // scale in [e^-4, e^8]
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let f = |x: f64| nll(scores, gold, x.exp() as f32);
    let (mut a, mut b) = (hi - phi * (hi - lo), lo + phi * (hi - lo));
    let (mut fa, mut fb) = (f(a), f(b));
    for _ in 0..60 {
        if fa < fb {
            hi = b;
            b = a;
            fb = fa;
            a = hi - phi * (hi - lo);
            fa = f(a);
        } else {
            lo = a;
            a = b;
            fa = fb;
            b = lo + phi * (hi - lo);
            fb = f(b);
        }
    }
    ((lo + hi) / 2.0).exp() as f32
}

/// The lowest confidence threshold at which the cases at or above it are right at least
/// `target` of the time, with the share of cases it keeps (coverage). `None` when even the most
/// confident case alone does not reach the target.
pub fn threshold_for_accuracy(
    confidence_correct: &[(f32, bool)],
    target: f32,
) -> Option<(f32, f32)> {
    let mut sorted = confidence_correct.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut correct = 0usize;
    let mut best = None;
    for (i, &(conf, ok)) in sorted.iter().enumerate() {
        correct += ok as usize;
        let kept = i + 1;
        // Only cut between distinct confidences: equal scores can't be told apart at run time.
        let boundary = sorted.get(i + 1).is_none_or(|next| next.0 < conf);
        if boundary && correct as f32 / kept as f32 >= target {
            best = Some((conf, kept as f32 / sorted.len() as f32));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
    }

    #[test]
    fn fitted_scale_sharpens_reliable_scores() {
        // Scores always point at the gold class: the best temperature makes them sharper.
        let scores: Vec<Vec<f32>> = (0..50)
            .map(|i| {
                if i % 2 == 0 {
                    vec![1.0, 0.0]
                } else {
                    vec![0.0, 1.0]
                }
            })
            .collect();
        let gold: Vec<usize> = (0..50).map(|i| i % 2).collect();
        assert!(fit_scale(&scores, &gold) > 10.0);
        // Scores that are right half the time: the best temperature flattens them.
        let gold_noisy: Vec<usize> = (0..50).map(|i| (i / 2) % 2).collect();
        assert!(fit_scale(&scores, &gold_noisy) < 0.1);
    }

    #[test]
    fn threshold_reaches_target() {
        let cases = [
            (0.9, true),
            (0.8, true),
            (0.7, false),
            (0.6, true),
            (0.5, false),
        ];
        assert_eq!(threshold_for_accuracy(&cases, 1.0), Some((0.8, 0.4)));
        // 3 of 4 right at >= 0.6 is 0.75.
        assert_eq!(threshold_for_accuracy(&cases, 0.75), Some((0.6, 0.8)));
        assert_eq!(threshold_for_accuracy(&[(0.9, false)], 0.5), None);
        // Ties are kept together: cutting inside them is impossible.
        assert_eq!(
            threshold_for_accuracy(&[(0.9, true), (0.9, false)], 1.0),
            None
        );
    }
}
