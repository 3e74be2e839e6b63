//! `triage eval`: routing quality on labeled sets. The run itself is `triage_eval::run`; this
//! command parses the flags, gives it the pipeline's parts, and writes and prints the report.

use crate::app::{progress_bar, GlobalArgs};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use triage_core::CaseStore;
use triage_eval::run::{self, Run};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// JSONL files to build the store and classifier from: labeled cases train the classifier,
    /// cases with a unit (or a reply naming one) teach the units
    #[arg(long, num_args = 1.., required_unless_present_any = ["cv", "current"])]
    train: Vec<PathBuf>,
    /// JSONL file to evaluate on: categories on its labeled cases, units on those with a gold
    /// unit (a `unit` field, or the handler their `reply` names)
    #[arg(long)]
    test: PathBuf,
    /// Hold out this share of --test (seeded by --seed) and add the rest to the training cases,
    /// e.g. `--test replies.jsonl --hold-out 0.5` grounds on half the replies and scores the other
    #[arg(long, conflicts_with_all = ["cv", "current"], requires = "train")]
    hold_out: Option<f64>,
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
    /// The baseline script [default: scripts/baseline_svm.py found beside the binary or in the
    /// source tree it was built in]
    #[arg(long, env = "TRIAGE_BASELINE_SCRIPT")]
    baseline_script: Option<PathBuf>,
    /// Seed of the cross-validation folds and of --hold-out's split
    #[arg(long, default_value_t = 17)]
    seed: u64,
    /// JSONL of short labeled texts (`title` or `text`, and `label`), extra training rows of
    /// the lexical model; any that repeat or reword a test case's title are left out
    #[arg(long, conflicts_with = "current")]
    titles: Option<PathBuf>,
    #[command(flatten)]
    adapt: crate::commands::train::AdaptArgs,
}

fn bar(len: usize, what: &str) -> indicatif::ProgressBar {
    progress_bar(
        len as u64,
        what,
        "{prefix:>10} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}",
    )
}

/// Reads a case file (only its labeled cases when `labeled`), saying on stderr how many lines it
/// skipped (for training files, whose skipped lines are not in the report). Also `eval-drafts`'
/// reader: a bad line is said and skipped, never the end of the run.
pub(crate) fn read(
    path: &Path,
    labeled: bool,
    skipped: &mut Vec<triage_eval::Skipped>,
) -> Result<Vec<triage_core::Case>> {
    let before = skipped.len();
    let cases = if labeled {
        run::read_labeled(path, skipped)?
    } else {
        run::read_cases(path, skipped)?
    };
    say_skipped(path, &skipped[before..]);
    Ok(cases)
}

/// On stderr: how many lines of `path` were skipped, and the first with its reason.
pub(crate) fn say_skipped(path: &Path, skipped: &[triage_eval::Skipped]) {
    if let Some(first) = skipped.first() {
        eprintln!(
            "{}: {} lines skipped (first: line {}: {})",
            path.display(),
            skipped.len(),
            first.line,
            first.reason
        );
    }
}

pub fn run(global: &GlobalArgs, args: EvalArgs) -> Result<()> {
    let global = &args.adapt.global(global)?;
    let started = Instant::now();
    let mut skipped = Vec::new();
    let mut test = read(&args.test, args.cv.is_some(), &mut skipped)?;
    if test.is_empty() {
        bail!("no cases to evaluate in {}", args.test.display());
    }
    let mut held_back = Vec::new();
    if let Some(fraction) = args.hold_out {
        if !(fraction > 0.0 && fraction < 1.0) {
            bail!("--hold-out must be between 0 and 1, got {fraction}");
        }
        (held_back, test) = run::hold_out(test, fraction, args.seed);
    }
    let mut meta = serde_json::json!({
        "test": args.test.display().to_string(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });
    let mut report = if args.current {
        let pipeline = global.pipeline(false)?;
        let info = pipeline.info();
        describe_embedder(&mut meta, &info.embedder, info.max_tokens);
        run::current(&pipeline, &test, &bar, skipped, meta)?
    } else {
        let embedder = global.load_embedder()?;
        describe_embedder(&mut meta, embedder.model_id(), embedder.max_tokens());
        let progress = crate::commands::train::adapt_progress();
        let run = Run {
            builder: global.parts(embedder)?,
            open_store: &temporary_store,
            progress: &bar,
            classifier: triage_core::classify::ClassifierConfig {
                adapt: args.adapt.config(),
                ..Default::default()
            },
            adapt_progress: Some(&progress),
            extra_texts: match &args.titles {
                Some(path) => {
                    meta["titles"] = path.display().to_string().into();
                    crate::commands::train::read_titles(path)?
                }
                None => Vec::new(),
            },
        };
        match args.cv {
            Some(k) => run.cross_validate(&test, k, args.seed, skipped, meta)?,
            None => {
                let mut train = Vec::new();
                for path in &args.train {
                    train.extend(read(path, false, &mut Vec::new())?);
                }
                if let Some(fraction) = args.hold_out {
                    meta["hold_out"] = serde_json::json!({
                        "fraction": fraction,
                        "seed": args.seed,
                        "held_out": test.len(),
                        "added_to_train": held_back.len(),
                    });
                    train.append(&mut held_back);
                }
                meta["train"] = args
                    .train
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .into();
                run.train_test(train, &test, skipped, meta)?
            }
        }
    };
    report.meta["seconds"] = started.elapsed().as_secs_f64().into();
    if args.baseline {
        report.baseline = baseline(&args);
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

/// The evaluation's stores: embedded, in temporary directories.
fn temporary_store(dir: &Path, dim: usize) -> triage_core::Result<Arc<dyn CaseStore>> {
    Ok(Arc::new(triage_store::EdgeStore::open(dir, dim)?))
}

fn describe_embedder(meta: &mut serde_json::Value, model: &str, max_tokens: usize) {
    meta["embedder"] = model.into();
    meta["max_tokens"] = max_tokens.into();
}

/// The baseline's numbers, or `None` with the reason on stderr.
fn baseline(args: &EvalArgs) -> Option<serde_json::Value> {
    if args.cv.is_some() || args.current {
        eprintln!("baseline: skipped (only for --train/--test runs)");
        return None;
    }
    let Some(script) = args.baseline_script.clone().or_else(find_baseline_script) else {
        eprintln!(
            "baseline: skipped (scripts/baseline_svm.py is not beside the binary nor in the source tree it was built from; pass --baseline-script PATH)"
        );
        return None;
    };
    match run::run_baseline(&script, &args.train, &args.test) {
        Ok(result) => Some(result),
        Err(why) => {
            eprintln!("baseline: skipped ({why})");
            None
        }
    }
}

/// `scripts/baseline_svm.py` in a folder above the binary (a build in `target/release/`, or an
/// install that keeps `scripts/` beside `bin/`), else in the source tree it was built from.
fn find_baseline_script() -> Option<PathBuf> {
    const SCRIPT: &str = "scripts/baseline_svm.py";
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .map(|dir| dir.join(SCRIPT))
        .chain(std::iter::once(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(SCRIPT),
        ))
        .find(|path| path.is_file())
}
