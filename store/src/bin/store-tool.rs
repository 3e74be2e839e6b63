//! A small driver of the embedded store, for the crash test and for benchmarks.
//!
//!   store-tool write DIR DIM BATCH   upsert batches forever, printing "acked N" after each
//!   store-tool bench DIR N [DATA]    upsert N cases in batches of 128, optimize, time searches
//!   store-tool bench qdrant:URL N [DATA]   the same against a Qdrant server (collection bench-N-DATA;
//!                                          QDRANT_INT8=1 quantizes it, bench-N-DATA-int8)
//!
//! DATA is `random` (default: independent random unit vectors, the worst case for HNSW: every
//! point is about as far as every other) or `subspace24` (random directions in a fixed random
//! 24-dimensional subspace, closer to text embeddings, whose intrinsic dimension is low).
//!
//! Output of `bench` is TSV: `bench\tmetric\tvalue\tunit`. Besides the `CaseStore` numbers it
//! reports what the store's flush costs per batch and whether optimize built HNSW, using
//! qdrant-edge directly.

use qdrant_edge::{
    Distance, EdgeConfig, EdgeShard, EdgeVectorParams, PointInsertOperations, PointOperations,
    PointStructPersisted, UpdateOperation, VectorPersisted, VectorStructPersisted,
};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use triage_core::{CaseFilter, CaseStore};
use triage_store::testsuite::{case, vector};
use triage_store::{EdgeStore, QdrantConfig, QdrantStore};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("write") => write(
            Path::new(&args[2]),
            args[3].parse().unwrap(),
            args[4].parse().unwrap(),
        ),
        Some("bench") => bench(
            &args[2],
            args[3].parse().unwrap(),
            args.get(4).map_or("random", |s| s),
        ),
        _ => {
            eprintln!("usage: store-tool write DIR DIM BATCH | store-tool bench DIR N [random|subspace24]");
            std::process::exit(2);
        }
    }
}

fn open(dir: &Path, dim: usize) -> EdgeStore {
    EdgeStore::open(dir, dim).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    })
}

fn write(dir: &Path, dim: usize, batch: usize) {
    let store = open(dir, dim);
    let mut stdout = std::io::stdout();
    for round in 0u32.. {
        let cases: Vec<_> = (0..batch as u32)
            .map(|i| {
                let n = round * batch as u32 + i;
                (
                    case(&format!("case-{n}"), Some("交通运输"), None, None),
                    vector(dim, n),
                )
            })
            .collect();
        store.upsert(&cases).unwrap();
        writeln!(stdout, "acked {}", (round + 1) as usize * batch).unwrap();
        stdout.flush().unwrap();
    }
}

fn bench(target: &str, n: usize, data: &str) {
    const DIM: usize = 384;
    let basis: Vec<Vec<f32>> = (0..24).map(|j| vector(DIM, 3_000_000_000 + j)).collect();
    let gen = |seed: u32| -> Vec<f32> {
        match data {
            "random" => vector(DIM, seed),
            "subspace24" => {
                let z = vector(basis.len(), seed);
                let mut v = vec![0f32; DIM];
                for (zj, b) in z.iter().zip(&basis) {
                    v.iter_mut().zip(b).for_each(|(x, bj)| *x += zj * bj);
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            }
            other => panic!("unknown DATA {other:?}: random or subspace24"),
        }
    };
    let store: Box<dyn CaseStore> = match target.strip_prefix("qdrant:") {
        Some(url) => {
            // QDRANT_INT8=1: the collection quantized to int8 (bench-N-DATA-int8).
            let int8 = std::env::var_os("QDRANT_INT8").is_some();
            let config = QdrantConfig {
                collection: format!("bench-{n}-{data}{}", if int8 { "-int8" } else { "" }),
                int8,
                ..QdrantConfig::new(url)
            };
            Box::new(QdrantStore::open(config, DIM).unwrap_or_else(|e| {
                eprintln!("error: {e}");
                std::process::exit(1)
            }))
        }
        None => Box::new(open(Path::new(target), DIM)),
    };
    println!("store	backend	{}	name", store.backend());
    let started = Instant::now();
    for start in (0..n).step_by(128) {
        let cases: Vec<_> = (start..(start + 128).min(n))
            .map(|i| {
                (
                    case(
                        &format!("b{i}"),
                        Some(["a", "b", "c"][i % 3]),
                        None,
                        Some(i as i64),
                    ),
                    gen(i as u32),
                )
            })
            .collect();
        store.upsert(&cases).unwrap();
    }
    let upsert_s = started.elapsed().as_secs_f64();
    println!(
        "store\tupsert_rate_batch128_flushed\t{:.0}\tcases/s",
        n as f64 / upsert_s
    );
    let started = Instant::now();
    store.optimize().unwrap();
    println!(
        "store\toptimize_n{n}_{data}\t{:.2}\ts",
        started.elapsed().as_secs_f64()
    );
    // HNSW recall against exact cosine over the same vectors (all unit length).
    let truth = |q: &[f32]| {
        let mut scored: Vec<(f32, usize)> = (0..n)
            .map(|i| (gen(i as u32).iter().zip(q).map(|(a, b)| a * b).sum(), i))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored
            .into_iter()
            .take(10)
            .map(|(_, i)| format!("b{i}"))
            .collect::<Vec<_>>()
    };
    let mut found = 0;
    for q in 0..20u32 {
        let v = gen(2_000_000 + q);
        let hits = store.search(&v, 10, &CaseFilter::default()).unwrap();
        let expected = truth(&v);
        found += hits
            .iter()
            .filter(|h| expected.contains(&h.case.id))
            .count();
    }
    println!(
        "store\trecall_at10_n{n}_{data}\t{:.3}\tfraction",
        found as f64 / 200.0
    );
    for (name, filter) in [
        ("none", CaseFilter::default()),
        (
            "category",
            CaseFilter {
                category: Some("b".into()),
                ..Default::default()
            },
        ),
    ] {
        let mut times: Vec<f64> = (0..200u32)
            .map(|q| {
                let v = gen(1_000_000 + q);
                let t = Instant::now();
                store.search(&v, 10, &filter).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "store\tsearch_p50_filter_{name}_n{n}_{data}\t{:.2}\tms",
            times[100]
        );
        println!(
            "store\tsearch_p99_filter_{name}_n{n}_{data}\t{:.2}\tms",
            times[197]
        );
    }
    drop(store);
    if !target.starts_with("qdrant:") {
        shard_numbers(&Path::new(target).join("store"), n);
    }
}

/// What the `CaseStore` numbers cannot show: the flush each write pays, and the shard's layout.
fn shard_numbers(store_dir: &Path, n: usize) {
    const DIM: usize = 384;
    let shard = EdgeShard::load(store_dir, None).unwrap();
    let info = shard.info();
    println!("store\tsegments_n{n}\t{}\tcount", info.segments_count);
    println!(
        "store\thnsw_indexed_vectors_n{n}\t{}\tcount",
        info.indexed_vectors_count
    );
    drop(shard);

    // A fresh shard beside the store, so the numbers are for the same kind of files.
    let dir = store_dir.with_file_name("flush-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = EdgeConfig::default();
    config.vectors.insert(
        "text".into(),
        EdgeVectorParams {
            size: DIM,
            distance: Distance::Cosine,
            on_disk: Some(true),
            multivector_config: None,
            datatype: None,
            quantization_config: None,
            hnsw_config: None,
        },
    );
    let shard = EdgeShard::new(&dir, config).unwrap();
    let (mut update_s, mut flush_s) = (0.0, 0.0);
    const BATCHES: usize = 40;
    for b in 0..BATCHES {
        let points = (0..128)
            .map(|i| {
                let n = (b * 128 + i) as u32;
                let payload =
                    serde_json::to_value(case(&format!("f{n}"), Some("a"), None, Some(n as i64)))
                        .unwrap();
                PointStructPersisted {
                    id: (n as u64).into(),
                    vector: VectorStructPersisted::Named(HashMap::from([(
                        "text".to_string(),
                        VectorPersisted::Dense(vector(DIM, n)),
                    )])),
                    payload: Some(serde_json::from_value(payload).unwrap()),
                }
            })
            .collect();
        let t = Instant::now();
        shard
            .update(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
            ))
            .unwrap();
        update_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        shard.flush();
        flush_s += t.elapsed().as_secs_f64();
    }
    println!(
        "store\tupdate_ms_per_batch128_unflushed\t{:.2}\tms",
        update_s * 1e3 / BATCHES as f64
    );
    println!(
        "store\tflush_ms_per_batch128\t{:.2}\tms",
        flush_s * 1e3 / BATCHES as f64
    );
    drop(shard);
    std::fs::remove_dir_all(&dir).unwrap();
}
