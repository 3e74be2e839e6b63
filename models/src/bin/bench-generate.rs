//! LLM speed on the default Gemma 3 GGUF, as TSV rows `llm\tmetric\tvalue\tunit`.
//!
//!   cargo run --release -p triage-models --bin bench-generate -- [--models-dir DIR] [--threads N]
//!
//! A ~900-token few-shot prompt (the shape of a reply-draft prompt): time to first token and
//! prompt tokens/s cold, decode tokens/s (64 greedy tokens), time to first token for a second
//! prompt with the same few-shot prefix (taken from the prefix cache), load time and peak RSS.
//! `scripts/peers/bench_llamacpp.py` runs the same prompts through llama.cpp. Threads default to
//! `CANDLE_NUM_THREADS`/`RAYON_NUM_THREADS`, else the number of cores.
//!
//! With `TRIAGE_PROFILE=1`, '#' lines on stderr give the time per op class of the cold run and
//! of the cached-prefix run; `--show` prints the greedy text (to check that a change to the
//! kernels leaves the output the same).

use candle_core::Device;
use std::path::PathBuf;
use std::time::Instant;
use triage_core::{GenerateParams, Generator};
use triage_models::GgufGenerator;

fn row(metric: &str, value: f64, unit: &str) {
    println!("llm\t{metric}\t{value:.2}\t{unit}");
}

/// The few-shot prefix both prompts share and the two complaints (same text as the peer script).
const INSTRUCTION: &str = "以下是12345政务服务热线对市民来信的答复存档。\n";
const EXAMPLE: &str = "### 来信\n小区门口的路灯坏了一个月，晚上很黑，老人孩子出行不便，希望尽快维修。\n### 答复\n您好！您反映的问题已转交属地街道办事处，经现场核实，路灯线路老化，已于三日内更换完毕。感谢您的监督。\n";
const COMPLAINTS: [&str; 2] = ["公交车不按站停车，司机态度差。", "学校违规收取补课费。"];
const DECODE_TOKENS: usize = 64;

fn main() -> anyhow::Result<()> {
    let mut models = std::env::var_os("TRIAGE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/hotline-triage/models")
        });
    let mut show = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--models-dir" => models = args.next().map(PathBuf::from).unwrap_or(models),
            // candle reads this when its thread pool starts, at the first matmul.
            "--threads" => std::env::set_var("CANDLE_NUM_THREADS", args.next().unwrap_or_default()),
            "--show" => show = true,
            "-h" | "--help" => {
                println!("bench-generate [--models-dir DIR] [--threads N] [--show]");
                return Ok(());
            }
            // The models directory as a bare argument (scripts/bench.sh).
            other => models = PathBuf::from(other),
        }
    }
    triage_models::tune_allocator();
    let started = Instant::now();
    let model = GgufGenerator::load(
        &models.join("gemma-3-270m/gemma-3-270m-q4_k_m.gguf"),
        &Device::Cpu,
    )?;
    row("load_time", started.elapsed().as_secs_f64(), "s");
    eprintln!(
        "# peak RSS after loading: {:.0} MB; Q8_0 kernel: {}",
        peak_rss_mb(),
        triage_models::generator_kernel()
    );
    let threads = std::env::var("CANDLE_NUM_THREADS")
        .or_else(|_| std::env::var("RAYON_NUM_THREADS"))
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    row("threads", threads as f64, "threads");

    let prompts = COMPLAINTS.map(|q| {
        format!(
            "{INSTRUCTION}{}### 来信\n{q}\n### 答复\n",
            EXAMPLE.repeat(12)
        )
    });
    let tokens = model.encode(&prompts[0])?.len();
    row("prompt_tokens", tokens as f64, "tokens");

    // Cold: the whole prompt, then greedy decoding (no stop strings, so all 64 tokens run
    // unless the model ends its text).
    let greedy = |max_tokens| GenerateParams {
        max_tokens,
        ..Default::default()
    };
    let timed =
        |prompt: &str, params: &GenerateParams| -> anyhow::Result<(f64, f64, usize, usize)> {
            let mut first = None;
            let t = Instant::now();
            let g = model.generate(prompt, params, &mut |_| {
                first.get_or_insert(t.elapsed().as_secs_f64());
                true
            })?;
            let total = t.elapsed().as_secs_f64();
            if show {
                eprintln!("# greedy text: {:?}", g.text);
            }
            for (op, seconds, calls) in triage_models::profile::take() {
                eprintln!(
                    "# profile {op:<19} {:>9.2} ms {calls:>6} calls",
                    seconds * 1e3
                );
            }
            Ok((
                first.unwrap_or(total),
                total,
                g.generated_tokens,
                g.cached_prompt_tokens,
            ))
        };
    let (ttft, total, generated, _) = timed(&prompts[0], &greedy(DECODE_TOKENS))?;
    row("ttft_cold", ttft * 1e3, "ms");
    row("prompt_tok_per_s", tokens as f64 / ttft, "tok/s");
    // The first token came with the prompt; the others each took one decode step.
    row(
        "decode_tok_per_s",
        generated.saturating_sub(1) as f64 / (total - ttft).max(1e-9),
        "tok/s",
    );

    // Warm: the same few-shot prefix, another complaint.
    let (ttft, _, _, cached) = timed(&prompts[1], &greedy(1))?;
    row("ttft_cached_prefix", ttft * 1e3, "ms");
    row("cached_prompt_tokens", cached as f64, "tokens");
    row("peak_rss", peak_rss_mb(), "MB");
    Ok(())
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}
