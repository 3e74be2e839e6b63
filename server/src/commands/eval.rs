//! `triage eval`: routing quality on labeled sets, in a temporary store that never touches the
//! service's. Every case is embedded once, as a passage (as the service stores and analyses them);
//! cross-validation folds reuse those vectors.

use crate::app::{progress_bar, GlobalArgs};
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use triage_core::classify::{stratified_folds, ClassifierConfig};
use triage_core::ingest::{enrich, parse_case_line};
use triage_core::pipeline::{Complaint, Pipeline, COMPLAINT_EMBEDDING};
use triage_core::{Case, CaseStore, EmbedKind, Embedder};
use triage_eval::{build_report, EvalRecord, Report, Skipped};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Labeled JSONL files to build the store and classifier from
    #[arg(long, num_args = 1.., required_unless_present_any = ["cv", "current"])]
    train: Vec<PathBuf>,
    /// Labeled JSONL file to evaluate on
    #[arg(long)]
    test: PathBuf,
    /// Output directory for report.json, report.md and the SVG charts
    #[arg(long, default_value = "report")]
    out: PathBuf,
    /// K-fold cross-validation on --test alone (stratified, seeded)
    #[arg(long, conflicts_with_all = ["train", "current"])]
    cv: Option<usize>,
    /// Evaluate the current store and classifier (--data-dir, or --store qdrant) without retraining
    #[arg(long)]
    current: bool,
    /// Also run the scikit-learn TF-IDF + LinearSVC baseline (scripts/baseline_svm.py)
    #[arg(long)]
    baseline: bool,
    /// Seed of the cross-validation folds
    #[arg(long, default_value_t = 17)]
    seed: u64,
}

/// A labeled test case and the line it came from.
struct Labeled {
    case: Case,
}

fn read_labeled(path: &Path, skipped: &mut Vec<Skipped>) -> Result<Vec<Labeled>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        let Ok(line) = std::str::from_utf8(line) else {
            skipped.push(Skipped {
                line: i + 1,
                reason: "not UTF-8".into(),
            });
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        match parse_case_line(line) {
            Ok(case) if case.label.is_none() => skipped.push(Skipped {
                line: i + 1,
                reason: "no \"label\"".into(),
            }),
            Ok(case) => out.push(Labeled { case }),
            Err(reason) => skipped.push(Skipped {
                line: i + 1,
                reason,
            }),
        }
    }
    Ok(out)
}

fn bar(len: usize, what: &str) -> ProgressBar {
    progress_bar(
        len as u64,
        what,
        "{prefix:>10} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}",
    )
}

fn embed_all(
    embedder: &dyn Embedder,
    cases: &[Labeled],
    kind: EmbedKind,
    what: &str,
) -> Result<Vec<Vec<f32>>> {
    let bar = bar(cases.len(), what);
    let mut out = Vec::with_capacity(cases.len());
    for chunk in cases.chunks(64) {
        let texts: Vec<String> = chunk.iter().map(|l| l.case.full_text()).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        out.extend(embedder.embed(&refs, kind)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

pub fn run(global: &GlobalArgs, args: EvalArgs) -> Result<()> {
    let started = Instant::now();
    let embedder = global.load_embedder()?;
    let units = global.units()?;
    let mut skipped = Vec::new();
    let mut test = read_labeled(&args.test, &mut skipped)?;
    if test.is_empty() {
        bail!("no labeled cases in {}", args.test.display());
    }
    for l in &mut test {
        enrich(&mut l.case, &units);
    }
    // As the pipeline embeds a complaint.
    let test_vectors = embed_all(embedder.as_ref(), &test, COMPLAINT_EMBEDDING, "test")?;
    let mut meta = serde_json::json!({
        "test": args.test.display().to_string(),
        "embedder": embedder.model_id(),
        "max_tokens": embedder.max_tokens(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });

    let mut report = if args.current {
        let pipeline = global.pipeline(false)?;
        meta["mode"] = "store".into();
        predict(&pipeline, &test, &test_vectors)?.report(skipped, meta)
    } else if let Some(k) = args.cv {
        if k < 2 {
            bail!("--cv needs at least 2 folds");
        }
        meta["mode"] = format!("{k}-fold cross-validation").into();
        let gold: Vec<usize> = {
            let mut labels: Vec<&str> = test
                .iter()
                .filter_map(|l| l.case.label.as_deref())
                .collect();
            labels.sort();
            labels.dedup();
            test.iter()
                .map(|l| {
                    labels
                        .binary_search(&l.case.label.as_deref().unwrap_or_default())
                        .unwrap_or(0)
                })
                .collect()
        };
        let folds = stratified_folds(&gold, k, args.seed);
        let mut folds_predicted = Vec::new();
        for fold in 0..k {
            let train: Vec<(Case, Vec<f32>)> = (0..test.len())
                .filter(|&i| folds[i] != fold)
                .map(|i| (test[i].case.clone(), test_vectors[i].clone()))
                .collect();
            let held: Vec<usize> = (0..test.len()).filter(|&i| folds[i] == fold).collect();
            let fold_cases: Vec<Labeled> = held
                .iter()
                .map(|&i| Labeled {
                    case: test[i].case.clone(),
                })
                .collect();
            let fold_queries: Vec<Vec<f32>> =
                held.iter().map(|&i| test_vectors[i].clone()).collect();
            let (_dir, pipeline) = fresh_pipeline(global, embedder.clone(), &train)?;
            let predictions = predict(&pipeline, &fold_cases, &fold_queries)?;
            eprintln!("fold {}/{k} predicted", fold + 1);
            folds_predicted.push(predictions);
        }
        combine_folds(folds_predicted, skipped, meta)
    } else {
        let mut train = Vec::new();
        for path in &args.train {
            let mut train_skipped = Vec::new();
            train.extend(read_labeled(path, &mut train_skipped)?);
            if !train_skipped.is_empty() {
                eprintln!(
                    "{}: {} lines skipped (first: line {}: {})",
                    path.display(),
                    train_skipped.len(),
                    train_skipped[0].line,
                    train_skipped[0].reason
                );
            }
        }
        for l in &mut train {
            enrich(&mut l.case, &units);
        }
        meta["mode"] = "train/test".into();
        meta["train"] = args
            .train
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .into();
        meta["train_cases"] = train.len().into();
        let passages = embed_all(embedder.as_ref(), &train, EmbedKind::Passage, "train")?;
        let cases: Vec<(Case, Vec<f32>)> =
            train.into_iter().map(|l| l.case).zip(passages).collect();
        let (_dir, pipeline) = fresh_pipeline(global, embedder.clone(), &cases)?;
        let c = pipeline.classifier().expect("trained");
        meta["classifier"] = serde_json::json!({"version": c.version, "training": c.report});
        predict(&pipeline, &test, &test_vectors)?.report(skipped, meta)
    };
    report.meta["seconds"] = started.elapsed().as_secs_f64().into();
    if args.baseline {
        report.baseline = run_baseline(
            if args.cv.is_some() { &[] } else { &args.train },
            &args.test,
            args.cv,
        );
    }
    triage_eval::write_report(&args.out, &report)?;
    print!("{}", triage_eval::summary_table(&report));
    println!(
        "report: {} ({:.0} s)",
        args.out.join("report.json").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A store in a temporary directory holding `cases`, and a classifier trained on them. Bind as
/// `let (_dir, pipeline) = …`: later bindings drop first, so the store closes before its directory goes.
fn fresh_pipeline(
    global: &GlobalArgs,
    embedder: Arc<dyn Embedder>,
    cases: &[(Case, Vec<f32>)],
) -> Result<(tempfile::TempDir, Pipeline)> {
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let store: Arc<dyn CaseStore> =
        Arc::new(triage_store::EdgeStore::open(dir.path(), embedder.dim())?);
    let pipeline = global.parts(embedder)?.store(store).build()?;
    for chunk in cases.chunks(512) {
        pipeline.store_embedded(chunk.to_vec())?;
    }
    pipeline.optimize()?;
    pipeline.set_classifier(pipeline.train(ClassifierConfig::default())?)?;
    Ok((dir, pipeline))
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
            "ensemble",
            Some(self.threshold),
            self.seconds,
            skipped,
            self.unknown,
            meta,
        )
    }
}

fn predict(pipeline: &Pipeline, test: &[Labeled], queries: &[Vec<f32>]) -> Result<Predictions> {
    let classifier = pipeline
        .classifier()
        .context("no classifier: run `triage train`")?;
    let started = Instant::now();
    let bar = bar(test.len(), "classify");
    let mut records = Vec::with_capacity(test.len());
    let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
    for (labeled, vector) in test.iter().zip(queries) {
        let case = &labeled.case;
        let label = case.label.clone().unwrap_or_default();
        let gold = pipeline.category_id(&label).unwrap_or(label);
        if !classifier.report.per_class.contains_key(&gold) {
            *unknown.entry(gold.clone()).or_default() += 1;
        }
        let complaint = Complaint::from(case);
        let suggestion = pipeline
            .analyze_embedded(&complaint, &case.full_text(), vector)?
            .suggestion;
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
            "ensemble".into(),
            suggestion
                .categories
                .iter()
                .map(|c| (c.id.clone(), c.probability))
                .collect(),
        );
        records.push(EvalRecord {
            id: case.id.clone(),
            gold,
            methods,
            gold_unit: case.unit.clone(),
            predicted_unit: suggestion.units.first().map(|u| u.unit_id.clone()),
            duplicate_flag: Some(suggestion.duplicate.is_some()),
            duplicate_gold: None,
            stage_ms: suggestion.timings_ms,
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
                "ensemble",
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

fn run_baseline(train: &[PathBuf], test: &Path, cv: Option<usize>) -> Option<serde_json::Value> {
    if cv.is_some() {
        eprintln!("baseline: skipped (only for --train/--test runs)");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/baseline_svm.py");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .arg("--train")
        .args(train)
        .arg("--test")
        .arg(test)
        .output();
    match output {
        Ok(out) if out.status.success() => serde_json::from_slice(out.stdout.trim_ascii()).ok(),
        Ok(out) => {
            eprintln!(
                "baseline: skipped ({})",
                String::from_utf8_lossy(&out.stdout).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("baseline: skipped (python3: {e})");
            None
        }
    }
}
