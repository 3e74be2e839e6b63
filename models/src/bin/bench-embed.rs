//! Embedding throughput on real complaint texts, as TSV rows `bench\tmetric\tvalue\tunit`.
//!
//!   cargo run --release -p triage-models --bin bench-embed -- [MODELS_DIR] [TEXTS.jsonl] [f32|int8|both]
//!
//! For 32-, 128- and 512-token inputs (texts cut to that many tokens): texts/s and achieved
//! GFLOP/s (BERT encoder FLOPs: 2·L·(4H² + 2HF) + 4·L²·H per layer; for int8, the same count
//! done in int8 and f32 together), in f32 (rows without a prefix) and int8 (rows prefixed
//! `int8_`, and their ratio `int8_over_f32_*`), or only the precision named; each the median of
//! `BENCH_RUNS` (3) runs, the precisions taking turns (a `#` line gives min and max); plus the
//! machine's measured f32 matmul peak on the same threads, model load time and peak RSS. A line
//! `# int8 kernel: …` names the kernel the CPU dispatch chose (`TRIAGE_INT8_KERNEL=avx2|scalar`
//! forces a slower one).

use candle_core::{Device, Tensor};
use std::path::PathBuf;
use std::time::Instant;
use triage_core::{EmbedKind, Embedder};
use triage_models::{BertEmbedder, Precision};

fn main() -> anyhow::Result<()> {
    triage_models::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    let models = args.get(1).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/hotline-triage/models")
    });
    let texts_path = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "../shared/data/teddycup2020c/dev.jsonl".into());
    let texts: Vec<String> = std::fs::read_to_string(&texts_path)?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            format!(
                "{}\n{}",
                v["title"].as_str().unwrap_or(""),
                v["text"].as_str().unwrap_or("")
            )
        })
        .collect();

    let precisions: Vec<Precision> = match args.get(3).map(String::as_str) {
        None | Some("both") => vec![Precision::F32, Precision::Int8],
        Some(p) => vec![p.parse().map_err(anyhow::Error::msg)?],
    };
    let runs: usize = match std::env::var("BENCH_RUNS") {
        Ok(v) => v.parse()?,
        Err(_) => 3,
    };
    anyhow::ensure!(runs > 0, "BENCH_RUNS must be at least 1");
    let dir = models.join("multilingual-e5-small");
    println!("# int8 kernel: {}", triage_models::int8_kernel());
    let started = Instant::now();
    let full = BertEmbedder::load_with(&dir, &Device::Cpu, precisions[0])?;
    row("load_time", started.elapsed().as_secs_f64(), "s");
    let (h, f, layers) = (384.0, 1536.0, 12.0);
    row("matmul_peak_f32", matmul_peak()?, "GFLOP/s");

    // BENCH_LENGTHS=128 (comma-separated) measures only those lengths.
    let lengths: Option<Vec<usize>> = std::env::var("BENCH_LENGTHS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    for (tokens, count) in [(32usize, 256usize), (128, 128), (512, 32)] {
        if lengths.as_ref().is_some_and(|l| !l.contains(&tokens)) {
            continue;
        }
        // Only texts long enough to fill the length, so every input has `tokens` tokens.
        let batch: Vec<&str> = texts
            .iter()
            .filter(|t| {
                full.token_ids(&format!("passage: {t}"))
                    .map(|ids| ids.len() >= tokens)
                    .unwrap_or(false)
            })
            .take(count)
            .map(String::as_str)
            .collect();
        let mut models = Vec::new();
        for &precision in &precisions {
            let model =
                BertEmbedder::load_with(&dir, &Device::Cpu, precision)?.with_max_tokens(tokens)?;
            anyhow::ensure!(
                model.precision() == precision,
                "{precision} is not available on this CPU"
            );
            model.embed(&batch[..batch.len().min(4)], EmbedKind::Passage)?; // warm-up
            models.push((precision, model, Vec::with_capacity(runs)));
        }
        // Tokenization alone, on every text cut to this length (what `embed` does first).
        let all: Vec<&str> = texts.iter().map(String::as_str).collect();
        let started = Instant::now();
        models[0].1.tokenize(&all, EmbedKind::Passage)?;
        row(
            &format!("tokenize_texts_per_s_{tokens}tok"),
            all.len() as f64 / started.elapsed().as_secs_f64(),
            "texts/s",
        );
        // The precisions take turns, run after run, so a load that comes and goes on the
        // machine falls on both alike.
        for _ in 0..runs {
            for (_, model, speeds) in &mut models {
                let started = Instant::now();
                model.embed(&batch, EmbedKind::Passage)?;
                speeds.push(batch.len() as f64 / started.elapsed().as_secs_f64());
            }
        }
        let l = tokens as f64;
        let flops = layers * (2.0 * l * (4.0 * h * h + 2.0 * h * f) + 4.0 * l * l * h);
        let mut medians = Vec::new();
        for (precision, _, speeds) in &mut models {
            speeds.sort_by(f64::total_cmp);
            let median = speeds[speeds.len() / 2];
            let prefix = match precision {
                Precision::F32 => "",
                Precision::Int8 => "int8_",
            };
            println!(
                "# {precision} {tokens} tokens: {median:.2} texts/s median of {runs} (min {:.2}, max {:.2})",
                speeds[0],
                speeds[speeds.len() - 1]
            );
            row(
                &format!("{prefix}texts_per_s_{tokens}tok"),
                median,
                "texts/s",
            );
            row(
                &format!("{prefix}gflops_{tokens}tok"),
                flops * median / 1e9,
                "GFLOP/s",
            );
            medians.push(median);
        }
        if let [f32_speed, int8_speed] = medians[..] {
            row(
                &format!("int8_over_f32_{tokens}tok"),
                int8_speed / f32_speed,
                "x",
            );
        }
    }
    row("peak_rss", peak_rss_mb(), "MB");
    Ok(())
}

fn row(metric: &str, value: f64, unit: &str) {
    println!("embed\t{metric}\t{value:.2}\t{unit}");
}

/// Best of a few 1024³ f32 matmuls through candle (the same gemm and threads the model uses).
fn matmul_peak() -> anyhow::Result<f64> {
    let n = 1024;
    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        a.matmul(&b)?.sum_all()?.to_scalar::<f32>()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
