//! The category classifier: three learned methods and a zero-shot one, combined by a calibrated
//! ensemble, with an abstain threshold chosen from data.
//!
//! - `lexical`: character n-gram + word TF-IDF + linear SVM (fast, strong on keywords),
//! - `embedding`: linear SVM on the sentence embedding (meaning, paraphrase),
//! - `knn`: a similarity-weighted vote of the most similar labeled past cases,
//! - `zero_shot`: similarity between the complaint and each category's description, so a city with
//!   a taxonomy and no labeled history still gets suggestions.
//!
//! Training computes out-of-fold predictions for every labeled case (K folds), calibrates each
//! method on them (temperature scaling), fits the ensemble on them, and picks the abstain threshold
//! that reaches the target accuracy on them. The final methods are then refitted on all cases.

pub mod calibrate;
pub mod sparse;
pub mod stack;
pub mod svm;

pub use crate::vector::dot;
use crate::{Error, Result, Taxonomy};
use calibrate::{fit_scale, log_softmax, threshold_for_accuracy};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sparse::{NgramFeaturizer, SparseVec};
use stack::Stacker;
use std::collections::BTreeMap;
use std::path::Path;
use svm::LinearOvr;

pub const LEXICAL: &str = "lexical";
pub const EMBEDDING: &str = "embedding";
pub const KNN: &str = "knn";
pub const ZERO_SHOT: &str = "zero_shot";
pub const ENSEMBLE: &str = "ensemble";

/// Raw score of a class a method knows nothing about.
const UNKNOWN_CLASS_SCORE: f32 = -1e4;
/// Format of the saved file; bump when `Classifier`'s layout changes.
/// 2: the lexical featuriser counts words too.
const FILE_FORMAT: u32 = 2;

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
        }
    }
}

/// One labeled training case.
pub struct LabeledExample<'a> {
    pub text: &'a str,
    pub vector: &'a [f32],
    pub label: &'a str,
}

/// A labeled similar case found for a complaint, for the `knn` vote.
#[derive(Debug, Clone, Copy)]
pub struct Neighbor<'a> {
    pub label: &'a str,
    pub score: f32,
}

/// Probabilities over `Classifier::labels`, for the ensemble and for each method.
#[derive(Debug, Clone, Serialize)]
pub struct ClassScores {
    pub ensemble: Vec<f32>,
    pub methods: BTreeMap<String, Vec<f32>>,
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
    pub seconds: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lexical {
    featurizer: NgramFeaturizer,
    model: LinearOvr,
    scale: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EmbeddingHead {
    /// Mean of the training vectors: e5's vectors share a large common component, and
    /// removing it lets a linear model use the informative directions.
    mean: Vec<f32>,
    model: LinearOvr,
    scale: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ZeroShot {
    /// One embedding ("passage") per label, or `None` for labels the taxonomy doesn't describe.
    profiles: Vec<Option<Vec<f32>>>,
    scale: f32,
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
    lexical: Option<Lexical>,
    embedding: Option<EmbeddingHead>,
    knn_scale: Option<f32>,
    zero_shot: Option<ZeroShot>,
    /// Methods in the ensemble, in the order of the stacker's weights.
    active: Vec<String>,
    stacker: Stacker,
}

/// Scale of cosine similarities in zero-shot when no labeled data calibrates it (tau = 0.02).
const COLD_START_ZERO_SHOT_SCALE: f32 = 50.0;
/// Abstain threshold when there is no labeled data to choose one from.
const COLD_START_THRESHOLD: f32 = 0.5;

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
        let started = std::time::Instant::now();
        let labels = label_space(taxonomy, examples);
        let index: BTreeMap<&str, usize> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), i))
            .collect();
        let gold: Vec<usize> = examples.iter().map(|e| index[e.label]).collect();
        let zero_shot = profiles.map(|p| zero_shot_profiles(&labels, taxonomy, p));

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
            lexical: None,
            embedding: None,
            knn_scale: None,
            zero_shot: None,
            active: Vec::new(),
            stacker: Stacker::uniform(0, 0),
        };
        let classes = classifier.labels.len();

        if examples.len() < config.min_labeled || distinct < 2 {
            // Cold start: only the taxonomy's descriptions to go on.
            let zs = zero_shot.ok_or_else(|| {
                Error::NotReady(format!(
                    "{} labeled cases (need {} in 2+ categories) and no category descriptions for zero-shot",
                    examples.len(),
                    config.min_labeled
                ))
            })?;
            classifier.zero_shot = Some(ZeroShot {
                profiles: zs,
                scale: COLD_START_ZERO_SHOT_SCALE,
            });
            classifier.active = vec![ZERO_SHOT.to_string()];
            classifier.stacker = Stacker::uniform(1, classes);
            classifier.report.seconds = started.elapsed().as_secs_f32();
            return Ok(classifier);
        }

        let texts: Vec<&str> = examples.iter().map(|e| e.text).collect();
        let featurizer = NgramFeaturizer::fit(
            &texts,
            config.ngram_bits,
            (1, config.ngram_max),
            config.lexical_max_chars,
            config.lexical_words,
        );
        let lexical_x: Vec<SparseVec> = texts.par_iter().map(|t| featurizer.transform(t)).collect();
        let mean = mean_vector(examples);
        let embedding_x: Vec<SparseVec> = examples
            .par_iter()
            .map(|e| centered(e.vector, &mean))
            .collect();

        // Out-of-fold raw scores of every method.
        let folds = stratified_folds(&gold, config.folds.min(examples.len()), config.seed);
        let mut raw: BTreeMap<&str, Vec<Vec<f32>>> = BTreeMap::new();
        let mut lexical_oof = vec![Vec::new(); examples.len()];
        let mut embedding_oof = vec![Vec::new(); examples.len()];
        for fold in 0..config.folds.min(examples.len()) {
            let train: Vec<usize> = (0..examples.len()).filter(|&i| folds[i] != fold).collect();
            let test: Vec<usize> = (0..examples.len()).filter(|&i| folds[i] == fold).collect();
            let lex = fit_linear(
                &lexical_x,
                &gold,
                &train,
                classes,
                featurizer.dim(),
                config.lexical_c,
                config.seed,
            );
            let emb = fit_linear(
                &embedding_x,
                &gold,
                &train,
                classes,
                mean.len(),
                config.embedding_c,
                config.seed,
            );
            for &i in &test {
                lexical_oof[i] = masked_margins(&lex, &lexical_x[i]);
                embedding_oof[i] = masked_margins(&emb, &embedding_x[i]);
            }
        }
        raw.insert(LEXICAL, lexical_oof);
        raw.insert(EMBEDDING, embedding_oof);
        raw.insert(
            KNN,
            knn_out_of_fold(examples, &gold, &folds, classes, &config),
        );
        if let Some(zs) = &zero_shot {
            let scores = examples
                .par_iter()
                .map(|e| zero_shot_scores(zs, e.vector))
                .collect();
            raw.insert(ZERO_SHOT, scores);
        }

        // Calibrate each method, then the ensemble, on the out-of-fold scores.
        let mut scales = BTreeMap::new();
        let mut calibrated: BTreeMap<&str, Vec<Vec<f32>>> = BTreeMap::new();
        for (&method, scores) in &raw {
            let scale = fit_scale(scores, &gold);
            scales.insert(method, scale);
            calibrated.insert(
                method,
                scores.iter().map(|s| log_softmax(s, scale)).collect(),
            );
            classifier
                .report
                .oof_accuracy
                .insert(method.to_string(), accuracy(scores, &gold));
        }
        let active: Vec<&str> = calibrated.keys().copied().collect();
        let inputs: Vec<Vec<Vec<f32>>> = (0..examples.len())
            .map(|i| active.iter().map(|m| calibrated[m][i].clone()).collect())
            .collect();
        let stacker = Stacker::fit(&inputs, &gold, classes);
        let ensemble: Vec<Vec<f32>> = inputs.iter().map(|x| stacker.log_probs(x)).collect();
        classifier
            .report
            .oof_accuracy
            .insert(ENSEMBLE.to_string(), accuracy(&ensemble, &gold));
        for (m, w) in active.iter().zip(stacker.method_weights()) {
            classifier.report.method_weights.insert(m.to_string(), w);
        }
        let confidence_correct: Vec<(f32, bool)> = ensemble
            .iter()
            .zip(&gold)
            .map(|(lp, &g)| {
                let best = argmax(lp);
                (lp[best].exp(), best == g)
            })
            .collect();
        match threshold_for_accuracy(&confidence_correct, config.target_accuracy) {
            Some((threshold, coverage)) => {
                classifier.threshold = threshold;
                classifier.report.coverage = Some(coverage);
            }
            None => {
                classifier.threshold = 1.0;
                classifier.report.coverage = Some(0.0);
            }
        }

        // Final models on all labeled cases.
        let all: Vec<usize> = (0..examples.len()).collect();
        classifier.lexical = Some(Lexical {
            model: fit_linear(
                &lexical_x,
                &gold,
                &all,
                classes,
                featurizer.dim(),
                config.lexical_c,
                config.seed,
            ),
            featurizer,
            scale: scales[LEXICAL],
        });
        classifier.embedding = Some(EmbeddingHead {
            model: fit_linear(
                &embedding_x,
                &gold,
                &all,
                classes,
                mean.len(),
                config.embedding_c,
                config.seed,
            ),
            mean,
            scale: scales[EMBEDDING],
        });
        classifier.knn_scale = Some(scales[KNN]);
        classifier.zero_shot = zero_shot.map(|profiles| ZeroShot {
            profiles,
            scale: scales[ZERO_SHOT],
        });
        classifier.active = active.iter().map(|m| m.to_string()).collect();
        classifier.stacker = stacker;
        classifier.report.seconds = started.elapsed().as_secs_f32();
        Ok(classifier)
    }

    /// Scores one complaint. `neighbors` are the labeled similar cases found in the store.
    pub fn predict(&self, text: &str, vector: &[f32], neighbors: &[Neighbor]) -> ClassScores {
        let mut methods = BTreeMap::new();
        let mut inputs = Vec::with_capacity(self.active.len());
        for method in &self.active {
            let (raw, scale) = match method.as_str() {
                LEXICAL => {
                    let l = self.lexical.as_ref().expect("active method is trained");
                    (
                        masked_margins(&l.model, &l.featurizer.transform(text)),
                        l.scale,
                    )
                }
                EMBEDDING => {
                    let e = self.embedding.as_ref().expect("active method is trained");
                    (
                        masked_margins(&e.model, &centered(vector, &e.mean)),
                        e.scale,
                    )
                }
                KNN => {
                    let index = |label: &str| self.labels.iter().position(|l| l == label);
                    let votes: Vec<(usize, f32)> = neighbors
                        .iter()
                        .filter_map(|n| Some((index(n.label)?, n.score)))
                        .take(self.config.knn_k)
                        .collect();
                    (
                        knn_scores(&votes, self.labels.len(), self.config.knn_tau),
                        self.knn_scale.unwrap_or(1.0),
                    )
                }
                _ => {
                    let z = self.zero_shot.as_ref().expect("active method is trained");
                    (zero_shot_scores(&z.profiles, vector), z.scale)
                }
            };
            let log_probs = log_softmax(&raw, scale);
            methods.insert(
                method.clone(),
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
        ClassScores { ensemble, methods }
    }

    /// Scores with the lexical model alone: no embedding or search needed (batch `--fast`).
    pub fn predict_lexical(&self, text: &str) -> Option<Vec<f32>> {
        let l = self.lexical.as_ref()?;
        let raw = masked_margins(&l.model, &l.featurizer.transform(text));
        Some(
            log_softmax(&raw, l.scale)
                .into_iter()
                .map(f32::exp)
                .collect(),
        )
    }

    /// Whether the ensemble uses the `knn` vote (callers then search for labeled neighbours).
    pub fn uses_neighbors(&self) -> bool {
        self.active.iter().any(|m| m == KNN)
    }

    pub fn methods(&self) -> &[String] {
        &self.active
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = bincode::serialize(self).map_err(|e| Error::InvalidInput(e.to_string()))?;
        crate::fsutil::write_atomic(path, &bytes)
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
        if let Some(lexical) = &classifier.lexical {
            lexical.featurizer.warm_up();
        }
        Ok(classifier)
    }
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

fn zero_shot_profiles(
    labels: &[String],
    taxonomy: &Taxonomy,
    profiles: &[Vec<f32>],
) -> Vec<Option<Vec<f32>>> {
    labels
        .iter()
        .map(|label| {
            let at = taxonomy.categories.iter().position(|c| &c.id == label)?;
            profiles.get(at).cloned()
        })
        .collect()
}

fn zero_shot_scores(profiles: &[Option<Vec<f32>>], vector: &[f32]) -> Vec<f32> {
    profiles
        .iter()
        .map(|p| p.as_deref().map_or(UNKNOWN_CLASS_SCORE, |p| dot(p, vector)))
        .collect()
}

/// log(ε + Σ exp((s − s_max) / τ)) per class: a soft vote that a single close case can win.
fn knn_scores(votes: &[(usize, f32)], classes: usize, tau: f32) -> Vec<f32> {
    const SMOOTHING: f32 = 0.01;
    let best = votes.iter().map(|v| v.1).fold(f32::NEG_INFINITY, f32::max);
    let mut mass = vec![0f32; classes];
    for &(class, score) in votes {
        mass[class] += ((score - best) / tau).exp();
    }
    mass.into_iter().map(|m| (m + SMOOTHING).ln()).collect()
}

fn knn_out_of_fold(
    examples: &[LabeledExample],
    gold: &[usize],
    folds: &[usize],
    classes: usize,
    config: &ClassifierConfig,
) -> Vec<Vec<f32>> {
    (0..examples.len())
        .into_par_iter()
        .map(|i| {
            let mut sims: Vec<(usize, f32)> = (0..examples.len())
                .filter(|&j| folds[j] != folds[i])
                .map(|j| (gold[j], dot(examples[i].vector, examples[j].vector)))
                .collect();
            let k = config.knn_k.min(sims.len());
            if k > 0 {
                sims.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
                sims.truncate(k);
            }
            knn_scores(&sims, classes, config.knn_tau)
        })
        .collect()
}

fn fit_linear(
    xs: &[SparseVec],
    gold: &[usize],
    rows: &[usize],
    classes: usize,
    dim: usize,
    c: f32,
    seed: u64,
) -> LinearOvr {
    let x: Vec<SparseVec> = rows.iter().map(|&i| xs[i].clone()).collect();
    let y: Vec<usize> = rows.iter().map(|&i| gold[i]).collect();
    // Only classes present in these rows get a model; the others score UNKNOWN_CLASS_SCORE.
    let mut model = LinearOvr::train(&x, &y, classes, dim, c, seed);
    for class in 0..classes {
        if !y.contains(&class) {
            model.weights[class] = Vec::new();
        }
    }
    model
}

fn masked_margins(model: &LinearOvr, x: &SparseVec) -> Vec<f32> {
    model
        .weights
        .iter()
        .zip(&model.bias)
        .map(|(w, b)| {
            if w.is_empty() {
                UNKNOWN_CLASS_SCORE
            } else {
                sparse::dot(w, x) + b
            }
        })
        .collect()
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

/// Trains on every labeled case in a store, with zero-shot profiles of the taxonomy's
/// categories embedded by `embedder` (the same model that embedded the cases).
pub fn train_from_store(
    store: &dyn crate::CaseStore,
    embedder: &dyn crate::Embedder,
    taxonomy: &Taxonomy,
    config: ClassifierConfig,
) -> Result<Classifier> {
    let filter = crate::CaseFilter {
        labeled_only: true,
        ..Default::default()
    };
    let cases = store.all(&filter)?;
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
    Classifier::train(
        &examples,
        taxonomy,
        profile_vectors.as_deref(),
        embedder.model_id(),
        config,
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
        assert_eq!(c.methods(), [EMBEDDING, KNN, LEXICAL]);
        let scores = c.predict("学校老师乱收学费", &[0.0, 1.0, 0.0, 0.0], &[]);
        assert_eq!(c.labels[argmax(&scores.ensemble)], "教育");
        assert!((scores.ensemble.iter().sum::<f32>() - 1.0).abs() < 1e-4);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("classifier.bin");
        c.save(&path).unwrap();
        let loaded = Classifier::load(&path).unwrap();
        assert_eq!(loaded.version, c.version);
        assert_eq!(
            loaded
                .predict("学校老师乱收学费", &[0.0, 1.0, 0.0, 0.0], &[])
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
        assert_eq!(c.methods(), [ZERO_SHOT]);
        let s = c.predict("", &[0.1, 0.2, 0.97, 0.0], &[]);
        assert_eq!(c.labels[argmax(&s.ensemble)], "环境");
        assert!(
            Classifier::train(&[], &taxonomy, None, "toy", ClassifierConfig::default()).is_err()
        );
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
