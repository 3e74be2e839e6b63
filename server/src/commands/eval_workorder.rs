//! `triage eval-workorder`: work-order quality. Titles against human titles (ROUGE-L and chrF on
//! characters) beside the lead baseline, the nearest past case's title and, with `--llm N`, the
//! local LLM on the first N complaints; locations against the hand-checked gold. Needs no store.

use crate::app::GlobalArgs;
use anyhow::{Context, Result};
use std::path::PathBuf;
use triage_core::prompt::Prompts;
use triage_core::work_order::{self, TitledText};
use triage_eval::workorder::{self, WorkOrderEval};

#[derive(clap::Args, Debug)]
pub struct EvalWorkOrderArgs {
    /// Complaints with human titles to measure on (id, text, title), e.g. dev.jsonl
    #[arg(long)]
    test: PathBuf,
    /// Past cases with titles (train.jsonl): the title scorer is refitted on them and the nearest
    /// case's title comes from them
    #[arg(long)]
    past: PathBuf,
    /// Hand-checked locations (data/eval/locations-gold.jsonl); `line` indexes --test
    #[arg(long, default_value = "data/eval/locations-gold.jsonl")]
    locations: PathBuf,
    /// Also title the first N test complaints with the local LLM (few-shot, greedy)
    #[arg(long, default_value_t = 0)]
    llm: usize,
    /// Few-shot examples in the LLM's title prompt (taken from --past, the same for every complaint)
    #[arg(long, default_value_t = 4)]
    llm_examples: usize,
    /// Write the full report (scores, examples, location misses) as JSON here
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: EvalWorkOrderArgs) -> Result<()> {
    let read =
        |p: &PathBuf| workorder::read_titled(p).with_context(|| format!("reading {}", p.display()));
    let test = read(&args.test)?;
    let past = read(&args.past)?;
    let gold = workorder::read_location_gold(&args.locations)
        .with_context(|| format!("reading {}", args.locations.display()))?;
    anyhow::ensure!(
        gold.iter()
            .all(|g| g.line < test.len() && test[g.line].id == g.id),
        "{} does not index {} by line (ids differ)",
        args.locations.display(),
        args.test.display()
    );
    let directory = global.units()?;
    let input = WorkOrderEval {
        test: &test,
        past: &past,
        gold: &gold,
        test_lines: &test,
        directory: &directory,
    };
    let report = if args.llm > 0 {
        let generator = global.load_generator()?;
        let prompts = Prompts::load(global.prompts.as_deref())?;
        // Short past messages make short few-shot examples; the same ones for every complaint.
        let mut candidates: Vec<&workorder::TitledCase> = past
            .iter()
            .filter(|c| (30..=120).contains(&c.text.chars().count()))
            .collect();
        candidates.sort_by(|a, b| a.id.cmp(&b.id));
        let examples: Vec<TitledText> = candidates
            .iter()
            .take(args.llm_examples)
            .map(|c| TitledText {
                text: c.text.clone(),
                title: c.title.clone(),
            })
            .collect();
        let mut llm = |text: &str| {
            work_order::llm_title(generator.as_ref(), &prompts, &examples, text)
                .map_err(|e| e.to_string())
        };
        workorder::run(&input, Some(&mut llm), args.llm)
    } else {
        workorder::run(&input, None, 0)
    };
    print!("{}", workorder::summary(&report));
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
