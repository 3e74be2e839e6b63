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
    /// Check the embedded store and the classifier files for damage, changing nothing; name
    /// each damaged file and the command that repairs or rebuilds it (exit status 1 on damage)
    Check,
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
        StoreCommand::Check => check(global),
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

/// What to do about a damaged store: its files cannot be repaired in place.
pub const REBUILD_STORE: &str = "restore DATA_DIR/store from a backup, or rebuild it: move the \
store directory aside, run `triage import` on your case history, then `triage train`";

/// `triage store check`: opens a copy of the embedded store (opening writes, e.g. prunes the
/// WAL, and the original must not change), reads every case and vector back, and loads every
/// classifier file. Prints one line per part and what to do about each damaged one.
fn check(global: &GlobalArgs) -> Result<()> {
    let data_dir = global.data_dir();
    let mut damaged = Vec::new();
    let store_dir = data_dir.join("store");
    if global.store != crate::app::StoreKind::Edge {
        println!("store: a Qdrant server (--store qdrant): check it with Qdrant's own tools");
    } else if !store_dir.exists() {
        println!(
            "store: none in {} (`triage import` creates it)",
            store_dir.display()
        );
    } else {
        match check_edge(global, &store_dir) {
            Ok(line) => println!("store: ok, {line}"),
            Err(e) => {
                let said = format!("{e:#}");
                println!("store: DAMAGED: {said}");
                if !said.contains(REBUILD_STORE) {
                    println!("  to repair: {REBUILD_STORE}");
                }
                damaged.push(store_dir.display().to_string());
            }
        }
    }
    let classifier_dir = global.classifier_dir();
    let current = global.current_classifier_version().ok();
    match &current {
        Some(version) => println!("classifier/current: names {version}"),
        None if classifier_dir.join("current").exists() => {
            println!("classifier/current: DAMAGED: unreadable");
            damaged.push(classifier_dir.join("current").display().to_string());
        }
        None => println!("classifier: none yet (`triage train` makes one)"),
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&classifier_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "bin"));
    files.sort();
    if let Some(version) = &current {
        let named = classifier_dir.join(format!("{version}.bin"));
        if !files.contains(&named) {
            println!(
                "classifier {}: DAMAGED: missing (classifier/current names it)",
                named.display()
            );
            println!("  to repair: run `triage train`");
            damaged.push(named.display().to_string());
        }
    }
    for file in &files {
        let is_current = current
            .as_ref()
            .is_some_and(|v| file.file_stem().is_some_and(|s| s == v.as_str()));
        match triage_core::classify::Classifier::load(file) {
            Ok(c) => println!(
                "classifier {}: ok ({} labels{})",
                file.display(),
                c.labels.len(),
                if is_current { ", current" } else { "" }
            ),
            Err(e) if is_current => {
                println!("classifier {}: DAMAGED (current): {e}", file.display());
                println!(
                    "  to repair: run `triage train`, or write an intact earlier version's name \
                     into {}",
                    classifier_dir.join("current").display()
                );
                damaged.push(file.display().to_string());
            }
            Err(e) => println!(
                "classifier {}: unreadable, not current (delete it): {e}",
                file.display()
            ),
        }
    }
    if !damaged.is_empty() {
        bail!(
            "damaged: {} (see above; nothing was changed)",
            damaged.join(", ")
        );
    }
    println!("ok: nothing damaged");
    Ok(())
}

/// Opens a copy of the store and reads every case with its vector; errors name the original.
fn check_edge(global: &GlobalArgs, store_dir: &std::path::Path) -> Result<String> {
    let copy = tempfile::tempdir().context("a temporary directory for the copy")?;
    let copied = copy.path().join("store");
    copy_dir(store_dir, &copied)?;
    read_all(global, store_dir, copy.path()).map_err(|e| {
        let said = format!("{e:#}").replace(
            &copied.display().to_string(),
            &store_dir.display().to_string(),
        );
        anyhow::anyhow!(said)
    })
}

fn read_all(
    global: &GlobalArgs,
    store_dir: &std::path::Path,
    copy: &std::path::Path,
) -> Result<String> {
    let config = store_dir.join("edge_config.json");
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let parsed: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not the store's configuration", config.display()))?;
    let dim = parsed["vectors"]["text"]["size"]
        .as_u64()
        .with_context(|| format!("{} names no vector size", config.display()))?
        as usize;
    let store = global.open_edge(copy, dim)?;
    let all = CaseFilter::default();
    let counted = store.count(&all)?;
    let mut read = 0;
    for page in store.pages(&all, None, 512) {
        let page = page?;
        for (case, vector) in &page.cases {
            if vector.len() != dim || vector.iter().any(|x| !x.is_finite()) {
                bail!("case {:?} has a damaged vector", case.id);
            }
        }
        read += page.cases.len();
    }
    if read != counted {
        bail!("the store counts {counted} cases but {read} could be read");
    }
    Ok(format!(
        "{read} cases of {dim} dimensions read back from {}",
        store_dir.display()
    ))
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("reading {}", entry.path().display()))?;
        }
    }
    Ok(())
}
