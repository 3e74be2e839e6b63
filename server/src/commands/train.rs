//! `triage train`

use crate::app::{progress_bar, GlobalArgs};
use anyhow::{bail, Result};
use std::io::IsTerminal;
use std::sync::Mutex;
use triage_core::adapt::{AdaptConfig, AdaptMode, AdaptProgress};
use triage_core::classify::{AdaptReport, ClassifierConfig};
use triage_core::pipeline::TrainOptions;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Accuracy the abstain threshold must reach on held-out predictions
    #[arg(long, default_value_t = 0.95)]
    target_accuracy: f32,
    /// Folds of the out-of-fold predictions that calibrate the ensemble
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// JSONL of short labeled texts (`title` or `text`, and `label`: what call-takers typed),
    /// extra training rows of the lexical model; not stored as cases
    #[arg(long)]
    titles: Option<std::path::PathBuf>,
    #[command(flatten)]
    adapt: AdaptArgs,
}

/// How the encoder's top layers are adapted to the categories (`triage train`, `triage eval`).
#[derive(clap::Args, Debug, Clone)]
pub struct AdaptArgs {
    /// Also fine-tune the encoder's top layers to the categories (minutes instead of seconds on
    /// a CPU); the `adapted` method joins the ensemble only when its held-out numbers say it
    /// improves it
    #[arg(long, env = "TRIAGE_ADAPT")]
    pub adapt: bool,
    /// With --adapt: keep the adapted method even when its held-out numbers say it does not pay
    #[arg(long, requires = "adapt")]
    pub force_adapt: bool,
    /// Top layers of the encoder that are fine-tuned (the layers below stay shared)
    #[arg(long, default_value_t = AdaptConfig::default().layers)]
    pub adapt_layers: usize,
    /// Passes over the training cases
    #[arg(long, default_value_t = AdaptConfig::default().epochs)]
    pub adapt_epochs: usize,
    /// Peak learning rate of the fine-tuned layers
    #[arg(long, default_value_t = AdaptConfig::default().lr)]
    pub adapt_lr: f32,
    /// Peak learning rate of the classification head
    #[arg(long, default_value_t = AdaptConfig::default().head_lr)]
    pub adapt_head_lr: f32,
    /// Cases per optimizer step
    #[arg(long, default_value_t = AdaptConfig::default().batch)]
    pub adapt_batch: usize,
}

impl AdaptArgs {
    /// The global options of this run: --adapt fine-tunes f32 copies of the encoder's top
    /// layers on the f32 layers' hidden states, so it runs the encoder in f32, and refuses an
    /// explicit int8 before any work.
    pub fn global(&self, global: &GlobalArgs) -> Result<GlobalArgs> {
        let mut global = global.clone();
        if self.adapt {
            match global.embedder_precision {
                Some(p) if p != triage_models::Precision::F32 => bail!(
                    "--adapt needs the encoder in f32 (it fine-tunes f32 copies of its top layers on the f32 layers' hidden states); --embedder-precision {p} cannot be combined with it"
                ),
                _ => global.embedder_precision = Some(triage_models::Precision::F32),
            }
        }
        Ok(global)
    }

    pub fn config(&self) -> AdaptConfig {
        AdaptConfig {
            mode: match (self.adapt, self.force_adapt) {
                (false, _) => AdaptMode::Off,
                (true, false) => AdaptMode::Auto,
                (true, true) => AdaptMode::On,
            },
            layers: self.adapt_layers,
            epochs: self.adapt_epochs,
            lr: self.adapt_lr,
            head_lr: self.adapt_head_lr,
            batch: self.adapt_batch,
            ..AdaptConfig::default()
        }
    }
}

/// Shows how a fine-tuning goes: a progress bar on a terminal, and a line per epoch on stderr
/// (so logs show it too); without a terminal also a line at every tenth of each stage.
pub fn adapt_progress() -> impl Fn(&AdaptProgress) + Sync {
    let bar: Mutex<Option<(String, indicatif::ProgressBar)>> = Mutex::new(None);
    let terminal = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    // The stage and tenth of it last logged.
    let logged: Mutex<(String, usize)> = Mutex::new((String::new(), 0));
    move |p: &AdaptProgress| {
        if !terminal {
            let tenth = |stage: String, done: usize, total: usize| {
                let tenth = done * 10 / total.max(1);
                let mut logged = logged.lock().expect("progress lock");
                let new = logged.0 != stage || logged.1 != tenth;
                *logged = (stage, tenth);
                new
            };
            match p {
                AdaptProgress::Encoding { done, total } if tenth("encoding".into(), *done, *total) => eprintln!(
                    "adapting the encoder: lower layers over {done}/{total} texts ({:.0} s)",
                    started.elapsed().as_secs_f32()
                ),
                AdaptProgress::Step {
                    epoch,
                    epochs,
                    step,
                    steps,
                    loss,
                } if tenth(format!("epoch {epoch}"), *step, *steps) => eprintln!(
                    "adapting the encoder: epoch {epoch}/{epochs}, step {step}/{steps}, loss {loss:.4} ({:.0} s)",
                    started.elapsed().as_secs_f32()
                ),
                _ => {}
            }
        }
        let mut bar = bar.lock().expect("progress lock");
        let (name, done, total) = match p {
            AdaptProgress::Encoding { done, total } => ("encoding".to_string(), *done, *total),
            AdaptProgress::Step {
                epoch,
                epochs,
                step,
                steps,
                loss,
            } => {
                if let Some((_, b)) = bar.as_ref() {
                    b.set_message(format!("loss {loss:.3}"));
                }
                (format!("epoch {epoch}/{epochs}"), *step, *steps)
            }
            AdaptProgress::Resumed { epoch } => {
                eprintln!("adapting the encoder: resumed from the checkpoint after epoch {epoch}");
                return;
            }
            AdaptProgress::Epoch {
                epoch,
                loss,
                seconds,
            } => {
                if let Some((_, b)) = bar.take() {
                    b.finish_and_clear();
                }
                eprintln!(
                    "adapting the encoder: epoch {epoch} done, training loss {loss:.4} ({seconds:.0} s, checkpoint written)"
                );
                return;
            }
        };
        if bar.as_ref().is_none_or(|(n, _)| *n != name) {
            if let Some((_, b)) = bar.take() {
                b.finish_and_clear();
            }
            let b = progress_bar(
                total as u64,
                &name,
                "{prefix:>12} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}",
            );
            *bar = Some((name, b));
        }
        if let Some((_, b)) = bar.as_ref() {
            b.set_position(done as u64);
        }
    }
}

/// One line on what adapting the encoder gave (or why it was skipped).
pub fn describe_adaptation(report: &AdaptReport) -> String {
    if let Some(reason) = &report.skipped {
        return format!("encoder not adapted: {reason}");
    }
    format!(
        "encoder adapted on {} cases in {:.0} s; on {} held-out cases: adapted alone {:.4}, ensemble with it {:.4} (log-loss {:.4}, {:.1}% routed at 99%) vs without {:.4} (log-loss {:.4}, {:.1}% at 99%): {}",
        report.trained_on,
        report.seconds,
        report.held_out,
        report.accuracy,
        report.with.accuracy,
        report.with.log_loss,
        report.with.coverage_99 * 100.0,
        report.without.accuracy,
        report.without.log_loss,
        report.without.coverage_99 * 100.0,
        if report.used { "used" } else { "not used (it does not pay)" }
    )
}

/// The labeled short texts of `--titles`, saying on stderr how many lines were skipped.
pub(crate) fn read_titles(
    path: &std::path::Path,
) -> Result<Vec<triage_core::classify::LabeledText>> {
    let mut skipped = Vec::new();
    let titles = triage_eval::run::read_texts(path, &mut skipped)?;
    crate::commands::eval::say_skipped(path, &skipped);
    if titles.is_empty() {
        bail!("no labeled texts in {}", path.display());
    }
    Ok(titles)
}

pub fn run(global: &GlobalArgs, args: TrainArgs) -> Result<()> {
    let global = &args.adapt.global(global)?;
    let pipeline = global.builder(false)?.build()?;
    let config = ClassifierConfig {
        target_accuracy: args.target_accuracy,
        folds: args.folds,
        adapt: args.adapt.config(),
        ..Default::default()
    };
    let dir = global.classifier_dir();
    let work_dir = dir.join("adapt-work");
    let progress = adapt_progress();
    let titles = match &args.titles {
        Some(path) => read_titles(path)?,
        None => Vec::new(),
    };
    let options = TrainOptions {
        work_dir: Some(&work_dir),
        progress: Some(&progress),
        stop: None,
        extra_texts: &titles,
    };
    let classifier = pipeline.train_with(config, options)?;
    classifier.save(&dir.join(format!("{}.bin", classifier.version)))?;
    // The pointer is switched last, so a crash leaves the previous classifier current.
    triage_core::fsutil::write_atomic(&dir.join("current"), classifier.version.as_bytes())?;
    let r = &classifier.report;
    println!(
        "classifier {} trained on {} labeled cases in {:.1} s",
        classifier.version, r.labeled_cases, r.seconds
    );
    let methods: Vec<&str> = classifier.methods().iter().map(|m| m.name()).collect();
    println!("methods: {}", methods.join(", "));
    for (method, acc) in &r.oof_accuracy {
        let weight = r
            .method_weights
            .get(method)
            .map(|w| format!(" (weight {w:.2})"))
            .unwrap_or_default();
        println!("  out-of-fold accuracy {method:<10} {acc:.4}{weight}");
    }
    if let Some(adapt) = &r.adapt {
        println!("{}", describe_adaptation(adapt));
    }
    let units = &classifier.units;
    let fit = &units.model.fit;
    let learned = units
        .units
        .iter()
        .filter(|u| pipeline.units().resolve(&u.id).is_none())
        .count();
    println!(
        "units: {} with history ({learned} learned, the rest configured) from {} past cases with a unit, in {}",
        units.units.len(),
        fit.cases,
        triage_core::classify::Classifier::units_path(&dir.join(format!("{}.bin", classifier.version)))
            .display()
    );
    if let (Some(top1), Some(top3)) = (fit.loo_top1, fit.loo_top3) {
        println!(
            "  unit suggestions fitted on them, each left out in turn: top-1 {top1:.3}, top-3 {top3:.3}"
        );
    }
    match r.coverage {
        Some(c) => println!(
            "abstain below confidence {:.3}: {:.1}% of cases routed automatically at {:.0}% accuracy",
            classifier.threshold,
            c * 100.0,
            classifier.config.target_accuracy * 100.0
        ),
        None => println!("cold start (zero-shot only): abstain threshold {:.2} is a default, not measured", classifier.threshold),
    }
    if r.extra_texts > 0 {
        println!(
            "  the lexical model also learned from {} short texts (--titles)",
            r.extra_texts
        );
    }
    if let Some(c) = r.coverage_99 {
        println!("  at 99% accuracy {:.1}% could be (out-of-fold)", c * 100.0);
    }
    Ok(())
}
