//! LLM speed on the default Gemma 3 GGUF, as TSV rows `bench\tmetric\tvalue\tunit`.
//!
//!   cargo run --release -p triage-models --bin bench-generate -- [MODELS_DIR]
//!
//! Prompt processing and decode tokens/s, time to first token for a ~1,000-token few-shot
//! prompt with and without the cached prefix, load time and peak RSS.

use candle_core::Device;
use std::path::PathBuf;
use std::time::Instant;
use triage_core::{GenerateParams, Generator};
use triage_models::GgufGenerator;

fn row(metric: &str, value: f64, unit: &str) {
    println!("llm\t{metric}\t{value:.2}\t{unit}");
}

fn main() -> anyhow::Result<()> {
    triage_models::tune_allocator();
    let models = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/hotline-triage/models")
        });
    let started = Instant::now();
    let model = GgufGenerator::load(
        &models.join("gemma-3-270m/gemma-3-270m-q4_k_m.gguf"),
        &Device::Cpu,
    )?;
    row("load_time", started.elapsed().as_secs_f64(), "s");

    let example = "### 来信\n小区门口的路灯坏了一个月，晚上很黑，老人孩子出行不便，希望尽快维修。\n### 答复\n您好！您反映的问题已转交属地街道办事处，经现场核实，路灯线路老化，已于三日内更换完毕。感谢您的监督。\n";
    let prefix = format!(
        "以下是12345政务服务热线对市民来信的答复存档。\n{}",
        example.repeat(12)
    );
    let prompt = |q: &str| format!("{prefix}### 来信\n{q}\n### 答复\n");
    let first = prompt("公交车不按站停车，司机态度差。");
    let second = prompt("学校违规收取补课费。");
    let tokens = model.encode(&first)?.len();
    row("prompt_tokens", tokens as f64, "tokens");

    // Cold: prompt processing of the whole prompt, then decode.
    let decode = GenerateParams {
        max_tokens: 64,
        stop: vec![],
        ..Default::default()
    };
    let mut first_piece = None;
    let t = Instant::now();
    let g = model.generate(&first, &decode, &mut |_| {
        first_piece.get_or_insert(t.elapsed().as_secs_f64());
        true
    })?;
    let total = t.elapsed().as_secs_f64();
    let ttft = first_piece.unwrap_or(total);
    row("ttft_cold", ttft * 1e3, "ms");
    row("prompt_tok_per_s", tokens as f64 / ttft, "tok/s");
    row(
        "decode_tok_per_s",
        (g.generated_tokens.saturating_sub(1)) as f64 / (total - ttft).max(1e-9),
        "tok/s",
    );

    // Warm: the same few-shot prefix, a new complaint.
    let mut first_piece = None;
    let t = Instant::now();
    let g = model.generate(
        &second,
        &GenerateParams {
            max_tokens: 8,
            ..Default::default()
        },
        &mut |_| {
            first_piece.get_or_insert(t.elapsed().as_secs_f64());
            true
        },
    )?;
    row(
        "ttft_cached_prefix",
        first_piece.unwrap_or(t.elapsed().as_secs_f64()) * 1e3,
        "ms",
    );
    row(
        "cached_prompt_tokens",
        g.cached_prompt_tokens as f64,
        "tokens",
    );
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    row("peak_rss", rss / 1024.0, "MB");
    Ok(())
}
