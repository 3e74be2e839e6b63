//! The category classifier: three learned methods and a zero-shot one, combined by a calibrated
//! ensemble, with an abstain threshold chosen from data.
//!
//! - `lexical`: character n-gram + word TF-IDF + linear SVM (fast, strong on keywords),
//! - `embedding`: linear SVM on the sentence embedding (meaning, paraphrase),
//! - `knn`: a similarity-weighted vote of the most similar labeled past cases,
//! - `zero_shot`: similarity between the complaint and each category's description, so a city with
//!   a taxonomy and no labeled history still gets suggestions.
//!
//! - `adapted`: the class scores of the encoder's own top layers fine-tuned to the categories
//!   (issue 16; computed in the same encoder pass as the vector, see `crate::adapt`).
//!
//! Training computes out-of-fold predictions for every labeled case (K folds), calibrates each
//! method on them (temperature scaling), fits the ensemble on them, and picks the abstain threshold
//! that reaches the target accuracy on them. The final methods are then refitted on all cases.
//! The adapted encoder is too slow to fine-tune K times: it is held out on one fold instead (see
//! `adapted.rs`). Each method lives in its own file; `Classifier::train` orchestrates them.

mod adapted;
pub mod calibrate;
mod embedding;
mod knn;
mod lexical;
pub mod sparse;
pub mod stack;
pub mod svm;
pub mod titles;
mod zero_shot;

use crate::adapt::{AdaptConfig, AdaptJob, AdaptMode, AdaptProgress, EncoderHead};
pub use crate::vector::dot;
use crate::{Embedder, Error, Result, Taxonomy};
pub use adapted::{AdaptReport, EnsembleCheck};
use calibrate::{fit_scale, log_softmax, threshold_for_accuracy};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sparse::SparseVec;
use stack::Stacker;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use svm::LinearOvr;

/// The name of the ensemble's scores in reports (beside each `Method`'s).
pub const ENSEMBLE: &str = "ensemble";

/// Format of the saved file; bump when `Classifier`'s layout changes.
/// 2: the lexical featuriser counts words too. 3: methods are an enum, each with its model.
/// 4: the adapted encoder method and its training report. 5: coverage at 99% in the report.
const FILE_FORMAT: u32 = 5;

/// The classification methods. Their order is the order of the ensemble's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Adapted,
    Embedding,
    Knn,
    Lexical,
    ZeroShot,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Adapted => "adapted",
            Method::Embedding => "embedding",
            Method::Knn => "knn",
            Method::Lexical => "lexical",
            Method::ZeroShot => "zero_shot",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings of training. The defaults were chosen on cross-validation of the training set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassifierConfig {
    /// Folds for the out-of-fold predictions that calibrate and combine the methods.
    pub folds: usize,
    /// Neighbours that vote in `knn`.
    pub knn_k: usize,
    /// Softness of the `knn` vote: weight of a neighbour is exp(similarity / tau).
    pub knn_tau: f32,
    pub lexical_c: f32,
    pub embedding_c: f32,
    /// log2 of the number of hashed n-gram buckets.
    pub ngram_bits: u32,
    pub ngram_max: usize,
    /// Word unigrams (jieba segmentation) beside the character n-grams.
    pub lexical_words: bool,
    /// Characters of each text the lexical model reads.
    pub lexical_max_chars: usize,
    /// Accuracy the abstain threshold must reach on held-out predictions.
    pub target_accuracy: f32,
    /// Fewer labeled cases than this: zero-shot only (cold start).
    pub min_labeled: usize,
    pub seed: u64,
    /// Fine-tuning the encoder's top layers (the `adapted` method); off unless asked for.
    pub adapt: AdaptConfig,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            folds: 5,
            knn_k: 10,
            knn_tau: 0.02,
            // With word features, C = 2 was +0.2 pt out-of-fold over C = 1 on three fold seeds.
            lexical_c: 2.0,
            embedding_c: 1.0,
            ngram_bits: 19,
            ngram_max: 2,
            lexical_words: true,
            lexical_max_chars: 3000,
            target_accuracy: 0.95,
            min_labeled: 20,
            seed: 17,
            adapt: AdaptConfig::default(),
        }
    }
}

/// One labeled training case.
pub struct LabeledExample<'a> {
    pub text: &'a str,
    pub vector: &'a [f32],
    pub label: &'a str,
}

/// A short labeled text that is not a case (a call-taker's title of one): extra training rows for
/// the lexical model only. It has no vector and is never searched, so the embedding methods and
/// the store do not see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabeledText {
    pub text: String,
    pub label: String,
}

/// A labeled similar case found for a complaint, for the `knn` vote.
#[derive(Debug, Clone, Copy)]
pub struct Neighbor<'a> {
    pub label: &'a str,
    pub score: f32,
}

impl<'a> Neighbor<'a> {
    /// The labeled ones among search hits, as the neighbour method's votes.
    pub fn votes(hits: &'a [crate::store::Hit]) -> Vec<Self> {
        hits.iter()
            .filter_map(|h| {
                Some(Neighbor {
                    label: h.case.label.as_deref()?,
                    score: h.score,
                })
            })
            .collect()
    }
}

/// Probabilities over `Classifier::labels`, for the ensemble and for each method.
#[derive(Debug, Clone, Serialize)]
pub struct ClassScores {
    pub ensemble: Vec<f32>,
    pub methods: BTreeMap<Method, Vec<f32>>,
}

/// What training measured on its own out-of-fold predictions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainingReport {
    pub labeled_cases: usize,
    pub per_class: BTreeMap<String, usize>,
    /// Out-of-fold accuracy per method and for the ensemble.
    pub oof_accuracy: BTreeMap<String, f32>,
    pub method_weights: BTreeMap<String, f32>,
    /// Share of cases confident enough to be routed without review at `target_accuracy`.
    pub coverage: Option<f32>,
    /// Share that could be routed at 99% accuracy (out-of-fold, best threshold for it).
    pub coverage_99: Option<f32>,
    pub seconds: f32,
    /// Extra short texts the lexical model was trained on, beside the cases' (`LabeledText`).
    pub extra_texts: usize,
    /// What adapting the encoder gave, when it was tried.
    pub adapt: Option<AdaptReport>,
}

/// A trained method: its kind and its model, in one value (so an active method always has one).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Trained {
    Adapted(adapted::AdaptedMethod),
    Embedding(embedding::EmbeddingHead),
    Knn(knn::Knn),
    Lexical(lexical::Lexical),
    ZeroShot(zero_shot::ZeroShot),
}

impl Trained {
    fn method(&self) -> Method {
        match self {
            Trained::Adapted(_) => Method::Adapted,
            Trained::Embedding(_) => Method::Embedding,
            Trained::Knn(_) => Method::Knn,
            Trained::Lexical(_) => Method::Lexical,
            Trained::ZeroShot(_) => Method::ZeroShot,
        }
    }
}

/// A trained classifier. Saved beside the store; `version` names one training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Classifier {
    pub format: u32,
    pub version: String,
    pub embedder: String,
    pub labels: Vec<String>,
    pub config: ClassifierConfig,
    /// Confidence below which the suggestion is marked "abstain" (human review).
    pub threshold: f32,
    pub report: TrainingReport,
    /// The methods in the ensemble, in the order of the stacker's weights.
    methods: Vec<Trained>,
    stacker: Stacker,
    /// The units past cases were handled by and the routing model, trained with the classifier
    /// and saved beside it as `<version>.units.toml` (human-editable, so not in the binary file).
    #[serde(skip)]
    pub units: crate::units::LearnedUnits,
    /// The adapted encoder top of `Method::Adapted`, once bound to the embedder that runs it.
    #[serde(skip)]
    head: Option<Arc<dyn EncoderHead>>,
    /// Its weights as saved beside the classifier file (read by `load`, turned into `head` by
    /// `bind`).
    #[serde(skip)]
    head_bytes: Option<HeadBytes>,
}

/// The saved weights of an adapted encoder top (printed by size, not content).
#[derive(Clone)]
struct HeadBytes(Arc<Vec<u8>>);

impl std::fmt::Debug for HeadBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

/// The embedder a training run may adapt (issue 16), where its checkpoints go (so a killed run
/// resumes), who hears its progress, and a flag that stops it after the next checkpoint.
#[derive(Clone, Copy)]
pub struct Adaptation<'a> {
    pub embedder: &'a dyn Embedder,
    pub work_dir: Option<&'a Path>,
    pub progress: Option<&'a (dyn Fn(&AdaptProgress) + Sync)>,
    pub stop: Option<&'a AtomicBool>,
}

/// Scale of cosine similarities in zero-shot when no labeled data calibrates it (tau = 0.02).
const COLD_START_ZERO_SHOT_SCALE: f32 = 50.0;
/// Abstain threshold when there is no labeled data to choose one from.
const COLD_START_THRESHOLD: f32 = 0.5;

/// The cross-validation folds of the training cases, with their gold class indices.
struct Folds {
    /// The fold of each case.
    fold: Vec<usize>,
    gold: Vec<usize>,
    classes: usize,
    k: usize,
}

impl Folds {
    fn new(gold: Vec<usize>, classes: usize, k: usize, seed: u64) -> Self {
        let k = k.min(gold.len());
        Self {
            fold: stratified_folds(&gold, k, seed),
            gold,
            classes,
            k,
        }
    }

    fn all(&self) -> Vec<usize> {
        (0..self.gold.len()).collect()
    }

    /// A linear SVM on the `which` rows of `features` (`dim` long), with cost `c`.
    fn fit_linear(
        &self,
        features: &[SparseVec],
        which: &[usize],
        dim: usize,
        c: f32,
        seed: u64,
    ) -> LinearOvr {
        LinearOvr::fit_rows(features, &self.gold, which, (self.classes, dim), c, seed)
    }

    /// The out-of-fold margins of `fit_linear` for every case.
    fn linear_out_of_fold(
        &self,
        features: &[SparseVec],
        dim: usize,
        c: f32,
        seed: u64,
    ) -> Vec<Vec<f32>> {
        self.out_of_fold(|train, test| {
            let model = self.fit_linear(features, train, dim, c, seed);
            test.iter().map(|&i| model.margins(&features[i])).collect()
        })
    }

    /// One row of raw scores per case, each predicted by `predict(train rows, test rows)` for the
    /// fold the case is in.
    fn out_of_fold(
        &self,
        mut predict: impl FnMut(&[usize], &[usize]) -> Vec<Vec<f32>>,
    ) -> Vec<Vec<f32>> {
        let mut out = vec![Vec::new(); self.gold.len()];
        for fold in 0..self.k {
            let train: Vec<usize> = (0..self.gold.len())
                .filter(|&i| self.fold[i] != fold)
                .collect();
            let test: Vec<usize> = (0..self.gold.len())
                .filter(|&i| self.fold[i] == fold)
                .collect();
            for (i, scores) in test.iter().zip(predict(&train, &test)) {
                out[*i] = scores;
            }
        }
        out
    }
}

impl Classifier {
    /// Trains on labeled examples. `profiles` holds the embedding of each taxonomy category's
    /// profile (same order as `taxonomy.categories`), for zero-shot; pass `None` to leave it out.
    pub fn train(
        examples: &[LabeledExample],
        taxonomy: &Taxonomy,
        profiles: Option<&[Vec<f32>]>,
        embedder: &str,
        config: ClassifierConfig,
    ) -> Result<Self> {
        Self::train_adapting(examples, &[], taxonomy, profiles, embedder, config, None)
    }

    /// `train`, adapting the encoder's top layers as `config.adapt` says when `adaptation` gives
    /// an embedder that can, and with `extra` short texts as more training rows of the lexical
    /// model (those whose label is not in the label space are left out).
    #[allow(clippy::too_many_arguments)]
    pub fn train_adapting(
        examples: &[LabeledExample],
        extra: &[LabeledText],
        taxonomy: &Taxonomy,
        profiles: Option<&[Vec<f32>]>,
        embedder: &str,
        config: ClassifierConfig,
        adaptation: Option<Adaptation>,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        let labels = label_space(taxonomy, examples);
        let index: BTreeMap<&str, usize> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), i))
            .collect();
        let gold: Vec<usize> = examples.iter().map(|e| index[e.label]).collect();
        let extra: Vec<(&str, usize)> = extra
            .iter()
            .filter_map(|e| Some((e.text.trim(), *index.get(e.label.as_str())?)))
            .filter(|(t, _)| !t.is_empty())
            .collect();
        let zero_shot = profiles.map(|p| zero_shot::ZeroShot::new(&labels, taxonomy, p, 1.0));

        let mut report = TrainingReport {
            labeled_cases: examples.len(),
            ..Default::default()
        };
        for e in examples {
            *report.per_class.entry(e.label.to_string()).or_default() += 1;
        }
        let distinct = report.per_class.len();
        let mut classifier = Classifier {
            format: FILE_FORMAT,
            version: version_now(),
            embedder: embedder.to_string(),
            labels,
            config: config.clone(),
            threshold: COLD_START_THRESHOLD,
            report,
            methods: Vec::new(),
            stacker: Stacker::uniform(0, 0),
            units: Default::default(),
            head: None,
            head_bytes: None,
        };
        let classes = classifier.labels.len();

        if examples.len() < config.min_labeled || distinct < 2 {
            // Cold start: only the taxonomy's descriptions to go on.
            let mut zero_shot = zero_shot.ok_or_else(|| {
                Error::NotReady(format!(
                    "{} labeled cases (need {} in 2+ categories) and no category descriptions for zero-shot",
                    examples.len(),
                    config.min_labeled
                ))
            })?;
            zero_shot.scale = COLD_START_ZERO_SHOT_SCALE;
            classifier.methods = vec![Trained::ZeroShot(zero_shot)];
            classifier.stacker = Stacker::uniform(1, classes);
            classifier.report.seconds = started.elapsed().as_secs_f32();
            return Ok(classifier);
        }

        // Out-of-fold raw scores of every method.
        let texts: Vec<&str> = examples.iter().map(|e| e.text).collect();
        classifier.report.extra_texts = extra.len();
        let lexical = lexical::Features::fit(&texts, &extra, &config);
        let embedding = embedding::Features::fit(examples);
        let folds = Folds::new(gold, classes, config.folds, config.seed);
        let mut raw: BTreeMap<Method, Vec<Vec<f32>>> = BTreeMap::new();
        raw.insert(Method::Lexical, lexical.out_of_fold(&folds, &config));
        raw.insert(Method::Embedding, embedding.out_of_fold(&folds, &config));
        raw.insert(Method::Knn, knn::out_of_fold(examples, &folds, &config));
        if let Some(zs) = &zero_shot {
            let scores = examples
                .par_iter()
                .map(|e| zs.raw_scores(e.vector))
                .collect();
            raw.insert(Method::ZeroShot, scores);
        }

        // Calibrate each method, then the ensemble, on the out-of-fold scores.
        let gold = &folds.gold;
        let mut scales = BTreeMap::new();
        let mut calibrated: BTreeMap<Method, Vec<Vec<f32>>> = BTreeMap::new();
        for (&method, scores) in &raw {
            let scale = fit_scale(scores, gold);
            scales.insert(method, scale);
            calibrated.insert(
                method,
                scores.iter().map(|s| log_softmax(s, scale)).collect(),
            );
            classifier
                .report
                .oof_accuracy
                .insert(method.to_string(), accuracy(scores, gold));
        }
        let active: Vec<Method> = calibrated.keys().copied().collect();
        let inputs: Vec<Vec<Vec<f32>>> = (0..examples.len())
            .map(|i| active.iter().map(|m| calibrated[m][i].clone()).collect())
            .collect();
        let stacker = Stacker::fit(&inputs, gold, classes);
        // The ensemble's out-of-fold numbers and its threshold are read from stackers that did not
        // see the case either (cross-fitted over the out-of-fold rows): read from the stacker
        // fitted on every row, the threshold sat on its own training data and the routed cases
        // fell short of the target accuracy out of sample.
        let ensemble =
            adapted::cross_validated(&inputs, gold, classes, &folds.all(), config.seed, |test| {
                complement(examples.len(), test)
            });
        classifier
            .report
            .oof_accuracy
            .insert(ENSEMBLE.to_string(), accuracy(&ensemble, gold));
        for (m, w) in active.iter().zip(stacker.method_weights()) {
            classifier.report.method_weights.insert(m.to_string(), w);
        }
        classifier.set_threshold(&confidence_correct(&ensemble, gold));

        // The adapted encoder, held out on one fold; it joins the ensemble when that pays.
        let mut stacker = stacker;
        let mut adapted_method = None;
        if config.adapt.mode != AdaptMode::Off {
            let (report, chosen) = match adaptation {
                None => (AdaptReport::skipped("no embedder to adapt was given"), None),
                Some(a) if !a.embedder.can_adapt() => (
                    AdaptReport::skipped(format!("the embedder {embedder} cannot be adapted")),
                    None,
                ),
                Some(_) if examples.len() < config.adapt.min_cases => (
                    AdaptReport::skipped(format!(
                        "{} labeled cases, fewer than the {} adaptation needs",
                        examples.len(),
                        config.adapt.min_cases
                    )),
                    None,
                ),
                Some(a) => adapt_encoder(a, examples, &folds, &inputs, &config)?,
            };
            if let Some(chosen) = chosen {
                classifier
                    .report
                    .oof_accuracy
                    .insert(Method::Adapted.to_string(), report.accuracy);
                classifier
                    .report
                    .oof_accuracy
                    .insert(ENSEMBLE.to_string(), report.with.accuracy);
                classifier.report.method_weights.clear();
                let mut methods = vec![Method::Adapted];
                methods.extend(&active);
                for (m, w) in methods.iter().zip(chosen.stacker.method_weights()) {
                    classifier.report.method_weights.insert(m.to_string(), w);
                }
                classifier.set_threshold(&chosen.confidence_correct);
                stacker = chosen.stacker;
                classifier.head_bytes = Some(HeadBytes(Arc::new(chosen.head.to_bytes()?)));
                classifier.head = Some(chosen.head);
                adapted_method = Some(Trained::Adapted(adapted::AdaptedMethod {
                    scale: chosen.scale,
                }));
            }
            classifier.report.adapt = Some(report);
        }

        // Final models on all labeled cases, in `Method` order: the order of `raw`'s keys, and
        // so of the stacker's inputs.
        let scale = |m: Method| scales[&m];
        classifier.methods = adapted_method.into_iter().collect();
        classifier.methods.extend([
            Trained::Embedding(embedding.fit_all(&folds, &config, scale(Method::Embedding))),
            Trained::Knn(knn::Knn {
                scale: scale(Method::Knn),
            }),
            Trained::Lexical(lexical.fit_all(&folds, &config, scale(Method::Lexical))),
        ]);
        if let Some(mut zero_shot) = zero_shot {
            zero_shot.scale = scale(Method::ZeroShot);
            classifier.methods.push(Trained::ZeroShot(zero_shot));
        }
        debug_assert_eq!(stacker.weights.len(), classifier.methods.len());
        classifier.stacker = stacker;
        classifier.report.seconds = started.elapsed().as_secs_f32();
        Ok(classifier)
    }

    /// Scores one complaint. `neighbors` are the labeled similar cases found in the store;
    /// `adapted` the raw scores of the adapted encoder (`Embedded::scores`), which a classifier
    /// with that method needs.
    pub fn predict(
        &self,
        text: &str,
        vector: &[f32],
        adapted: Option<&[f32]>,
        neighbors: &[Neighbor],
    ) -> Result<ClassScores> {
        let mut methods = BTreeMap::new();
        let mut inputs = Vec::with_capacity(self.methods.len());
        for trained in &self.methods {
            let (raw, scale) = match trained {
                Trained::Adapted(m) => match adapted {
                    Some(scores) if scores.len() == self.labels.len() => (scores.to_vec(), m.scale),
                    _ => {
                        return Err(Error::InvalidInput(
                            "this classifier needs the adapted encoder's scores of the complaint"
                                .into(),
                        ))
                    }
                },
                Trained::Lexical(m) => (m.raw_scores(text), m.scale),
                Trained::Embedding(m) => (m.raw_scores(vector), m.scale),
                Trained::Knn(m) => (m.raw_scores(neighbors, &self.labels, &self.config), m.scale),
                Trained::ZeroShot(m) => (m.raw_scores(vector), m.scale),
            };
            let log_probs = log_softmax(&raw, scale);
            methods.insert(
                trained.method(),
                log_probs.iter().map(|lp| lp.exp()).collect(),
            );
            inputs.push(log_probs);
        }
        let ensemble = self
            .stacker
            .log_probs(&inputs)
            .into_iter()
            .map(f32::exp)
            .collect();
        Ok(ClassScores { ensemble, methods })
    }

    /// The adapted encoder top the pipeline must run for each complaint, if the ensemble has one.
    pub fn head(&self) -> Option<&Arc<dyn EncoderHead>> {
        self.head.as_ref()
    }

    /// Makes the adapted encoder top from its saved weights with the embedder that runs it (a
    /// loaded classifier; a freshly trained one already has it). Refused when the weights were
    /// fitted on another embedder.
    pub fn bind(&mut self, embedder: &dyn Embedder) -> Result<()> {
        if self.head.is_some() || !self.methods().contains(&Method::Adapted) {
            return Ok(());
        }
        let bytes = self.head_bytes.as_ref().ok_or_else(|| {
            Error::InvalidInput("the classifier's adapted encoder layers were not loaded".into())
        })?;
        let head = embedder.load_head(&bytes.0)?;
        if head.classes() != self.labels.len() {
            return Err(Error::InvalidInput(format!(
                "the adapted encoder layers score {} classes, the classifier has {}: run `triage train`",
                head.classes(),
                self.labels.len()
            )));
        }
        self.head = Some(head);
        Ok(())
    }

    /// Where the adapted encoder layers of the classifier saved at `path` are kept: beside it,
    /// `<version>.adapt.safetensors`.
    pub fn adapt_path(path: &Path) -> PathBuf {
        path.with_extension("adapt.safetensors")
    }

    /// The threshold (and its coverage) that reaches the target accuracy on held-out
    /// (confidence, correct) pairs.
    fn set_threshold(&mut self, confidence_correct: &[(f32, bool)]) {
        self.report.coverage_99 = Some(
            threshold_for_accuracy(confidence_correct, 0.99).map_or(0.0, |(_, coverage)| coverage),
        );
        match threshold_for_accuracy(confidence_correct, self.config.target_accuracy) {
            Some((threshold, coverage)) => {
                self.threshold = threshold;
                self.report.coverage = Some(coverage);
            }
            None => {
                self.threshold = 1.0;
                self.report.coverage = Some(0.0);
            }
        }
    }

    /// Scores with the lexical model alone: no embedding or search needed (batch `--fast`).
    /// The scores are the lexical method's, as the ensemble's and as its only method's.
    pub fn predict_lexical(&self, text: &str) -> Option<ClassScores> {
        let lexical = self.methods.iter().find_map(|m| match m {
            Trained::Lexical(l) => Some(l),
            _ => None,
        })?;
        let probs: Vec<f32> = log_softmax(&lexical.raw_scores(text), lexical.scale)
            .into_iter()
            .map(f32::exp)
            .collect();
        Some(ClassScores {
            methods: BTreeMap::from([(Method::Lexical, probs.clone())]),
            ensemble: probs,
        })
    }

    /// Whether the ensemble uses the `knn` vote (callers then search for labeled neighbours).
    pub fn uses_neighbors(&self) -> bool {
        self.methods.iter().any(|m| matches!(m, Trained::Knn(_)))
    }

    /// The methods in the ensemble.
    pub fn methods(&self) -> Vec<Method> {
        self.methods.iter().map(Trained::method).collect()
    }

    /// Writes the classifier to `path` (`<version>.bin`), its learned units beside it
    /// (`<version>.units.toml`) and its adapted encoder layers (`<version>.adapt.safetensors`),
    /// those first: a reader that finds the classifier finds them.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.units.save(&Self::units_path(path))?;
        let head_bytes = match (&self.head_bytes, &self.head) {
            (Some(bytes), _) => Some(bytes.0.clone()),
            (None, Some(head)) => Some(Arc::new(head.to_bytes()?)),
            (None, None) => None,
        };
        if let Some(bytes) = head_bytes {
            crate::fsutil::write_atomic(&Self::adapt_path(path), &bytes)?;
        }
        let bytes = bincode::serialize(self).map_err(|e| Error::InvalidInput(e.to_string()))?;
        crate::fsutil::write_atomic(path, &bytes)
    }

    /// Where the learned units of the classifier at `path` live.
    pub fn units_path(path: &Path) -> std::path::PathBuf {
        path.with_extension("units.toml")
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let classifier: Classifier = bincode::deserialize(&bytes).map_err(|e| {
            Error::InvalidInput(format!(
                "{} is not a classifier file ({e}); run `triage train`",
                path.display()
            ))
        })?;
        if classifier.format != FILE_FORMAT {
            return Err(Error::InvalidInput(format!(
                "{} has classifier format {}, this build reads {FILE_FORMAT}; run `triage train`",
                path.display(),
                classifier.format
            )));
        }
        let mut classifier = classifier;
        for method in &classifier.methods {
            if let Trained::Lexical(lexical) = method {
                lexical.warm_up();
            }
        }
        // A classifier trained before units were learned has none: the directory alone routes.
        let units = Self::units_path(path);
        if units.exists() {
            classifier.units = crate::units::LearnedUnits::load(&units)?;
        }
        if classifier.methods().contains(&Method::Adapted) {
            let adapt = Self::adapt_path(path);
            let bytes = std::fs::read(&adapt).map_err(|e| Error::io(&adapt, e))?;
            classifier.head_bytes = Some(HeadBytes(Arc::new(bytes)));
        }
        Ok(classifier)
    }
}

/// What the adapted method brings to the ensemble when it is used.
struct Chosen {
    head: Arc<dyn EncoderHead>,
    scale: f32,
    /// Fitted on the held-out fold, with the adapted method's log-probabilities first.
    stacker: Stacker,
    /// (confidence, correct) of the ensemble on the held-out fold, cross-validated: for the
    /// threshold.
    confidence_correct: Vec<(f32, bool)>,
}

/// Fine-tunes the encoder on every fold but the held-out one and compares the ensembles with and
/// without its predictions there. `inputs[i]` are the other methods' calibrated out-of-fold
/// log-probabilities of case i (in the order of the stacker without the adapted method).
fn adapt_encoder(
    a: Adaptation,
    examples: &[LabeledExample],
    folds: &Folds,
    inputs: &[Vec<Vec<f32>>],
    config: &ClassifierConfig,
) -> Result<(AdaptReport, Option<Chosen>)> {
    let n = examples.len();
    let held_out: Vec<bool> = folds
        .fold
        .iter()
        .map(|&f| f == adapted::HELD_OUT_FOLD)
        .collect();
    let held: Vec<usize> = (0..n).filter(|&i| held_out[i]).collect();
    let texts: Vec<&str> = examples.iter().map(|e| e.text).collect();
    let job = AdaptJob {
        texts: &texts,
        kind: crate::pipeline::COMPLAINT_EMBEDDING,
        gold: &folds.gold,
        classes: folds.classes,
        held_out: &held_out,
        config: &config.adapt,
        work_dir: a.work_dir.map(Path::to_path_buf),
        progress: a.progress,
        stop: a.stop,
    };
    let fitted = a.embedder.adapt(&job)?;
    let gold_held: Vec<usize> = held.iter().map(|&i| folds.gold[i]).collect();
    let scale = fit_scale(&fitted.held_out_scores, &gold_held);
    let with_inputs: Vec<Vec<Vec<f32>>> = held
        .iter()
        .zip(adapted::calibrated(&fitted.held_out_scores, scale))
        .map(|(&i, own)| {
            std::iter::once(own)
                .chain(inputs[i].iter().cloned())
                .collect()
        })
        .collect();
    let classes = folds.classes;
    let positions: Vec<usize> = (0..held.len()).collect();
    let others = complement;
    // With it: fitted on the other held-out cases (the only ones with its predictions).
    let with_lp = adapted::cross_validated(
        &with_inputs,
        &gold_held,
        classes,
        &positions,
        config.seed,
        |test| others(held.len(), test),
    );
    // Without it: fitted on every other case, as the ensemble without adaptation is.
    let without_lp =
        adapted::cross_validated(inputs, &folds.gold, classes, &held, config.seed, |test| {
            others(n, test)
        });
    let with = adapted::check(&with_lp, &gold_held, config.target_accuracy);
    let without = adapted::check(&without_lp, &gold_held, config.target_accuracy);
    let used = config.adapt.mode == AdaptMode::On || pays(&with, &without);
    let report = AdaptReport {
        skipped: None,
        trained_on: n - held.len(),
        held_out: held.len(),
        seconds: fitted.seconds,
        accuracy: accuracy(&fitted.held_out_scores, &gold_held),
        with,
        without,
        used,
    };
    let chosen = used.then(|| Chosen {
        head: fitted.head,
        scale,
        stacker: Stacker::fit(&with_inputs, &gold_held, classes),
        confidence_correct: with_lp
            .iter()
            .zip(&gold_held)
            .map(|(lp, &g)| {
                let best = argmax(lp);
                (lp[best].exp(), best == g)
            })
            .collect(),
    });
    Ok((report, chosen))
}

/// Whether the ensemble with the adapted method beats the one without on the held-out fold: a
/// lower log-loss, and no fewer right answers. (Log-loss alone once kept a method that lowered
/// held-out accuracy from 0.910 to 0.904 for a 0.5% lower log-loss: README, "Adapting the
/// encoder".)
fn pays(with: &adapted::EnsembleCheck, without: &adapted::EnsembleCheck) -> bool {
    with.log_loss < without.log_loss && with.accuracy >= without.accuracy
}

/// The rows of `0..total` not in `test`.
fn complement(total: usize, test: &[usize]) -> Vec<usize> {
    let mut keep = vec![true; total];
    test.iter().for_each(|&i| keep[i] = false);
    (0..total).filter(|&i| keep[i]).collect()
}

/// Taxonomy categories first (in their order), then labels seen in data that it lacks.
fn label_space(taxonomy: &Taxonomy, examples: &[LabeledExample]) -> Vec<String> {
    let mut labels = taxonomy.ids();
    for e in examples {
        if !labels.iter().any(|l| l == e.label) {
            labels.push(e.label.to_string());
        }
    }
    labels
}

/// Assigns each example to one of `k` folds, keeping class proportions; seeded and stable.
pub fn stratified_folds(gold: &[usize], k: usize, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &g) in gold.iter().enumerate() {
        by_class.entry(g).or_default().push(i);
    }
    let mut folds = vec![0; gold.len()];
    let mut next = 0;
    for members in by_class.values_mut() {
        members.shuffle(&mut rng);
        for &i in members.iter() {
            folds[i] = next % k.max(1);
            next += 1;
        }
    }
    folds
}

pub fn argmax(xs: &[f32]) -> usize {
    (0..xs.len())
        .max_by(|&a, &b| xs[a].total_cmp(&xs[b]))
        .unwrap_or(0)
}

/// Each case's top probability and whether its top class is the gold one (what thresholds and
/// coverage are read from).
fn confidence_correct(log_probs: &[Vec<f32>], gold: &[usize]) -> Vec<(f32, bool)> {
    log_probs
        .iter()
        .zip(gold)
        .map(|(lp, &g)| {
            let best = argmax(lp);
            (lp[best].exp(), best == g)
        })
        .collect()
}

fn accuracy(scores: &[Vec<f32>], gold: &[usize]) -> f32 {
    let right = scores
        .iter()
        .zip(gold)
        .filter(|(s, &g)| argmax(s) == g)
        .count();
    right as f32 / gold.len().max(1) as f32
}

fn version_now() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// Trains on labeled cases (with their vectors), with zero-shot profiles of the taxonomy's
/// categories embedded by `embedder` (the same model that embedded the cases).
pub fn train_from_cases(
    cases: &[(crate::Case, Vec<f32>)],
    embedder: &dyn crate::Embedder,
    taxonomy: &Taxonomy,
    config: ClassifierConfig,
    adaptation: Option<Adaptation>,
    extra: &[LabeledText],
) -> Result<Classifier> {
    // Labels are matched to the taxonomy by id or name; unknown labels stay as they are.
    let labels: Vec<String> = cases
        .iter()
        .map(|(c, _)| {
            let label = c.label.as_deref().unwrap_or_default();
            taxonomy
                .resolve(label)
                .map_or_else(|| label.to_string(), |cat| cat.id.clone())
        })
        .collect();
    let texts: Vec<String> = cases.iter().map(|(c, _)| c.full_text()).collect();
    let examples: Vec<LabeledExample> = cases
        .iter()
        .zip(&texts)
        .zip(&labels)
        .map(|(((_, vector), text), label)| LabeledExample {
            text,
            vector,
            label,
        })
        .collect();
    let profiles: Vec<String> = taxonomy.categories.iter().map(|c| c.profile()).collect();
    let profile_refs: Vec<&str> = profiles.iter().map(String::as_str).collect();
    let profile_vectors = if profile_refs.is_empty() {
        None
    } else {
        Some(embedder.embed(&profile_refs, crate::EmbedKind::Passage)?)
    };
    let extra: Vec<LabeledText> = extra
        .iter()
        .map(|e| LabeledText {
            text: e.text.clone(),
            label: taxonomy
                .resolve(&e.label)
                .map_or_else(|| e.label.clone(), |cat| cat.id.clone()),
        })
        .collect();
    Classifier::train_adapting(
        &examples,
        &extra,
        taxonomy,
        profile_vectors.as_deref(),
        embedder.model_id(),
        config,
        adaptation,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Vec<(String, Vec<f32>, String)>, Taxonomy) {
        let topics = [
            ("交通", "公交车 路线 拥堵 司机"),
            ("教育", "学校 老师 学生 学费"),
            ("环境", "噪音 污水 垃圾 排放"),
        ];
        let mut rows = Vec::new();
        for i in 0..60 {
            let (label, words) = topics[i % 3];
            let w: Vec<&str> = words.split(' ').collect();
            let text = format!("{}{}的问题{}", w[i % 4], w[(i / 3) % 4], i);
            let mut v = vec![0.0f32; 4];
            v[i % 3] = 1.0;
            v[3] = 0.1 * (i % 5) as f32;
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= n);
            rows.push((text, v, label.to_string()));
        }
        let taxonomy = Taxonomy::from_labels(topics.iter().map(|t| t.0.to_string()));
        (rows, taxonomy)
    }

    #[test]
    fn trains_predicts_and_round_trips() {
        let (rows, taxonomy) = toy();
        let examples: Vec<LabeledExample> = rows
            .iter()
            .map(|(t, v, l)| LabeledExample {
                text: t,
                vector: v,
                label: l,
            })
            .collect();
        let config = ClassifierConfig {
            ngram_bits: 12,
            ..Default::default()
        };
        let c = Classifier::train(&examples, &taxonomy, None, "toy", config).unwrap();
        assert_eq!(
            c.methods(),
            [Method::Embedding, Method::Knn, Method::Lexical]
        );
        let scores = c
            .predict("学校老师乱收学费", &[0.0, 1.0, 0.0, 0.0], None, &[])
            .unwrap();
        assert_eq!(c.labels[argmax(&scores.ensemble)], "教育");
        assert!((scores.ensemble.iter().sum::<f32>() - 1.0).abs() < 1e-4);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("classifier.bin");
        c.save(&path).unwrap();
        let loaded = Classifier::load(&path).unwrap();
        assert_eq!(loaded.version, c.version);
        assert_eq!(
            loaded
                .predict("学校老师乱收学费", &[0.0, 1.0, 0.0, 0.0], None, &[])
                .unwrap()
                .ensemble,
            scores.ensemble
        );
    }

    #[test]
    fn cold_start_uses_zero_shot() {
        let (_, taxonomy) = toy();
        let profiles = vec![
            vec![1.0, 0.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0, 0.0],
            vec![0.0, 0.0, 1.0, 0.0],
        ];
        let c = Classifier::train(
            &[],
            &taxonomy,
            Some(&profiles),
            "toy",
            ClassifierConfig::default(),
        )
        .unwrap();
        assert_eq!(c.methods(), [Method::ZeroShot]);
        let s = c.predict("", &[0.1, 0.2, 0.97, 0.0], None, &[]).unwrap();
        assert_eq!(c.labels[argmax(&s.ensemble)], "环境");
        assert!(
            Classifier::train(&[], &taxonomy, None, "toy", ClassifierConfig::default()).is_err()
        );
    }

    /// An embedder whose "adapted encoder" is a stand-in: its held-out scores point at the gold
    /// class (`informative`) or at a class unrelated to it. The real one is tested in
    /// triage-models and end to end in the server's tests; this checks the classifier's side.
    struct StandIn {
        informative: bool,
    }

    #[derive(Debug)]
    struct StandInHead(usize);

    impl EncoderHead for StandInHead {
        fn to_bytes(&self) -> Result<Vec<u8>> {
            Ok(vec![self.0 as u8])
        }
        fn classes(&self) -> usize {
            self.0
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    impl Embedder for StandIn {
        fn model_id(&self) -> &str {
            "toy"
        }
        fn dim(&self) -> usize {
            4
        }
        fn max_tokens(&self) -> usize {
            8
        }
        fn embed(&self, texts: &[&str], _: crate::EmbedKind) -> Result<Vec<Vec<f32>>> {
            Ok(texts.iter().map(|_| vec![0.5; 4]).collect())
        }
        fn can_adapt(&self) -> bool {
            true
        }
        fn adapt(&self, job: &AdaptJob) -> Result<crate::adapt::Adapted> {
            let held_out_scores = (0..job.texts.len())
                .filter(|&i| job.held_out[i])
                .map(|i| {
                    let class = if self.informative {
                        job.gold[i]
                    } else {
                        (i * 7 / 3) % job.classes
                    };
                    let mut s = vec![0.0; job.classes];
                    s[class] = 3.0;
                    s
                })
                .collect();
            Ok(crate::adapt::Adapted {
                head: Arc::new(StandInHead(job.classes)),
                held_out_scores,
                seconds: 0.0,
            })
        }
        fn load_head(&self, bytes: &[u8]) -> Result<Arc<dyn EncoderHead>> {
            Ok(Arc::new(StandInHead(bytes[0] as usize)))
        }
    }

    /// An embedder without adaptation.
    struct Plain;

    impl Embedder for Plain {
        fn model_id(&self) -> &str {
            "toy"
        }
        fn dim(&self) -> usize {
            4
        }
        fn max_tokens(&self) -> usize {
            8
        }
        fn embed(&self, texts: &[&str], _: crate::EmbedKind) -> Result<Vec<Vec<f32>>> {
            Ok(texts.iter().map(|_| vec![0.5; 4]).collect())
        }
    }

    fn train_with_stand_in(informative: bool, mode: AdaptMode) -> Classifier {
        let (mut rows, taxonomy) = toy();
        // Texts and vectors that say nothing, so the adapted scores are worth having.
        rows.iter_mut().enumerate().for_each(|(i, r)| {
            r.0 = format!("问题{i}");
            r.1 = vec![0.5; 4];
        });
        let examples: Vec<LabeledExample> = rows
            .iter()
            .map(|(t, v, l)| LabeledExample {
                text: t,
                vector: v,
                label: l,
            })
            .collect();
        let config = ClassifierConfig {
            ngram_bits: 12,
            adapt: AdaptConfig {
                mode,
                min_cases: 10,
                ..AdaptConfig::default()
            },
            ..Default::default()
        };
        let embedder = StandIn { informative };
        let adaptation = Adaptation {
            embedder: &embedder,
            work_dir: None,
            progress: None,
            stop: None,
        };
        Classifier::train_adapting(
            &examples,
            &[],
            &taxonomy,
            None,
            "toy",
            config,
            Some(adaptation),
        )
        .unwrap()
    }

    #[test]
    fn adapting_pays_only_with_lower_log_loss_and_no_lost_accuracy() {
        let check = |accuracy, log_loss| adapted::EnsembleCheck {
            accuracy,
            log_loss,
            ..Default::default()
        };
        let without = check(0.9104, 0.2534);
        assert!(pays(&check(0.9150, 0.2400), &without));
        assert!(pays(&check(0.9104, 0.2530), &without));
        // The held-out numbers of a 3-epoch run: a slightly lower log-loss, fewer right.
        assert!(!pays(&check(0.9037, 0.2522), &without));
        assert!(!pays(&check(0.9200, 0.2600), &without));
    }

    #[test]
    fn adapted_method_joins_when_it_pays_and_travels_with_the_classifier() {
        let c = train_with_stand_in(true, AdaptMode::Auto);
        let report = c.report.adapt.as_ref().unwrap();
        assert!(report.used, "{report:?}");
        assert_eq!((report.held_out, report.trained_on), (12, 48));
        assert!(report.with.log_loss < report.without.log_loss, "{report:?}");
        assert_eq!(
            c.methods(),
            [
                Method::Adapted,
                Method::Embedding,
                Method::Knn,
                Method::Lexical
            ]
        );
        assert!(c.head().is_some());
        let own = [0.0, 3.0, 0.0];
        let scores = c.predict("", &[0.5; 4], Some(&own), &[]).unwrap();
        assert_eq!(argmax(&scores.ensemble), 1);
        let err = c.predict("", &[0.5; 4], None, &[]).unwrap_err().to_string();
        assert!(err.contains("adapted encoder"), "{err}");

        // Saved with its weights beside it; loaded, it needs binding to an embedder first.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.bin");
        c.save(&path).unwrap();
        assert!(dir.path().join("v1.adapt.safetensors").exists());
        let mut loaded = Classifier::load(&path).unwrap();
        assert!(loaded.head().is_none());
        loaded.bind(&StandIn { informative: true }).unwrap();
        assert_eq!(
            loaded
                .predict("", &[0.5; 4], Some(&own), &[])
                .unwrap()
                .ensemble,
            scores.ensemble
        );
        std::fs::remove_file(dir.path().join("v1.adapt.safetensors")).unwrap();
        let err = Classifier::load(&path).unwrap_err().to_string();
        assert!(err.contains("v1.adapt.safetensors"), "{err}");
    }

    #[test]
    fn adapted_method_stays_out_when_it_does_not_pay() {
        let c = train_with_stand_in(false, AdaptMode::Auto);
        let report = c.report.adapt.as_ref().unwrap();
        assert!(!report.used, "{report:?}");
        assert_eq!(
            c.methods(),
            [Method::Embedding, Method::Knn, Method::Lexical]
        );
        assert!(c.head().is_none());
        // Forced, it is kept anyway.
        let forced = train_with_stand_in(false, AdaptMode::On);
        assert_eq!(forced.methods()[0], Method::Adapted);
        // And an embedder that cannot adapt says so.
        let (rows, taxonomy) = toy();
        let examples: Vec<LabeledExample> = rows
            .iter()
            .map(|(t, v, l)| LabeledExample {
                text: t,
                vector: v,
                label: l,
            })
            .collect();
        let plain = Plain;
        let config = ClassifierConfig {
            ngram_bits: 12,
            adapt: AdaptConfig {
                mode: AdaptMode::Auto,
                ..AdaptConfig::default()
            },
            ..Default::default()
        };
        let adaptation = Adaptation {
            embedder: &plain,
            work_dir: None,
            progress: None,
            stop: None,
        };
        let c = Classifier::train_adapting(
            &examples,
            &[],
            &taxonomy,
            None,
            "toy",
            config,
            Some(adaptation),
        )
        .unwrap();
        let skipped = c.report.adapt.unwrap().skipped.unwrap();
        assert!(skipped.contains("cannot be adapted"), "{skipped}");
    }

    #[test]
    fn rejects_garbage_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("classifier.bin");
        std::fs::write(&path, b"not a model").unwrap();
        let err = Classifier::load(&path).unwrap_err().to_string();
        assert!(err.contains("not a classifier file"), "{err}");
    }

    #[test]
    fn folds_are_stratified_and_seeded() {
        let gold: Vec<usize> = (0..20).map(|i| i % 2).collect();
        let folds = stratified_folds(&gold, 5, 1);
        assert_eq!(folds, stratified_folds(&gold, 5, 1));
        for f in 0..5 {
            let members: Vec<usize> = (0..20).filter(|&i| folds[i] == f).collect();
            assert_eq!(members.len(), 4);
            assert_eq!(members.iter().filter(|&&i| gold[i] == 0).count(), 2);
        }
    }
}
