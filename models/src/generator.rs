//! Text generation from a GGUF file behind `triage_core::Generator`: Gemma 3 with the model and
//! tokenizer written here (prefix-cached), or Llama / Qwen 2 / Qwen 3 through candle-transformers
//! with a `tokenizer.json` beside the GGUF.

use crate::error::{Error, Result};
use crate::gemma3::{Gemma3, KvCache};
use crate::gguf_tokenizer::GgufTokenizer;
use crate::profile::{time, Op};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::{quantized_llama, quantized_qwen2, quantized_qwen3};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use triage_core::prompt::ChatTemplate;
use triage_core::{GenerateParams, Generation, Generator, StopReason};

/// Longest context served (prompt + new tokens). Gemma 3 allows 32k, but KV memory grows with it
/// and drafts need a few thousand at most; a longer prompt is an error naming both numbers.
pub const MAX_CONTEXT: usize = 8192;
/// Generated tokens the repetition penalty looks back over.
const REPEAT_WINDOW: usize = 64;
/// Prompts whose KV state is kept for reuse by a later prompt with the same beginning, and the
/// most memory they may hold together (Gemma 3 270M: 37 KB per position, so 512 MiB is ~14,000
/// positions; the entry just used is kept whatever its size).
const PREFIX_CACHE_ENTRIES: usize = 4;
const PREFIX_CACHE_BYTES: usize = 512 << 20;

enum Tokenizer {
    Gguf(Box<GgufTokenizer>),
    Hf(Box<tokenizers::Tokenizer>),
}

impl Tokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Gguf(t) => Ok(t.encode(text)),
            Tokenizer::Hf(t) => Ok(t
                .encode(text, true)
                .map_err(|e| Error::Tokenizer(e.to_string()))?
                .get_ids()
                .to_vec()),
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Gguf(t) => Ok(t.decode(ids)),
            Tokenizer::Hf(t) => t
                .decode(ids, true)
                .map_err(|e| Error::Tokenizer(e.to_string())),
        }
    }

    fn token_bytes(&self, id: u32) -> Vec<u8> {
        match self {
            Tokenizer::Gguf(t) => t.token_bytes(id),
            Tokenizer::Hf(t) => t.decode(&[id], true).unwrap_or_default().into_bytes(),
        }
    }
}

enum Model {
    Gemma3 {
        model: Gemma3,
        prefixes: PrefixCache,
        /// The sequence being generated.
        current: Option<Sequence>,
    },
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
}

/// Prompts run in blocks of this many tokens (64 rows keep the matmuls at full speed and bound
/// the attention work per block). Where the model computes each position the same way in any
/// block (`Gemma3::rows_independent`: the CPU kernels), the prefix cache reuses any shared
/// prefix, to the token, and the same prompt, seed and settings give the same text whatever
/// the cache holds. Elsewhere (candle's kernels: another summation order for 1 row than for 64)
/// reused keys and values are exact only if computed as the same block: then only whole blocks
/// of earlier prompts are reused and the rest is recomputed the way a cold run does.
const PREFILL_BLOCK: usize = 64;

/// A token sequence and the keys and values of its positions.
struct Sequence {
    tokens: Vec<u32>,
    /// Leading positions reusable exactly (all of them, or those in whole prompt blocks).
    exact: usize,
    cache: KvCache,
}

impl Model {
    /// Logits after the prompt, and how many prompt tokens came from the prefix cache (only
    /// Gemma 3 has one; the others recompute the prompt).
    fn prefill(&mut self, prompt: &[u32], device: &Device) -> Result<(Tensor, usize)> {
        match self {
            Model::Gemma3 {
                model,
                prefixes,
                current,
            } => {
                let mut cache = time(Op::PrefixCache, || prefixes.take(prompt, model));
                let reused = cache.len();
                let mut logits = None;
                for block in prompt[reused..].chunks(PREFILL_BLOCK) {
                    logits = Some(model.forward(block, &mut cache)?);
                }
                *current = Some(Sequence {
                    tokens: prompt.to_vec(),
                    exact: match model.rows_independent() {
                        true => usize::MAX,
                        false => prompt.len() / PREFILL_BLOCK * PREFILL_BLOCK,
                    },
                    cache,
                });
                Ok((
                    logits.expect("at least the last prompt token is run"),
                    reused,
                ))
            }
            other => {
                // quantized_qwen3 keeps its cache across calls even at position 0.
                if let Model::Qwen3(m) = other {
                    m.clear_kv_cache();
                }
                Ok((other.step(prompt, 0, device)?, 0))
            }
        }
    }

    /// Logits after `tokens`, which follow the `position` tokens seen so far.
    fn step(&mut self, tokens: &[u32], position: usize, device: &Device) -> Result<Tensor> {
        let input = || Tensor::new(tokens, device).and_then(|t| t.unsqueeze(0));
        Ok(match self {
            Model::Gemma3 { model, current, .. } => {
                let sequence = current.as_mut().expect("prefill comes first");
                sequence.tokens.extend_from_slice(tokens);
                model.forward(tokens, &mut sequence.cache)?
            }
            Model::Llama(m) => m.forward(&input()?, position)?.squeeze(0)?,
            Model::Qwen2(m) => m.forward(&input()?, position)?.squeeze(0)?,
            Model::Qwen3(m) => m.forward(&input()?, position)?.squeeze(0)?,
        })
    }

    /// Keeps the finished sequence's keys and values for later prompts that begin the same way.
    fn finish(&mut self) {
        if let Model::Gemma3 {
            prefixes, current, ..
        } = self
        {
            if let Some(sequence) = current.take() {
                prefixes.put(sequence);
            }
        }
    }
}

/// Keys and values of recent sequences, most recently used last. A new prompt takes the entry
/// sharing its longest beginning (in whole prompt blocks), cut back to that beginning, so a
/// fixed few-shot prefix is computed once; the entry returns holding the new sequence.
#[derive(Default)]
struct PrefixCache {
    entries: Vec<Sequence>,
}

impl PrefixCache {
    fn take(&mut self, prompt: &[u32], model: &Gemma3) -> KvCache {
        // The last prompt token is always run: its logits start the generation.
        let reusable = |s: &Sequence| {
            let shared = common_prefix(&s.tokens, prompt)
                .min(prompt.len() - 1)
                .min(s.exact);
            match model.rows_independent() {
                true => shared,
                false => shared / PREFILL_BLOCK * PREFILL_BLOCK,
            }
        };
        let best = (0..self.entries.len()).max_by_key(|&i| (reusable(&self.entries[i]), i));
        let take = match best {
            Some(i) if reusable(&self.entries[i]) > 0 => Some(i),
            // Nothing shared: recycle the oldest entry's buffers once the cache is full.
            _ if self.entries.len() >= PREFIX_CACHE_ENTRIES => Some(0),
            _ => None,
        };
        match take {
            Some(i) => {
                let keep = reusable(&self.entries[i]);
                let mut cache = self.entries.remove(i).cache;
                cache.truncate(keep);
                cache
            }
            None => model.new_cache(),
        }
    }

    fn put(&mut self, sequence: Sequence) {
        debug_assert_eq!(sequence.tokens.len(), sequence.cache.len());
        self.entries.push(sequence);
        let bytes = |entries: &[Sequence]| entries.iter().map(|s| s.cache.bytes()).sum::<usize>();
        while self.entries.len() > 1
            && (self.entries.len() > PREFIX_CACHE_ENTRIES
                || bytes(&self.entries) > PREFIX_CACHE_BYTES)
        {
            self.entries.remove(0);
        }
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

struct State {
    model: Model,
}

pub struct GgufGenerator {
    id: String,
    tokenizer: Tokenizer,
    /// Tokens that end generation: EOS and end-of-turn markers.
    stop_tokens: Vec<u32>,
    context: usize,
    /// The file's own chat template (`tokenizer.chat_template`), for instruct models.
    chat_template: Option<ChatTemplate>,
    device: Device,
    state: Mutex<State>,
}

/// The chat template a GGUF file carries, with the text of its BOS and EOS tokens (templates
/// print them); `None` for a base model's file without one.
fn chat_template(metadata: &HashMap<String, gguf_file::Value>) -> Option<ChatTemplate> {
    let source = metadata.get("tokenizer.chat_template")?.to_string().ok()?;
    let tokens = metadata
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok());
    let token = |key: &str| -> String {
        let id = metadata.get(key).and_then(|v| v.to_u32().ok());
        match (tokens, id) {
            (Some(tokens), Some(id)) => tokens
                .get(id as usize)
                .and_then(|t| t.to_string().ok())
                .cloned()
                .unwrap_or_default(),
            _ => String::new(),
        }
    };
    Some(ChatTemplate {
        source: source.clone(),
        bos_token: token("tokenizer.ggml.bos_token_id"),
        eos_token: token("tokenizer.ggml.eos_token_id"),
    })
}

/// Loads a GGUF model, choosing the implementation by `general.architecture`.
pub fn load_generator(path: &Path, device: &Device) -> Result<Box<dyn Generator>> {
    Ok(Box::new(GgufGenerator::load(path, device)?))
}

impl GgufGenerator {
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        // Buffered: the metadata is read a few bytes at a time (a million reads unbuffered).
        let mut file =
            std::io::BufReader::new(std::fs::File::open(path).map_err(|e| Error::io(path, e))?);
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| Error::bad(path, format!("not a GGUF file: {e}")))?;
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("generator")
            .to_string();
        let context = content
            .metadata
            .get(&format!("{arch}.context_length"))
            .and_then(|v| v.to_u32().ok())
            .map_or(MAX_CONTEXT, |n| (n as usize).min(MAX_CONTEXT));
        let chat_template = chat_template(&content.metadata);
        let mut stop_tokens = Vec::new();
        if let Some(eos) = content
            .metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().ok())
        {
            stop_tokens.push(eos);
        }
        // Never guess a tokenizer: tokenizer.json beside the file, else the GGUF's own SentencePiece.
        let tokenizer_json = path.with_file_name("tokenizer.json");
        let tokenizer = match tokenizers::Tokenizer::from_file(&tokenizer_json) {
            Ok(t) if arch != "gemma3" => Tokenizer::Hf(Box::new(t)),
            _ => match GgufTokenizer::from_gguf(&content) {
                Ok(t) => Tokenizer::Gguf(Box::new(t)),
                Err(_) => {
                    return Err(Error::Missing {
                        path: tokenizer_json,
                    })
                }
            },
        };
        let model = match arch.as_str() {
            "gemma3" => Model::Gemma3 {
                model: Gemma3::load(&content, &mut file, path, device)?,
                prefixes: PrefixCache::default(),
                current: None,
            },
            "llama" => Model::Llama(quantized_llama::ModelWeights::from_gguf(
                content, &mut file, device,
            )?),
            "qwen2" => Model::Qwen2(quantized_qwen2::ModelWeights::from_gguf(
                content, &mut file, device,
            )?),
            "qwen3" => Model::Qwen3(quantized_qwen3::ModelWeights::from_gguf(
                content, &mut file, device,
            )?),
            other => {
                return Err(Error::bad(
                    path,
                    format!(
                        "architecture {other:?} is not supported (gemma3, llama, qwen2, qwen3)"
                    ),
                ))
            }
        };
        if let Tokenizer::Gguf(t) = &tokenizer {
            stop_tokens.extend(
                ["<end_of_turn>", "<eos>"]
                    .iter()
                    .filter_map(|p| t.piece_id(p)),
            );
        }
        if let Tokenizer::Hf(t) = &tokenizer {
            stop_tokens.extend(
                ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>"]
                    .iter()
                    .filter_map(|p| t.token_to_id(p)),
            );
        }
        Ok(Self {
            id,
            tokenizer,
            stop_tokens,
            context,
            chat_template,
            device: device.clone(),
            state: Mutex::new(State { model }),
        })
    }

    /// Token ids of a prompt as the model sees it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// The text of token ids (control tokens stand for nothing).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }
}

/// Text that is final: never a possible beginning of a stop string.
struct StopScanner<'a> {
    stops: &'a [String],
    bytes: Vec<u8>,
    emitted: usize,
}

impl StopScanner<'_> {
    /// Adds a token's bytes; returns (text now safe to emit, whether a stop string was hit).
    fn push(&mut self, bytes: &[u8]) -> (String, bool) {
        self.bytes.extend_from_slice(bytes);
        // Only whole characters: a multi-byte character may span tokens.
        let valid = match std::str::from_utf8(&self.bytes) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let text = std::str::from_utf8(&self.bytes[..valid]).expect("valid prefix");
        if let Some(at) = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            let out = text[self.emitted.min(at)..at].to_string();
            self.emitted = at;
            return (out, true);
        }
        // Hold back the longest suffix that could still grow into a stop string.
        let hold = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len()).filter(|&k| s.is_char_boundary(k) && text.ends_with(&s[..k]))
            })
            .max()
            .unwrap_or(0);
        let safe = valid - hold;
        let out = if safe > self.emitted {
            text[self.emitted..safe].to_string()
        } else {
            String::new()
        };
        self.emitted = self.emitted.max(safe);
        (out, false)
    }

    fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.bytes).into_owned();
        let out = text.get(self.emitted..).unwrap_or_default().to_string();
        self.emitted = text.len();
        out
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes[..self.emitted.min(self.bytes.len())]).into_owned()
    }
}

impl Generator for GgufGenerator {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn context_length(&self) -> usize {
        self.context
    }

    fn chat_template(&self) -> Option<ChatTemplate> {
        self.chat_template.clone()
    }

    fn generate(
        &self,
        prompt: &str,
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> triage_core::Result<Generation> {
        let tokens = time(Op::Tokenize, || self.tokenizer.encode(prompt))?;
        if tokens.is_empty() {
            return Err(triage_core::Error::InvalidInput(
                "the prompt is empty".into(),
            ));
        }
        // The prompt must leave room for `max_tokens`: a generation never stops early for want
        // of context, and the caller learns before any work is done (and can shorten the
        // prompt or ask for fewer tokens).
        if tokens.len() + params.max_tokens > self.context {
            return Err(Error::PromptTooLong {
                prompt: tokens.len(),
                max_tokens: params.max_tokens,
                limit: self.context,
            }
            .into());
        }
        let sampling = if params.temperature <= 0.0 {
            Sampling::ArgMax
        } else {
            Sampling::TopP {
                p: params.top_p.clamp(0.0, 1.0),
                temperature: params.temperature,
            }
        };
        let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (mut logits, cached) = state
            .model
            .prefill(&tokens, &self.device)
            .map_err(triage_core::Error::from)?;
        let mut scanner = StopScanner {
            stops: &params.stop,
            bytes: Vec::new(),
            emitted: 0,
        };
        let mut generated = 0;
        let mut recent: Vec<u32> = Vec::new();
        let stop_reason = loop {
            if generated >= params.max_tokens {
                let rest = scanner.finish();
                if !rest.is_empty() {
                    on_text(&rest);
                }
                break StopReason::MaxTokens;
            }
            let next = time(Op::Sample, || -> triage_core::Result<u32> {
                // A small base model falls into loops ("您好！您好！…"); penalise what it just said.
                if params.repeat_penalty != 1.0 && !recent.is_empty() {
                    let window = &recent[recent.len().saturating_sub(REPEAT_WINDOW)..];
                    logits = candle_transformers::utils::apply_repeat_penalty(
                        &logits,
                        params.repeat_penalty,
                        window,
                    )
                    .map_err(|e| triage_core::Error::Model(e.to_string()))?;
                }
                sampler
                    .sample(&logits)
                    .map_err(|e| triage_core::Error::Model(e.to_string()))
            })?;
            generated += 1;
            recent.push(next);
            if self.stop_tokens.contains(&next) {
                let rest = scanner.finish();
                if !rest.is_empty() {
                    on_text(&rest);
                }
                break StopReason::EndOfSequence;
            }
            let (piece, hit) = scanner.push(&self.tokenizer.token_bytes(next));
            if !piece.is_empty() && !on_text(&piece) {
                break StopReason::Cancelled;
            }
            if hit {
                break StopReason::StopString;
            }
            // The last token needs no step (nothing reads its logits): the loop ends above.
            if generated >= params.max_tokens {
                continue;
            }
            let position = tokens.len() + generated - 1;
            logits = state
                .model
                .step(&[next], position, &self.device)
                .map_err(triage_core::Error::from)?;
        };
        state.model.finish();
        Ok(Generation {
            text: scanner.text(),
            prompt_tokens: tokens.len(),
            cached_prompt_tokens: cached,
            generated_tokens: generated,
            stop_reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instruct_files_chat_template_comes_with_its_bos_and_eos_text_and_a_base_file_has_none() {
        let tokens = ["<pad>", "<bos>", "<eos>"]
            .iter()
            .map(|t| gguf_file::Value::String(t.to_string()))
            .collect();
        let mut metadata = HashMap::from([
            (
                "tokenizer.ggml.tokens".to_string(),
                gguf_file::Value::Array(tokens),
            ),
            (
                "tokenizer.ggml.bos_token_id".to_string(),
                gguf_file::Value::U32(1),
            ),
            (
                "tokenizer.ggml.eos_token_id".to_string(),
                gguf_file::Value::U32(2),
            ),
        ]);
        assert_eq!(chat_template(&metadata), None);
        let source =
            "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}";
        metadata.insert(
            "tokenizer.chat_template".to_string(),
            gguf_file::Value::String(source.to_string()),
        );
        let template = chat_template(&metadata).expect("the file's template");
        assert_eq!(template.source, source);
        assert_eq!(
            (template.bos_token.as_str(), template.eos_token.as_str()),
            ("<bos>", "<eos>")
        );
        let prompt = template
            .render(&[triage_core::prompt::ChatMessage::user("路灯不亮")], true)
            .unwrap();
        assert_eq!(prompt, "<bos><|user|>路灯不亮");
    }

    #[test]
    fn holds_back_a_possible_stop_string() {
        let stops = vec!["###".to_string()];
        let mut s = StopScanner {
            stops: &stops,
            bytes: Vec::new(),
            emitted: 0,
        };
        assert_eq!(s.push("答复#".as_bytes()), ("答复".to_string(), false));
        assert_eq!(s.push(b"#"), (String::new(), false));
        assert_eq!(s.push(b"# next"), (String::new(), true));
        assert_eq!(s.text(), "答复");
    }

    #[test]
    fn waits_for_whole_characters() {
        let stops: Vec<String> = Vec::new();
        let mut s = StopScanner {
            stops: &stops,
            bytes: Vec::new(),
            emitted: 0,
        };
        let bytes = "好".as_bytes();
        assert_eq!(s.push(&bytes[..2]).0, "");
        assert_eq!(s.push(&bytes[2..]).0, "好");
    }
}
