//! Per-op timings of text generation, collected when `TRIAGE_PROFILE` is set (bench-generate
//! prints them): where a prompt's or a token's time goes, by op class. Off, a timed op costs one
//! load of a flag.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// The op classes timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Tokenize,
    /// Looking up the prefix cache and cutting an entry back.
    PrefixCache,
    Embed,
    /// RMS norms, rotary embedding, residual adds, head reshapes.
    NormRope,
    /// The fused q/k/v projection.
    Qkv,
    /// Writing keys and values into the cache.
    KvWrite,
    /// Scores, softmax and the weighted sum of values.
    Attention,
    AttnOut,
    /// The fused gate/up projection.
    GateUp,
    Gelu,
    Down,
    /// Final norm and the vocabulary projection (tied embedding).
    Output,
    /// Repetition penalty and choosing the next token.
    Sample,
}

const OPS: [Op; 13] = [
    Op::Tokenize,
    Op::PrefixCache,
    Op::Embed,
    Op::NormRope,
    Op::Qkv,
    Op::KvWrite,
    Op::Attention,
    Op::AttnOut,
    Op::GateUp,
    Op::Gelu,
    Op::Down,
    Op::Output,
    Op::Sample,
];

/// Totals of prompt work (index 0) and of single-token decode steps (1).
static NANOS: [[AtomicU64; OPS.len()]; 2] = [const { [const { AtomicU64::new(0) }; OPS.len()] }; 2];
static CALLS: [[AtomicU64; OPS.len()]; 2] = [const { [const { AtomicU64::new(0) }; OPS.len()] }; 2];
static DECODING: AtomicBool = AtomicBool::new(false);

/// Counts what follows as decode (one new token) or prompt work.
pub fn set_decoding(decoding: bool) {
    DECODING.store(decoding, Ordering::Relaxed);
}

/// Whether `TRIAGE_PROFILE` is set (read once).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("TRIAGE_PROFILE").is_some_and(|v| !v.is_empty()))
}

/// Runs `f`, adding its time to `op` when profiling.
#[inline]
pub fn time<T>(op: Op, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let started = Instant::now();
    let out = f();
    let (phase, i) = (usize::from(DECODING.load(Ordering::Relaxed)), op as usize);
    NANOS[phase][i].fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    CALLS[phase][i].fetch_add(1, Ordering::Relaxed);
    out
}

/// The times collected since the last call ("prompt/Op" or "decode/Op", seconds, calls), ops
/// never timed left out; resets them.
pub fn take() -> Vec<(String, f64, u64)> {
    ["prompt", "decode"]
        .iter()
        .enumerate()
        .flat_map(|(phase, name)| {
            OPS.iter().filter_map(move |&op| {
                let i = op as usize;
                let nanos = NANOS[phase][i].swap(0, Ordering::Relaxed);
                let calls = CALLS[phase][i].swap(0, Ordering::Relaxed);
                (calls > 0).then(|| (format!("{name}/{op:?}"), nanos as f64 * 1e-9, calls))
            })
        })
        .collect()
}
