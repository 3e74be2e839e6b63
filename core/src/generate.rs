//! The text-generation seam.

use crate::Result;
use serde::{Deserialize, Serialize};

/// Sampling and stopping settings for one generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateParams {
    /// Most new tokens to generate.
    pub max_tokens: usize,
    /// 0 means greedy (argmax).
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f64,
    /// Seed of the sampler; the same seed, prompt and settings give the same text.
    pub seed: u64,
    /// Generation ends before any of these strings; the string itself is not returned.
    pub stop: Vec<String>,
    /// Divides the logits of tokens generated in the last 64 steps (1.0 = off), against loops.
    pub repeat_penalty: f32,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            temperature: 0.0,
            top_p: 0.9,
            seed: 42,
            stop: Vec::new(),
            repeat_penalty: 1.0,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced its end-of-sequence token.
    EndOfSequence,
    /// One of the stop strings appeared.
    StopString,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The caller's token callback asked to stop (e.g. the client went away).
    Cancelled,
}

/// The result of one generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV state came from the prefix cache instead of being recomputed.
    pub cached_prompt_tokens: usize,
    pub generated_tokens: usize,
    pub stop_reason: StopReason,
}

/// A local causal language model.
pub trait Generator: Send + Sync {
    /// Name of the model, e.g. `gemma-3-270m-q4_k_m`.
    fn model_id(&self) -> &str;
    /// Context length in tokens the implementation accepts (prompt + new tokens).
    fn context_length(&self) -> usize;
    /// The chat template the model ships with (a GGUF's `tokenizer.chat_template`), if any:
    /// instruct models are prompted through it (`--chat-template auto`), base models are not.
    fn chat_template(&self) -> Option<crate::prompt::ChatTemplate> {
        None
    }
    /// Generates a continuation of `prompt`, calling `on_text` with each new piece of text as
    /// soon as it is final (never a part of a stop string). `on_text` returns `false` to cancel.
    /// A prompt that does not fit the context is an `Error::InvalidInput`.
    fn generate(
        &self,
        prompt: &str,
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation>;
}
