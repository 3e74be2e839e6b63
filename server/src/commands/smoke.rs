//! `triage embed` and `triage generate`: quick checks that the models load and work.

use crate::app::GlobalArgs;
use anyhow::{ensure, Result};
use std::io::Write;
use triage_core::{EmbedKind, GenerateParams};

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    /// Texts to embed
    #[arg(required = true)]
    texts: Vec<String>,
    /// Embed as stored passages instead of queries
    #[arg(long)]
    passage: bool,
}

pub fn embed(global: &GlobalArgs, args: EmbedArgs) -> Result<()> {
    let embedder = global.load_embedder()?;
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let kind = if args.passage {
        EmbedKind::Passage
    } else {
        EmbedKind::Query
    };
    let started = std::time::Instant::now();
    let vectors = embedder.embed(&texts, kind)?;
    println!(
        "{}: {} texts, {} dims, {:.1} ms",
        embedder.model_id(),
        vectors.len(),
        embedder.dim(),
        started.elapsed().as_secs_f64() * 1e3
    );
    for (i, v) in vectors.iter().enumerate() {
        let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:.4}")).collect();
        println!("[{i}] [{}, …] {}", head.join(", "), args.texts[i]);
    }
    for i in 0..vectors.len() {
        for j in i + 1..vectors.len() {
            let cos = triage_core::classify::dot(&vectors[i], &vectors[j]);
            println!("cos([{i}], [{j}]) = {cos:.4}");
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// The prompt to continue
    prompt: String,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// 0 = greedy
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 0.9)]
    top_p: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Stop before this string (repeatable)
    #[arg(long)]
    stop: Vec<String>,
}

pub fn generate(global: &GlobalArgs, args: GenerateArgs) -> Result<()> {
    ensure!(!args.prompt.is_empty(), "the prompt is empty");
    let generator = global.load_generator()?;
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop: args.stop,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let mut stdout = std::io::stdout();
    let generation = generator.generate(&args.prompt, &params, &mut |piece| {
        let _ = stdout.write_all(piece.as_bytes());
        let _ = stdout.flush();
        true
    })?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "\n[{}: {} prompt tokens, {} generated, {:.2} s, stop: {:?}]",
        generator.model_id(),
        generation.prompt_tokens,
        generation.generated_tokens,
        seconds,
        generation.stop_reason
    );
    Ok(())
}
