//! `adapted`: the class scores of the encoder's adapted top layers (issue 16, `crate::adapt`).
//!
//! Fine-tuning is too slow on two cores for K-fold out-of-fold predictions (K fine-tunings), so
//! this method gets a held-out split instead: the encoder is fine-tuned once, on the cases of
//! every fold but the first, and predicts the first fold's cases (a fifth of them), which it
//! never saw. That model is the one deployed (no refit on everything: it would cost another
//! fine-tuning). Calibration, the ensemble's weights and the abstain threshold are then fitted on
//! the held-out fold, where every method's predictions are out of sample; whether the adapted
//! method joins the ensemble at all is decided there too, by cross-validating both ensembles
//! (with and without it) over the held-out fold's cases.

use super::calibrate::{log_softmax, threshold_for_accuracy};
use super::stack::Stacker;
use super::{confidence_correct, stratified_folds};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AdaptedMethod {
    pub(super) scale: f32,
}

/// The fold whose cases the adapted encoder never trains on.
pub(super) const HELD_OUT_FOLD: usize = 0;
/// Folds of the cross-validation over the held-out cases that compares the two ensembles.
const INNER_FOLDS: usize = 5;

/// Held-out predictions of one ensemble, and what they score.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EnsembleCheck {
    pub accuracy: f32,
    /// Mean negative log-likelihood of the gold class (lower is better: it rewards confident
    /// right answers and punishes confident wrong ones, which is what coverage depends on).
    pub log_loss: f32,
    /// Share routed automatically at the classifier's target accuracy, and at 99%.
    pub coverage: f32,
    pub coverage_99: f32,
}

/// What adapting the encoder gave, measured on the held-out fold.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdaptReport {
    /// Why the encoder was not adapted, when it was not.
    pub skipped: Option<String>,
    /// Cases the encoder was fine-tuned on, and held out.
    pub trained_on: usize,
    pub held_out: usize,
    pub seconds: f32,
    /// Accuracy of the adapted method alone on the held-out cases.
    pub accuracy: f32,
    /// The ensemble with and without the adapted method, cross-validated over the held-out
    /// cases.
    pub with: EnsembleCheck,
    pub without: EnsembleCheck,
    /// Whether the adapted method is in the ensemble.
    pub used: bool,
}

impl AdaptReport {
    pub(super) fn skipped(reason: impl Into<String>) -> Self {
        Self {
            skipped: Some(reason.into()),
            ..Default::default()
        }
    }
}

/// Cross-validated predictions (log-probabilities) of stackers over the `rows` cases: each inner
/// fold is predicted by a stacker fitted on `fit_rows(test rows)`.
pub(super) fn cross_validated(
    inputs: &[Vec<Vec<f32>>],
    gold: &[usize],
    classes: usize,
    rows: &[usize],
    seed: u64,
    fit_rows: impl Fn(&[usize]) -> Vec<usize>,
) -> Vec<Vec<f32>> {
    let inner = stratified_folds(
        &rows.iter().map(|&i| gold[i]).collect::<Vec<_>>(),
        INNER_FOLDS.min(rows.len().max(1)),
        seed,
    );
    let mut out = vec![Vec::new(); rows.len()];
    for fold in 0..INNER_FOLDS {
        let test: Vec<usize> = (0..rows.len()).filter(|&k| inner[k] == fold).collect();
        if test.is_empty() {
            continue;
        }
        let test_rows: Vec<usize> = test.iter().map(|&k| rows[k]).collect();
        let train = fit_rows(&test_rows);
        let x: Vec<Vec<Vec<f32>>> = train.iter().map(|&i| inputs[i].clone()).collect();
        let g: Vec<usize> = train.iter().map(|&i| gold[i]).collect();
        let stacker = Stacker::fit(&x, &g, classes);
        for (&k, &i) in test.iter().zip(&test_rows) {
            out[k] = stacker.log_probs(&inputs[i]);
        }
    }
    out
}

/// Scores held-out log-probabilities against their gold classes.
pub(super) fn check(log_probs: &[Vec<f32>], gold: &[usize], target: f32) -> EnsembleCheck {
    let n = gold.len().max(1) as f32;
    let confidence_correct = confidence_correct(log_probs, gold);
    let coverage = |t: f32| threshold_for_accuracy(&confidence_correct, t).map_or(0.0, |c| c.1);
    EnsembleCheck {
        accuracy: confidence_correct.iter().filter(|c| c.1).count() as f32 / n,
        log_loss: log_probs
            .iter()
            .zip(gold)
            .map(|(lp, &g)| -lp[g].max(super::stack::LOG_FLOOR))
            .sum::<f32>()
            / n,
        coverage: coverage(target),
        coverage_99: coverage(0.99),
    }
}

/// Calibrated log-probabilities of raw scores at `scale`.
pub(super) fn calibrated(scores: &[Vec<f32>], scale: f32) -> Vec<Vec<f32>> {
    scores.iter().map(|s| log_softmax(s, scale)).collect()
}
