//! `triage import FILE…`

use crate::app::{progress_bar, GlobalArgs};
use anyhow::Result;
use std::path::PathBuf;
use triage_core::ingest::Importer;

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// JSONL (one case per line: id, text, and optionally title, label, unit, district, time,
    /// reply) or CSV with a header row of the same names
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Cases embedded and stored per round (each round is flushed to disk and checkpointed)
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(global: &GlobalArgs, args: ImportArgs) -> Result<()> {
    let pipeline = global.builder(false)?.build()?;
    let importer = Importer {
        pipeline: &pipeline,
        batch_size: args.batch_size.max(1),
        checkpoint_dir: Some(global.data_dir().join("import")),
    };
    let mut summaries = Vec::new();
    for file in &args.files {
        let bar = progress_bar(
            0,
            &file.display().to_string(),
            "{prefix} [{bar:30}] {percent}% {msg} · {binary_bytes_per_sec} · ETA {eta}",
        );
        let summary = importer
            .import_file(file, &mut |p| {
                bar.set_length(p.bytes_total);
                bar.set_position(p.bytes_done);
                bar.set_message(format!("{} cases", p.cases_done));
            })
            .map_err(|e| {
                crate::app::resumable(
                    e,
                    format!(
                        "importing {}: every batch reported before this one is stored; fix the \
                         cause (e.g. free disk space) and run the same command again: it resumes \
                         after the last stored batch",
                        file.display()
                    ),
                )
            })?;
        bar.finish_and_clear();
        if !args.json {
            print_summary(&summary);
        }
        summaries.push(summary);
    }
    pipeline.optimize()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summaries)?);
    }
    Ok(())
}

fn print_summary(s: &triage_core::ingest::ImportSummary) {
    println!(
        "{}: {} imported, {} updated, {} skipped",
        s.file,
        s.imported,
        s.updated,
        s.skipped.len()
    );
    if s.resumed_from_line > 0 {
        println!(
            "  resumed after line {} (an earlier run had stored the lines before it)",
            s.resumed_from_line
        );
    }
    for r in s.skipped.iter().take(20) {
        println!("  line {}: {}", r.line, r.reason);
    }
    if s.skipped.len() > 20 {
        println!("  … {} more (use --json for all)", s.skipped.len() - 20);
    }
}
