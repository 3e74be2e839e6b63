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
//! - the same for int8 queries against an int8-built store, and f32 queries against it.

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
            _ => {
                println!("compare-precision [--models-dir DIR] [--embedder NAME] [--max-tokens N] --store FILE.jsonl --queries FILE.jsonl");
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
    let store_f32 = embed(&f32_model, &stored)?;
    let store_int8 = embed(&int8_model, &stored)?;
    let query_f32 = embed(&f32_model, &asked)?;
    let query_int8 = embed(&int8_model, &asked)?;

    let dot = |a: &[f32], b: &[f32]| -> f32 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
    for (set, f32_vectors, int8_vectors) in [
        ("queries", &query_f32, &query_int8),
        ("store", &store_f32, &store_int8),
    ] {
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
    Ok(())
}

fn row(metric: &str, value: f64, unit: &str) {
    println!("precision\t{metric}\t{value:.4}\t{unit}");
}
