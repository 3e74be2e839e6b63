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

use crate::error::{Error, Result};
use candle_core::quantized::{ggml_file, gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
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
            global_every: u("attention.sliding_window_type").unwrap_or(6),
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
    eps: f32,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
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
    let mut out = Vec::with_capacity(data.len() / 22 * 34);
    // A Q5_0 block: f16 scale, 4 bytes with the high bits, 16 bytes of low nibbles.
    for block in data.chunks_exact(22) {
        out.extend_from_slice(&block[..2]);
        let high = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
        let low = &block[6..];
        let value =
            |nibble: u8, bit: u32| ((nibble | (((high >> bit) & 1) << 4) as u8) as i8 - 16) as u8;
        out.extend((0..16).map(|j| value(low[j] & 0x0F, j as u32)));
        out.extend((0..16).map(|j| value(low[j] >> 4, j as u32 + 16)));
    }
    ggml_file::qtensor_from_ggml(
        GgmlDType::Q8_0,
        &out,
        t.shape().dims().to_vec(),
        &t.device(),
    )
}

/// Projections of the same input (q/k/v, gate/up). When their weights share a type they are
/// stacked into one matrix: one matmul instead of several, so the input is quantized once and
/// the threads meet once (decode runs ~100 of these per token).
enum Projections {
    Fused { weight: QMatMul, sizes: Vec<usize> },
    Separate(Vec<QMatMul>),
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
                    .map(QMatMul::from_qtensor)
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
            weight: QMatMul::from_qtensor(stacked)?,
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
                        y.narrow(candle_core::D::Minus1, at - n, n)
                    })
                    .collect()
            }
            Self::Separate(weights) => weights.iter().map(|w| w.forward(x)).collect(),
        }
    }
}

struct Layer {
    qkv: Projections,
    o: QMatMul,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    attn_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    post_ffn_norm: RmsNorm,
    gate_up: Projections,
    down: QMatMul,
}

/// Keys and values of the positions seen so far, one entry per layer: (1, kv_heads, T, head_dim).
#[derive(Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The same cache holding only the first `n` positions.
    pub fn truncated(&self, n: usize) -> candle_core::Result<Self> {
        if n >= self.len {
            return Ok(self.clone());
        }
        let layers = self
            .layers
            .iter()
            .map(|kv| match kv {
                Some((k, v)) if n > 0 => Ok(Some((k.narrow(2, 0, n)?, v.narrow(2, 0, n)?))),
                _ => Ok(None),
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { layers, len: n })
    }
}

pub struct Gemma3 {
    pub config: Gemma3Config,
    /// Quantized, shared with the tied output projection; rows are dequantized on lookup.
    embeddings: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    device: Device,
}

impl Gemma3 {
    pub fn load(
        ct: &gguf_file::Content,
        file: &mut std::fs::File,
        path: &Path,
        device: &Device,
    ) -> Result<Self> {
        let config = Gemma3Config::from_gguf(ct, path)?;
        let eps = config.eps as f32;
        let mut tensor = |name: &str| {
            ct.tensor(file, name, device)
                .and_then(q5_0_as_q8_0)
                .map_err(|e| Error::bad(path, format!("tensor {name}: {e}")))
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = format!("blk.{i}");
            let mut norm = |name: &str| -> Result<RmsNorm> {
                Ok(RmsNorm {
                    weight: tensor(&format!("{p}.{name}.weight"))?.dequantize(device)?,
                    eps,
                })
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
                qkv: Projections::new(vec![
                    tensor(&format!("{p}.attn_q.weight"))?,
                    tensor(&format!("{p}.attn_k.weight"))?,
                    tensor(&format!("{p}.attn_v.weight"))?,
                ])?,
                o: QMatMul::from_qtensor(tensor(&format!("{p}.attn_output.weight"))?)?,
                gate_up: Projections::new(vec![
                    tensor(&format!("{p}.ffn_gate.weight"))?,
                    tensor(&format!("{p}.ffn_up.weight"))?,
                ])?,
                down: QMatMul::from_qtensor(tensor(&format!("{p}.ffn_down.weight"))?)?,
            });
        }
        let norm = RmsNorm {
            weight: tensor("output_norm.weight")?.dequantize(device)?,
            eps,
        };
        let embeddings = Arc::new(tensor("token_embd.weight")?);
        // The output projection is tied to the embeddings unless the file has its own.
        let output = match ct.tensor(file, "output.weight", device) {
            Ok(t) => QMatMul::from_qtensor(t)?,
            Err(_) => QMatMul::from_arc(embeddings.clone())?,
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

    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![None; self.layers.len()],
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
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embeddings.embedding(&ids)?.unsqueeze(0)?; // (1, L, hidden)
        x = (x * (c.hidden as f64).sqrt())?;
        let (cos_g, sin_g) = rotary(c.head_dim, c.rope_global, start, len, &self.device)?;
        let (cos_l, sin_l) = rotary(c.head_dim, c.rope_local, start, len, &self.device)?;
        let mask_g = mask(start, len, None, &self.device)?;
        let mask_l = mask(start, len, Some(c.sliding_window), &self.device)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let global = c.is_global(i);
            let (cos, sin, mask) = if global {
                (&cos_g, &sin_g, &mask_g)
            } else {
                (&cos_l, &sin_l, &mask_l)
            };
            let h = layer.attn_norm.forward(&x)?;
            let h = self.attention(layer, &h, cos, sin, mask.as_ref(), &mut cache.layers[i])?;
            x = (layer.post_attn_norm.forward(&h)? + x)?;
            let h = layer.ffn_norm.forward(&x)?;
            let [gate, up]: [Tensor; 2] = layer
                .gate_up
                .forward(&h)?
                .try_into()
                .expect("two projections");
            let gated = (gate.gelu()? * up)?;
            let h = layer.down.forward(&gated)?;
            x = (layer.post_ffn_norm.forward(&h)? + x)?;
        }
        cache.len += len;
        let last = x.narrow(1, len - 1, 1)?;
        let logits = self
            .output
            .forward(&self.norm.forward(&last)?)?
            .flatten_all()?;
        Ok(match c.final_softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }

    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (_, len, _) = x.dims3()?;
        let split = |t: Tensor, heads: usize| {
            t.reshape((1, len, heads, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let [q, k, v]: [Tensor; 3] = layer.qkv.forward(x)?.try_into().expect("three projections");
        let q = layer.q_norm.forward(&split(q, c.heads)?)?;
        let k = layer.k_norm.forward(&split(k, c.kv_heads)?)?;
        let v = split(v, c.kv_heads)?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        // Grouped-query attention: each key/value head serves heads / kv_heads query heads.
        let groups = c.heads / c.kv_heads;
        let total = k.dim(2)?;
        let q = q.reshape((c.kv_heads, groups * len, c.head_dim))?;
        let k = k.squeeze(0)?;
        let v = v.squeeze(0)?;
        let scores = (q.matmul(&k.t()?)? / (c.head_dim as f64).sqrt())?; // (kv, groups*len, total)
        let scores = match mask {
            Some(m) => scores
                .reshape((c.kv_heads, groups, len, total))?
                .broadcast_add(m)?
                .reshape((c.kv_heads, groups * len, total))?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v.contiguous()?)?; // (kv, groups*len, head_dim)
        let out = out
            .reshape((c.heads, len, c.head_dim))?
            .transpose(0, 1)?
            .reshape((1, len, c.heads * c.head_dim))?;
        Ok(layer.o.forward(&out)?)
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
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let angles: Vec<f32> = (start..start + len)
        .flat_map(|p| inv.iter().map(move |f| p as f32 * f))
        .collect();
    let angles = Tensor::from_vec(angles, (len, head_dim / 2), device)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// Additive attention mask for queries at `start..start+len` over keys `0..start+len`: causal,
/// and for local layers limited to the last `window` positions. `None` when nothing is masked.
fn mask(
    start: usize,
    len: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let total = start + len;
    let blocked = |i: usize, j: usize| {
        let query = start + i;
        j > query || window.is_some_and(|w| query >= w && j <= query - w)
    };
    let any = (0..len).any(|i| (0..total).any(|j| blocked(i, j)));
    if !any {
        return Ok(None);
    }
    let values: Vec<f32> = (0..len)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if blocked(i, j) {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Some(
        Tensor::from_vec(values, (len, total), device)?.to_dtype(DType::F32)?,
    ))
}
