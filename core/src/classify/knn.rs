//! `knn`: a similarity-weighted vote of the most similar labeled past cases (found by the
//! pipeline's store search, so a case stored a second ago already votes).

use super::{dot, ClassifierConfig, Folds, LabeledExample, Neighbor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Knn {
    pub(super) scale: f32,
}

impl Knn {
    /// The vote of the neighbours (best first) over `labels`.
    pub(super) fn raw_scores(
        &self,
        neighbors: &[Neighbor],
        labels: &[String],
        config: &ClassifierConfig,
    ) -> Vec<f32> {
        let index = |label: &str| labels.iter().position(|l| l == label);
        let votes: Vec<(usize, f32)> = neighbors
            .iter()
            .filter_map(|n| Some((index(n.label)?, n.score)))
            .take(config.knn_k)
            .collect();
        vote(&votes, labels.len(), config.knn_tau)
    }
}

/// log(ε + Σ exp((s − s_max) / τ)) per class: a soft vote that a single close case can win.
fn vote(votes: &[(usize, f32)], classes: usize, tau: f32) -> Vec<f32> {
    const SMOOTHING: f32 = 0.01;
    let best = votes.iter().map(|v| v.1).fold(f32::NEG_INFINITY, f32::max);
    let mut mass = vec![0f32; classes];
    for &(class, score) in votes {
        mass[class] += ((score - best) / tau).exp();
    }
    mass.into_iter().map(|m| (m + SMOOTHING).ln()).collect()
}

/// Each case's vote among the cases of the other folds.
pub(super) fn out_of_fold(
    examples: &[LabeledExample],
    folds: &Folds,
    config: &ClassifierConfig,
) -> Vec<Vec<f32>> {
    (0..examples.len())
        .into_par_iter()
        .map(|i| {
            let mut sims: Vec<(usize, f32)> = (0..examples.len())
                .filter(|&j| folds.fold[j] != folds.fold[i])
                .map(|j| (folds.gold[j], dot(examples[i].vector, examples[j].vector)))
                .collect();
            let k = config.knn_k.min(sims.len());
            if k > 0 {
                sims.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
                sims.truncate(k);
            }
            vote(&sims, folds.classes, config.knn_tau)
        })
        .collect()
}
