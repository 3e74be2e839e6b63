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

/// The featurizer fitted on the training texts, and every text's features: the cases' first,
/// then the extra short texts' (`LabeledText`), which only ever add training rows.
pub(super) struct Features {
    featurizer: NgramFeaturizer,
    rows: Vec<SparseVec>,
    /// Class of each extra text, and the cases it is taken for the title of
    /// (`titles::owners`): it is left out of the folds that predict them, so out-of-fold numbers
    /// never see a case's own title in training.
    extra: Vec<(usize, Vec<usize>)>,
}

impl Features {
    pub(super) fn fit(texts: &[&str], extra: &[(&str, usize)], config: &ClassifierConfig) -> Self {
        let all: Vec<&str> = texts
            .iter()
            .copied()
            .chain(extra.iter().map(|e| e.0))
            .collect();
        let featurizer = NgramFeaturizer::fit(
            &all,
            config.ngram_bits,
            (1, config.ngram_max),
            config.lexical_max_chars,
            config.lexical_words,
        );
        let rows = all.par_iter().map(|t| featurizer.transform(t)).collect();
        let shorts: Vec<&str> = extra.iter().map(|e| e.0).collect();
        let owner = super::titles::owners(&shorts, texts);
        let extra = extra.iter().zip(owner).map(|(e, o)| (e.1, o)).collect();
        Self {
            featurizer,
            rows,
            extra,
        }
    }

    /// Gold classes of every row, cases then extra texts.
    fn gold(&self, folds: &Folds) -> Vec<usize> {
        folds
            .gold
            .iter()
            .copied()
            .chain(self.extra.iter().map(|e| e.0))
            .collect()
    }

    /// The extra rows that may train a model predicting the `test` cases.
    fn extra_rows(&self, folds: &Folds, test: Option<&[usize]>) -> Vec<usize> {
        let n = folds.gold.len();
        let mut held = vec![false; n];
        test.into_iter().flatten().for_each(|&i| held[i] = true);
        self.extra
            .iter()
            .enumerate()
            .filter(|(_, (_, owners))| owners.iter().all(|&i| !held[i]))
            .map(|(j, _)| n + j)
            .collect()
    }

    fn fit_rows(
        &self,
        folds: &Folds,
        gold: &[usize],
        which: &[usize],
        config: &ClassifierConfig,
    ) -> LinearOvr {
        let dim = self.featurizer.dim();
        LinearOvr::fit_rows(
            &self.rows,
            gold,
            which,
            (folds.classes, dim),
            config.lexical_c,
            config.seed,
        )
    }

    /// Raw scores of every case from a model that never saw its fold (nor its title).
    pub(super) fn out_of_fold(&self, folds: &Folds, config: &ClassifierConfig) -> Vec<Vec<f32>> {
        let gold = self.gold(folds);
        folds.out_of_fold(|train, test| {
            let mut which = train.to_vec();
            which.extend(self.extra_rows(folds, Some(test)));
            let model = self.fit_rows(folds, &gold, &which, config);
            test.iter().map(|&i| model.margins(&self.rows[i])).collect()
        })
    }

    /// The final model on every case and extra text, with its calibration scale.
    pub(super) fn fit_all(self, folds: &Folds, config: &ClassifierConfig, scale: f32) -> Lexical {
        let mut which = folds.all();
        which.extend(self.extra_rows(folds, None));
        Lexical {
            model: self.fit_rows(folds, &self.gold(folds), &which, config),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_own_title_never_trains_the_fold_that_predicts_it() {
        let texts = [
            "小区门口的路灯坏了三个月，晚上出行很不方便",
            "学校食堂卫生很差，学生吃了拉肚子",
            "公交车司机开车太快，乘客摔倒",
        ];
        // The first is case 0's title reworded; the second belongs to no case.
        let extra = [("门口路灯坏了三个月", 0), ("医院排队时间太长", 2)];
        let config = ClassifierConfig {
            ngram_bits: 12,
            ..Default::default()
        };
        let features = Features::fit(&texts, &extra, &config);
        assert_eq!(features.rows.len(), 5);
        assert_eq!(features.extra, vec![(0, vec![0]), (2, vec![])]);
        let folds = Folds::new(vec![0, 1, 2], 3, 3, 1);
        assert_eq!(features.extra_rows(&folds, Some(&[0])), vec![4]);
        assert_eq!(features.extra_rows(&folds, Some(&[1])), vec![3, 4]);
        assert_eq!(features.extra_rows(&folds, None), vec![3, 4]);
        assert_eq!(features.gold(&folds), vec![0, 1, 2, 0, 2]);
    }
}
