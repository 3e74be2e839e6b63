//! Work-order measurements without the LLM (the rules and baselines): the same numbers as
//! `triage eval-workorder` without `--llm`, with only the core and eval crates to build.
//!
//! ```text
//! cargo run --release -p triage-eval --example workorder -- \
//!   ../shared/data/teddycup2020c/dev.jsonl ../shared/data/teddycup2020c/train.jsonl \
//!   data/eval/locations-gold.jsonl data/units.toml
//! ```

use anyhow::{Context, Result};
use std::path::PathBuf;
use triage_eval::workorder::{self, WorkOrderEval};

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [test, past, gold, units] = args.as_slice() else {
        anyhow::bail!("usage: workorder TEST.jsonl PAST.jsonl LOCATIONS-GOLD.jsonl UNITS.toml");
    };
    let read = |p: &PathBuf| workorder::read_titled(p).with_context(|| p.display().to_string());
    let test_lines = read(test)?;
    let past = read(past)?;
    let gold = workorder::read_location_gold(gold).with_context(|| gold.display().to_string())?;
    let directory = triage_core::units::UnitDirectory::load(units)?;
    let input = WorkOrderEval {
        test: &test_lines,
        past: &past,
        gold: &gold,
        test_lines: &test_lines,
        directory: &directory,
    };
    let report = workorder::run(&input, None, 0);
    print!("{}", workorder::summary(&report));
    if std::env::var_os("SHOW_TITLE_PLACE").is_some() {
        use triage_core::places::{self, PlaceLevel};
        for case in &past {
            let text = triage_core::text::normalize(&case.text);
            let wanted: Vec<String> = places::extract(&case.title, &directory)
                .into_iter()
                .filter(|p| p.level > PlaceLevel::District && text.contains(p.name.as_str()))
                .map(|p| p.name)
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let got = places::locate(&text, &directory);
            if !got
                .as_ref()
                .is_some_and(|l| wanted.iter().any(|w| l.text.contains(w.as_str())))
            {
                let all: Vec<String> = places::extract(&text, &directory)
                    .into_iter()
                    .filter(|p| p.level > PlaceLevel::District)
                    .map(|p| format!("{}:{:?}", p.name, p.level))
                    .collect();
                println!(
                    "{} | want {:?} | got {:?} | {}",
                    case.title,
                    wanted,
                    got.map(|l| l.text),
                    all.join(" ")
                );
            }
        }
    }
    if std::env::var_os("PRINT_WEIGHTS").is_some() {
        println!("{:?}", report.fitted_title_weights);
    }
    if std::env::var_os("SHOW_MISSES").is_some() {
        for m in &report.location_misses {
            println!("{m}");
        }
    }
    Ok(())
}
