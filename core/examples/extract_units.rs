//! Extracts the units official replies name as handling each complaint (see `reply_units`).
//!
//! ```text
//! cargo run --release -p triage-core --example extract_units -- REPLIES.jsonl [LIMIT] \
//!     [--directory data/units.toml] [--aliases data/unit_aliases.toml]
//! ```
//! Reads one JSON object a line with `id`, `reply` and the complaint's `title` and `text`; prints
//! one JSON line per reply: `{"id", "units": [{id, name, district, kind, role, evidence}]}`, and
//! to stderr the share of replies with at least one handler.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use triage_core::reply_units::{extract_units, handlers, UnitAliases};
use triage_core::units::UnitDirectory;

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut directory_path = root.join("data/units.toml");
    let mut aliases_path: Option<PathBuf> = None;
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--directory" => directory_path = args.next().context("--directory PATH")?.into(),
            "--aliases" => aliases_path = Some(args.next().context("--aliases PATH")?.into()),
            "-h" | "--help" => {
                eprintln!("usage: extract_units REPLIES.jsonl [LIMIT] [--directory PATH] [--aliases PATH]");
                return Ok(());
            }
            _ => positional.push(arg),
        }
    }
    let Some(path) = positional.first() else {
        bail!("usage: extract_units REPLIES.jsonl [LIMIT] [--directory PATH] [--aliases PATH]");
    };
    let limit: usize = match positional.get(1) {
        Some(n) => n.parse().context("LIMIT must be a number")?,
        None => usize::MAX,
    };
    let directory = UnitDirectory::load(&directory_path)?;
    let aliases = match &aliases_path {
        Some(p) => UnitAliases::load(p)?,
        None => UnitAliases::builtin(),
    };

    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut total, mut labelled) = (0usize, 0usize);
    for line in BufReader::new(file).lines().take(limit) {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record: serde_json::Value = serde_json::from_str(&line).context("a JSON line")?;
        let field = |k: &str| record.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let complaint = format!("{}\n{}", field("title"), field("text"));
        let units = extract_units(field("reply"), &complaint, &directory, &aliases);
        total += 1;
        if handlers(&units).next().is_some() {
            labelled += 1;
        }
        let id = record.get("id").cloned().unwrap_or(serde_json::Value::Null);
        writeln!(out, "{}", serde_json::json!({"id": id, "units": units}))?;
    }
    eprintln!(
        "{labelled}/{total} replies ({:.1}%) name at least one handler",
        100.0 * labelled as f64 / total.max(1) as f64
    );
    Ok(())
}
