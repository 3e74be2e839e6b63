//! `triage batch`: reclassify a JSONL file or the stored cases (see `triage_core::batch`).

use crate::app::{progress_bar, GlobalArgs};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use triage_core::batch::{self, BatchSpec, Shard, Source, Summary, WriteBack};
use triage_core::CaseFilter;

#[derive(clap::Args, Debug)]
pub struct BatchArgs {
    /// JSONL of cases to classify (id and text required, as for import)
    #[arg(
        long,
        required_unless_present = "from_store",
        conflicts_with = "from_store"
    )]
    input: Option<PathBuf>,
    /// Reclassify the stored cases instead (narrowed by --category/--unit/--district/--labeled-only)
    #[arg(long)]
    from_store: bool,
    /// One JSON line per input line, in input order; `OUT.checkpoint` and `OUT.errors.jsonl` sit beside it
    #[arg(long)]
    output: PathBuf,
    /// Lexical classifier only: no embedding, similar cases or duplicate flag (thousands a second)
    #[arg(long)]
    fast: bool,
    /// Write reply drafts too (the LLM: about a second or more per complaint)
    #[arg(long)]
    draft: bool,
    /// Store each case's new prediction (category, confidence, unit, classifier version) on the
    /// stored case; human labels are never changed. Needs --from-store
    #[arg(long, requires = "from_store")]
    write_back: bool,
    /// With --write-back: count what would change (old → new matrix) and write nothing to the store
    #[arg(long, requires = "write_back")]
    dry_run: bool,
    /// This process's share of the job, `i/n` (0-based): items i, i+n, i+2n, … Run n processes
    /// (on one or several machines sharing the store) with 0/n … n-1/n and separate outputs
    #[arg(long, default_value = "0/1")]
    shard: Shard,
    /// Complaints embedded together and checkpointed at once [default: 64, or 1024 with --fast]
    #[arg(long)]
    chunk: Option<usize>,
    #[arg(long)]
    category: Option<String>,
    #[arg(long)]
    unit: Option<String>,
    #[arg(long)]
    district: Option<String>,
    #[arg(long)]
    labeled_only: bool,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(global: &GlobalArgs, args: BatchArgs) -> Result<()> {
    let source = match (&args.input, args.from_store) {
        (Some(path), false) => Source::File(path.clone()),
        (None, true) => Source::Store(CaseFilter {
            category: args.category.clone(),
            unit: args.unit.clone(),
            district: args.district.clone(),
            labeled_only: args.labeled_only,
            ..Default::default()
        }),
        _ => bail!("give either --input FILE or --from-store"),
    };
    let spec = BatchSpec {
        source,
        output: args.output.clone(),
        fast: args.fast,
        draft: args.draft,
        write_back: WriteBack::from_flags(args.write_back, args.dry_run),
        shard: args.shard,
        chunk: args.chunk.unwrap_or(if args.fast { 1024 } else { 64 }),
    };
    let pipeline = global.pipeline(args.draft)?;
    let bar = progress_bar(
        0,
        "batch",
        "{prefix} [{bar:30}] {pos}/{len} {msg} · {per_sec} · ETA {eta}",
    );
    let mut last_log = Instant::now();
    let summary = batch::run(&pipeline, &spec, &mut |s: &Summary| {
        if let Some(total) = s.total {
            bar.set_length(total);
        }
        bar.set_position(s.counts.consumed);
        bar.set_message(format!("{} errors", s.counts.errors));
        // Without a terminal (logs, nohup) a line every ten seconds says how it goes.
        if bar.is_hidden() && last_log.elapsed() > Duration::from_secs(10) {
            last_log = Instant::now();
            eprintln!(
                "batch: {}/{} read, {} classified, {} errors, {:.0}/s",
                s.counts.consumed,
                s.total.map_or("?".into(), |t| t.to_string()),
                s.counts.classified,
                s.counts.errors,
                s.rate
            );
        }
        true
    })
    .map_err(|e| {
        crate::app::resumable(
            e,
            format!(
                "batch job writing {}: the lines before its last checkpoint are kept; fix the \
                 cause (e.g. free disk space) and run the same command again: it resumes from there",
                spec.output.display()
            ),
        )
    })?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, spec.write_back);
    }
    Ok(())
}

fn print_summary(s: &Summary, write_back: WriteBack) {
    let c = &s.counts;
    if s.done && s.resumed_at == c.consumed {
        println!("the job was already complete; nothing to do");
    } else if s.resumed_at > 0 {
        println!(
            "resumed after {} items read by an earlier run",
            s.resumed_at
        );
    }
    println!(
        "{} read, {} classified ({} abstain, {} possible duplicates), {} errors in {:.1} s: {:.0} classified/s",
        c.consumed, c.classified, c.abstained, c.duplicates, c.errors, s.seconds, s.rate
    );
    let stages: Vec<String> = c
        .stage_seconds
        .iter()
        .map(|(stage, secs)| format!("{stage} {:.0}%", 100.0 * secs / s.seconds.max(1e-9)))
        .collect();
    println!("time: {}", stages.join(", "));
    let steps: Vec<String> = c
        .analysis_cpu_seconds
        .iter()
        .map(|(step, secs)| format!("{step} {secs:.2}"))
        .collect();
    if !steps.is_empty() {
        println!("analysis CPU seconds: {}", steps.join(", "));
    }
    println!("output: {}", s.output.display());
    if c.errors > 0 {
        println!("bad lines: {}", s.errors_file.display());
    }
    if write_back != WriteBack::Off {
        let verb = if write_back == WriteBack::DryRun {
            "would change"
        } else {
            "changed"
        };
        println!(
            "write-back: {} of {} stored predictions {verb} (old → new):",
            c.changed(),
            c.written_back
        );
        for (old, row) in &c.changes {
            for (new, n) in row.iter().filter(|(new, _)| *new != old) {
                println!("  {old} → {new}: {n}");
            }
        }
    }
}
