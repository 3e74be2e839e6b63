//! Adapting the encoder to a deployment's own categories (issue 16): the seam between the
//! classifier (here, in core) and the embedder that can fine-tune itself (in `triage-models`).
//!
//! The embedder's lower layers stay shared and frozen. A copy of its top layers and a small
//! classification head are fine-tuned on the labeled cases; at run time one encoder pass runs the
//! lower layers once, then the original top layers for the vector the store keeps and searches
//! (unchanged: the same f32 vector as without adaptation) and the adapted top layers for the
//! class scores (`Embedded::scores`). The classifier treats those scores as one more method
//! (`Method::Adapted`) in its ensemble.
//!
//! Core never sees the weights: an adapted top is an opaque `EncoderHead` made, run, saved and
//! loaded by the embedder it was fitted on.

use crate::Result;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// What one encoder pass gives a text: its vector (the store's: cosine = dot product), and the
/// raw class scores (logits) of the adapted head when one ran.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embedded {
    pub vector: Vec<f32>,
    pub scores: Option<Vec<f32>>,
}

impl From<Vec<f32>> for Embedded {
    fn from(vector: Vec<f32>) -> Self {
        Self {
            vector,
            scores: None,
        }
    }
}

/// The adapted top layers and classification head of one training run. Made, run, saved and
/// loaded by the embedder it was fitted on (`Embedder::adapt`, `embed_scored`, `load_head`).
pub trait EncoderHead: Send + Sync + std::fmt::Debug {
    /// The weights, as saved beside the classifier (safetensors).
    fn to_bytes(&self) -> Result<Vec<u8>>;
    /// Number of classes it scores.
    fn classes(&self) -> usize;
    /// For the embedder that runs it.
    fn as_any(&self) -> &dyn Any;
}

/// Whether `triage train` adapts the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdaptMode {
    /// Never (the library default: fast, and what tests without an encoder to adapt get).
    Off,
    /// Fine-tune, and keep the adapted method only when its held-out numbers say it improves the
    /// ensemble (`triage train --adapt`).
    Auto,
    /// Fine-tune and keep it whatever the held-out numbers say (for measurements).
    On,
}

/// Settings of the fine-tuning. The defaults were chosen on held-out predictions of the training
/// set (see README, "Adapting the encoder").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdaptConfig {
    pub mode: AdaptMode,
    /// Top layers of the encoder that are copied and fine-tuned (the rest stay shared).
    pub layers: usize,
    /// Passes over the training cases.
    pub epochs: usize,
    /// Cases per optimizer step.
    pub batch: usize,
    /// Peak learning rate of the adapted layers (AdamW, linear warm-up and decay).
    pub lr: f32,
    /// Peak learning rate of the classification head.
    pub head_lr: f32,
    pub weight_decay: f32,
    /// Dropout on the pooled vector before the head (training only).
    pub dropout: f32,
    /// Share of the steps spent warming the learning rate up.
    pub warmup: f32,
    /// Fewer labeled cases than this: no adaptation (too little to fine-tune on).
    pub min_cases: usize,
    pub seed: u64,
}

impl Default for AdaptConfig {
    fn default() -> Self {
        Self {
            mode: AdaptMode::Off,
            layers: 2,
            epochs: 3,
            batch: 32,
            lr: 1e-4,
            head_lr: 2e-3,
            weight_decay: 0.01,
            dropout: 0.1,
            warmup: 0.1,
            min_cases: 200,
            seed: 7,
        }
    }
}

/// How far a fine-tuning run is.
#[derive(Debug, Clone, PartialEq)]
pub enum AdaptProgress {
    /// Lower layers run over `done` of `total` texts (their hidden states are cached).
    Encoding { done: usize, total: usize },
    /// Resumed from a checkpoint after `epoch` epochs.
    Resumed { epoch: usize },
    /// `step` of `steps` optimizer steps of `epoch` (1-based) of `epochs`; `loss` is the running
    /// mean of this epoch.
    Step {
        epoch: usize,
        epochs: usize,
        step: usize,
        steps: usize,
        loss: f32,
    },
    /// An epoch ended and its checkpoint was written.
    Epoch {
        epoch: usize,
        loss: f32,
        seconds: f32,
    },
}

/// One fine-tuning run: labeled texts, some of them held out to be predicted.
pub struct AdaptJob<'a> {
    /// Texts as the pipeline embeds complaints (full text: title and body), embedded as `kind`.
    pub texts: &'a [&'a str],
    pub kind: crate::EmbedKind,
    /// Class index of each text.
    pub gold: &'a [usize],
    pub classes: usize,
    /// `true`: not trained on; its scores are returned (out-of-sample predictions).
    pub held_out: &'a [bool],
    pub config: &'a AdaptConfig,
    /// Where checkpoints (one per epoch) and the cached hidden states go, so a killed run
    /// resumes; `None` keeps everything in memory.
    pub work_dir: Option<PathBuf>,
    pub progress: Option<&'a (dyn Fn(&AdaptProgress) + Sync)>,
    /// When set, the run stops after the next epoch's checkpoint with an error that says so (a
    /// clean interruption; the next run with the same work dir resumes).
    pub stop: Option<&'a AtomicBool>,
}

/// What a fine-tuning run gives back.
pub struct Adapted {
    pub head: std::sync::Arc<dyn EncoderHead>,
    /// Raw scores of the held-out texts, in their order in the job.
    pub held_out_scores: Vec<Vec<f32>>,
    pub seconds: f32,
}
