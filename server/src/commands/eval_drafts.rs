//! `triage eval-drafts`: reply drafts measured side by side on a held-out split of
//! `replies.jsonl` (the library side is `triage_eval::drafts`). The other replies and a labeled
//! set (for the classifier) go into a store in a temporary directory; the held-out complaints and
//! their official replies never enter it. Writes report.json and report.md to --out after every
//! complaint, so a long run stopped early still says exactly what it measured.

use super::eval::read;
use crate::app::GlobalArgs;
use anyhow::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;
use triage_core::classify::ClassifierConfig;
use triage_core::reply::DraftMethod;
use triage_core::Case;
use triage_eval::drafts::{self, DraftsReport};

#[derive(clap::Args, Debug)]
pub struct EvalDraftsArgs {
    /// Complaints with official replies (replies.jsonl): a seeded split is held out, the rest
    /// grounds the drafts
    #[arg(long)]
    replies: PathBuf,
    /// Labeled cases (train.jsonl) the classifier is trained on; held-out ids and texts excluded
    #[arg(long)]
    train: PathBuf,
    /// Labeled cases used, the first N of --train
    #[arg(long, default_value_t = 1500)]
    train_limit: usize,
    /// Held-out complaints
    #[arg(long, default_value_t = 200)]
    holdout: usize,
    /// Run the model methods (legacy, restate) on the first N held-out complaints only (the
    /// LLM is slow on a CPU); the others run on all
    #[arg(long)]
    model_limit: Option<usize>,
    /// Methods, comma-separated (legacy, retrieval, template, restate)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "legacy,retrieval,template,restate"
    )]
    methods: Vec<DraftMethod>,
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Complaints shown with every method's draft in report.md
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// Directory for report.json and report.md
    #[arg(long)]
    out: PathBuf,
}

pub fn run(global: &GlobalArgs, args: EvalDraftsArgs) -> Result<()> {
    let mut replies: Vec<Case> = read(&args.replies, false, &mut Vec::new())?
        .into_iter()
        .filter(|c| c.reply.as_deref().is_some_and(|r| !r.trim().is_empty()))
        .collect();
    anyhow::ensure!(
        replies.len() > args.holdout,
        "{} has {} complaints with a reply: not more than --holdout {}",
        args.replies.display(),
        replies.len(),
        args.holdout
    );
    replies.sort_by(|a, b| a.id.cmp(&b.id));
    replies.shuffle(&mut rand::rngs::StdRng::seed_from_u64(args.seed));
    let grounding = replies.split_off(args.holdout);
    let held_out = replies;
    let held_ids: HashSet<&str> = held_out.iter().map(|c| c.id.as_str()).collect();
    let held_texts: HashSet<&str> = held_out.iter().map(|c| c.text.trim()).collect();
    let labeled: Vec<Case> = read(&args.train, true, &mut Vec::new())?
        .into_iter()
        .filter(|c| !held_ids.contains(c.id.as_str()) && !held_texts.contains(c.text.trim()))
        .take(args.train_limit)
        .map(|mut c| {
            // A labeled case and a reply may share an id across files: keep both.
            c.id = format!("train-{}", c.id);
            c.reply = None;
            c
        })
        .collect();

    let embedder = global.load_embedder()?;
    let generator = if args.methods.iter().any(|m| m.uses_model()) {
        Some(global.load_generator()?)
    } else {
        None
    };
    let dir = tempfile::tempdir()?;
    let store = global.open_edge(dir.path(), embedder.dim())?;
    let pipeline = global
        .parts(embedder)?
        .store(store)
        .generator(generator)
        .build()?;
    let started = Instant::now();
    let all: Vec<Case> = labeled
        .iter()
        .cloned()
        .chain(grounding.iter().cloned())
        .collect();
    for (i, chunk) in all.chunks(256).enumerate() {
        pipeline.import_cases(chunk.to_vec())?;
        eprintln!(
            "stored {}/{} cases ({:.0} s)",
            (i * 256 + chunk.len()),
            all.len(),
            started.elapsed().as_secs_f64()
        );
    }
    pipeline.optimize()?;
    pipeline.set_classifier(pipeline.train(ClassifierConfig::default())?)?;
    eprintln!(
        "classifier trained ({:.0} s)",
        started.elapsed().as_secs_f64()
    );

    std::fs::create_dir_all(&args.out)?;
    let model_n = args.model_limit.unwrap_or(args.holdout).min(held_out.len());
    let write = |report: &DraftsReport| -> Result<()> {
        std::fs::write(
            args.out.join("report.json"),
            serde_json::to_string_pretty(report)?,
        )?;
        std::fs::write(args.out.join("report.md"), drafts::markdown(report))?;
        Ok(())
    };
    let empty = DraftsReport {
        held_out: held_out.len(),
        grounding_replies: grounding.len(),
        labeled_cases: labeled.len(),
        model_n: 0,
        seed: args.seed,
        rows: Vec::new(),
        work_order_ms_p50: 0.0,
        analyze_ms_p50: 0.0,
        samples: Vec::new(),
    };
    let started = Instant::now();
    let mut failed = None;
    let report = drafts::run(
        &pipeline,
        &held_out,
        &args.methods,
        model_n,
        args.samples,
        &mut |done, report| {
            if let Err(e) = write(report) {
                failed.get_or_insert(e);
            }
            eprintln!(
                "draft round {done} of {} (model methods on {}) ({:.0} s)",
                held_out.len() + model_n,
                report.model_n,
                started.elapsed().as_secs_f64()
            );
        },
        empty,
    )?;
    if let Some(e) = failed {
        return Err(e.context(format!("writing to {}", args.out.display())));
    }
    write(&report)?;
    print!("{}", drafts::table(&report));
    Ok(())
}
