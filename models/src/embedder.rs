//! Sentence embedders of the BERT family (BERT, and BERT models with an XLM-R vocabulary such as
//! multilingual-e5) from a Hugging Face directory: `config.json`, `tokenizer.json`,
//! `model.safetensors`, and optionally `triage.json` with the model's spec.
//!
//! Throughput comes from not computing padding: texts are tokenized once, sorted by length and
//! cut into batches under a token budget. On the CPU a batch is packed without any padding (see
//! `bert`); on other devices candle's `BertModel` pads each batch to its own longest text.

use crate::adapt::{self, AdaptedTop};
use crate::bert::{pool, Bert, BertConfig, Pooling, Precision};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};
use triage_core::adapt::{AdaptJob, Adapted};
use triage_core::{EmbedKind, Embedded, Embedder, EncoderHead};

/// How a model wants its inputs prepared and its outputs pooled. Part of the model, not the
/// caller: e5 needs `query: `/`passage: ` prefixes and mean pooling, bge uses the CLS token.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EmbedderSpec {
    pub model_id: String,
    #[serde(default)]
    pub query_prefix: String,
    #[serde(default)]
    pub passage_prefix: String,
    #[serde(default)]
    pub pooling: Pooling,
    #[serde(default = "yes")]
    pub normalize: bool,
    /// Longest input in tokens, special tokens included; longer texts keep their head.
    #[serde(default)]
    pub max_tokens: Option<usize>,
}

fn yes() -> bool {
    true
}

impl EmbedderSpec {
    /// The spec of a directory without `triage.json`, from its name: e5 (prefixes, mean),
    /// bge (CLS), anything else mean pooling without prefixes (sentence-transformers' default).
    pub fn infer(dir: &Path) -> Self {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("embedder")
            .to_string();
        let lower = name.to_lowercase();
        let (query_prefix, passage_prefix, pooling) = if lower.contains("e5") {
            ("query: ", "passage: ", Pooling::Mean)
        } else if lower.contains("bge") {
            ("", "", Pooling::Cls)
        } else {
            ("", "", Pooling::Mean)
        };
        Self {
            model_id: name,
            query_prefix: query_prefix.into(),
            passage_prefix: passage_prefix.into(),
            pooling,
            normalize: true,
            max_tokens: None,
        }
    }
}

/// Padded tokens (batch × longest) computed at once; bounds memory for the attention scores.
const TOKEN_BUDGET: usize = 8192;
const MAX_BATCH: usize = 64;

enum Encoder {
    /// The packed CPU encoder, 3–6× faster than candle's on the CPU.
    Packed(Bert),
    Candle(BertModel),
}

pub struct BertEmbedder {
    encoder: Encoder,
    tokenizer: Tokenizer,
    spec: EmbedderSpec,
    max_tokens: usize,
    dim: usize,
    device: Device,
}

/// CPU, or the first CUDA device when built with the `cuda` feature and one is present.
pub fn default_device() -> Result<Device> {
    #[cfg(feature = "cuda")]
    if candle_core::utils::cuda_is_available() {
        return Ok(Device::new_cuda(0)?);
    }
    Ok(Device::Cpu)
}

fn required(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::Missing { path })
    }
}

impl BertEmbedder {
    /// Loads a directory in a fixed order: files → config → tokenizer → weights (memory-mapped),
    /// with the default precision (f32).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_with(dir, device, Precision::default())
    }

    /// `load` with the arithmetic of the CPU encoder's dense layers (other devices run f32).
    pub fn load_with(dir: &Path, device: &Device, precision: Precision) -> Result<Self> {
        let config_path = required(dir, "config.json")?;
        let tokenizer_path = required(dir, "tokenizer.json")?;
        let weights_path = required(dir, "model.safetensors")?;
        let spec = match std::fs::read(dir.join("triage.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::bad(dir.join("triage.json"), e.to_string()))?,
            Err(_) => EmbedderSpec::infer(dir),
        };

        let config_text =
            std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|e| Error::bad(&config_path, e.to_string()))?;
        let raw: serde_json::Value = serde_json::from_str(&config_text)
            .map_err(|e| Error::bad(&config_path, e.to_string()))?;
        let positions = raw["max_position_embeddings"].as_u64().unwrap_or(512) as usize;
        // sentence-transformers trains some models shorter than their position table.
        let trained = std::fs::read(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["max_seq_length"].as_u64())
            .map(|n| n as usize);
        let max_tokens = spec
            .max_tokens
            .or(trained)
            .unwrap_or(positions)
            .min(positions);
        let dim = raw["hidden_size"]
            .as_u64()
            .ok_or_else(|| Error::bad(&config_path, "no hidden_size"))? as usize;

        let tokenizer = load_tokenizer(&tokenizer_path, max_tokens)?;
        let encoder = if device.is_cpu() {
            let config: BertConfig = serde_json::from_str(&config_text)
                .map_err(|e| Error::bad(&config_path, e.to_string()))?;
            Encoder::Packed(Bert::load(&config, &config_path, &weights_path, precision)?)
        } else {
            // SAFETY: the file is memory-mapped read-only; the project's own files are not modified
            // while the service runs (setup replaces directories by rename, never in place).
            let vb = unsafe {
                VarBuilder::from_mmaped_safetensors(&[&weights_path], DType::F32, device)
            }
            .map_err(|e| Error::bad(&weights_path, e.to_string()))?;
            Encoder::Candle(
                BertModel::load(vb, &config)
                    .map_err(|e| Error::bad(&weights_path, e.to_string()))?,
            )
        };
        Ok(Self {
            encoder,
            tokenizer,
            spec,
            max_tokens,
            dim,
            device: device.clone(),
        })
    }

    /// Keeps at most `n` tokens of each input (the head), e.g. to trade accuracy for speed.
    pub fn with_max_tokens(mut self, n: usize) -> Result<Self> {
        self.max_tokens = n.clamp(8, self.max_tokens);
        self.tokenizer = set_truncation(self.tokenizer, self.max_tokens)?;
        Ok(self)
    }

    pub fn spec(&self) -> &EmbedderSpec {
        &self.spec
    }

    /// The arithmetic of the dense layers as loaded (f32 on other devices than the CPU).
    pub fn precision(&self) -> Precision {
        match &self.encoder {
            Encoder::Packed(bert) => bert.precision(),
            Encoder::Candle(_) => Precision::F32,
        }
    }

    /// Token ids of `text` as the model sees it (special tokens included, no prefix added).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids of texts as `embed` feeds them to the model: the kind's prefix, truncated to
    /// `max_tokens` (public so benchmarks can time tokenization alone).
    pub fn tokenize(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Vec<u32>>> {
        let prefix = match kind {
            EmbedKind::Query => &self.spec.query_prefix,
            EmbedKind::Passage => &self.spec.passage_prefix,
        };
        let inputs: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    fn forward(&self, batch: &[&Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let mut pooled = match &self.encoder {
            Encoder::Packed(bert) => {
                let seqs: Vec<&[u32]> = batch.iter().map(|ids| ids.as_slice()).collect();
                bert.embed(&seqs, self.spec.pooling)?
            }
            Encoder::Candle(model) => self.forward_candle(model, batch)?,
        };
        self.normalize(&mut pooled);
        Ok(pooled)
    }

    fn normalize(&self, pooled: &mut [Vec<f32>]) {
        if self.spec.normalize {
            for v in pooled {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
    }

    /// One pass for both outputs: the lower layers once, then the original top layers for the
    /// vector (exactly as `forward` computes it) and the adapted ones for the class scores.
    fn forward_scored(&self, top: &AdaptedTop, batch: &[&Vec<u32>]) -> Result<Vec<Embedded>> {
        let Encoder::Packed(bert) = &self.encoder else {
            return Err(Error::bad(
                "adapted layers",
                "they run on the CPU encoder only",
            ));
        };
        let seqs: Vec<&[u32]> = batch.iter().map(|ids| ids.as_slice()).collect();
        let (mut x, spans) = bert.embed_tokens(&seqs)?;
        let layers = bert.encoder_layers();
        bert.run_layers(&mut x, &spans, &layers[..top.split()]);
        let mid = x.clone();
        bert.run_layers(&mut x, &spans, &layers[top.split()..]);
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let mut vectors = pool(&x, &lens, bert.hidden_size(), self.spec.pooling);
        self.normalize(&mut vectors);
        let scores = top.scores(bert, mid, &spans);
        Ok(vectors
            .into_iter()
            .zip(scores)
            .map(|(vector, scores)| Embedded {
                vector,
                scores: Some(scores),
            })
            .collect())
    }

    /// `f` over batches of `ids` (sorted by length, cut under the token budget), results back
    /// in input order.
    fn in_batches<T: Clone + Default>(
        &self,
        ids: &[Vec<u32>],
        mut f: impl FnMut(&[&Vec<u32>]) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        // Longest first, so the first batch shows the memory high-water mark at once.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out = vec![T::default(); ids.len()];
        let mut start = 0;
        while start < order.len() {
            let longest = ids[order[start]].len().max(1);
            let size = (TOKEN_BUDGET / longest)
                .clamp(1, MAX_BATCH)
                .min(order.len() - start);
            let batch: Vec<&Vec<u32>> = order[start..start + size]
                .iter()
                .map(|&i| &ids[i])
                .collect();
            for (k, item) in f(&batch)?.into_iter().enumerate() {
                out[order[start + k]] = item;
            }
            start += size;
        }
        Ok(out)
    }

    fn forward_candle(&self, model: &BertModel, batch: &[&Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let longest = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch.len() * longest);
        let mut mask = Vec::with_capacity(batch.len() * longest);
        for seq in batch {
            ids.extend(seq.iter().copied());
            ids.extend(std::iter::repeat_n(0u32, longest - seq.len()));
            mask.extend(std::iter::repeat_n(1u32, seq.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - seq.len()));
        }
        let shape = (batch.len(), longest);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = model.forward(&ids, &types, Some(&mask))?; // (batch, longest, dim)
        let pooled = match self.spec.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                summed.broadcast_div(&mask.sum(1)?)?
            }
        };
        Ok(pooled.to_vec2()?)
    }
}

fn set_truncation(mut tokenizer: Tokenizer, max_tokens: usize) -> Result<Tokenizer> {
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            strategy: TruncationStrategy::LongestFirst,
            direction: TruncationDirection::Right,
            stride: 0,
        }))
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

fn load_tokenizer(path: &Path, max_tokens: usize) -> Result<Tokenizer> {
    let tokenizer = Tokenizer::from_file(path).map_err(|e| Error::bad(path, e.to_string()))?;
    set_truncation(tokenizer, max_tokens)
}

impl Embedder for BertEmbedder {
    fn model_id(&self) -> &str {
        &self.spec.model_id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn embed(&self, texts: &[&str], kind: EmbedKind) -> triage_core::Result<Vec<Vec<f32>>> {
        let ids = self.tokenize(texts, kind)?;
        Ok(self.in_batches(&ids, |batch| self.forward(batch))?)
    }

    fn can_adapt(&self) -> bool {
        matches!(self.encoder, Encoder::Packed(_))
    }

    fn adapt(&self, job: &AdaptJob) -> triage_core::Result<Adapted> {
        let Encoder::Packed(bert) = &self.encoder else {
            return Err(Error::bad("adaptation", "it runs on the CPU encoder only").into());
        };
        let ids = self.tokenize(job.texts, job.kind)?;
        Ok(adapt::fit(bert, &self.spec.model_id, &ids, job)?)
    }

    fn load_head(&self, bytes: &[u8]) -> triage_core::Result<Arc<dyn EncoderHead>> {
        let Encoder::Packed(bert) = &self.encoder else {
            return Err(Error::bad("adapted layers", "they run on the CPU encoder only").into());
        };
        let top = AdaptedTop::from_bytes(bytes)?;
        top.check(bert, &self.spec.model_id)?;
        Ok(Arc::new(top.at_precision(bert.precision())))
    }

    fn embed_scored(
        &self,
        texts: &[&str],
        kind: EmbedKind,
        head: &Arc<dyn EncoderHead>,
    ) -> triage_core::Result<Vec<Embedded>> {
        let top = head
            .as_any()
            .downcast_ref::<AdaptedTop>()
            .ok_or_else(|| Error::bad("adapted layers", "not made by this embedder"))?;
        let ids = self.tokenize(texts, kind)?;
        Ok(self.in_batches(&ids, |batch| self.forward_scored(top, batch))?)
    }
}
