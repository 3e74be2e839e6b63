//! The evaluation run: labeled complaints through a pipeline, scored into a `Report`. The caller
//! gives the parts (a `PipelineBuilder` without store or classifier) and a way to open an empty
//! store; every pipeline trained here lives in a temporary directory and never touches the
//! service's. Every case is embedded once, as a passage (as the service stores and analyses
//! them); cross-validation folds reuse those vectors.

use crate::{build_report, EvalRecord, Report, Skipped};
use indicatif::ProgressBar;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use triage_core::adapt::AdaptProgress;
use triage_core::classify::{stratified_folds, ClassifierConfig, LabeledText, ENSEMBLE};
use triage_core::ingest::parse_case_line;
use triage_core::pipeline::{Complaint, Pipeline, PipelineBuilder, TrainOptions};
use triage_core::{Case, CaseStore, EmbedKind, Embedded};

pub type Result<T> = std::result::Result<T, crate::Error>;

/// Opens an empty case store in a directory, for vectors of the given length.
pub type OpenStore<'a> = &'a dyn Fn(&Path, usize) -> triage_core::Result<Arc<dyn CaseStore>>;

/// Makes a progress bar of `len` steps named by the text (the CLI's: hidden off a terminal).
pub type Progress<'a> = &'a dyn Fn(usize, &str) -> ProgressBar;

/// The parts of the pipelines an evaluation builds.
pub struct Run<'a> {
    /// Models, taxonomy, units and prompts; no store or classifier (each run adds its own).
    pub builder: PipelineBuilder,
    pub open_store: OpenStore<'a>,
    pub progress: Progress<'a>,
    /// How each classifier is trained (with or without adapting the encoder).
    pub classifier: ClassifierConfig,
    /// Who hears how an adaptation of the encoder goes.
    pub adapt_progress: Option<&'a (dyn Fn(&AdaptProgress) + Sync)>,
    /// Short labeled texts (titles) for the lexical model; those that repeat a test case's title
    /// or text are left out of every run that scores that case (`without_test_texts`).
    pub extra_texts: Vec<LabeledText>,
}

/// The cases of a JSONL file, labeled or not (a test case may carry only a gold unit, or a reply
/// that names one; a training case without a label is history the pipeline grounds on); lines
/// that do not parse are `skipped` with their line number and reason.
pub fn read_cases(path: &Path, skipped: &mut Vec<Skipped>) -> Result<Vec<Case>> {
    read_jsonl(path, skipped, false)
}

/// The labeled cases of a JSONL file (cross-validation folds are stratified by label); lines
/// without a label or that do not parse are `skipped`.
pub fn read_labeled(path: &Path, skipped: &mut Vec<Skipped>) -> Result<Vec<Case>> {
    read_jsonl(path, skipped, true)
}

/// The one JSONL reader of both: every line that is not UTF-8, does not parse or (with
/// `require_label`) has no label is `skipped` with its 1-based line number.
fn read_jsonl(path: &Path, skipped: &mut Vec<Skipped>, require_label: bool) -> Result<Vec<Case>> {
    read_lines(path, skipped, |line| match parse_case_line(line) {
        Ok(case) if require_label && case.label.is_none() => Err("no \"label\"".into()),
        parsed => parsed,
    })
}

/// The line loop of every JSONL reader here: `parse` each non-blank line; a line that is not
/// UTF-8 or that `parse` refuses is `skipped` with its 1-based line number and the reason.
fn read_lines<T>(
    path: &Path,
    skipped: &mut Vec<Skipped>,
    parse: impl Fn(&str) -> std::result::Result<T, String>,
) -> Result<Vec<T>> {
    let text = std::fs::read(path).map_err(|source| crate::Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        let parsed = match std::str::from_utf8(line) {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => parse(line),
            Err(_) => Err("not UTF-8".into()),
        };
        match parsed {
            Ok(item) => out.push(item),
            Err(reason) => skipped.push(Skipped {
                line: i + 1,
                reason,
            }),
        }
    }
    Ok(out)
}

/// A seeded split of `cases`: (the rest, the held-out `fraction`). Cases are ordered by a hash of
/// the seed and their id, so the split depends on neither the file's order nor the platform.
pub fn hold_out(cases: Vec<Case>, fraction: f64, seed: u64) -> (Vec<Case>, Vec<Case>) {
    let mut keyed: Vec<(u64, Case)> = cases
        .into_iter()
        .map(|c| {
            (
                triage_core::text::stable_hash(&format!("{seed}:{}", c.id)),
                c,
            )
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    let held = ((keyed.len() as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
    let mut rest: Vec<Case> = keyed.into_iter().map(|(_, c)| c).collect();
    let test = rest.drain(..held).collect();
    (rest, test)
}

/// The test cases that can be scored (a category label, a gold unit, or both), with their gold
/// units; how many had neither is noted in `meta`.
fn scorable(
    pipeline: &Pipeline,
    test: &[Case],
    meta: &mut serde_json::Value,
) -> Vec<(Case, Vec<String>)> {
    let mut out = Vec::with_capacity(test.len());
    let (mut neither, mut given, mut from_reply) = (0usize, 0usize, 0usize);
    for case in test {
        let gold = pipeline.gold_units(case);
        match (&case.unit, gold.is_empty()) {
            (Some(_), _) => given += 1,
            (None, false) => from_reply += 1,
            (None, true) => {}
        }
        if case.label.is_none() && gold.is_empty() {
            neither += 1;
            continue;
        }
        out.push((case.clone(), gold));
    }
    meta["unit_gold"] = serde_json::json!({
        "given": given,
        "from_reply": from_reply,
        "not_scored": neither,
    });
    out
}

impl Run<'_> {
    /// Embeds cases as `kind`, a chunk at a time, with a progress bar.
    fn embed_all(&self, cases: &[Case], kind: EmbedKind, what: &str) -> Result<Vec<Vec<f32>>> {
        let bar = (self.progress)(cases.len(), what);
        let mut out = Vec::with_capacity(cases.len());
        for chunk in cases.chunks(64) {
            let texts: Vec<String> = chunk.iter().map(Case::full_text).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            out.extend(self.builder.embedder().embed(&refs, kind)?);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out)
    }

    /// A store in a temporary directory holding `cases`, and a classifier trained on them. Bind
    /// as `let (_dir, pipeline) = …`: later bindings drop first, so the store closes before its
    /// directory goes.
    fn fresh_pipeline(
        &self,
        cases: &[(Case, Vec<f32>)],
        extra_texts: &[LabeledText],
    ) -> Result<(tempfile::TempDir, Pipeline)> {
        let dir = tempfile::tempdir().map_err(|source| crate::Error::Io {
            path: "a temporary data directory".into(),
            source,
        })?;
        let store = (self.open_store)(dir.path(), self.builder.embedder().dim())?;
        let pipeline = self.builder.clone().store(store).build()?;
        for chunk in cases.chunks(512) {
            pipeline.store_embedded(chunk.to_vec())?;
        }
        pipeline.optimize()?;
        let options = TrainOptions {
            progress: self.adapt_progress,
            extra_texts,
            ..Default::default()
        };
        pipeline.set_classifier(pipeline.train_with(self.classifier.clone(), options)?)?;
        Ok((dir, pipeline))
    }

    /// Test cases as the pipeline analyses them: their complaint vectors (`vectors` when the caller
    /// has them, embedded here otherwise), unless the classifier has adapted encoder layers (then
    /// the pipeline embeds them, for the adapted scores of the same pass).
    fn embedded(
        &self,
        pipeline: &Pipeline,
        cases: &[Case],
        vectors: Option<Vec<Vec<f32>>>,
    ) -> Result<Vec<Embedded>> {
        if pipeline.require_classifier()?.head().is_some() {
            return embed_with(pipeline, cases, self.progress);
        }
        let vectors = match vectors {
            Some(vectors) => vectors,
            // As the pipeline embeds a complaint.
            None => self.embed_all(cases, triage_core::pipeline::COMPLAINT_EMBEDDING, "test")?,
        };
        Ok(vectors.into_iter().map(Embedded::from).collect())
    }

    /// Stores `train` in a fresh store (labeled cases train the classifier; every case with a
    /// unit, given or named by its reply, is history the units are learned from) and scores
    /// `test`: categories on its labeled cases, units on those with a gold unit.
    pub fn train_test(
        &self,
        train: Vec<Case>,
        test: &[Case],
        skipped: Vec<Skipped>,
        mut meta: serde_json::Value,
    ) -> Result<Report> {
        meta["mode"] = "train/test".into();
        meta["train_cases"] = train.len().into();
        let passages = self.embed_all(&train, EmbedKind::Passage, "train")?;
        let cases: Vec<(Case, Vec<f32>)> = train.into_iter().zip(passages).collect();
        let extra = without_test_texts(&self.extra_texts, test);
        meta["extra_texts"] = serde_json::json!({
            "given": self.extra_texts.len(),
            "left_out_as_test": self.extra_texts.len() - extra.len(),
        });
        let (_dir, pipeline) = self.fresh_pipeline(&cases, &extra)?;
        let c = pipeline.require_classifier()?;
        meta["classifier"] = serde_json::json!({
            "version": c.version,
            "training": c.report,
            "units": {"learned": c.units.units.len(), "fit": c.units.model.fit},
        });
        let test = scorable(&pipeline, test, &mut meta);
        let cases: Vec<Case> = test.iter().map(|(c, _)| c.clone()).collect();
        let queries = self.embedded(&pipeline, &cases, None)?;
        Ok(predict(&pipeline, &test, &queries, self.progress)?.report(skipped, meta))
    }

    /// K-fold cross-validation on `cases` alone (stratified, seeded): one report over the pooled
    /// held-out predictions, with each fold's headline numbers in `cv`.
    pub fn cross_validate(
        &self,
        cases: &[Case],
        k: usize,
        seed: u64,
        skipped: Vec<Skipped>,
        mut meta: serde_json::Value,
    ) -> Result<Report> {
        if k < 2 {
            return Err(
                triage_core::Error::InvalidInput("--cv needs at least 2 folds".into()).into(),
            );
        }
        let vectors = self.embed_all(cases, triage_core::pipeline::COMPLAINT_EMBEDDING, "cases")?;
        meta["mode"] = format!("{k}-fold cross-validation").into();
        let gold: Vec<usize> = {
            let mut labels: Vec<&str> = cases.iter().filter_map(|c| c.label.as_deref()).collect();
            labels.sort();
            labels.dedup();
            cases
                .iter()
                .map(|c| {
                    labels
                        .binary_search(&c.label.as_deref().unwrap_or_default())
                        .unwrap_or(0)
                })
                .collect()
        };
        let folds = stratified_folds(&gold, k, seed);
        let mut folds_predicted = Vec::new();
        for fold in 0..k {
            let train: Vec<(Case, Vec<f32>)> = (0..cases.len())
                .filter(|&i| folds[i] != fold)
                .map(|i| (cases[i].clone(), vectors[i].clone()))
                .collect();
            let held: Vec<usize> = (0..cases.len()).filter(|&i| folds[i] == fold).collect();
            let held_plain: Vec<Case> = held.iter().map(|&i| cases[i].clone()).collect();
            let extra = without_test_texts(&self.extra_texts, &held_plain);
            let (_dir, pipeline) = self.fresh_pipeline(&train, &extra)?;
            let held_cases: Vec<(Case, Vec<String>)> = held
                .iter()
                .map(|&i| (cases[i].clone(), pipeline.gold_units(&cases[i])))
                .collect();
            let held_vectors: Vec<Vec<f32>> = held.iter().map(|&i| vectors[i].clone()).collect();
            let plain: Vec<Case> = held_cases.iter().map(|(c, _)| c.clone()).collect();
            let held_vectors = self.embedded(&pipeline, &plain, Some(held_vectors))?;
            folds_predicted.push(predict(
                &pipeline,
                &held_cases,
                &held_vectors,
                self.progress,
            )?);
            eprintln!("fold {}/{k} predicted", fold + 1);
        }
        Ok(combine_folds(folds_predicted, skipped, meta))
    }
}

/// Labeled short texts of a JSONL file: each line's `title` (or `text`) and `label`; lines
/// without either, or that do not parse, are `skipped`.
pub fn read_texts(path: &Path, skipped: &mut Vec<Skipped>) -> Result<Vec<LabeledText>> {
    read_lines(path, skipped, |line| {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::trim);
        let text = field("title")
            .filter(|t| !t.is_empty())
            .or(field("text"))
            .filter(|t| !t.is_empty())
            .ok_or("no \"title\" or \"text\"")?;
        let label = field("label")
            .filter(|l| !l.is_empty())
            .ok_or("no \"label\"")?;
        Ok(LabeledText {
            text: text.to_string(),
            label: label.to_string(),
        })
    })
}

/// `extra` less every text taken for the title of a test case (`titles::owners`: most of its
/// character pairs are in the case's title and text): a case scored must not have its own title,
/// or a rewording of it, among the training rows.
pub fn without_test_texts(extra: &[LabeledText], test: &[Case]) -> Vec<LabeledText> {
    let texts: Vec<String> = test.iter().map(Case::full_text).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let shorts: Vec<&str> = extra.iter().map(|e| e.text.as_str()).collect();
    extra
        .iter()
        .zip(triage_core::classify::titles::owners(&shorts, &texts))
        .filter(|(_, owners)| owners.is_empty())
        .map(|(e, _)| e.clone())
        .collect()
}

/// Scores `test` with an existing pipeline (the current store and classifier, no retraining).
pub fn current(
    pipeline: &Pipeline,
    test: &[Case],
    progress: Progress,
    skipped: Vec<Skipped>,
    mut meta: serde_json::Value,
) -> Result<Report> {
    let test = scorable(pipeline, test, &mut meta);
    let cases: Vec<Case> = test.iter().map(|(c, _)| c.clone()).collect();
    let queries = embed_with(pipeline, &cases, progress)?;
    meta["mode"] = "store".into();
    Ok(predict(pipeline, &test, &queries, progress)?.report(skipped, meta))
}

/// Embeds cases as the pipeline analyses complaints (with the adapted scores, when it has them).
fn embed_with(pipeline: &Pipeline, cases: &[Case], progress: Progress) -> Result<Vec<Embedded>> {
    let texts: Vec<String> = cases.iter().map(Case::full_text).collect();
    let bar = progress(cases.len(), "test");
    let mut out = Vec::with_capacity(cases.len());
    for chunk in texts.chunks(64) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        out.extend(pipeline.embed_complaints(&refs)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// The pipeline's predictions for labeled complaints, before they are scored.
struct Predictions {
    records: Vec<EvalRecord>,
    /// Gold labels the classifier was never trained on, with counts.
    unknown: BTreeMap<String, usize>,
    seconds: f64,
    threshold: f64,
}

impl Predictions {
    fn report(self, skipped: Vec<Skipped>, meta: serde_json::Value) -> Report {
        build_report(
            &self.records,
            ENSEMBLE,
            Some(self.threshold),
            self.seconds,
            skipped,
            self.unknown,
            meta,
        )
    }
}

fn predict(
    pipeline: &Pipeline,
    test: &[(Case, Vec<String>)],
    queries: &[Embedded],
    progress: Progress,
) -> Result<Predictions> {
    let classifier = pipeline.require_classifier()?;
    let started = Instant::now();
    let bar = progress(test.len(), "classify");
    let mut records = Vec::with_capacity(test.len());
    let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
    for ((case, gold_units), embedded) in test.iter().zip(queries) {
        // The complaint alone: its reply (where the gold unit came from) is never shown.
        let complaint = Complaint::from(case);
        let analysis = pipeline.analyze_embedded(&complaint, &case.full_text(), embedded)?;
        let suggestion = &analysis.suggestion;
        let (gold, methods) = match case.label.as_deref() {
            Some(label) => {
                let gold = pipeline
                    .category_id(label)
                    .unwrap_or_else(|| label.to_string());
                if !classifier.report.per_class.contains_key(&gold) {
                    *unknown.entry(gold.clone()).or_default() += 1;
                }
                let mut methods: BTreeMap<String, Vec<(String, f32)>> = suggestion
                    .methods
                    .iter()
                    .map(|(m, cats)| {
                        (
                            m.clone(),
                            cats.iter().map(|c| (c.id.clone(), c.probability)).collect(),
                        )
                    })
                    .collect();
                methods.insert(
                    ENSEMBLE.into(),
                    suggestion
                        .categories
                        .iter()
                        .map(|c| (c.id.clone(), c.probability))
                        .collect(),
                );
                (gold, methods)
            }
            None => (String::new(), BTreeMap::new()),
        };
        let baselines = analysis.unit_baselines();
        records.push(EvalRecord {
            id: case.id.clone(),
            gold,
            methods,
            gold_units: gold_units.clone(),
            predicted_units: suggestion.units.iter().map(|u| u.unit_id.clone()).collect(),
            unit_probability: suggestion.units.first().map(|u| u.score),
            baseline_units: BTreeMap::from([
                (
                    "directory_rule".to_string(),
                    baselines.directory_rule.clone(),
                ),
                (
                    "nearest_case".to_string(),
                    baselines.nearest_case.iter().cloned().collect(),
                ),
            ]),
            duplicate_flag: Some(suggestion.duplicate.is_some()),
            duplicate_gold: None,
            stage_ms: suggestion.timings_ms.clone(),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Predictions {
        records,
        unknown,
        seconds: started.elapsed().as_secs_f64(),
        threshold: classifier.threshold as f64,
    })
}

/// One report over the pooled out-of-fold predictions (every case predicted once, by a model that
/// never saw it), with each fold's headline numbers and their mean ± std in `cv`. The pooled
/// report's threshold is the folds' mean.
fn combine_folds(
    folds: Vec<Predictions>,
    skipped: Vec<Skipped>,
    meta: serde_json::Value,
) -> Report {
    let k = folds.len();
    let per_fold: Vec<Report> = folds
        .iter()
        .map(|f| {
            build_report(
                &f.records,
                ENSEMBLE,
                Some(f.threshold),
                f.seconds,
                Vec::new(),
                f.unknown.clone(),
                serde_json::Value::Null,
            )
        })
        .collect();
    let stat = |f: &dyn Fn(&Report) -> f64| {
        let v: Vec<f64> = per_fold.iter().map(f).collect();
        let mean = v.iter().sum::<f64>() / k as f64;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / k as f64).sqrt();
        serde_json::json!({"mean": mean, "std": std, "folds": v})
    };
    let cv = serde_json::json!({
        "k": k,
        "accuracy": stat(&|r| r.accuracy),
        "macro_f1": stat(&|r| r.macro_f1),
        "weighted_f1": stat(&|r| r.weighted_f1),
        "top3_accuracy": stat(&|r| r.top3_accuracy),
        "ece": stat(&|r| r.ece),
    });
    let mut pooled = Predictions {
        records: Vec::new(),
        unknown: BTreeMap::new(),
        seconds: 0.0,
        threshold: folds.iter().map(|f| f.threshold).sum::<f64>() / k as f64,
    };
    for fold in folds {
        pooled.records.extend(fold.records);
        pooled.seconds += fold.seconds;
        for (label, n) in fold.unknown {
            *pooled.unknown.entry(label).or_default() += n;
        }
    }
    let mut report = pooled.report(skipped, meta);
    report.cv = Some(cv);
    report
}

/// Runs the scikit-learn baseline script (TF-IDF char 1–3-grams + LinearSVC) on the same files,
/// side by side; `Err` says why it was skipped (no python3, no scikit-learn, a failure).
pub fn run_baseline(
    script: &Path,
    train: &[std::path::PathBuf],
    test: &Path,
) -> std::result::Result<serde_json::Value, String> {
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg("--train")
        .args(train)
        .arg("--test")
        .arg(test)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stdout).trim().to_string());
    }
    serde_json::from_slice(output.stdout.trim_ascii())
        .map_err(|e| format!("{} printed no JSON result ({e})", script.display()))
}
