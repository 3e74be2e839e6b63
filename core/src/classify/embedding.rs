//! `embedding`: a linear SVM on the sentence embedding (meaning, paraphrase).

use super::sparse::{self, SparseVec};
use super::svm::LinearOvr;
use super::{ClassifierConfig, Folds, LabeledExample};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct EmbeddingHead {
    /// Mean of the training vectors: e5's vectors share a large common component, and
    /// removing it lets a linear model use the informative directions.
    mean: Vec<f32>,
    model: LinearOvr,
    pub(super) scale: f32,
}

/// The training vectors, centred.
pub(super) struct Features {
    mean: Vec<f32>,
    rows: Vec<SparseVec>,
}

impl Features {
    pub(super) fn fit(examples: &[LabeledExample]) -> Self {
        let mean = mean_vector(examples);
        let rows = examples
            .par_iter()
            .map(|e| centered(e.vector, &mean))
            .collect();
        Self { mean, rows }
    }

    pub(super) fn out_of_fold(&self, folds: &Folds, config: &ClassifierConfig) -> Vec<Vec<f32>> {
        let dim = self.mean.len();
        folds.linear_out_of_fold(&self.rows, dim, config.embedding_c, config.seed)
    }

    pub(super) fn fit_all(
        self,
        folds: &Folds,
        config: &ClassifierConfig,
        scale: f32,
    ) -> EmbeddingHead {
        let dim = self.mean.len();
        EmbeddingHead {
            model: folds.fit_linear(
                &self.rows,
                &folds.all(),
                dim,
                config.embedding_c,
                config.seed,
            ),
            mean: self.mean,
            scale,
        }
    }
}

impl EmbeddingHead {
    pub(super) fn raw_scores(&self, vector: &[f32]) -> Vec<f32> {
        self.model.margins(&centered(vector, &self.mean))
    }
}

fn mean_vector(examples: &[LabeledExample]) -> Vec<f32> {
    let dim = examples.first().map_or(0, |e| e.vector.len());
    let mut mean = vec![0f32; dim];
    for e in examples {
        mean.iter_mut().zip(e.vector).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut()
        .for_each(|m| *m /= examples.len().max(1) as f32);
    mean
}

fn centered(vector: &[f32], mean: &[f32]) -> SparseVec {
    let mut x: SparseVec = vector
        .iter()
        .zip(mean)
        .enumerate()
        .map(|(i, (v, m))| (i as u32, v - m))
        .collect();
    sparse::l2_normalize(&mut x);
    x
}
