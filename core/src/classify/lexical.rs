//! `lexical`: character n-gram + word (jieba) TF-IDF features and a linear SVM. Fast and strong
//! on keywords; it alone serves batch `--fast`.

use super::sparse::{NgramFeaturizer, SparseVec};
use super::svm::LinearOvr;
use super::{ClassifierConfig, Folds};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Lexical {
    featurizer: NgramFeaturizer,
    model: LinearOvr,
    pub(super) scale: f32,
}

/// The featurizer fitted on the training texts, and every text's features.
pub(super) struct Features {
    featurizer: NgramFeaturizer,
    rows: Vec<SparseVec>,
}

impl Features {
    pub(super) fn fit(texts: &[&str], config: &ClassifierConfig) -> Self {
        let featurizer = NgramFeaturizer::fit(
            texts,
            config.ngram_bits,
            (1, config.ngram_max),
            config.lexical_max_chars,
            config.lexical_words,
        );
        let rows = texts.par_iter().map(|t| featurizer.transform(t)).collect();
        Self { featurizer, rows }
    }

    /// Raw scores of every case from a model that never saw its fold.
    pub(super) fn out_of_fold(&self, folds: &Folds, config: &ClassifierConfig) -> Vec<Vec<f32>> {
        let dim = self.featurizer.dim();
        folds.linear_out_of_fold(&self.rows, dim, config.lexical_c, config.seed)
    }

    /// The final model on every case, with its calibration scale.
    pub(super) fn fit_all(self, folds: &Folds, config: &ClassifierConfig, scale: f32) -> Lexical {
        let dim = self.featurizer.dim();
        Lexical {
            model: folds.fit_linear(&self.rows, &folds.all(), dim, config.lexical_c, config.seed),
            featurizer: self.featurizer,
            scale,
        }
    }
}

impl Lexical {
    pub(super) fn raw_scores(&self, text: &str) -> Vec<f32> {
        self.model.margins(&self.featurizer.transform(text))
    }

    /// Builds the featurizer's lookup tables after loading (the first request should not).
    pub(super) fn warm_up(&self) {
        self.featurizer.warm_up();
    }
}
