//! `triage train`

use crate::app::GlobalArgs;
use anyhow::Result;
use triage_core::classify::ClassifierConfig;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Accuracy the abstain threshold must reach on held-out predictions
    #[arg(long, default_value_t = 0.95)]
    target_accuracy: f32,
    /// Folds of the out-of-fold predictions that calibrate the ensemble
    #[arg(long, default_value_t = 5)]
    folds: usize,
}

pub fn run(global: &GlobalArgs, args: TrainArgs) -> Result<()> {
    let pipeline = global.builder(false)?.build()?;
    let config = ClassifierConfig {
        target_accuracy: args.target_accuracy,
        folds: args.folds,
        ..Default::default()
    };
    let classifier = pipeline.train(config)?;
    let dir = global.classifier_dir();
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
    Ok(())
}
