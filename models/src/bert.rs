//! A BERT encoder for the CPU that computes no padding.
//!
//! The texts of a batch are packed one after another into one (tokens × hidden) matrix, so the dense
//! layers run as one large matmul over real tokens only, and attention runs per text and head
//! directly on strided views of the packed Q/K/V matrix: no padding, no masks, no transposes.
//! The dense layers run in f32 on `gemm` (the default; its AVX-512 kernels when the CPU has them,
//! see models/Cargo.toml), or in int8 (`Precision::Int8`: weights quantized per block of 32 or 64
//! inputs of each output column at load time, activations per block of each token,
//! `kernels::int8`). Attention, bias, GELU, softmax and layer norm stay in f32: fused loops
//! written so that the compiler vectorises them, with an exp and erf that need no libm call.
//!
//! candle's `BertModel` (used on other devices) pads every text to the longest of its batch, splits
//! heads with copies, evaluates erf one element at a time and runs its matmuls on AVX2 only; on
//! this 2-core machine it embedded 128-token texts 3–4× slower than this path (see bench-embed).

use crate::error::{Error, Result};
use crate::kernels::int8::{self, Isa, PackedWeights, QuantizedRows};
use crate::kernels::{
    activate, fill_rows, layer_norm, matmul_add, residual_plus_bias, softmax, Activation, Base,
};
use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use std::path::Path;

/// How the token vectors of a text become its one vector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    #[default]
    Mean,
    Cls,
}

/// The fields of a Hugging Face BERT `config.json` this encoder reads.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}

fn default_eps() -> f64 {
    1e-12
}

/// The arithmetic of the dense layers (the matmuls: 90% of an encoder's work at 128 tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precision {
    /// int8 weights and activations (a scale per block of 32 or 64 values), int32 sums, with VNNI
    /// or AVX2 kernels chosen at run time (speed and distance to f32's vectors: see the
    /// README). On a CPU without AVX2 it falls back to f32. The service's default (`triage`
    /// picks it unless `--adapt` needs f32): its vectors are within cosine 0.9999 of f32's,
    /// search recall@10 against f32-built stores 0.986.
    Int8,
    /// f32 matmuls on `gemm`: the library's default (the model as shipped, the reference).
    #[default]
    F32,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Int8 => "int8",
            Precision::F32 => "f32",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "int8" => Ok(Precision::Int8),
            "f32" => Ok(Precision::F32),
            other => Err(format!("precision {other:?} is not one of int8, f32")),
        }
    }
}

/// A dense layer's weight, k inputs × n outputs.
pub(crate) enum Matrix {
    /// Stored input-major (k × n), the layout gemm reads fastest.
    F32 {
        w: Vec<f32>,
        k: usize,
        n: usize,
    },
    Int8(PackedWeights),
}

/// k values per int8 scale: 32 for the attention's matrices, whose inputs (layer-norm outputs
/// and attention contexts) recall@10 is most sensitive to, and where e5's 4-bit weights are
/// held exactly; 64 for the feed-forward's, two thirds of the work, at half the f32 steps
/// (measured: README, "The int8 encoder").
const ATTENTION_BLOCK: usize = 32;
const FEED_FORWARD_BLOCK: usize = 64;

impl Matrix {
    /// The matrix at `precision`: f32 weights are quantized with `block` k values per scale
    /// (`kernels::int8`); a quantized one is kept.
    fn at_precision(self, precision: Precision, block: usize) -> Self {
        match (self, precision) {
            (Matrix::F32 { w, k, n }, Precision::Int8) => {
                Matrix::Int8(PackedWeights::quantize(&w, k, n, Isa::detect(), block))
            }
            (matrix, _) => matrix,
        }
    }

    /// A matrix of f32 weights, k × n, input-major.
    pub(crate) fn f32(w: Vec<f32>, k: usize, n: usize) -> Self {
        Matrix::F32 { w, k, n }
    }

    /// The f32 weights (k × n, input-major), or `None` when they were quantized at load time.
    pub(crate) fn f32_weights(&self) -> Option<&[f32]> {
        match self {
            Matrix::F32 { w, .. } => Some(w),
            Matrix::Int8(_) => None,
        }
    }

    /// `dst (m × n) = residual + bias + x (m × k) · W`, then `after` on each row of `dst`; the
    /// int8 path quantizes `x` into `scratch` first and runs `after` on rows still in cache.
    fn apply(
        &self,
        dst: &mut [f32],
        x: &[f32],
        base: Base,
        after: &(dyn Fn(&mut [f32]) + Sync),
        scratch: &mut QuantizedRows,
    ) {
        match self {
            Matrix::F32 { w, k, n } => {
                match base.residual {
                    Some(residual) => residual_plus_bias(dst, residual, base.bias),
                    None => fill_rows(dst, base.bias),
                }
                let m = x.len() / k;
                matmul_add(dst, x, w, m, *k, *n);
                dst.par_chunks_mut(*n).with_min_len(16).for_each(after);
            }
            Matrix::Int8(w) => {
                let k = x.len() / (dst.len() / base.bias.len()).max(1);
                scratch.quantize(x, x.len() / k.max(1), k, w.block());
                int8::matmul(dst, scratch, w, base, after);
            }
        }
    }
}

/// One encoder layer. `adapt.rs` trains f32 copies of the top layers and runs them as layers
/// of this same kind (`Bert::run_layers`).
pub(crate) struct Layer {
    /// hidden × 3·hidden, with the query, key and value columns side by side.
    pub(crate) qkv: Matrix,
    pub(crate) qkv_bias: Vec<f32>,
    pub(crate) attn_out: Matrix,
    pub(crate) attn_out_bias: Vec<f32>,
    pub(crate) attn_norm: (Vec<f32>, Vec<f32>),
    pub(crate) up: Matrix,
    pub(crate) up_bias: Vec<f32>,
    pub(crate) down: Matrix,
    pub(crate) down_bias: Vec<f32>,
    pub(crate) out_norm: (Vec<f32>, Vec<f32>),
}

impl Layer {
    /// The layer with its matrices at `precision`, quantized as the loader quantizes the
    /// encoder's own (adapted layers are trained in f32 and run at the shared layers' precision).
    pub(crate) fn at_precision(self, precision: Precision) -> Self {
        Self {
            qkv: self.qkv.at_precision(precision, ATTENTION_BLOCK),
            attn_out: self.attn_out.at_precision(precision, ATTENTION_BLOCK),
            up: self.up.at_precision(precision, FEED_FORWARD_BLOCK),
            down: self.down.at_precision(precision, FEED_FORWARD_BLOCK),
            ..self
        }
    }
}

/// The word embedding table stays in the memory map (250k rows for an XLM-R vocabulary); rows
/// are converted to f32 as tokens look them up.
struct WordTable {
    map: Mmap,
    offset: usize,
    dtype: Dtype,
    rows: usize,
}

pub struct Bert {
    hidden: usize,
    heads: usize,
    inter: usize,
    eps: f32,
    act: Activation,
    precision: Precision,
    positions: usize,
    words: WordTable,
    /// Position embeddings with token type 0 already added (inputs are single segments).
    position_rows: Vec<f32>,
    embed_norm: (Vec<f32>, Vec<f32>),
    layers: Vec<Layer>,
}

impl Bert {
    /// Loads `model.safetensors` for `config` (read from `config_path`, named in errors). Tensor
    /// names may carry a `bert.` (or `<model_type>.`) prefix, as task-head checkpoints do.
    /// `Precision::Int8` becomes f32 on a CPU without int8 SIMD kernels (`precision()` says
    /// which is used).
    pub fn load(
        config: &BertConfig,
        config_path: &Path,
        weights_path: &Path,
        precision: Precision,
    ) -> Result<Self> {
        let precision = match precision {
            Precision::Int8 if !Isa::detect().is_simd() => {
                tracing::info!("no int8 SIMD kernel for this CPU: the encoder runs in f32");
                Precision::F32
            }
            p => p,
        };
        let bad_config = |reason: String| Error::bad(config_path, reason);
        let act = match config.hidden_act.as_str() {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => {
                return Err(bad_config(format!(
                    "hidden_act {other:?} is not one of gelu, gelu_new, relu"
                )))
            }
        };
        if let Some(kind) = config
            .position_embedding_type
            .as_deref()
            .filter(|k| *k != "absolute")
        {
            return Err(bad_config(format!(
                "position_embedding_type {kind:?}: only \"absolute\" is supported"
            )));
        }
        let (h, f) = (config.hidden_size, config.intermediate_size);
        if config.num_attention_heads == 0 || h % config.num_attention_heads != 0 {
            return Err(bad_config(format!(
                "hidden_size {h} is not a multiple of num_attention_heads"
            )));
        }

        let file = std::fs::File::open(weights_path).map_err(|e| Error::io(weights_path, e))?;
        // SAFETY: the file is mapped read-only; the project replaces model directories by rename,
        // never in place, so the mapped bytes do not change while the service runs.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(weights_path, e))?;
        let tensors =
            SafeTensors::deserialize(&map).map_err(|e| Error::bad(weights_path, e.to_string()))?;
        let bad = |reason: String| Error::bad(weights_path, reason);
        let names = tensors.names();
        let prefix = [
            "",
            "bert.",
            &format!("{}.", config.model_type.as_deref().unwrap_or("bert")),
        ]
        .into_iter()
        .find(|p| {
            names
                .iter()
                .any(|n| **n == format!("{p}embeddings.word_embeddings.weight"))
        })
        .ok_or_else(|| bad("no embeddings.word_embeddings.weight: not a BERT checkpoint".into()))?
        .to_string();
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let full = format!("{prefix}{name}");
            let view = tensors
                .tensor(&full)
                .map_err(|_| bad(format!("tensor {full} is missing")))?;
            if view.shape() != shape {
                return Err(bad(format!(
                    "tensor {full} has shape {:?}, expected {shape:?}",
                    view.shape()
                )));
            }
            to_f32(view.dtype(), view.data()).ok_or_else(|| {
                bad(format!(
                    "tensor {full} has unsupported dtype {:?}",
                    view.dtype()
                ))
            })
        };
        // (out × in) as stored → (in × out).
        let read_t = |name: &str, out: usize, inp: usize| -> Result<Vec<f32>> {
            let w = read(name, &[out, inp])?;
            let mut t = vec![0f32; w.len()];
            for o in 0..out {
                for i in 0..inp {
                    t[i * out + o] = w[o * inp + i];
                }
            }
            Ok(t)
        };
        let norm = |name: &str| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((
                read(&format!("{name}.weight"), &[h])?,
                read(&format!("{name}.bias"), &[h])?,
            ))
        };

        let word_name = format!("{prefix}embeddings.word_embeddings.weight");
        let word = tensors.tensor(&word_name).map_err(|e| bad(e.to_string()))?;
        if word.shape() != [config.vocab_size, h] || to_f32(word.dtype(), &[]).is_none() {
            return Err(bad(format!(
                "tensor {word_name} is {:?} {:?}, expected [{}, {h}] in f32, f16 or bf16",
                word.dtype(),
                word.shape(),
                config.vocab_size
            )));
        }
        let (word_offset, word_dtype) = (
            word.data().as_ptr() as usize - map.as_ptr() as usize,
            word.dtype(),
        );
        let positions = config.max_position_embeddings;
        let mut position_rows = read("embeddings.position_embeddings.weight", &[positions, h])?;
        let type_name = format!("{prefix}embeddings.token_type_embeddings.weight");
        let types = tensors
            .tensor(&type_name)
            .map_err(|_| bad(format!("tensor {type_name} is missing")))?;
        let type0 = match types.shape() {
            [rows, cols] if *rows >= 1 && *cols == h => {
                to_f32(types.dtype(), &types.data()[..h * types.dtype().size()])
            }
            _ => None,
        }
        .ok_or_else(|| {
            bad(format!(
                "tensor {type_name} is {:?} {:?}, expected [n, {h}]",
                types.dtype(),
                types.shape()
            ))
        })?;
        for row in position_rows.chunks_exact_mut(h) {
            row.iter_mut().zip(&type0).for_each(|(p, t)| *p += t);
        }
        let embed_norm = norm("embeddings.LayerNorm")?;

        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}.");
            let (q, k, v) = (
                read_t(&format!("{p}attention.self.query.weight"), h, h)?,
                read_t(&format!("{p}attention.self.key.weight"), h, h)?,
                read_t(&format!("{p}attention.self.value.weight"), h, h)?,
            );
            let mut qkv = Vec::with_capacity(3 * h * h);
            for i in 0..h {
                for m in [&q, &k, &v] {
                    qkv.extend_from_slice(&m[i * h..(i + 1) * h]);
                }
            }
            // Row i of qkv is [q_i | k_i | v_i]: the (h × 3h) matrix of the three projections.
            let mut qkv_bias = read(&format!("{p}attention.self.query.bias"), &[h])?;
            qkv_bias.extend(read(&format!("{p}attention.self.key.bias"), &[h])?);
            qkv_bias.extend(read(&format!("{p}attention.self.value.bias"), &[h])?);
            // Read in f32, then quantized whole (`Layer::at_precision` picks each block size).
            let layer = Layer {
                qkv: Matrix::f32(qkv, h, 3 * h),
                qkv_bias,
                attn_out: Matrix::f32(
                    read_t(&format!("{p}attention.output.dense.weight"), h, h)?,
                    h,
                    h,
                ),
                attn_out_bias: read(&format!("{p}attention.output.dense.bias"), &[h])?,
                attn_norm: norm(&format!("{p}attention.output.LayerNorm"))?,
                up: Matrix::f32(
                    read_t(&format!("{p}intermediate.dense.weight"), f, h)?,
                    h,
                    f,
                ),
                up_bias: read(&format!("{p}intermediate.dense.bias"), &[f])?,
                down: Matrix::f32(read_t(&format!("{p}output.dense.weight"), h, f)?, f, h),
                down_bias: read(&format!("{p}output.dense.bias"), &[h])?,
                out_norm: norm(&format!("{p}output.LayerNorm"))?,
            };
            layers.push(layer.at_precision(precision));
        }
        drop(tensors);
        Ok(Self {
            hidden: h,
            heads: config.num_attention_heads,
            inter: f,
            eps: config.layer_norm_eps as f32,
            act,
            precision,
            positions,
            words: WordTable {
                map,
                offset: word_offset,
                dtype: word_dtype,
                rows: config.vocab_size,
            },
            position_rows,
            embed_norm,
            layers,
        })
    }
}

impl Bert {
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    pub fn layer_norm_eps(&self) -> f32 {
        self.eps
    }

    pub(crate) fn activation(&self) -> Activation {
        self.act
    }

    /// Longest sequence the position table holds.
    pub fn max_positions(&self) -> usize {
        self.positions
    }

    /// Transformer layers.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// The transformer layers themselves, bottom first (`run_layers` runs a slice of them).
    pub(crate) fn encoder_layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The arithmetic of the dense layers, as loaded.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// One pooled (not normalised) vector per token sequence.
    pub fn embed(&self, seqs: &[&[u32]], pooling: Pooling) -> Result<Vec<Vec<f32>>> {
        let states = self.forward(seqs)?;
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        Ok(pool(&states, &lens, self.hidden, pooling))
    }

    /// The last hidden states of the sequences packed one after another: (Σ lengths) × hidden,
    /// row-major. Each sequence attends only to itself.
    pub fn forward(&self, seqs: &[&[u32]]) -> Result<Vec<f32>> {
        self.forward_to(seqs, self.layers.len())
    }

    /// The hidden states after the first `layers` layers (0: the embeddings), packed as in
    /// `forward`; `layers` is at most `self.layers()`.
    pub fn forward_to(&self, seqs: &[&[u32]], layers: usize) -> Result<Vec<f32>> {
        assert!(
            layers <= self.layers.len(),
            "the encoder has {} layers",
            self.layers.len()
        );
        let (mut x, spans) = self.embed_tokens(seqs)?;
        self.run_layers(&mut x, &spans, &self.layers[..layers]);
        Ok(x)
    }

    /// The embedding layer's output for the packed sequences, and each one's (start, length).
    pub(crate) fn embed_tokens(&self, seqs: &[&[u32]]) -> Result<(Vec<f32>, Spans)> {
        let h = self.hidden;
        let mut tokens = Vec::new();
        let mut spans = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if seq.is_empty() || seq.len() > self.positions {
                return Err(Error::TooLong {
                    tokens: seq.len(),
                    limit: self.positions,
                });
            }
            if let Some(id) = seq.iter().find(|&&id| id as usize >= self.words.rows) {
                return Err(Error::Tokenizer(format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.words.rows
                )));
            }
            spans.push((tokens.len(), seq.len()));
            tokens.extend(seq.iter().enumerate().map(|(pos, &id)| (id, pos)));
        }
        let total = tokens.len();

        let mut x = vec![0f32; total * h];
        x.par_chunks_mut(h)
            .zip(&tokens)
            .with_min_len(64)
            .for_each(|(row, &(id, pos))| {
                self.words.row_into(id, row);
                row.iter_mut()
                    .zip(&self.position_rows[pos * h..(pos + 1) * h])
                    .for_each(|(x, p)| *x += p);
                layer_norm(row, &self.embed_norm, self.eps);
            });
        Ok((x, spans))
    }

    /// Runs `layers` (a slice of this encoder's, or adapted f32 copies of its top ones) over the
    /// packed hidden states `x` in place, whatever precision each layer's matrices have.
    pub(crate) fn run_layers(&self, x: &mut Vec<f32>, spans: &Spans, layers: &[Layer]) {
        let (h, f) = (self.hidden, self.inter);
        let total = x.len() / h;
        let mut qkv = vec![0f32; total * 3 * h];
        let mut ctx = vec![0f32; total * h];
        let mut tmp = vec![0f32; total * h];
        let mut up = vec![0f32; total * f];
        let mut q8 = QuantizedRows::new(Isa::detect());
        let (eps, act) = (self.eps, self.act);
        let bias = |bias| Base {
            bias,
            residual: None,
        };
        for layer in layers {
            layer
                .qkv
                .apply(&mut qkv, x, bias(&layer.qkv_bias), &|_| {}, &mut q8);
            self.attention(&qkv, &mut ctx, spans);
            let residual = Base {
                bias: &layer.attn_out_bias,
                residual: Some(x),
            };
            let norm = |row: &mut [f32]| layer_norm(row, &layer.attn_norm, eps);
            layer
                .attn_out
                .apply(&mut tmp, &ctx, residual, &norm, &mut q8);
            std::mem::swap(x, &mut tmp);

            let gelu = |row: &mut [f32]| activate(row, act);
            layer
                .up
                .apply(&mut up, x, bias(&layer.up_bias), &gelu, &mut q8);
            let residual = Base {
                bias: &layer.down_bias,
                residual: Some(x),
            };
            let norm = |row: &mut [f32]| layer_norm(row, &layer.out_norm, eps);
            layer.down.apply(&mut tmp, &up, residual, &norm, &mut q8);
            std::mem::swap(x, &mut tmp);
        }
    }

    /// Scaled dot-product attention of every (sequence, head) pair, in parallel, reading Q, K and
    /// V in place from the packed `qkv` rows and writing each head's columns of `ctx`.
    fn attention(&self, qkv: &[f32], ctx: &mut [f32], spans: &Spans) {
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let row = 3 * h;
        let scale = 1.0 / (d as f32).sqrt();
        let longest = spans.iter().map(|s| s.1).max().unwrap_or(0);
        let mut tasks: Vec<(usize, usize, usize)> = spans
            .iter()
            .flat_map(|&(start, len)| (0..heads).map(move |head| (start, len, head)))
            .collect();
        // Longest first: the large tasks start early and the small ones fill the gaps.
        tasks.sort_by_key(|t| std::cmp::Reverse(t.1));
        assert_eq!(ctx.len(), qkv.len() / 3);
        let out = SharedOut(ctx.as_mut_ptr());
        tasks.par_iter().for_each_init(
            || vec![0f32; longest * longest],
            |scores, &(start, len, head)| {
                let base = start * row + head * d;
                let (q, k, v) = (
                    qkv[base..].as_ptr(),
                    qkv[base + h..].as_ptr(),
                    qkv[base + 2 * h..].as_ptr(),
                );
                // SAFETY: Q, K and V of this sequence and head are the `len` rows from `start` at
                // columns head·d.. of the 3h-wide qkv matrix, all inside `qkv`; `scores` holds
                // len² values; the task writes rows start..start+len, columns head·d..(head+1)·d of
                // ctx (h wide, same row count as qkv), which no other task writes.
                unsafe {
                    gemm::gemm(
                        len,
                        len,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        len as isize,
                        false,
                        q,
                        1,
                        row as isize,
                        k,
                        row as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                scores[..len * len].chunks_exact_mut(len).for_each(softmax);
                unsafe {
                    gemm::gemm(
                        len,
                        d,
                        len,
                        out.at(start * h + head * d),
                        1,
                        h as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        len as isize,
                        v,
                        1,
                        row as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            },
        );
    }
}

/// (start row, length) of each sequence packed in a hidden-state matrix.
pub(crate) type Spans = Vec<(usize, usize)>;

/// One vector per sequence of the packed `states` (`lens` rows each, `hidden` wide).
pub(crate) fn pool(
    states: &[f32],
    lens: &[usize],
    hidden: usize,
    pooling: Pooling,
) -> Vec<Vec<f32>> {
    let mut rows = states.chunks_exact(hidden);
    lens.iter()
        .map(|&len| {
            let mut seq_rows = rows.by_ref().take(len);
            match pooling {
                Pooling::Cls => {
                    let first = seq_rows.next().unwrap_or(&[]).to_vec();
                    seq_rows.for_each(drop);
                    first
                }
                Pooling::Mean => {
                    let mut sum = vec![0f32; hidden];
                    for row in seq_rows {
                        sum.iter_mut().zip(row).for_each(|(s, x)| *s += x);
                    }
                    let scale = 1.0 / len.max(1) as f32;
                    sum.iter_mut().for_each(|s| *s *= scale);
                    sum
                }
            }
        })
        .collect()
}

/// The context matrix, written by the attention tasks at disjoint (rows, columns) blocks.
struct SharedOut(*mut f32);
// SAFETY: each task writes only its own block (see `attention`), and the matrix outlives the tasks.
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `offset` must lie inside the matrix.
    unsafe fn at(&self, offset: usize) -> *mut f32 {
        // SAFETY: the caller keeps `offset` in bounds.
        unsafe { self.0.add(offset) }
    }
}

impl WordTable {
    fn row_into(&self, id: u32, out: &mut [f32]) {
        let size = self.dtype.size();
        let start = self.offset + id as usize * out.len() * size;
        let bytes = &self.map[start..start + out.len() * size];
        match self.dtype {
            Dtype::F16 => out
                .iter_mut()
                .zip(bytes.chunks_exact(2))
                .for_each(|(o, b)| *o = f16::from_le_bytes([b[0], b[1]]).to_f32()),
            Dtype::BF16 => out
                .iter_mut()
                .zip(bytes.chunks_exact(2))
                .for_each(|(o, b)| *o = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            _ => out
                .iter_mut()
                .zip(bytes.chunks_exact(4))
                .for_each(|(o, b)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        }
    }
}

fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}
