//! Gemma 3 (text) on quantized GGUF weights: a small, readable forward pass.
//!
//! Written here rather than taken from candle-transformers 0.11.1 `quantized_gemma3`, which uses
//! SiLU where Gemma 3 uses GELU (tanh), allocates rotary tables for 131,072 positions, cannot
//! prefill at a non-zero position and applies no sliding window to single-token steps. Here:
//! - the MLP is GELU-tanh gated; norms are RMSNorm with the GGUF's weights (which already hold
//!   Gemma's `1 + w`); queries and keys are RMS-normalised per head before rotary embedding;
//! - every sixth layer is global (rope base 1e6); the others are local: sliding window, rope 1e4;
//! - rotary angles are computed for the positions of each step only;
//! - the KV cache holds any number of positions and is cut back for prefix reuse.
//!
//! Speed on the CPU (bench-generate against llama.cpp: scripts/bench.sh, README): every matrix
//! is Q8_0, read from the file into place, and multiplied by `q8_0::matmul` on candle's
//! threads, one row or a prompt block alike; projections of the same input are one matmul;
//! single-token steps do attention, rotary embedding and GELU on slices (`kernels`).

use crate::error::{Error, Result};
use crate::profile::{time, Op};
use crate::{kernels, q8_0};
use candle_core::quantized::{ggml_file, gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Storage, Tensor, D};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Gemma3Config {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f64,
    pub sliding_window: usize,
    /// Every `global_every`-th layer attends to the whole context.
    pub global_every: usize,
    pub rope_global: f32,
    pub rope_local: f32,
    pub context_length: usize,
    pub final_softcap: Option<f64>,
}

impl Gemma3Config {
    fn from_gguf(ct: &gguf_file::Content, path: &Path) -> Result<Self> {
        let get = |key: &str| {
            ct.metadata
                .get(&format!("gemma3.{key}"))
                .ok_or_else(|| Error::bad(path, format!("GGUF metadata has no gemma3.{key}")))
        };
        let u = |key: &str| -> Result<usize> {
            Ok(get(key)?
                .to_u32()
                .map_err(|e| Error::bad(path, e.to_string()))? as usize)
        };
        let f = |key: &str| -> Option<f32> { get(key).ok().and_then(|v| v.to_f32().ok()) };
        Ok(Self {
            layers: u("block_count")?,
            hidden: u("embedding_length")?,
            heads: u("attention.head_count")?,
            kv_heads: u("attention.head_count_kv")?,
            head_dim: u("attention.key_length")?,
            eps: f("attention.layer_norm_rms_epsilon").unwrap_or(1e-6) as f64,
            sliding_window: u("attention.sliding_window").unwrap_or(512),
            // No GGUF key holds the pattern; llama.cpp fixes it at 6 for Gemma 3 as well.
            global_every: 6,
            rope_global: f("rope.freq_base").unwrap_or(1_000_000.0),
            rope_local: f("rope.local_freq_base").unwrap_or(10_000.0),
            context_length: u("context_length").unwrap_or(32_768),
            final_softcap: f("final_logit_softcapping").map(f64::from),
        })
    }

    fn is_global(&self, layer: usize) -> bool {
        (layer + 1).is_multiple_of(self.global_every)
    }
}

struct RmsNorm {
    weight: Tensor,
    values: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    fn new(weight: Tensor, eps: f32) -> candle_core::Result<Self> {
        Ok(Self {
            values: weight.to_vec1()?,
            weight,
            eps,
        })
    }

    /// `kernels::rms_norm` on the CPU.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if !x.device().is_cpu() {
            return candle_nn::ops::rms_norm(x, &self.weight, self.eps);
        }
        let shape = x.shape().clone();
        let x = x.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; x.len()];
        kernels::rms_norm(&x, &self.values, self.eps, &mut out);
        Tensor::from_vec(out, shape, &Device::Cpu)
    }
}

/// Q5_0 weights re-encoded as Q8_0, exactly: a Q5_0 weight is `d * (q - 16)` with `q` in 0..32,
/// which Q8_0 holds as the byte `q - 16` with the same scale `d`, and both multiply Q8_0
/// activations, so the products are the same. candle 0.11 has no SIMD kernel for Q5_0 (its
/// scalar loop took 40% of the time in a profile of this model) but a fast one for Q8_0.
fn q5_0_as_q8_0(t: QTensor) -> candle_core::Result<QTensor> {
    if t.dtype() != GgmlDType::Q5_0 {
        return Ok(t);
    }
    let data = t.data()?;
    let mut out = vec![0u8; data.len() / 22 * 34];
    for (block, o) in data.chunks_exact(22).zip(out.chunks_exact_mut(34)) {
        q5_0_block_as_q8_0(block, o);
    }
    ggml_file::qtensor_from_ggml(
        GgmlDType::Q8_0,
        &out,
        t.shape().dims().to_vec(),
        &t.device(),
    )
}

/// Q8_0 and Q5_0 matrices of the same width read from the file straight into a `Q8Matrix`,
/// stacked (rows one after another); Q5_0 is re-encoded as in `q5_0_as_q8_0`. `None` when a
/// matrix has another type. candle's `Content::tensor` holds the file's bytes and
/// a copy of them at once: 356 MB for the 178 MB embedding table, which set the process's peak
/// memory.
fn read_q8_0<R: std::io::Read + std::io::Seek>(
    ct: &gguf_file::Content,
    file: &mut R,
    names: &[String],
) -> candle_core::Result<Option<q8_0::Q8Matrix>> {
    let mut infos = Vec::with_capacity(names.len());
    for name in names {
        let Some(info) = ct.tensor_infos.get(name) else {
            candle_core::bail!("no tensor {name}")
        };
        infos.push((info, info.shape.dims2()?));
    }
    let k = infos[0].1 .1;
    let usable = |(info, (_, width)): &(&gguf_file::TensorInfo, (usize, usize))| {
        matches!(info.ggml_dtype, GgmlDType::Q8_0 | GgmlDType::Q5_0)
            && *width == k
            && k.is_multiple_of(32)
    };
    if !infos.iter().all(usable) {
        return Ok(None);
    }
    let rows: usize = infos.iter().map(|(_, (n, _))| n).sum();
    let mut matrix = q8_0::Q8Matrix::builder(k, rows);
    // 256 rows at a time: a small buffer however large the matrix.
    let row_blocks = k / 32;
    let mut q8 = Vec::new();
    for (info, (n, _)) in infos {
        file.seek(std::io::SeekFrom::Start(
            ct.tensor_data_offset + info.offset,
        ))?;
        for first in (0..n).step_by(256) {
            let count = (n - first).min(256) * row_blocks;
            q8.resize(count * 34, 0);
            if info.ggml_dtype == GgmlDType::Q8_0 {
                file.read_exact(&mut q8)?;
            } else {
                let mut q5 = vec![0u8; count * 22];
                file.read_exact(&mut q5)?;
                for (block, out) in q5.chunks_exact(22).zip(q8.chunks_exact_mut(34)) {
                    q5_0_block_as_q8_0(block, out);
                }
            }
            matrix.push(&q8);
        }
    }
    Ok(Some(matrix.finish()))
}

/// One Q5_0 block (f16 scale, 4 bytes with the high bits, 16 bytes of low nibbles) as a Q8_0
/// block (the same scale, 32 int8 values).
fn q5_0_block_as_q8_0(block: &[u8], out: &mut [u8]) {
    out[..2].copy_from_slice(&block[..2]);
    let high = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    let low = &block[6..22];
    let value =
        |nibble: u8, bit: u32| ((nibble | (((high >> bit) & 1) << 4) as u8) as i8 - 16) as u8;
    for j in 0..16 {
        out[2 + j] = value(low[j] & 0x0F, j as u32);
        out[18 + j] = value(low[j] >> 4, j as u32 + 16);
    }
}

/// How a matrix is applied. On a CPU that runs `q8_0::matmul`, every matrix is Q8_0 and goes
/// through it, for one row (decode) and many (prompt blocks) alike, so a position's numbers do
/// not depend on how its prompt was cut into blocks. Q5_0 becomes Q8_0 exactly at load; other
/// types (the Q4_K and Q6_K output and down projections of a Q4_K_M file) are dequantized and
/// quantized again as Q8_0 (per 32 values, scale max|w|/127: an error of at most 1/17 of a
/// Q4_K step and 1/8 of a Q6_K step, more bytes per weight than the file's). candle's kernels
/// for those types took 56% of a cold run's time for 35% of the layers' multiply-adds (TRIAGE_PROFILE:
/// attention output and down projection against q/k/v and gate/up), and its repacked copies
/// of them stayed in memory beside the originals. Elsewhere: candle's matmul.
struct Linear {
    weight: Weights,
}

enum Weights {
    /// On a CPU that runs `q8_0`.
    Q8(q8_0::Q8Matrix),
    Candle(QMatMul),
}

impl Linear {
    fn new(weight: QTensor) -> candle_core::Result<Self> {
        let cpu = weight.device().is_cpu() && q8_0::supported();
        let (n, k) = weight.shape().dims2()?;
        if !cpu
            || !k.is_multiple_of(32)
            || matches!(
                weight.dtype(),
                GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
            )
        {
            return Ok(Self {
                weight: Weights::Candle(QMatMul::from_qtensor(weight)?),
            });
        }
        let weight = match weight.dtype() {
            GgmlDType::Q8_0 => weight,
            GgmlDType::Q5_0 => q5_0_as_q8_0(weight)?,
            _ => QTensor::quantize(&weight.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)?,
        };
        let mut matrix = q8_0::Q8Matrix::builder(k, n);
        matrix.push(&weight.data()?);
        Ok(Self::q8(matrix.finish()))
    }

    fn q8(matrix: q8_0::Q8Matrix) -> Self {
        Self {
            weight: Weights::Q8(matrix),
        }
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.weight {
            Weights::Q8(matrix) => {
                let input = x.flatten_all()?.to_vec1::<f32>()?;
                let n = matrix.rows();
                let mut y = vec![0f32; input.len() / matrix.width() * n];
                matrix.matmul(&input, &mut y);
                let mut dims = x.dims().to_vec();
                *dims.last_mut().expect("input has a last dimension") = n;
                Tensor::from_vec(y, dims, x.device())
            }
            Weights::Candle(weight) => weight.forward(x),
        }
    }
}

/// Projections of the same input (q/k/v, gate/up). When their weights share a type they are
/// stacked into one matrix: one matmul instead of several, so the input is quantized once and
/// the threads meet once (decode runs ~100 of these per token).
enum Projections {
    Fused { weight: Linear, sizes: Vec<usize> },
    Separate(Vec<Linear>),
}

impl Projections {
    fn new(weights: Vec<QTensor>) -> candle_core::Result<Self> {
        let same_type = weights.windows(2).all(|w| {
            w[0].dtype() == w[1].dtype() && w[0].shape().dims()[1] == w[1].shape().dims()[1]
        });
        if !same_type || !weights[0].device().is_cpu() {
            return Ok(Self::Separate(
                weights
                    .into_iter()
                    .map(Linear::new)
                    .collect::<candle_core::Result<_>>()?,
            ));
        }
        let sizes: Vec<usize> = weights.iter().map(|w| w.shape().dims()[0]).collect();
        // Rows are stored one after another, so stacking matrices is concatenating their bytes.
        let mut bytes = Vec::new();
        for w in &weights {
            bytes.extend_from_slice(&w.data()?);
        }
        let k = weights[0].shape().dims()[1];
        let stacked = ggml_file::qtensor_from_ggml(
            weights[0].dtype(),
            &bytes,
            vec![sizes.iter().sum(), k],
            &Device::Cpu,
        )?;
        Ok(Self::Fused {
            weight: Linear::new(stacked)?,
            sizes,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        match self {
            Self::Fused { weight, sizes } => {
                let y = weight.forward(x)?;
                let mut at = 0;
                sizes
                    .iter()
                    .map(|&n| {
                        at += n;
                        y.narrow(D::Minus1, at - n, n)
                    })
                    .collect()
            }
            Self::Separate(weights) => weights.iter().map(|w| w.forward(x)).collect(),
        }
    }
}

struct Layer {
    qkv: Projections,
    o: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    attn_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    post_ffn_norm: RmsNorm,
    gate_up: Projections,
    down: Linear,
}

/// Keys and values of one layer: (1, kv_heads, capacity, head_dim), written in place up to the
/// cache's length, so a step copies only its own positions (appending by concatenation copied
/// the whole cache of every layer at every token).
struct LayerCache {
    k: Tensor,
    v: Tensor,
}

/// Keys and values of the positions seen so far, in every layer. Cutting it back to a prefix
/// only lowers `len`: later steps overwrite the rest.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
    len: usize,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps only the first `n` positions.
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    /// Memory held, including room allocated for later positions.
    pub fn bytes(&self) -> usize {
        let tensor = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        self.layers
            .iter()
            .flatten()
            .map(|c| tensor(&c.k) + tensor(&c.v))
            .sum()
    }

    /// Writes a layer's new keys and values (1, kv_heads, L, head_dim) at `at` and returns the
    /// cached ones from `from` to the end of the new ones.
    fn append(
        &mut self,
        layer: usize,
        at: usize,
        from: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let len = k.dim(2)?;
        let end = at + len;
        let slot = &mut self.layers[layer];
        let capacity = slot.as_ref().map_or(0, |c| c.k.dim(2).unwrap_or(0));
        if end > capacity {
            // Grow geometrically, in steps of 256 positions.
            let (_, heads, _, head_dim) = k.dims4()?;
            let grown = (2 * capacity).max(end).next_multiple_of(256);
            let fresh = || Tensor::zeros((1, heads, grown, head_dim), k.dtype(), k.device());
            let (nk, nv) = (fresh()?, fresh()?);
            if let Some(old) = slot.as_ref() {
                nk.slice_set(&old.k.narrow(2, 0, at)?.contiguous()?, 2, 0)?;
                nv.slice_set(&old.v.narrow(2, 0, at)?.contiguous()?, 2, 0)?;
            }
            *slot = Some(LayerCache { k: nk, v: nv });
        }
        let cache = slot.as_ref().expect("allocated above");
        cache.k.slice_set(k, 2, at)?;
        cache.v.slice_set(v, 2, at)?;
        Ok((
            cache.k.narrow(2, from, end - from)?,
            cache.v.narrow(2, from, end - from)?,
        ))
    }
}

pub struct Gemma3 {
    pub config: Gemma3Config,
    /// Quantized, rows dequantized on lookup; `None`: the rows of the (tied) output projection.
    embeddings: Option<Arc<QTensor>>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Linear,
    device: Device,
}

impl Gemma3 {
    pub fn load<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        file: &mut R,
        path: &Path,
        device: &Device,
    ) -> Result<Self> {
        let config = Gemma3Config::from_gguf(ct, path)?;
        let eps = config.eps as f32;
        let tensor = |file: &mut R, name: &str| -> Result<QTensor> {
            ct.tensor(file, name, device)
                .and_then(q5_0_as_q8_0)
                .map_err(|e| Error::bad(path, format!("tensor {name}: {e}")))
        };
        // Q8_0 and Q5_0 matrices on the CPU are read straight into block storage.
        let matrices = |file: &mut R, names: &[String]| -> Result<Option<q8_0::Q8Matrix>> {
            if !q8_0::supported() {
                return Ok(None);
            }
            if !device.is_cpu() {
                return Ok(None);
            }
            read_q8_0(ct, file, names)
                .map_err(|e| Error::bad(path, format!("tensors {names:?}: {e}")))
        };
        let projections = |file: &mut R, p: &str, parts: &[&str]| -> Result<Projections> {
            let names: Vec<String> = parts.iter().map(|n| format!("{p}.{n}.weight")).collect();
            Ok(match matrices(file, &names)? {
                Some(stacked) => Projections::Fused {
                    weight: Linear::q8(stacked),
                    sizes: names
                        .iter()
                        .map(|n| ct.tensor_infos[n].shape.dims()[0])
                        .collect(),
                },
                None => Projections::new(
                    names
                        .iter()
                        .map(|n| tensor(file, n))
                        .collect::<Result<_>>()?,
                )?,
            })
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = format!("blk.{i}");
            let mut norm = |name: &str| -> Result<RmsNorm> {
                Ok(RmsNorm::new(
                    tensor(file, &format!("{p}.{name}.weight"))?.dequantize(device)?,
                    eps,
                )?)
            };
            let (q_norm, k_norm, attn_norm) = (
                norm("attn_q_norm")?,
                norm("attn_k_norm")?,
                norm("attn_norm")?,
            );
            let (post_attn_norm, ffn_norm, post_ffn_norm) = (
                norm("post_attention_norm")?,
                norm("ffn_norm")?,
                norm("post_ffw_norm")?,
            );
            layers.push(Layer {
                q_norm,
                k_norm,
                attn_norm,
                post_attn_norm,
                ffn_norm,
                post_ffn_norm,
                qkv: projections(file, &p, &["attn_q", "attn_k", "attn_v"])?,
                o: Linear::new(tensor(file, &format!("{p}.attn_output.weight"))?)?,
                gate_up: projections(file, &p, &["ffn_gate", "ffn_up"])?,
                down: Linear::new(tensor(file, &format!("{p}.ffn_down.weight"))?)?,
            });
        }
        let norm = RmsNorm::new(tensor(file, "output_norm.weight")?.dequantize(device)?, eps)?;
        // The output projection is tied to the embeddings unless the file has its own; tied,
        // the embeddings are looked up in its rows.
        let (output, embeddings) = match ct.tensor_infos.contains_key("output.weight") {
            true => (
                Linear::new(tensor(file, "output.weight")?)?,
                Some(Arc::new(tensor(file, "token_embd.weight")?)),
            ),
            false => match matrices(file, &["token_embd.weight".to_string()])? {
                Some(m) => (Linear::q8(m), None),
                None => match Linear::new(tensor(file, "token_embd.weight")?)? {
                    output @ Linear {
                        weight: Weights::Q8(_),
                    } => (output, None),
                    // candle's matmul and lookup on one copy.
                    Linear {
                        weight: Weights::Candle(weight),
                    } => {
                        let QMatMul::QTensor(table) = &weight else {
                            return Err(Error::bad(path, "token_embd.weight is not quantized"));
                        };
                        let table = table.clone();
                        (
                            Linear {
                                weight: Weights::Candle(weight),
                            },
                            Some(table),
                        )
                    }
                },
            },
        };
        Ok(Self {
            config,
            embeddings,
            layers,
            norm,
            output,
            device: device.clone(),
        })
    }

    /// Whether a position's keys, values and logits are the same bits however its prompt was
    /// cut into blocks (and in a decode step): true on the CPU with every matrix on the Q8_0
    /// kernels, where each op computes a row on its own (`q8_0`, `attend_rows`, norms, rotary
    /// embedding, GELU). The prefix cache then reuses any shared prefix.
    pub fn rows_independent(&self) -> bool {
        let q8 = |l: &Linear| matches!(l.weight, Weights::Q8(_));
        let projections = |p: &Projections| match p {
            Projections::Fused { weight, .. } => q8(weight),
            Projections::Separate(all) => all.iter().all(q8),
        };
        self.device.is_cpu()
            && q8(&self.output)
            && self
                .layers
                .iter()
                .all(|l| projections(&l.qkv) && projections(&l.gate_up) && q8(&l.o) && q8(&l.down))
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: (0..self.layers.len()).map(|_| None).collect(),
            len: 0,
        }
    }

    /// Runs `tokens` at positions `cache.len()..`, appends their keys and values to `cache`,
    /// and returns the logits of the last token.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let (start, len) = (cache.len, tokens.len());
        if start + len > self.config.context_length {
            return Err(Error::TooLong {
                tokens: start + len,
                limit: self.config.context_length,
            });
        }
        let c = &self.config;
        crate::profile::set_decoding(len == 1);
        let mut x = time(Op::Embed, || -> candle_core::Result<Tensor> {
            let x = match (&self.embeddings, &self.output.weight) {
                (Some(table), _) => table.embedding(&Tensor::new(tokens, &self.device)?)?,
                (None, Weights::Q8(table)) => {
                    let mut x = vec![0f32; len * c.hidden];
                    for (&t, row) in tokens.iter().zip(x.chunks_exact_mut(c.hidden)) {
                        if t as usize >= table.rows() {
                            candle_core::bail!("token id {t} is outside the vocabulary");
                        }
                        table.row(t as usize, row);
                    }
                    Tensor::from_vec(x, (len, c.hidden), &self.device)?
                }
                (None, Weights::Candle(_)) => unreachable!("an untied table is kept"),
            };
            x.unsqueeze(0)? * (c.hidden as f64).sqrt() // (1, L, hidden)
        })?;
        let (global, local) = time(Op::NormRope, || -> Result<_> {
            Ok((
                Attend::new(c, start, len, None, &self.device)?,
                Attend::new(c, start, len, Some(c.sliding_window), &self.device)?,
            ))
        })?;
        for (i, layer) in self.layers.iter().enumerate() {
            let attend = if c.is_global(i) { &global } else { &local };
            let h = time(Op::NormRope, || layer.attn_norm.forward(&x))?;
            let h = self.attention(layer, &h, attend, cache, i)?;
            x = time(Op::NormRope, || layer.post_attn_norm.forward(&h)? + &x)?;
            let h = time(Op::NormRope, || layer.ffn_norm.forward(&x))?;
            let [gate, up]: [Tensor; 2] = time(Op::GateUp, || layer.gate_up.forward(&h))?
                .try_into()
                .expect("two projections");
            let gated = time(Op::Gelu, || gelu_mul(&gate, &up))?;
            let h = time(Op::Down, || layer.down.forward(&gated))?;
            x = time(Op::NormRope, || layer.post_ffn_norm.forward(&h)? + &x)?;
        }
        cache.len += len;
        let logits = time(Op::Output, || -> candle_core::Result<Tensor> {
            let last = x.narrow(1, len - 1, 1)?;
            let logits = self
                .output
                .forward(&self.norm.forward(&last)?)?
                .flatten_all()?;
            match c.final_softcap {
                Some(cap) => (logits / cap)?.tanh()? * cap,
                None => Ok(logits),
            }
        })?;
        Ok(logits)
    }

    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        attend: &Attend,
        cache: &mut KvCache,
        index: usize,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (_, len, _) = x.dims3()?;
        let split = |t: Tensor, heads: usize| {
            t.reshape((1, len, heads, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let [q, k, v]: [Tensor; 3] = time(Op::Qkv, || layer.qkv.forward(x))?
            .try_into()
            .expect("three projections");
        let (q, k, v) = time(Op::NormRope, || -> candle_core::Result<_> {
            let q = layer.q_norm.forward(&split(q, c.heads)?)?;
            let k = layer.k_norm.forward(&split(k, c.kv_heads)?)?;
            let v = split(v, c.kv_heads)?;
            let q = rope(&q, attend)?;
            let k = rope(&k, attend)?;
            Ok((q, k, v))
        })?;
        let (k, v) = time(Op::KvWrite, || {
            cache.append(index, attend.start, attend.first_key, &k, &v)
        })?;
        // Grouped-query attention: each key/value head serves heads / kv_heads query heads.
        let groups = c.heads / c.kv_heads;
        let out = time(Op::Attention, || -> candle_core::Result<Tensor> {
            if x.device().is_cpu() {
                return attend_rows(&q, &k, &v, groups, attend);
            }
            let keys = k.dim(2)?;
            let q = (q.reshape((c.kv_heads, groups * len, c.head_dim))? * attend.scale)?;
            let scores = q.matmul(&k.squeeze(0)?.t()?)?; // (kv, groups*len, keys)
            let scores = match &attend.mask {
                Some(m) => scores
                    .reshape((c.kv_heads, groups, len, keys))?
                    .broadcast_add(m)?
                    .reshape((c.kv_heads, groups * len, keys))?,
                None => scores,
            };
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let out = probs.matmul(&v.squeeze(0)?)?; // (kv, groups*len, head_dim)
            out.reshape((c.heads, len, c.head_dim))?
                .transpose(0, 1)?
                .reshape((1, len, c.heads * c.head_dim))
        })?;
        Ok(time(Op::AttnOut, || layer.o.forward(&out))?)
    }
}

/// Rotary embedding of `x` (1, heads, L, head_dim) at the step's positions (`kernels::rope` on
/// the CPU).
fn rope(x: &Tensor, attend: &Attend) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        return candle_nn::rotary_emb::rope(x, &attend.cos, &attend.sin);
    }
    let (shape, head_dim) = (x.shape().clone(), x.dim(3)?);
    let mut values = x.flatten_all()?.to_vec1::<f32>()?;
    kernels::rope(
        &mut values,
        &attend.cos_values,
        &attend.sin_values,
        head_dim,
    );
    Tensor::from_vec(values, shape, &Device::Cpu)
}

/// `gelu_tanh(gate) * up` (`kernels::gelu_mul` on the CPU).
fn gelu_mul(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    if !gate.device().is_cpu() {
        return gate.gelu()? * up;
    }
    let (shape, device) = (gate.shape().clone(), gate.device().clone());
    let (gate, up) = (
        gate.flatten_all()?.to_vec1::<f32>()?,
        up.flatten_all()?.to_vec1::<f32>()?,
    );
    let mut out = vec![0f32; gate.len()];
    kernels::gelu_mul(&gate, &up, &mut out);
    Tensor::from_vec(out, shape, &device)
}

/// Attention of the new positions `q` (1, heads, L, head_dim) over the cached keys and values
/// `k`, `v` (1, kv_heads, keys, head_dim, views into the cache from `attend.first_key`): each
/// position sees itself, the positions before it and, in local layers, only the last `window`
/// of them. One `kernels::attend_one` per position, over exactly the keys it sees, so a
/// position gets the same bits in a prompt block of any size as in a decode step (which the
/// prefix cache relies on to reuse any prefix). Positions are split between `pool`'s threads.
/// Returns (1, L, heads * head_dim).
fn attend_rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    groups: usize,
    attend: &Attend,
) -> candle_core::Result<Tensor> {
    let (_, heads, len, head_dim) = q.dims4()?;
    // (L, heads, head_dim): a position's heads together.
    let q = q.squeeze(0)?.transpose(0, 1)?.contiguous()?;
    let q = q.flatten_all()?.to_vec1::<f32>()?;
    let (k_storage, k_layout) = k.storage_and_layout();
    let (v_storage, v_layout) = v.storage_and_layout();
    let (Storage::Cpu(k_cpu), Storage::Cpu(v_cpu)) = (&*k_storage, &*v_storage) else {
        candle_core::bail!("attend_rows runs on the CPU");
    };
    // Both views share the cache's layout: head_dim contiguous, positions head_dim apart.
    let stride = k_layout.stride();
    if stride[3] != 1 || stride[2] != head_dim || v_layout.stride() != stride {
        candle_core::bail!("unexpected cache layout {stride:?}");
    }
    let (k_all, v_all) = (k_cpu.as_slice::<f32>()?, v_cpu.as_slice::<f32>()?);
    let row = heads * head_dim;
    let mut out = vec![0f32; len * row];
    let rows: Vec<std::sync::Mutex<&mut [f32]>> = out
        .chunks_exact_mut(row)
        .map(std::sync::Mutex::new)
        .collect();
    let run = |positions: std::ops::Range<usize>| {
        for i in positions {
            let position = attend.start + i;
            let first = attend
                .window
                .map_or(0, |w| (position + 1).saturating_sub(w));
            let skip = (first - attend.first_key) * head_dim;
            let mut out = rows[i].lock().unwrap_or_else(|e| e.into_inner());
            kernels::attend_one(
                &kernels::OneQuery {
                    q: &q[i * row..(i + 1) * row],
                    k: k_all,
                    v: v_all,
                    k_offset: k_layout.start_offset() + skip,
                    v_offset: v_layout.start_offset() + skip,
                    head_stride: stride[1],
                    keys: position + 1 - first,
                    head_dim,
                    groups,
                    scale: attend.scale as f32,
                },
                &mut out,
            );
        }
    };
    crate::pool::for_each_chunk(len, 2, &run);
    drop(rows);
    Tensor::from_vec(out, (1, len, row), &Device::Cpu)
}

/// What the attention of one kind of layer (global or local) needs for one step: rotary angles
/// of the new positions, the first key any of them may see, and the mask over the keys from
/// there. Local layers see only the last `window` positions, so they read at most
/// `window - 1` cached keys however long the context.
struct Attend {
    window: Option<usize>,
    cos: Tensor,
    sin: Tensor,
    cos_values: Vec<f32>,
    sin_values: Vec<f32>,
    start: usize,
    first_key: usize,
    mask: Option<Tensor>,
    scale: f64,
}

impl Attend {
    fn new(
        c: &Gemma3Config,
        start: usize,
        len: usize,
        window: Option<usize>,
        device: &Device,
    ) -> Result<Self> {
        let base = if window.is_some() {
            c.rope_local
        } else {
            c.rope_global
        };
        let (cos, sin) = rotary(c.head_dim, base, start, len, device)?;
        let first_key = window.map_or(0, |w| (start + 1).saturating_sub(w));
        Ok(Self {
            window,
            cos_values: cos.flatten_all()?.to_vec1()?,
            sin_values: sin.flatten_all()?.to_vec1()?,
            cos,
            sin,
            start,
            first_key,
            mask: mask(start, len, first_key, window, device)?,
            scale: 1.0 / (c.head_dim as f64).sqrt(),
        })
    }
}

/// cos and sin of the rotary angles for positions `start..start+len`: (len, head_dim / 2).
fn rotary(
    head_dim: usize,
    base: f32,
    start: usize,
    len: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let inv: Vec<f64> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / f64::from(base).powf(i as f64 / head_dim as f64))
        .collect();
    let angles = (start..start + len).flat_map(|p| inv.iter().map(move |f| p as f64 * f));
    let (cos, sin): (Vec<f32>, Vec<f32>) = angles.map(|a| (a.cos() as f32, a.sin() as f32)).unzip();
    Ok((
        Tensor::from_vec(cos, (len, head_dim / 2), device)?,
        Tensor::from_vec(sin, (len, head_dim / 2), device)?,
    ))
}

/// Additive attention mask for queries at `start..start+len` over keys `first_key..start+len`:
/// causal, and for local layers limited to the last `window` positions. `None` when nothing is
/// masked (always so for a single new token).
fn mask(
    start: usize,
    len: usize,
    first_key: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let keys = first_key..start + len;
    let blocked =
        |query: usize, key: usize| key > query || window.is_some_and(|w| query - key >= w.max(1));
    let any = (start..start + len).any(|q| keys.clone().any(|k| blocked(q, k)));
    if !any {
        return Ok(None);
    }
    let values: Vec<f32> = (start..start + len)
        .flat_map(|q| {
            keys.clone().map(move |k| {
                if blocked(q, k) {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Some(Tensor::from_vec(values, (len, keys.len()), device)?))
}
