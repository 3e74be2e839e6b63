//! Fine-tuning the top layers of the BERT encoder to a deployment's categories (issue 16), on the
//! CPU with candle's autograd.
//!
//! - The lower `split` layers stay frozen and shared. Their hidden states are computed once per
//!   training text on the packed path (`Bert::run_layers`), kept in f16, and read by every epoch;
//!   with a work directory they are also cached on disk, so a killed or repeated run skips them.
//! - A copy of the top layers and a linear head over their mean-pooled output are trained with
//!   candle's autograd and AdamW (written here so that its moments go into the checkpoint written
//!   after every epoch: a resumed run continues exactly where the killed one stopped; shuffling
//!   and dropout masks are seeded per epoch and step for the same reason).
//! - At run time the adapted layers run on the packed path over the hidden states the embedding
//!   pass computes anyway (`BertEmbedder::embed_scored`): one pass of the lower layers serves
//!   both the store's vector (the original top layers, unchanged) and the class scores.

use crate::bert::{pool, Bert, Layer, Matrix, Pooling, Precision, Spans};
use crate::error::{Error, Result};
use crate::kernels::Activation;
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var, D};
use half::f16;
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use triage_core::adapt::{AdaptConfig, AdaptJob, AdaptProgress, Adapted, EncoderHead};

/// Names the layout of the saved weights; bump when it changes.
const FORMAT: &str = "triage-adapted-top/1";
/// Padded tokens of one batch when computing hidden states (as the embedder batches).
const TOKEN_BUDGET: usize = 8192;

/// A saved tensor: its name, f32 values and shape.
type NamedTensor = (String, Vec<f32>, Vec<usize>);

/// Adapted top layers (trained and saved in f32, run at the shared encoder's precision: see
/// `at_precision`) and a linear head, branching off a BERT encoder after `split` layers.
pub struct AdaptedTop {
    model_id: String,
    split: usize,
    hidden: usize,
    inter: usize,
    classes: usize,
    layers: Vec<Layer>,
    /// hidden × classes, row-major.
    head_weight: Vec<f32>,
    head_bias: Vec<f32>,
}

impl std::fmt::Debug for AdaptedTop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptedTop")
            .field("model_id", &self.model_id)
            .field("split", &self.split)
            .field("layers", &self.layers.len())
            .field("classes", &self.classes)
            .finish()
    }
}

impl AdaptedTop {
    /// Layers of the shared encoder below the adapted ones.
    pub fn split(&self) -> usize {
        self.split
    }

    /// Refuses a head fitted on another model (or another shape of it).
    pub(crate) fn check(&self, bert: &Bert, model_id: &str) -> Result<()> {
        let total = bert.layers();
        if self.model_id != model_id
            || self.hidden != bert.hidden_size()
            || self.split + self.layers.len() != total
        {
            return Err(Error::bad(
                "adapted layers",
                format!(
                    "they were fitted on {} ({} + {} layers, hidden {}), but {model_id} ({total} layers, hidden {}) is loaded: run `triage train`",
                    self.model_id,
                    self.split,
                    self.layers.len(),
                    self.hidden,
                    bert.hidden_size()
                ),
            ));
        }
        Ok(())
    }

    /// The same top with its layers at the shared encoder's precision. They were trained in
    /// f32 on the f32 encoder's hidden states; an int8 encoder's differ little (its vectors
    /// are within cosine 0.9999 of f32's), and quantized adapted layers cost what the
    /// encoder's own do (README, "Adapting the encoder"). A quantized top is not saved again:
    /// the classifier keeps the bytes it was loaded from.
    pub(crate) fn at_precision(self, precision: Precision) -> Self {
        Self {
            layers: self
                .layers
                .into_iter()
                .map(|l| l.at_precision(precision))
                .collect(),
            ..self
        }
    }

    /// Raw class scores of the sequences whose hidden states after `split` layers are `mid`
    /// (packed, as `Bert::run_layers` leaves them).
    pub(crate) fn scores(&self, bert: &Bert, mut mid: Vec<f32>, spans: &Spans) -> Vec<Vec<f32>> {
        bert.run_layers(&mut mid, spans, &self.layers);
        let lens: Vec<usize> = spans.iter().map(|s| s.1).collect();
        pool(&mid, &lens, self.hidden, Pooling::Mean)
            .iter()
            .map(|pooled| self.logits(pooled))
            .collect()
    }

    fn logits(&self, pooled: &[f32]) -> Vec<f32> {
        let mut out = self.head_bias.clone();
        for (x, row) in pooled
            .iter()
            .zip(self.head_weight.chunks_exact(self.classes))
        {
            out.iter_mut().zip(row).for_each(|(o, w)| *o += x * w);
        }
        out
    }

    fn tensors(&self) -> Result<Vec<NamedTensor>> {
        let (h, f) = (self.hidden, self.inter);
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("layers.{i}.");
            for (name, data, shape) in [
                ("qkv", f32_weights(&l.qkv, TOP_IN_INT8)?, vec![h, 3 * h]),
                ("qkv_bias", &l.qkv_bias, vec![3 * h]),
                (
                    "attn_out",
                    f32_weights(&l.attn_out, TOP_IN_INT8)?,
                    vec![h, h],
                ),
                ("attn_out_bias", &l.attn_out_bias, vec![h]),
                ("attn_norm.weight", &l.attn_norm.0, vec![h]),
                ("attn_norm.bias", &l.attn_norm.1, vec![h]),
                ("up", f32_weights(&l.up, TOP_IN_INT8)?, vec![h, f]),
                ("up_bias", &l.up_bias, vec![f]),
                ("down", f32_weights(&l.down, TOP_IN_INT8)?, vec![f, h]),
                ("down_bias", &l.down_bias, vec![h]),
                ("out_norm.weight", &l.out_norm.0, vec![h]),
                ("out_norm.bias", &l.out_norm.1, vec![h]),
            ] {
                out.push((format!("{p}{name}"), data.to_vec(), shape));
            }
        }
        out.push((
            "head.weight".into(),
            self.head_weight.clone(),
            vec![h, self.classes],
        ));
        out.push((
            "head.bias".into(),
            self.head_bias.clone(),
            vec![self.classes],
        ));
        Ok(out)
    }

    /// Reads what `to_bytes` wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let what = "adapted layers (.adapt.safetensors)";
        let bad = |reason: String| Error::bad(what, reason);
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not safetensors: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!(
                "format {:?}, this build reads {FORMAT}: run `triage train`",
                meta.get("format")
            )));
        }
        let number = |key: &str| -> Result<usize> {
            meta.get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad(format!("no {key} in its metadata")))
        };
        let (split, layers, hidden, inter, classes) = (
            number("split")?,
            number("layers")?,
            number("hidden")?,
            number("intermediate")?,
            number("classes")?,
        );
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let view = tensors
                .tensor(name)
                .map_err(|_| bad(format!("tensor {name} is missing")))?;
            if view.shape() != shape || view.dtype() != Dtype::F32 {
                return Err(bad(format!(
                    "tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                    view.dtype(),
                    view.shape()
                )));
            }
            Ok(view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let (h, f) = (hidden, inter);
        let mut top = Vec::with_capacity(layers);
        for i in 0..layers {
            let p = format!("layers.{i}.");
            let r = |name: &str, shape: &[usize]| read(&format!("{p}{name}"), shape);
            top.push(Layer {
                qkv: Matrix::f32(r("qkv", &[h, 3 * h])?, h, 3 * h),
                qkv_bias: r("qkv_bias", &[3 * h])?,
                attn_out: Matrix::f32(r("attn_out", &[h, h])?, h, h),
                attn_out_bias: r("attn_out_bias", &[h])?,
                attn_norm: (r("attn_norm.weight", &[h])?, r("attn_norm.bias", &[h])?),
                up: Matrix::f32(r("up", &[h, f])?, h, f),
                up_bias: r("up_bias", &[f])?,
                down: Matrix::f32(r("down", &[f, h])?, f, h),
                down_bias: r("down_bias", &[h])?,
                out_norm: (r("out_norm.weight", &[h])?, r("out_norm.bias", &[h])?),
            });
        }
        Ok(Self {
            model_id: meta.get("model_id").cloned().unwrap_or_default(),
            split,
            hidden,
            inter,
            classes,
            layers: top,
            head_weight: read("head.weight", &[h, classes])?,
            head_bias: read("head.bias", &[classes])?,
        })
    }
}

impl EncoderHead for AdaptedTop {
    fn to_bytes(&self) -> triage_core::Result<Vec<u8>> {
        let tensors = self.tensors()?;
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .into_iter()
            .map(|(name, data, shape)| {
                (
                    name,
                    data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    shape,
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, data, shape)| {
                TensorView::new(Dtype::F32, shape.clone(), data).map(|v| (name.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| triage_core::Error::Model(e.to_string()))?;
        let meta: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("model_id", self.model_id.clone()),
            ("split", self.split.to_string()),
            ("layers", self.layers.len().to_string()),
            ("hidden", self.hidden.to_string()),
            ("intermediate", self.inter.to_string()),
            ("classes", self.classes.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::serialize(views, &Some(meta))
            .map_err(|e| triage_core::Error::Model(e.to_string()))
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The hidden states of every training text after the shared layers, f16, packed one text after
/// another.
struct HiddenStates {
    data: Vec<f16>,
    /// Row offset of each text.
    start: Vec<usize>,
    lens: Vec<usize>,
    hidden: usize,
}

impl HiddenStates {
    fn rows(&self, i: usize) -> &[f16] {
        let h = self.hidden;
        &self.data[self.start[i] * h..(self.start[i] + self.lens[i]) * h]
    }

    /// Computes them (or reads them from `cache` when it holds the same texts' states).
    fn build(
        bert: &Bert,
        split: usize,
        ids: &[Vec<u32>],
        cache: Option<&Path>,
        progress: &dyn Fn(&AdaptProgress),
    ) -> Result<Self> {
        let h = bert.hidden_size();
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let mut start = Vec::with_capacity(ids.len());
        let mut rows = 0;
        for len in &lens {
            start.push(rows);
            rows += len;
        }
        if let Some(path) = cache {
            if let Ok(bytes) = std::fs::read(path) {
                if bytes.len() == rows * h * 2 {
                    let data = bytes
                        .chunks_exact(2)
                        .map(|b| f16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    return Ok(Self {
                        data,
                        start,
                        lens,
                        hidden: h,
                    });
                }
            }
        }
        let mut data = vec![f16::ZERO; rows * h];
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
        let mut done = 0;
        let mut at = 0;
        while at < order.len() {
            let longest = lens[order[at]].max(1);
            let size = (TOKEN_BUDGET / longest).clamp(1, 64).min(order.len() - at);
            let batch = &order[at..at + size];
            let seqs: Vec<&[u32]> = batch.iter().map(|&i| ids[i].as_slice()).collect();
            let (mut x, spans) = bert.embed_tokens(&seqs)?;
            bert.run_layers(&mut x, &spans, &bert.encoder_layers()[..split]);
            for (&i, &(s, len)) in batch.iter().zip(&spans) {
                let dst = &mut data[start[i] * h..(start[i] + len) * h];
                dst.iter_mut()
                    .zip(&x[s * h..(s + len) * h])
                    .for_each(|(d, v)| *d = f16::from_f32(*v));
            }
            at += size;
            done += size;
            progress(&AdaptProgress::Encoding {
                done,
                total: ids.len(),
            });
        }
        if let Some(path) = cache {
            let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            write_replacing(path, &bytes)?;
        }
        Ok(Self {
            data,
            start,
            lens,
            hidden: h,
        })
    }

    /// The packed f32 hidden states of `which` texts and their spans.
    fn packed(&self, which: &[usize]) -> (Vec<f32>, Spans) {
        let mut x = Vec::new();
        let mut spans = Vec::with_capacity(which.len());
        for &i in which {
            spans.push((x.len() / self.hidden, self.lens[i]));
            x.extend(self.rows(i).iter().map(|v| v.to_f32()));
        }
        (x, spans)
    }
}

/// Writes a file whole (temporary file, then rename).
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// One adapted encoder layer as candle variables, in the packed layout (`bert::Layer`).
struct TrainLayer {
    qkv: Var,
    qkv_bias: Var,
    attn_out: Var,
    attn_out_bias: Var,
    attn_norm: (Var, Var),
    up: Var,
    up_bias: Var,
    down: Var,
    down_bias: Var,
    out_norm: (Var, Var),
}

/// Shape and activation of the encoder, for the candle forward.
#[derive(Clone, Copy)]
struct Dims {
    hidden: usize,
    inter: usize,
    heads: usize,
    eps: f64,
    act: Activation,
}

fn var(data: &[f32], shape: &[usize]) -> Result<Var> {
    Ok(Var::from_vec(data.to_vec(), shape, &Device::Cpu)?)
}

/// Why f32 weights are missing, as (what, reason) of the error `f32_weights` gives: adapting
/// starts from the encoder's f32 weights, which an encoder loaded in int8 no longer has; an
/// adapted top quantized when loaded (`AdaptedTop::at_precision`) has none to save.
const ENCODER_IN_INT8: (&str, &str) = (
    "adaptation",
    "the encoder was loaded in int8 and adapting needs its f32 weights: run with --embedder-precision f32",
);
const TOP_IN_INT8: (&str, &str) = (
    "adapted layers",
    "they were quantized when loaded; save the bytes they were loaded from",
);

/// A dense layer's f32 weights, or the error `(what, reason)` when they were quantized.
fn f32_weights<'m>(m: &'m Matrix, (what, reason): (&str, &str)) -> Result<&'m [f32]> {
    m.f32_weights().ok_or_else(|| Error::bad(what, reason))
}

fn values(v: &Var) -> Result<Vec<f32>> {
    Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

impl TrainLayer {
    fn new(l: &Layer, d: Dims) -> Result<Self> {
        let (h, f) = (d.hidden, d.inter);
        Ok(Self {
            qkv: var(f32_weights(&l.qkv, ENCODER_IN_INT8)?, &[h, 3 * h])?,
            qkv_bias: var(&l.qkv_bias, &[3 * h])?,
            attn_out: var(f32_weights(&l.attn_out, ENCODER_IN_INT8)?, &[h, h])?,
            attn_out_bias: var(&l.attn_out_bias, &[h])?,
            attn_norm: (var(&l.attn_norm.0, &[h])?, var(&l.attn_norm.1, &[h])?),
            up: var(f32_weights(&l.up, ENCODER_IN_INT8)?, &[h, f])?,
            up_bias: var(&l.up_bias, &[f])?,
            down: var(f32_weights(&l.down, ENCODER_IN_INT8)?, &[f, h])?,
            down_bias: var(&l.down_bias, &[h])?,
            out_norm: (var(&l.out_norm.0, &[h])?, var(&l.out_norm.1, &[h])?),
        })
    }

    /// Variables with whether weight decay applies (matrices only, not biases or norms).
    fn vars(&self) -> Vec<(&Var, bool)> {
        vec![
            (&self.qkv, true),
            (&self.qkv_bias, false),
            (&self.attn_out, true),
            (&self.attn_out_bias, false),
            (&self.attn_norm.0, false),
            (&self.attn_norm.1, false),
            (&self.up, true),
            (&self.up_bias, false),
            (&self.down, true),
            (&self.down_bias, false),
            (&self.out_norm.0, false),
            (&self.out_norm.1, false),
        ]
    }

    fn export(&self, d: Dims) -> Result<Layer> {
        let (h, f) = (d.hidden, d.inter);
        Ok(Layer {
            qkv: Matrix::f32(values(&self.qkv)?, h, 3 * h),
            qkv_bias: values(&self.qkv_bias)?,
            attn_out: Matrix::f32(values(&self.attn_out)?, h, h),
            attn_out_bias: values(&self.attn_out_bias)?,
            attn_norm: (values(&self.attn_norm.0)?, values(&self.attn_norm.1)?),
            up: Matrix::f32(values(&self.up)?, h, f),
            up_bias: values(&self.up_bias)?,
            down: Matrix::f32(values(&self.down)?, f, h),
            down_bias: values(&self.down_bias)?,
            out_norm: (values(&self.out_norm.0)?, values(&self.out_norm.1)?),
        })
    }

    /// `x`: (batch·len) × hidden; `mask_bias`: (batch, 1, 1, len), 0 on tokens and a large
    /// negative number on padding.
    fn forward(
        &self,
        x: &Tensor,
        mask_bias: &Tensor,
        batch: usize,
        len: usize,
        d: Dims,
    ) -> Result<Tensor> {
        let (h, heads) = (d.hidden, d.heads);
        let hd = h / heads;
        let qkv = x
            .matmul(self.qkv.as_tensor())?
            .broadcast_add(self.qkv_bias.as_tensor())?
            .reshape((batch, len, 3, heads, hd))?
            .permute((2, 0, 3, 1, 4))?; // (3, batch, heads, len, hd)
        let (q, k, v) = (
            qkv.get(0)?.contiguous()?,
            qkv.get(1)?.contiguous()?,
            qkv.get(2)?.contiguous()?,
        );
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(mask_bias)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let ctx = probs
            .matmul(&v)?
            .permute((0, 2, 1, 3))?
            .reshape((batch * len, h))?;
        let attended = (ctx
            .matmul(self.attn_out.as_tensor())?
            .broadcast_add(self.attn_out_bias.as_tensor())?
            + x)?;
        let attended = layer_norm(&attended, &self.attn_norm, d.eps)?;
        let up = attended
            .matmul(self.up.as_tensor())?
            .broadcast_add(self.up_bias.as_tensor())?;
        let up = match d.act {
            Activation::Gelu => up.gelu_erf()?,
            Activation::GeluTanh => up.gelu()?,
            Activation::Relu => up.relu()?,
        };
        let out = (up
            .matmul(self.down.as_tensor())?
            .broadcast_add(self.down_bias.as_tensor())?
            + &attended)?;
        layer_norm(&out, &self.out_norm, d.eps)
    }
}

/// Layer norm over the last dimension, from differentiable ops (candle's fused one has no
/// backward pass).
fn layer_norm(x: &Tensor, (weight, bias): &(Var, Var), eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(normed
        .broadcast_mul(weight.as_tensor())?
        .broadcast_add(bias.as_tensor())?)
}

/// AdamW (Loshchilov & Hutter) with global gradient-norm clipping. Its moments are checkpointed
/// with the weights, so a resumed run takes exactly the steps the interrupted one would have.
struct AdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: usize,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;
const CLIP_NORM: f32 = 1.0;

impl AdamW {
    fn new(vars: &[(&Var, bool, bool)]) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(Self {
            m: vars
                .iter()
                .map(|v| zeros(v.0))
                .collect::<candle_core::Result<_>>()?,
            v: vars
                .iter()
                .map(|v| zeros(v.0))
                .collect::<candle_core::Result<_>>()?,
            step: 0,
        })
    }

    /// `vars`: (variable, weight decay applies, is part of the head); `lr` and `head_lr` are this
    /// step's learning rates.
    fn step(
        &mut self,
        vars: &[(&Var, bool, bool)],
        grads: &GradStore,
        lr: f64,
        head_lr: f64,
        weight_decay: f64,
    ) -> Result<()> {
        self.step += 1;
        let mut norm2 = 0f32;
        let mut gs = Vec::with_capacity(vars.len());
        for (v, _, _) in vars {
            // Detached: a gradient records the ops that made it (and through them the step's
            // activations), and the moments built from it would keep every step's graph alive.
            let g = match grads.get(v.as_tensor()) {
                Some(g) => g.detach(),
                None => v.as_tensor().zeros_like()?,
            };
            norm2 += g.sqr()?.sum_all()?.to_scalar::<f32>()?;
            gs.push(g);
        }
        let clip = (CLIP_NORM / norm2.sqrt().max(1e-12)).min(1.0) as f64;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        for (i, ((v, decay, head), g)) in vars.iter().zip(gs).enumerate() {
            let lr = if *head { head_lr } else { lr };
            let g = (g * clip)?;
            self.m[i] = ((&self.m[i] * BETA1)? + (&g * (1.0 - BETA1))?)?.detach();
            self.v[i] = ((&self.v[i] * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?.detach();
            let update = ((&self.m[i] / c1)? / ((&self.v[i] / c2)?.sqrt()? + ADAM_EPS)?)?;
            let mut theta = v.as_tensor().clone();
            if *decay {
                theta = (theta * (1.0 - lr * weight_decay))?;
            }
            v.set(&(theta - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// The adapted layers and head while training.
struct Model {
    layers: Vec<TrainLayer>,
    head_weight: Var,
    head_bias: Var,
    dims: Dims,
    classes: usize,
}

impl Model {
    fn new(bert: &Bert, split: usize, classes: usize, seed: u64) -> Result<Self> {
        let dims = Dims {
            hidden: bert.hidden_size(),
            inter: bert.encoder_layers()[0].up_bias.len(),
            heads: bert.heads(),
            eps: bert.layer_norm_eps() as f64,
            act: bert.activation(),
        };
        let layers = bert.encoder_layers()[split..]
            .iter()
            .map(|l| TrainLayer::new(l, dims))
            .collect::<Result<_>>()?;
        // A small random head (as BERT's classifier is initialised: N(0, 0.02²)).
        let mut rng = StdRng::seed_from_u64(seed);
        let weight: Vec<f32> = (0..dims.hidden * classes)
            .map(|_| 0.02 * standard_normal(&mut rng))
            .collect();
        Ok(Self {
            layers,
            head_weight: var(&weight, &[dims.hidden, classes])?,
            head_bias: var(&vec![0.0; classes], &[classes])?,
            dims,
            classes,
        })
    }

    /// Every variable, in a fixed order: (variable, weight decay, head).
    fn vars(&self) -> Vec<(&Var, bool, bool)> {
        let mut out: Vec<(&Var, bool, bool)> = self
            .layers
            .iter()
            .flat_map(|l| l.vars().into_iter().map(|(v, d)| (v, d, false)))
            .collect();
        out.push((&self.head_weight, true, true));
        out.push((&self.head_bias, false, true));
        out
    }

    /// Logits (batch × classes) of a padded batch `x` (batch, len, hidden) with `mask`
    /// (batch, len) 1 on tokens; `dropout` is the pooled vector's keep mask, scaled.
    fn forward(&self, x: &Tensor, mask: &Tensor, dropout: Option<&Tensor>) -> Result<Tensor> {
        let (batch, len, h) = x.dims3()?;
        let mask_bias = ((mask - 1.0)? * 1e4)?.reshape((batch, 1, 1, len))?;
        let mut hidden = x.reshape((batch * len, h))?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &mask_bias, batch, len, self.dims)?;
        }
        let hidden = hidden.reshape((batch, len, h))?;
        let summed = hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
        let mut pooled = summed.broadcast_div(&mask.sum_keepdim(1)?)?;
        if let Some(keep) = dropout {
            pooled = pooled.mul(keep)?;
        }
        Ok(pooled
            .matmul(self.head_weight.as_tensor())?
            .broadcast_add(self.head_bias.as_tensor())?)
    }

    fn export(&self, model_id: &str, split: usize) -> Result<AdaptedTop> {
        Ok(AdaptedTop {
            model_id: model_id.to_string(),
            split,
            hidden: self.dims.hidden,
            inter: self.dims.inter,
            classes: self.classes,
            layers: self
                .layers
                .iter()
                .map(|l| l.export(self.dims))
                .collect::<Result<_>>()?,
            head_weight: values(&self.head_weight)?,
            head_bias: values(&self.head_bias)?,
        })
    }
}

fn standard_normal(rng: &mut StdRng) -> f32 {
    // Box–Muller.
    let (u1, u2): (f32, f32) = (rng.gen_range(f32::EPSILON..1.0), rng.gen());
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// A checkpoint: the variables and the optimizer's moments after `epoch` epochs.
fn save_checkpoint(path: &Path, model: &Model, opt: &AdamW, epoch: usize) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (i, (v, _, _)) in model.vars().iter().enumerate() {
        tensors.insert(format!("var.{i}"), v.as_tensor().clone());
        tensors.insert(format!("m.{i}"), opt.m[i].clone());
        tensors.insert(format!("v.{i}"), opt.v[i].clone());
    }
    tensors.insert(
        "state".into(),
        Tensor::new(&[epoch as u32, opt.step as u32], &Device::Cpu)?,
    );
    let tmp = path.with_extension("partial");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Restores a checkpoint; returns the epochs it had completed.
fn load_checkpoint(path: &Path, model: &Model, opt: &mut AdamW) -> Result<usize> {
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    let mut take = |name: String| {
        tensors
            .remove(&name)
            .ok_or_else(|| Error::bad(path, format!("checkpoint has no {name}")))
    };
    for (i, (v, _, _)) in model.vars().iter().enumerate() {
        v.set(&take(format!("var.{i}"))?)?;
        opt.m[i] = take(format!("m.{i}"))?;
        opt.v[i] = take(format!("v.{i}"))?;
    }
    let state = take("state".into())?.to_vec1::<u32>()?;
    opt.step = state[1] as usize;
    Ok(state[0] as usize)
}

/// The checkpoint after the most epochs in `dir`, if any.
fn latest_checkpoint(dir: &Path) -> Option<(usize, PathBuf)> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let epoch = name
                .strip_prefix("epoch-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((epoch, path))
        })
        .max_by_key(|(epoch, _)| *epoch)
}

fn hex(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Learning-rate multiplier at `step` of `total`: linear warm-up, then linear decay to zero.
fn schedule(step: usize, total: usize, warmup: f32) -> f64 {
    let warm = ((total as f32 * warmup).round() as usize).max(1);
    if step < warm {
        (step + 1) as f64 / warm as f64
    } else {
        let rest = (total - warm).max(1) as f64;
        (1.0 - (step - warm) as f64 / rest).max(0.0)
    }
}

/// Batches of one epoch: shuffled, then sorted by length within windows of 50 batches so that
/// each batch pads little, then the batches shuffled.
fn epoch_batches(train: &[usize], lens: &[usize], batch: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order = train.to_vec();
    order.shuffle(&mut rng);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for window in order.chunks(batch * 50) {
        let mut window = window.to_vec();
        window.sort_by_key(|&i| lens[i]);
        batches.extend(window.chunks(batch).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// Fine-tunes the top `job.config.layers` layers of `bert` and a head on the job's texts
/// (tokenized as `ids`), and scores the held-out ones with the result.
pub(crate) fn fit(
    bert: &Bert,
    model_id: &str,
    ids: &[Vec<u32>],
    job: &AdaptJob,
) -> Result<Adapted> {
    let started = Instant::now();
    let config: &AdaptConfig = job.config;
    let total_layers = bert.layers();
    let split = total_layers - config.layers.clamp(1, total_layers);
    let progress = |p: &AdaptProgress| {
        if let Some(f) = job.progress {
            f(p)
        }
    };
    let invalid = |m: String| Error::bad("adaptation job", m);
    if bert.precision() != Precision::F32 {
        return Err(Error::bad(
            "adaptation",
            format!(
                "{model_id} is loaded in {}; adapting trains f32 copies of its top layers on the f32 encoder's hidden states: run with --embedder-precision f32",
                bert.precision()
            ),
        ));
    }
    if ids.len() != job.gold.len() || ids.len() != job.held_out.len() {
        return Err(invalid(
            "texts, labels and held-out flags differ in number".into(),
        ));
    }
    if let Some(g) = job.gold.iter().find(|&&g| g >= job.classes) {
        return Err(invalid(format!(
            "label {g} is not below {} classes",
            job.classes
        )));
    }
    let train: Vec<usize> = (0..ids.len()).filter(|&i| !job.held_out[i]).collect();
    if train.is_empty() {
        return Err(invalid("no texts to train on".into()));
    }

    // Work files are named by what they depend on, so a run with other texts or settings never
    // reads another's.
    let mut hasher = Sha256::new();
    hasher.update(format!("{model_id}|{split}|{:?}|", job.kind));
    for seq in ids {
        hasher.update((seq.len() as u32).to_le_bytes());
        seq.iter().for_each(|id| hasher.update(id.to_le_bytes()));
    }
    let states_key = hex(&hasher.finalize_reset());
    hasher.update(&states_key);
    hasher.update(serde_json::to_vec(config).unwrap_or_default());
    hasher.update((job.classes as u32).to_le_bytes());
    job.gold
        .iter()
        .for_each(|g| hasher.update((*g as u32).to_le_bytes()));
    job.held_out.iter().for_each(|&b| hasher.update([b as u8]));
    let run_key = hex(&hasher.finalize());
    let work = job.work_dir.as_deref();
    if let Some(dir) = work {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // Keep only this run's files: a finished or abandoned run's are of no further use.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let ours =
                    name == format!("hidden-{states_key}.f16") || name == format!("run-{run_key}");
                if !ours && (name.starts_with("hidden-") || name.starts_with("run-")) {
                    let path = entry.path();
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
            }
        }
    }
    let cache = work.map(|d| d.join(format!("hidden-{states_key}.f16")));
    let states = HiddenStates::build(bert, split, ids, cache.as_deref(), &progress)?;

    let model = Model::new(bert, split, job.classes, config.seed)?;
    let mut opt = AdamW::new(&model.vars())?;
    let run_dir = work.map(|d| d.join(format!("run-{run_key}")));
    let mut first_epoch = 0;
    if let Some(dir) = &run_dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if let Some((_, path)) = latest_checkpoint(dir) {
            first_epoch = load_checkpoint(&path, &model, &mut opt)?;
            progress(&AdaptProgress::Resumed { epoch: first_epoch });
        }
    }

    let h = bert.hidden_size();
    let batch = config.batch.max(1);
    let steps = train.len().div_ceil(batch);
    let total_steps = steps * config.epochs;
    for epoch in first_epoch..config.epochs {
        let epoch_started = Instant::now();
        let batches = epoch_batches(
            &train,
            &states.lens,
            batch,
            config.seed ^ (epoch as u64 + 1) << 20,
        );
        let (mut loss_sum, mut seen) = (0f64, 0usize);
        for (s, members) in batches.iter().enumerate() {
            let step = epoch * steps + s;
            let scale = schedule(step, total_steps, config.warmup);
            let len = members.iter().map(|&i| states.lens[i]).max().unwrap_or(1);
            let mut x = vec![0f32; members.len() * len * h];
            let mut mask = vec![0f32; members.len() * len];
            for (b, &i) in members.iter().enumerate() {
                let rows = states.rows(i);
                x[b * len * h..b * len * h + rows.len()]
                    .iter_mut()
                    .zip(rows)
                    .for_each(|(d, v)| *d = v.to_f32());
                mask[b * len..b * len + states.lens[i]].fill(1.0);
            }
            let x = Tensor::from_vec(x, (members.len(), len, h), &Device::Cpu)?;
            let mask = Tensor::from_vec(mask, (members.len(), len), &Device::Cpu)?;
            let keep = if config.dropout > 0.0 {
                let mut rng = StdRng::seed_from_u64(config.seed ^ ((step as u64 + 1) << 32));
                let p = config.dropout;
                let keep: Vec<f32> = (0..members.len() * h)
                    .map(|_| {
                        if rng.gen::<f32>() < p {
                            0.0
                        } else {
                            1.0 / (1.0 - p)
                        }
                    })
                    .collect();
                Some(Tensor::from_vec(keep, (members.len(), h), &Device::Cpu)?)
            } else {
                None
            };
            let targets: Vec<u32> = members.iter().map(|&i| job.gold[i] as u32).collect();
            let targets = Tensor::from_vec(targets, members.len(), &Device::Cpu)?;
            let logits = model.forward(&x, &mask, keep.as_ref())?;
            let loss = candle_nn::loss::cross_entropy(&logits, &targets)?;
            let grads = loss.backward()?;
            opt.step(
                &model.vars(),
                &grads,
                config.lr as f64 * scale,
                config.head_lr as f64 * scale,
                config.weight_decay as f64,
            )?;
            loss_sum += loss.to_scalar::<f32>()? as f64 * members.len() as f64;
            seen += members.len();
            progress(&AdaptProgress::Step {
                epoch: epoch + 1,
                epochs: config.epochs,
                step: s + 1,
                steps,
                loss: (loss_sum / seen as f64) as f32,
            });
        }
        if let Some(dir) = &run_dir {
            save_checkpoint(
                &dir.join(format!("epoch-{}.safetensors", epoch + 1)),
                &model,
                &opt,
                epoch + 1,
            )?;
            let older = dir.join(format!("epoch-{epoch}.safetensors"));
            let _ = std::fs::remove_file(older);
        }
        progress(&AdaptProgress::Epoch {
            epoch: epoch + 1,
            loss: (loss_sum / seen.max(1) as f64) as f32,
            seconds: epoch_started.elapsed().as_secs_f32(),
        });
        if job.stop.is_some_and(|s| s.load(Ordering::SeqCst)) && epoch + 1 < config.epochs {
            return Err(Error::bad(
                "adaptation",
                format!(
                    "stopped after epoch {} of {}; run again to resume",
                    epoch + 1,
                    config.epochs
                ),
            ));
        }
    }

    let top = model.export(model_id, split)?;
    let held: Vec<usize> = (0..ids.len()).filter(|&i| job.held_out[i]).collect();
    let mut held_out_scores = Vec::with_capacity(held.len());
    for chunk in held.chunks(64) {
        let (mid, spans) = states.packed(chunk);
        held_out_scores.extend(top.scores(bert, mid, &spans));
    }
    if let Some(dir) = &run_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(Adapted {
        head: Arc::new(top),
        held_out_scores,
        seconds: started.elapsed().as_secs_f32(),
    })
}
