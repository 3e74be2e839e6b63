//! How far the int8 encoder's vectors are from the f32 encoder's, on real complaints:
//!
//!   cargo run --release -p triage-models --bin compare-precision -- \
//!       [--models-dir DIR] [--embedder NAME] --store train.jsonl --queries dev.jsonl
//!
//! Embeds every text as the pipeline does (title + text, e5 `passage: `, 128 tokens) with both
//! precisions and prints TSV rows `precision\tmetric\tvalue\tunit`:
//! - cosine between the int8 and f32 vector of the same text (mean, min, 1st percentile, count
//!   below 0.995), for the query texts and the stored texts apart;
//! - recall@10 of int8 queries against a store built with f32 vectors (the store a deployment
//!   has before it switches): the share of the f32 query's 10 nearest stored cases that the int8
//!   query also finds (exact search, so the number is the encoder's alone);
//! - the same for int8 queries against an int8-built store, and f32 queries against it
//!   (skipped with `--queries-only`, which embeds only the queries in int8);
//! - the ceiling near-ties set: recall@10 of the f32 query turned by a random direction to a
//!   given cosine (0.9999 … 0.9990), the recall any encoder that far from f32 can expect;
//! - recall@10 counting an int8 hit as found when its f32 score is within 0.001 / 0.002 of the
//!   f32 query's 10th score (how many misses are near-ties).
//!
//! `--cache DIR` keeps the f32 vectors (they do not change between int8 variants or runs).

use std::path::PathBuf;
use triage_core::{EmbedKind, Embedder};
use triage_models::{BertEmbedder, Precision};

fn main() -> anyhow::Result<()> {
    let mut models = std::env::var_os("TRIAGE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/hotline-triage/models")
        });
    let (mut embedder, mut store, mut queries, mut max_tokens) =
        ("multilingual-e5-small".to_string(), None, None, 128usize);
    let (mut cache, mut queries_only) = (None::<PathBuf>, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--models-dir" => models = PathBuf::from(value()?),
            "--embedder" => embedder = value()?,
            "--store" => store = Some(PathBuf::from(value()?)),
            "--queries" => queries = Some(PathBuf::from(value()?)),
            "--max-tokens" => max_tokens = value()?.parse()?,
            "--cache" => cache = Some(PathBuf::from(value()?)),
            "--queries-only" => queries_only = true,
            _ => {
                println!("compare-precision [--models-dir DIR] [--embedder NAME] [--max-tokens N] [--cache DIR] [--queries-only] --store FILE.jsonl --queries FILE.jsonl");
                return Ok(());
            }
        }
    }
    let (Some(store), Some(queries)) = (store, queries) else {
        anyhow::bail!("--store and --queries are required (see --help)");
    };
    let read = |path: &PathBuf| -> anyhow::Result<Vec<String>> {
        Ok(std::fs::read_to_string(path)?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                let title = v["title"].as_str().unwrap_or("");
                let text = v["text"].as_str().unwrap_or("");
                if title.is_empty() {
                    text.to_string()
                } else {
                    format!("{title}\n{text}")
                }
            })
            .filter(|t| !t.trim().is_empty())
            .collect())
    };
    let (stored, asked) = (read(&store)?, read(&queries)?);
    let dir = models.join(&embedder);
    let load = |precision| -> anyhow::Result<BertEmbedder> {
        let model = BertEmbedder::load_with(&dir, &candle_core::Device::Cpu, precision)?
            .with_max_tokens(max_tokens)?;
        anyhow::ensure!(
            model.precision() == precision,
            "{precision} is not available here"
        );
        Ok(model)
    };
    let embed = |model: &BertEmbedder, texts: &[String]| -> anyhow::Result<Vec<Vec<f32>>> {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(256) {
            out.extend(model.embed(chunk, EmbedKind::Passage)?);
        }
        Ok(out)
    };
    let (f32_model, int8_model) = (load(Precision::F32)?, load(Precision::Int8)?);
    eprintln!(
        "embedding {} stored and {} query texts twice (int8 kernel {})",
        stored.len(),
        asked.len(),
        triage_models::int8_kernel()
    );
    let cached = |name: &str, texts: &[String]| -> anyhow::Result<Vec<Vec<f32>>> {
        let Some(dir) = &cache else {
            return embed(&f32_model, texts);
        };
        let path = dir.join(format!(
            "{embedder}-{max_tokens}-{name}-{}.f32",
            texts.len()
        ));
        if let Ok(bytes) = std::fs::read(&path) {
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let width = values.len() / texts.len().max(1);
            if width > 0 && values.len() == width * texts.len() {
                return Ok(values.chunks_exact(width).map(<[f32]>::to_vec).collect());
            }
        }
        let vectors = embed(&f32_model, texts)?;
        std::fs::create_dir_all(dir)?;
        let bytes: Vec<u8> = vectors
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(&path, bytes)?;
        Ok(vectors)
    };
    let store_f32 = cached(
        store
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("store"),
        &stored,
    )?;
    let query_f32 = cached(
        queries
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("queries"),
        &asked,
    )?;
    let started = std::time::Instant::now();
    let query_int8 = embed(&int8_model, &asked)?;
    eprintln!("int8 queries: {:.1} s", started.elapsed().as_secs_f64());
    let store_int8 = if queries_only {
        Vec::new()
    } else {
        embed(&int8_model, &stored)?
    };

    let dot = |a: &[f32], b: &[f32]| -> f32 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
    for (set, f32_vectors, int8_vectors) in [
        ("queries", &query_f32, &query_int8),
        ("store", &store_f32, &store_int8),
    ] {
        if int8_vectors.is_empty() {
            continue;
        }
        let mut cosines: Vec<f32> = f32_vectors
            .iter()
            .zip(int8_vectors)
            .map(|(a, b)| dot(a, b))
            .collect();
        cosines.sort_by(f32::total_cmp);
        let mean = cosines.iter().map(|&c| f64::from(c)).sum::<f64>() / cosines.len() as f64;
        row(&format!("{set}_cosine_mean"), mean, "");
        row(&format!("{set}_cosine_min"), f64::from(cosines[0]), "");
        row(
            &format!("{set}_cosine_p1"),
            f64::from(cosines[cosines.len() / 100]),
            "",
        );
        row(
            &format!("{set}_below_0.995"),
            cosines.iter().filter(|&&c| c < 0.995).count() as f64,
            "texts",
        );
        row(&format!("{set}_texts"), cosines.len() as f64, "texts");
    }

    let top = |query: &[f32], store: &[Vec<f32>]| -> Vec<usize> {
        let mut scored: Vec<(f32, usize)> = store
            .iter()
            .enumerate()
            .map(|(i, v)| (dot(query, v), i))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(10).map(|(_, i)| i).collect()
    };
    let recall = |queries: &[Vec<f32>], store: &[Vec<f32>]| -> f64 {
        let found: usize = query_f32
            .iter()
            .zip(queries)
            .map(|(exact, q)| {
                let want = top(exact, &store_f32);
                top(q, store).iter().filter(|i| want.contains(i)).count()
            })
            .sum();
        found as f64 / (10 * queries.len()) as f64
    };
    row(
        "recall10_int8_query_f32_store",
        recall(&query_int8, &store_f32),
        "",
    );
    for tolerance in [0.001f32, 0.002] {
        let found: usize = query_f32
            .iter()
            .zip(&query_int8)
            .map(|(exact, q)| {
                let want = top(exact, &store_f32);
                let tenth = dot(exact, &store_f32[want[want.len() - 1]]);
                top(q, &store_f32)
                    .iter()
                    .filter(|&&i| {
                        want.contains(&i) || dot(exact, &store_f32[i]) >= tenth - tolerance
                    })
                    .count()
            })
            .sum();
        row(
            &format!("recall10_int8_query_f32_store_within_{tolerance}"),
            found as f64 / (10 * query_int8.len()) as f64,
            "",
        );
    }
    // The ceiling: f32 queries turned by a random direction to a given cosine.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut gaussian = move || {
        let mut uniform = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (u, v) = (uniform(), uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    for cosine in [0.9999f32, 0.9998, 0.9997, 0.9995, 0.999] {
        let turned: Vec<Vec<f32>> = query_f32
            .iter()
            .map(|q| {
                let mut e: Vec<f32> = q.iter().map(|_| gaussian()).collect();
                let along = dot(&e, q);
                e.iter_mut().zip(q).for_each(|(e, q)| *e -= along * q);
                let norm = dot(&e, &e).sqrt();
                let t = (1.0 / (cosine * cosine) - 1.0).sqrt();
                let mut out: Vec<f32> = q.iter().zip(&e).map(|(q, e)| q + t * e / norm).collect();
                let norm = dot(&out, &out).sqrt();
                out.iter_mut().for_each(|x| *x /= norm);
                out
            })
            .collect();
        row(
            &format!("recall10_f32_turned_to_cosine_{cosine}"),
            recall(&turned, &store_f32),
            "",
        );
    }
    if !store_int8.is_empty() {
        row(
            "recall10_int8_query_int8_store",
            recall(&query_int8, &store_int8),
            "",
        );
        row(
            "recall10_f32_query_int8_store",
            recall(&query_f32, &store_int8),
            "",
        );
    }
    Ok(())
}

fn row(metric: &str, value: f64, unit: &str) {
    println!("precision\t{metric}\t{value:.6}\t{unit}");
}
