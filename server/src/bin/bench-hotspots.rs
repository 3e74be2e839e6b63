//! Builds the store for the hotspot scale benchmark (see `scripts/bench-hotspots.sh`): N cases
//! recycled from a JSONL file, each copy shifted in time and given its own id, stored with the
//! original's vector plus a little noise (cosine ≈ 0.99 to it). Embedding 100,000 texts takes hours
//! on a laptop CPU; the mining is what is measured, so the file's texts are embedded once
//! (cached beside the store) and reused. The store is not optimised (no HNSW index): hotspot mining
//! scrolls it and never searches it.
//!
//! bench-hotspots --input unlabeled.jsonl --data-dir DIR [--n 100000] [--shift-days D]

use anyhow::{Context, Result};
use clap::Parser;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;
use triage_core::ingest::parse_case_line;
use triage_core::units::UnitDirectory;
use triage_core::{Case, CaseFilter, CaseStore, EmbedKind, Embedder};

#[derive(Parser)]
struct Args {
    /// Case JSONL whose texts are recycled
    #[arg(long)]
    input: PathBuf,
    /// Data directory of the benchmark store (created; reused when it already holds N cases)
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    /// Days between copies [default: the input's time span, so each copy is a new period at the
    /// input's own density]
    #[arg(long)]
    shift_days: Option<f64>,
    /// Model files [default: ~/.cache/hotline-triage/models]
    #[arg(long, env = "TRIAGE_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    #[arg(long, default_value = "multilingual-e5-small")]
    embedder: String,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let raw = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let units = UnitDirectory::from_toml(include_str!("../../../data/units.toml"))?;
    let cases: Vec<Case> = raw
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| parse_case_line(l).ok())
        .map(|mut c| {
            c.district = units
                .extract_district(&c.full_text())
                .map(|d| d.name.clone());
            c
        })
        .collect();
    std::fs::create_dir_all(&args.data_dir)?;
    let vectors = vectors(&args, &cases)?;
    let dim = vectors[0].len();
    let store = triage_store::EdgeStore::open(&args.data_dir, dim)?;
    if store.count(&CaseFilter::default())? == args.n {
        println!(
            "store in {} already holds {} cases",
            args.data_dir.display(),
            args.n
        );
        return Ok(());
    }
    let times: Vec<i64> = cases.iter().filter_map(|c| c.time).collect();
    let (t0, t1) = (
        times.iter().min().copied().unwrap_or(0),
        times.iter().max().copied().unwrap_or(0),
    );
    let shift = args
        .shift_days
        .map_or(t1 - t0 + 86_400, |d| (d * 86_400.0) as i64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    // Per-dimension noise for a cosine of about 0.99 to the original unit vector.
    let sigma = ((1.0 / 0.99f64.powi(2) - 1.0) / dim as f64).sqrt() as f32;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(1024);
    for k in 0..args.n {
        let (copy, i) = (k / cases.len(), k % cases.len());
        let mut case = cases[i].clone();
        case.id = format!("{}-{copy}", case.id);
        case.time = case.time.map(|t| t + copy as i64 * shift);
        let mut v: Vec<f32> = vectors[i]
            .iter()
            .map(|x| x + sigma * gaussian(&mut rng))
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        batch.push((case, v));
        if batch.len() == 1024 || k + 1 == args.n {
            store.upsert(&batch)?;
            batch.clear();
        }
    }
    // No `optimize` (HNSW): mining reads the store by scrolling, never by vector search, and
    // building the index for 100k vectors takes longer than everything measured here.
    println!(
        "stored {} cases ({} copies of {} messages, {} days apart) in {:.0} s",
        args.n,
        args.n.div_ceil(cases.len()),
        cases.len(),
        shift / 86_400,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn gaussian(rng: &mut impl Rng) -> f32 {
    // Box-Muller.
    let (u, v): (f32, f32) = (rng.gen_range(1e-7..1.0), rng.gen());
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

/// The input's vectors (as passages), embedded once and cached beside the store.
fn vectors(args: &Args, cases: &[Case]) -> Result<Vec<Vec<f32>>> {
    let path = args.data_dir.join(format!("vectors-{}.f32", cases.len()));
    if let Ok(bytes) = std::fs::read(&path) {
        if bytes.len() % (4 * cases.len()) == 0 && !bytes.is_empty() {
            let dim = bytes.len() / 4 / cases.len();
            let floats: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            return Ok(floats.chunks(dim).map(<[f32]>::to_vec).collect());
        }
    }
    let models = args.models_dir.clone().unwrap_or_else(|| {
        dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("hotline-triage/models")
    });
    let embedder = triage_models::BertEmbedder::load(
        &models.join(&args.embedder),
        &triage_models::default_device()?,
    )?
    .with_max_tokens(args.max_tokens)?;
    let started = Instant::now();
    let mut out = Vec::with_capacity(cases.len());
    for chunk in cases.chunks(64) {
        let texts: Vec<String> = chunk.iter().map(Case::full_text).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        out.extend(embedder.embed(&refs, EmbedKind::Passage)?);
    }
    eprintln!(
        "embedded {} texts in {:.0} s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    let bytes: Vec<u8> = out.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&path, bytes)?;
    Ok(out)
}
