//! `triage store migrate --from edge:DIR --to qdrant:URL` (and back): copies every case with its
//! vector and payload in pages, resumable, and checks the counts at the end.

use crate::app::{progress_bar, GlobalArgs};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use triage_core::{fsutil, CaseFilter, CaseStore};

#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(clap::Subcommand, Debug)]
enum StoreCommand {
    /// Copy every case with its vector from one store to another (resumable; counts checked)
    Migrate(MigrateArgs),
}

#[derive(clap::Args, Debug)]
struct MigrateArgs {
    /// `edge:DATA_DIR` or `qdrant:URL` (the --qdrant-* options apply to it)
    #[arg(long)]
    from: Location,
    /// `edge:DATA_DIR` or `qdrant:URL`
    #[arg(long)]
    to: Location,
    /// Cases per page (each page is written and checkpointed before the next)
    #[arg(long, default_value_t = 256)]
    batch: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Location {
    Edge(PathBuf),
    Qdrant(String),
}

impl std::str::FromStr for Location {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("edge", dir)) if !dir.is_empty() => Ok(Self::Edge(dir.into())),
            Some(("qdrant", url)) if !url.is_empty() => Ok(Self::Qdrant(url.into())),
            _ => Err(format!(
                "{s:?}: write edge:DATA_DIR or qdrant:URL (e.g. qdrant:http://127.0.0.1:6334)"
            )),
        }
    }
}

/// How far a migration got: the source's scroll cursor after the last page written.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    from: Location,
    to: Location,
    cursor: Option<String>,
    copied: u64,
}

pub fn run(global: &GlobalArgs, args: StoreArgs) -> Result<()> {
    match args.command {
        StoreCommand::Migrate(args) => migrate(global, args),
    }
}

fn open(global: &GlobalArgs, at: &Location, dim: usize) -> Result<Arc<dyn CaseStore>> {
    match at {
        Location::Edge(dir) => global.open_edge(dir, dim),
        Location::Qdrant(url) => global.open_qdrant(url, dim),
    }
    .with_context(|| format!("opening {at:?}"))
}

fn migrate(global: &GlobalArgs, args: MigrateArgs) -> Result<()> {
    if args.from == args.to {
        bail!("--from and --to are the same store");
    }
    // The vector size is the embedder's: both stores must hold its vectors.
    let dim = global.load_embedder()?.dim();
    let from = open(global, &args.from, dim)?;
    let to = open(global, &args.to, dim)?;
    let dir = global.data_dir().join("migrate");
    let migration = format!("{:?}->{:?}", args.from, args.to);
    let name = format!("{:016x}.json", triage_core::text::stable_hash(&migration));
    let checkpoint_path = dir.join(name);
    let mut checkpoint = match std::fs::read(&checkpoint_path) {
        Ok(bytes) => {
            let c: Checkpoint = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", checkpoint_path.display()))?;
            eprintln!("resuming after {} cases copied by an earlier run", c.copied);
            c
        }
        Err(_) => Checkpoint {
            from: args.from.clone(),
            to: args.to.clone(),
            cursor: None,
            copied: 0,
        },
    };
    let all = CaseFilter::default();
    let total = from.count(&all)?;
    let bar = progress_bar(
        total as u64,
        "migrate",
        "{prefix} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}",
    );
    bar.set_position(checkpoint.copied);
    let mut pages = from.pages(&all, checkpoint.cursor.clone(), args.batch);
    while let Some(page) = pages.next() {
        let page = page?;
        // Durable on the destination before the cursor moves past the page.
        to.upsert(&page.cases)?;
        checkpoint.copied += page.cases.len() as u64;
        checkpoint.cursor = pages.cursor().map(String::from);
        bar.set_position(checkpoint.copied);
        if !pages.is_done() {
            fsutil::write_atomic(&checkpoint_path, &serde_json::to_vec(&checkpoint)?)?;
        }
    }
    bar.finish_and_clear();
    to.optimize()?;
    let (source, destination) = (from.count(&all)?, to.count(&all)?);
    println!(
        "copied {} cases; source holds {source}, destination {destination}",
        checkpoint.copied
    );
    let _ = std::fs::remove_file(&checkpoint_path);
    if destination < source {
        bail!("the destination holds fewer cases ({destination}) than the source ({source})");
    }
    if destination > source {
        println!(
            "the destination held {} other cases before",
            destination - source
        );
    }
    Ok(())
}
