//! The slice arithmetic of the models, in one place: matmuls (gemm), bias, residual, layer norm,
//! softmax, activations and one-query attention as loops the compiler vectorises (independent
//! lanes, no branches), with an exp and erf that need no libm call. candle's ops cost more than
//! the arithmetic here: its GELU calls the C library's `tanh` per element, its erf runs one
//! element at a time, and a one-token attention as two batched matmuls sets up a thread pool.
//! The int8 matrix products of the encoder are in `kernels/int8.rs`. `bert.rs` and `gemma3.rs`
//! hold only their models.

pub mod int8;

use rayon::prelude::*;
pub use triage_core::vector::dot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The exact GELU, x·Φ(x) (Hugging Face "gelu").
    Gelu,
    /// The tanh approximation ("gelu_new", "gelu_pytorch_tanh", "gelu_fast").
    GeluTanh,
    Relu,
}

/// What a dense layer's product is added to: a bias row, and a residual matrix (rows × n, the
/// layer's input) when given.
#[derive(Clone, Copy)]
pub struct Base<'a> {
    pub bias: &'a [f32],
    pub residual: Option<&'a [f32]>,
}

/// dst (m × n) += a (m × k) · b (k × n), all row-major and contiguous.
pub fn matmul_add(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    assert!(dst.len() == m * n && a.len() == m * k && b.len() == k * n);
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the lengths are checked above for these dimensions and unit column strides.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

pub fn fill_rows(dst: &mut [f32], bias: &[f32]) {
    dst.par_chunks_mut(bias.len())
        .with_min_len(64)
        .for_each(|row| row.copy_from_slice(bias));
}

pub fn residual_plus_bias(dst: &mut [f32], x: &[f32], bias: &[f32]) {
    dst.par_chunks_mut(bias.len())
        .zip(x.par_chunks(bias.len()))
        .with_min_len(64)
        .for_each(|(d, x)| {
            d.iter_mut()
                .zip(x)
                .zip(bias)
                .for_each(|((d, x), b)| *d = x + b);
        });
}

/// Defines `pub fn $name` that runs its body compiled for AVX-512 when the CPU has it and as
/// built (AVX2 for x86-64-v3) otherwise. The build target stops at AVX2, so loops the compiler
/// vectorises get 8 lanes; with AVX-512 enabled for the function they get 16. Each value is
/// computed by the same operations either way (sums keep their explicit lanes), so results do
/// not depend on the path.
macro_rules! wide {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
                fn wide($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if has_avx512() {
                    // SAFETY: the CPU has the features `wide` is compiled for.
                    return unsafe { wide($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// Whether the CPU runs AVX-512 F/BW/DQ/VL (checked once).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        use std::arch::is_x86_feature_detected as has;
        has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl")
    })
}

/// Lanes of the partial sums below: wide enough for the compiler to keep them in vector registers
/// (float sums are not reassociated otherwise).
const LANES: usize = 16;

#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        acc.iter_mut().zip(c).for_each(|(a, x)| *a += x);
    }
    acc.iter().sum::<f32>() + rest
}

#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for c in chunks {
        acc.iter_mut()
            .zip(c)
            .for_each(|(a, &x)| *a = if x > *a { x } else { *a });
    }
    acc.iter().fold(rest, |m, &x| m.max(x))
}

/// (min, max) of a slice, (+∞, −∞) when empty.
pub fn min_max(xs: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks
        .remainder()
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    for c in chunks {
        for ((l, h), &x) in lo.iter_mut().zip(hi.iter_mut()).zip(c) {
            *l = if x < *l { x } else { *l };
            *h = if x > *h { x } else { *h };
        }
    }
    (
        lo.iter().fold(rest.0, |m, &x| m.min(x)),
        hi.iter().fold(rest.1, |m, &x| m.max(x)),
    )
}

wide! {
pub fn layer_norm(row: &mut [f32], norm: &(Vec<f32>, Vec<f32>), eps: f32) {
    let (weight, bias) = norm;
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest: f32 = chunks
        .remainder()
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum();
    for c in chunks {
        acc.iter_mut()
            .zip(c)
            .for_each(|(a, x)| *a += (x - mean) * (x - mean));
    }
    let inv = 1.0 / ((acc.iter().sum::<f32>() + rest) / n + eps).sqrt();
    row.iter_mut()
        .zip(weight)
        .zip(bias)
        .for_each(|((x, w), b)| *x = (*x - mean) * inv * w + b);
}
}

wide! {
pub fn softmax(row: &mut [f32]) {
    let top = max(row);
    row.iter_mut().for_each(|x| *x = exp(*x - top));
    let inv = 1.0 / sum(row);
    row.iter_mut().for_each(|x| *x *= inv);
}
}

wide! {
pub fn activate(xs: &mut [f32], act: Activation) {
    match act {
        Activation::Gelu => xs.iter_mut().for_each(|x| {
            let half = 0.5 * *x;
            *x = fma(half, erf(*x * std::f32::consts::FRAC_1_SQRT_2), half);
        }),
        Activation::GeluTanh => xs.iter_mut().for_each(|x| *x = gelu_tanh(*x)),
        Activation::Relu => xs.iter_mut().for_each(|x| *x = x.max(0.0)),
    }
}
}

/// e^x to about 2e-7 relative error, branch-free so loops over it vectorise: x = n·ln2 + r with
/// |r| ≤ ln2/2, e^r by its degree-6 Taylor polynomial, 2^n by writing n into the float's exponent.
/// Inputs are clamped to [-87, 88] (results to [1.6e-38, 1.7e38]).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Adding 1.5·2^23 rounds to an integer n and leaves n in the low mantissa bits, so 2^n comes
    // from integer adds and shifts (`n as i32` would saturate-check every element, unvectorised).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = fma(x, std::f32::consts::LOG2_E, ROUND);
    let n = shifted - ROUND;
    let r = fma(n, -1.428_606_8e-6, fma(n, -0.693_145_75, x)); // ln2 split in two for precision
    let p = [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0]
        .iter()
        .fold(1.0 / 720.0, |p, &c| fma(p, r, c));
    p * f32::from_bits(shifted.to_bits().wrapping_add(127) << 23)
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error 1.5e-7, 3.5e-7 once evaluated in f32), the
/// formula PyTorch's vectorised CPU erf uses.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / fma(0.327_591_1, a, 1.0);
    let poly = [1.421_413_8, -0.284_496_74, 0.254_829_6]
        .iter()
        .fold(fma(1.061_405_4, t, -1.453_152), |p, &c| fma(p, t, c))
        * t;
    fma(-poly, exp(-a * a), 1.0).copysign(x)
}

/// `a · b + c`, one fused instruction where the build has FMA (x86-64-v3, aarch64), two
/// operations where it has not: there `mul_add` would be a library call per element.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(any(target_feature = "fma", target_arch = "aarch64"))]
    return a.mul_add(b, c);
    #[cfg(not(any(target_feature = "fma", target_arch = "aarch64")))]
    return a * b + c;
}

/// GELU with the tanh approximation (Gemma's `gelu_pytorch_tanh`):
/// `0.5 x (1 + tanh(u)) = x / (1 + e^(-2u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * inner))
}

/// `gelu_tanh(gate) * up`, element by element.
pub fn gelu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &x), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = gelu_tanh(x) * u;
    }
}

/// Attention of one query position over `keys` cached positions, every key visible.
/// `q`: heads × head_dim; `k`, `v`: key/value head `g`, position `t` at
/// `offset + g * head_stride + t * head_dim` (head_dim contiguous); `groups` query heads share
/// a key/value head. Writes heads × head_dim to `out`.
pub struct OneQuery<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub k_offset: usize,
    pub v_offset: usize,
    pub head_stride: usize,
    pub keys: usize,
    pub head_dim: usize,
    pub groups: usize,
    pub scale: f32,
}

/// The query heads of one key/value head go together: each key and value row is read once for
/// all of them. Per head the arithmetic is fixed (scores in key order, softmax, values added in
/// key order), so a query gets the same bits whichever step or prompt block computes it.
pub fn attend_one(a: &OneQuery, out: &mut [f32]) {
    let (hd, groups, keys) = (a.head_dim, a.groups, a.keys);
    let mut weights = vec![0f32; groups * keys];
    for (g, (q, out)) in
        a.q.chunks_exact(hd * groups)
            .zip(out.chunks_exact_mut(hd * groups))
            .enumerate()
    {
        let key = |t: usize| &a.k[a.k_offset + g * a.head_stride + t * hd..][..hd];
        let value = |t: usize| &a.v[a.v_offset + g * a.head_stride + t * hd..][..hd];
        for t in 0..keys {
            let k = key(t);
            for (h, q) in q.chunks_exact(hd).enumerate() {
                weights[h * keys + t] = dot(q, k) * a.scale;
            }
        }
        const CHUNK: usize = 64;
        let mut sums = [0f32; 16];
        let sums = &mut sums[..groups.min(16)];
        assert!(groups <= 16, "at most 16 query heads per key/value head");
        for (w, sum) in weights.chunks_exact_mut(keys).zip(sums.iter_mut()) {
            let max = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for w in w.iter_mut() {
                *w = exp(*w - max);
                *sum += *w;
            }
        }
        for (w, sum) in weights.chunks_exact_mut(keys).zip(sums.iter()) {
            for w in w.iter_mut() {
                *w /= sum;
            }
        }
        // Values added in key order, per element (as `o += p * v` over t), 64 elements at a
        // time held in registers rather than loaded and stored at every key.
        for (h, out) in out.chunks_exact_mut(hd).enumerate() {
            let probs = &weights[h * keys..(h + 1) * keys];
            for (c, out) in out.chunks_mut(CHUNK).enumerate() {
                let mut acc = [0f32; CHUNK];
                if out.len() == CHUNK {
                    for (t, &p) in probs.iter().enumerate() {
                        let v: &[f32; CHUNK] = value(t)[c * CHUNK..][..CHUNK]
                            .try_into()
                            .expect("CHUNK values");
                        for (a, v) in acc.iter_mut().zip(v) {
                            *a += p * v;
                        }
                    }
                } else {
                    for (t, &p) in probs.iter().enumerate() {
                        let v = &value(t)[c * CHUNK..][..out.len()];
                        for (a, v) in acc.iter_mut().zip(v) {
                            *a += p * v;
                        }
                    }
                }
                out.copy_from_slice(&acc[..out.len()]);
            }
        }
    }
}

/// RMS norm of each row of `x` (rows of `weight.len()` values), written to `out`: candle's
/// `rms_norm` arithmetic (so the same bits) on the calling thread; candle's hands blocks of more
/// than 32 rows to rayon's pool, a round trip between threads per call.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    for (src, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum2 = src.iter().map(|&v| v * v).sum::<f32>();
        let m = (sum2 / n as f32 + eps).sqrt();
        for ((d, s), w) in dst.iter_mut().zip(src).zip(weight) {
            *d = *s / m * *w;
        }
    }
}

/// Rotary embedding in place with the halves rotated (candle's `rope`, Gemma's layout): `x` is
/// rows of `head_dim` values for heads × positions (positions fastest), `cos`/`sin` are
/// positions × head_dim / 2. Each value is computed by candle's expression, so the bits are the
/// same; this runs on the calling thread (candle's hands every call to rayon's pool, a round
/// trip between threads for the 4 rows of a decode step).
pub fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], head_dim: usize) {
    let half = head_dim / 2;
    let positions = cos.len() / half;
    for (r, row) in x.chunks_exact_mut(head_dim).enumerate() {
        let t = r % positions;
        let (cos, sin) = (&cos[t * half..][..half], &sin[t * half..][..half]);
        let (x1, x2) = row.split_at_mut(half);
        for i in 0..half {
            let (a, b) = (x1[i], x2[i]);
            x1[i] = a * cos[i] - b * sin[i];
            x2[i] = a * sin[i] + b * cos[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_across_the_range() {
        let mut worst = 0f64;
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn erf_and_gelu_match_a_series_reference() {
        // erf by its Maclaurin series in f64, exact enough for |x| ≤ 3.
        let series = |x: f64| {
            let (mut term, mut total) = (x, x);
            for n in 1..200 {
                term *= -x * x / n as f64;
                total += term / (2 * n + 1) as f64;
            }
            total * 2.0 / std::f64::consts::PI.sqrt()
        };
        for i in -300..=300 {
            let x = i as f32 / 100.0;
            assert!((erf(x) as f64 - series(x as f64)).abs() < 5e-7, "erf({x})");
            let mut g = [x];
            activate(&mut g, Activation::Gelu);
            let want = 0.5 * x as f64 * (1.0 + series(x as f64 / 2f64.sqrt()));
            assert!(
                (g[0] as f64 - want).abs() < 5e-7,
                "gelu({x}) = {} not {want}",
                g[0]
            );
        }
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn gelu_tanh_and_relu() {
        for i in -60..=60 {
            let x = i as f32 / 10.0;
            let mut g = [x, x];
            activate(&mut g[..1], Activation::GeluTanh);
            activate(&mut g[1..], Activation::Relu);
            let y =
                (2.0 / std::f64::consts::PI).sqrt() * (x as f64 + 0.044715 * (x as f64).powi(3));
            let want = 0.5 * x as f64 * (1.0 + y.tanh());
            assert!((g[0] as f64 - want).abs() < 1e-6, "gelu_tanh({x})");
            assert_eq!(g[1], x.max(0.0));
        }
    }

    #[test]
    fn softmax_and_layer_norm_match_direct_formulas() {
        // 37 values: the 16-lane loops and their remainder both run.
        let values: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0 - 5.0)
            .collect();
        let mut s = values.clone();
        softmax(&mut s);
        let z: f64 = values.iter().map(|&v| (v as f64).exp()).sum();
        for (got, &v) in s.iter().zip(&values) {
            assert!((*got as f64 - (v as f64).exp() / z).abs() < 1e-7);
        }

        let weight: Vec<f32> = (0..37).map(|i| 1.0 + i as f32 / 37.0).collect();
        let bias: Vec<f32> = (0..37).map(|i| i as f32 / 100.0).collect();
        let mut n = values.clone();
        layer_norm(&mut n, &(weight.clone(), bias.clone()), 1e-12);
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / 37.0;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / 37.0;
        for i in 0..37 {
            let want = (values[i] as f64 - mean) / var.sqrt() * weight[i] as f64 + bias[i] as f64;
            assert!((n[i] as f64 - want).abs() < 1e-5, "{i}: {} vs {want}", n[i]);
        }
        assert_eq!(
            max(&values),
            values.iter().cloned().fold(f32::MIN, f32::max)
        );
    }

    #[test]
    fn gelu_matches_the_tanh_formula() {
        let gate: Vec<f32> = (-400..400).map(|i| i as f32 / 40.0).collect();
        let up: Vec<f32> = gate.iter().map(|x| 1.0 + x * 0.1).collect();
        let mut out = vec![0.0; gate.len()];
        gelu_mul(&gate, &up, &mut out);
        for ((x, u), o) in gate.iter().zip(&up).zip(&out) {
            let x64 = f64::from(*x);
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044715 * x64.powi(3));
            let expected = 0.5 * x64 * (1.0 + inner.tanh()) * f64::from(*u);
            assert!(
                (f64::from(*o) - expected).abs() < 1e-6 * expected.abs().max(1.0),
                "gelu({x})"
            );
        }
    }

    #[test]
    fn rms_norm_gives_candles_bits() {
        use candle_core::{Device, Tensor};
        // 40 rows: more than candle's 32-row threshold for its threaded path.
        let (rows, n) = (40, 24);
        let x: Vec<f32> = (0..rows * n)
            .map(|i| ((i as f32) * 0.37).cos() * 3.0)
            .collect();
        let w: Vec<f32> = (0..n).map(|i| 1.0 + i as f32 / 10.0).collect();
        let dev = &Device::Cpu;
        let want = candle_nn::ops::rms_norm(
            &Tensor::from_vec(x.clone(), (rows, n), dev).unwrap(),
            &Tensor::from_vec(w.clone(), n, dev).unwrap(),
            1e-6,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        let mut got = vec![0f32; rows * n];
        rms_norm(&x, &w, 1e-6, &mut got);
        assert_eq!(got, want);
    }

    #[test]
    fn rope_gives_candles_bits() {
        use candle_core::{Device, Tensor};
        let (heads, positions, head_dim) = (3, 5, 8);
        let x: Vec<f32> = (0..heads * positions * head_dim)
            .map(|i| ((i as f32) * 0.71).sin() * 4.0)
            .collect();
        let angles: Vec<f32> = (0..positions * head_dim / 2)
            .map(|i| i as f32 * 0.37)
            .collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        let dev = &Device::Cpu;
        let want = candle_nn::rotary_emb::rope(
            &Tensor::from_vec(x.clone(), (1, heads, positions, head_dim), dev).unwrap(),
            &Tensor::from_vec(cos.clone(), (positions, head_dim / 2), dev).unwrap(),
            &Tensor::from_vec(sin.clone(), (positions, head_dim / 2), dev).unwrap(),
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        let mut got = x;
        rope(&mut got, &cos, &sin, head_dim);
        assert_eq!(got, want);
    }

    #[test]
    fn one_query_attention_is_a_softmax_average() {
        // Two query heads sharing one key/value head, three keys, head_dim 2, in a cache of
        // capacity 4 positions starting at offset 1.
        let (hd, keys) = (2, 3);
        let q = [1.0, 0.0, 0.0, 2.0];
        let k = [9.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 9.0];
        let v = [9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 9.0];
        let mut out = [0.0; 4];
        let query = OneQuery {
            q: &q,
            k: &k,
            v: &v,
            k_offset: 1,
            v_offset: 1,
            head_stride: 8,
            keys,
            head_dim: hd,
            groups: 2,
            scale: 0.5,
        };
        attend_one(&query, &mut out);
        for h in 0..2 {
            let scores: Vec<f64> = (0..keys)
                .map(|t| {
                    (0..hd)
                        .map(|d| f64::from(q[h * hd + d] * k[1 + t * hd + d]))
                        .sum::<f64>()
                        * 0.5
                })
                .collect();
            let total: f64 = scores.iter().map(|s| s.exp()).sum();
            for d in 0..hd {
                let expected: f64 = (0..keys)
                    .map(|t| scores[t].exp() / total * f64::from(v[1 + t * hd + d]))
                    .sum();
                assert!(
                    (f64::from(out[h * hd + d]) - expected).abs() < 1e-6,
                    "head {h} dim {d}"
                );
            }
        }
    }
}
