//! int8 matrix products for the encoder's dense layers: `dst (m × n) += A (m × k) · W (k × n)`
//! with W quantized per output column (symmetric int8, at load time) and A per row (asymmetric
//! u8 with a zero point, per call), accumulated exactly in int32 and scaled back to f32.
//!
//! Why this shape: an encoder's activations are a row per token, and a token's values share a
//! range, so one scale and zero point per row (u8, 0..=255) keeps 8 bits for the values that
//! occur (GELU outputs barely go below zero: a symmetric code would waste half of them). The
//! weights are centred, so they are symmetric. The zero point comes out again exactly in
//! integers: Σ (a − z)·w = Σ a·w − z·Σ w, with Σ w per column computed once at load time.
//!
//! Kernels, chosen at run time (one binary runs everywhere):
//! - AVX-512 VNNI: `vpdpbusd` multiplies 64 u8 × i8 pairs and adds them in fours to 16 int32
//!   lanes in one instruction, 4× the multiply-adds of an f32 FMA of the same width. A 6-row ×
//!   64-column tile keeps 24 accumulators in registers; the weights are packed so that one tile's
//!   four vectors for four k are 256 consecutive bytes.
//! - AVX2: `vpmaddwd` on values widened to int16 (exact: `vpmaddubsw` would saturate its int16
//!   pair sums at 255·127·2), 6 rows × 16 columns.
//! - scalar loops otherwise (and as the tests' reference).
//!
//! All three compute the same integers and the same f32 epilogue (one fused multiply-add), so
//! they give bit-identical results: a vector does not depend on the CPU that computed it.

use super::Base;
use rayon::prelude::*;

/// The kernel family of this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512Vnni,
    Avx2,
    Scalar,
}

impl Isa {
    /// The fastest kernel this CPU runs; `TRIAGE_INT8_KERNEL=avx2|scalar` picks a slower one
    /// (to measure or test it on a machine that has more).
    pub fn detect() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let best = Isa::best();
            match std::env::var("TRIAGE_INT8_KERNEL").as_deref() {
                Ok("avx2") if Isa::Avx2.runs_here() => Isa::Avx2,
                Ok("scalar") => Isa::Scalar,
                _ => best,
            }
        })
    }

    fn best() -> Isa {
        [Isa::Avx512Vnni, Isa::Avx2]
            .into_iter()
            .find(|isa| isa.runs_here())
            .unwrap_or(Isa::Scalar)
    }

    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Isa::Avx512Vnni => has!("avx512f") && has!("avx512bw") && has!("avx512vnni"),
                Isa::Avx2 => has!("avx2") && has!("fma"),
                Isa::Scalar => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Scalar
        }
    }

    /// Whether this is a SIMD kernel (the scalar one is slower than f32 matmuls).
    pub fn is_simd(self) -> bool {
        self != Isa::Scalar
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Avx2 => "avx2",
            Isa::Scalar => "scalar",
        }
    }

    /// Columns of one packed tile.
    fn tile(self) -> usize {
        match self {
            Isa::Avx2 => 16,
            Isa::Avx512Vnni | Isa::Scalar => 64,
        }
    }

    /// k values per packed group (4 bytes for `vpdpbusd`, 2 int16 for `vpmaddwd`).
    fn group(self) -> usize {
        match self {
            Isa::Avx2 => 2,
            Isa::Avx512Vnni | Isa::Scalar => 4,
        }
    }

    /// Whether values are stored widened to int16.
    fn wide(self) -> bool {
        self == Isa::Avx2
    }
}

/// Rows of one micro-tile.
const MR: usize = 6;
/// Columns are padded to a multiple of this (every tile width divides it).
const COLUMN_ALIGN: usize = 64;
/// k is padded to a multiple of this (every group size divides it).
const DEPTH_ALIGN: usize = 4;

/// A k × n weight matrix quantized per column and packed for one kernel.
pub struct PackedWeights {
    isa: Isa,
    k: usize,
    n: usize,
    k_pad: usize,
    /// int8 values (as i16 for AVX2), tile by tile: tile t holds columns t·tile.. for every
    /// group of k in turn; within a group, column-major with the group's k values adjacent.
    bytes: Vec<i8>,
    words: Vec<i16>,
    /// Per column (padded with zeros): the scale, and the sum of its int8 values.
    scales: Vec<f32>,
    sums: Vec<i32>,
}

impl PackedWeights {
    /// `w` is k × n, row-major (input-major: row i holds input i's weight for every output).
    pub fn quantize(w: &[f32], k: usize, n: usize, isa: Isa) -> Self {
        assert_eq!(w.len(), k * n);
        let (k_pad, n_pad) = (
            k.next_multiple_of(DEPTH_ALIGN),
            n.next_multiple_of(COLUMN_ALIGN),
        );
        let mut scales = vec![0f32; n_pad];
        let mut inverse = vec![0f32; n];
        for c in 0..n {
            let max = (0..k).fold(0f32, |m, i| m.max(w[i * n + c].abs()));
            scales[c] = max / 127.0;
            inverse[c] = if max > 0.0 { 127.0 / max } else { 0.0 };
        }
        let q = |i: usize, c: usize| -> i8 {
            if i < k && c < n {
                (w[i * n + c] * inverse[c])
                    .round_ties_even()
                    .clamp(-127.0, 127.0) as i8
            } else {
                0
            }
        };
        let mut sums = vec![0i32; n_pad];
        for (c, sum) in sums.iter_mut().enumerate().take(n) {
            *sum = (0..k).map(|i| i32::from(q(i, c))).sum();
        }
        let (tile, group) = (isa.tile(), isa.group());
        let mut packed = Vec::with_capacity(k_pad * n_pad);
        for t in 0..n_pad / tile {
            for g in 0..k_pad / group {
                for c in t * tile..(t + 1) * tile {
                    for i in g * group..(g + 1) * group {
                        packed.push(q(i, c));
                    }
                }
            }
        }
        let (bytes, words) = if isa.wide() {
            (Vec::new(), packed.iter().map(|&v| i16::from(v)).collect())
        } else {
            (packed, Vec::new())
        };
        Self {
            isa,
            k,
            n,
            k_pad,
            bytes,
            words,
            scales,
            sums,
        }
    }

    /// The int8 codes as the kernels read them, unpacked to k × n (row-major): for tests.
    #[cfg(test)]
    pub fn codes(&self) -> Vec<i32> {
        let (tile, group) = (self.isa.tile(), self.isa.group());
        let mut w = vec![0i32; self.k * self.n];
        let mut at = 0;
        for t in 0..self.n.next_multiple_of(COLUMN_ALIGN) / tile {
            for g in 0..self.k_pad / group {
                for c in t * tile..(t + 1) * tile {
                    for i in g * group..(g + 1) * group {
                        let v = if self.isa.wide() {
                            i32::from(self.words[at])
                        } else {
                            i32::from(self.bytes[at])
                        };
                        at += 1;
                        if i < self.k && c < self.n {
                            w[i * self.n + c] = v;
                        } else {
                            assert_eq!(v, 0, "padding must be zero");
                        }
                    }
                }
            }
        }
        w
    }

    /// The weight as the kernels see it, `scale · q` (k × n): for tests and error estimates.
    #[cfg(test)]
    pub fn dequantize(&self) -> Vec<f32> {
        let n = self.n;
        self.codes()
            .iter()
            .enumerate()
            .map(|(at, &q)| q as f32 * self.scales[at % n])
            .collect()
    }
}

/// Rows of activations quantized for one kernel: u8 with a zero point and a scale per row
/// (`x ≈ scale · (q − zero)`), each row padded with zeros to the packed depth. Kept between
/// calls so its buffers are reused.
pub struct QuantizedRows {
    isa: Isa,
    rows: usize,
    k: usize,
    stride: usize,
    bytes: Vec<u8>,
    words: Vec<i16>,
    scales: Vec<f32>,
    zeros: Vec<i32>,
}

impl QuantizedRows {
    pub fn new(isa: Isa) -> Self {
        Self {
            isa,
            rows: 0,
            k: 0,
            stride: 0,
            bytes: Vec::new(),
            words: Vec::new(),
            scales: Vec::new(),
            zeros: Vec::new(),
        }
    }

    /// Quantizes `x` (rows × k, row-major).
    pub fn quantize(&mut self, x: &[f32], rows: usize, k: usize) {
        assert_eq!(x.len(), rows * k);
        let stride = k.next_multiple_of(DEPTH_ALIGN);
        self.rows = rows;
        self.k = k;
        self.stride = stride;
        self.scales.resize(rows, 0.0);
        self.zeros.resize(rows, 0);
        let isa = self.isa;
        let scales = self.scales.par_iter_mut().zip(self.zeros.par_iter_mut());
        if isa.wide() {
            self.words.resize(rows * stride, 0);
            self.words
                .par_chunks_mut(stride)
                .zip(x.par_chunks(k))
                .zip(scales)
                .with_min_len(32)
                .for_each(|((out, row), (scale, zero))| {
                    // SAFETY: the wide layout is AVX2's, which this CPU runs (`Isa::detect`).
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        (*scale, *zero) = x86::quantize_avx2(row, out)
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    unreachable!("AVX2 on {row:?} {out:?} {scale} {zero}")
                });
        } else {
            self.bytes.resize(rows * stride, 0);
            self.bytes
                .par_chunks_mut(stride)
                .zip(x.par_chunks(k))
                .zip(scales)
                .with_min_len(32)
                .for_each(|((out, row), (scale, zero))| {
                    (*scale, *zero) = match isa {
                        // SAFETY: the CPU runs AVX-512 (`Isa::detect`).
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512Vnni => unsafe { x86::quantize_avx512(row, out) },
                        _ => quantize_scalar(row, out),
                    }
                });
        }
    }

    /// The u8 codes as the kernels read them (rows × k, row-major): for tests.
    #[cfg(test)]
    pub fn codes(&self) -> Vec<i32> {
        let mut out = Vec::with_capacity(self.rows * self.k);
        for r in 0..self.rows {
            for i in 0..self.stride {
                let q = if self.isa.wide() {
                    i32::from(self.words[r * self.stride + i])
                } else {
                    i32::from(self.bytes[r * self.stride + i])
                };
                if i < self.k {
                    out.push(q);
                } else {
                    assert_eq!(q, 0, "padding must be zero");
                }
            }
        }
        out
    }

    /// The rows as the kernels see them, `scale · (q − zero)`: for tests and error estimates.
    #[cfg(test)]
    pub fn dequantize(&self) -> Vec<f32> {
        let k = self.k;
        self.codes()
            .iter()
            .enumerate()
            .map(|(at, &q)| self.scales[at / k] * (q - self.zeros[at / k]) as f32)
            .collect()
    }
}

/// A row's scale, zero point and the factor that quantizes it, from its minimum and maximum:
/// the range, widened to hold 0 (so that zero is exact), over the 255 steps of a u8. Every
/// kernel computes a value as `round_half_even(x · inverse + zero)` (one fused multiply-add)
/// clamped to 0..=255, so all give the same bytes.
fn parameters(lo: f32, hi: f32) -> (f32, i32, f32) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let range = hi - lo;
    if range <= 0.0 || !range.is_finite() {
        return (0.0, 0, 0.0);
    }
    let scale = range / 255.0;
    let zero = (-lo / scale).round_ties_even().clamp(0.0, 255.0);
    (scale, zero as i32, 1.0 / scale)
}

fn quantize_scalar(row: &[f32], out: &mut [u8]) -> (f32, i32) {
    let (lo, hi) = super::min_max(row);
    let (scale, zero, inverse) = parameters(lo, hi);
    for (o, &x) in out.iter_mut().zip(row) {
        *o = x
            .mul_add(inverse, zero as f32)
            .round_ties_even()
            .clamp(0.0, 255.0) as u8;
    }
    out[row.len()..].fill(0);
    (scale, zero)
}

/// `dst = residual + bias + a · w` (`dst`: a.rows × w.n, row-major), then `after` on each row
/// of `dst` once all its columns are written, while the row is still in cache (a layer norm,
/// an activation). `a` must be quantized for `w`'s kernel.
pub fn matmul(
    dst: &mut [f32],
    a: &QuantizedRows,
    w: &PackedWeights,
    base: Base,
    after: &(dyn Fn(&mut [f32]) + Sync),
) {
    assert_eq!(
        a.isa, w.isa,
        "activations and weights quantized for different kernels"
    );
    assert_eq!(a.k, w.k);
    assert_eq!(a.stride, w.k_pad);
    let (m, n) = (a.rows, w.n);
    assert_eq!(dst.len(), m * n);
    assert_eq!(base.bias.len(), n);
    assert!(base.residual.is_none_or(|r| r.len() == m * n));
    if m == 0 {
        return;
    }
    // Tiles with at least one real column (AVX2 tiles are narrower than the column padding).
    let tiles = n.div_ceil(w.isa.tile());
    let threads = rayon::current_num_threads();
    let out = Out(dst.as_mut_ptr());
    // Large inputs: blocks of rows, each with every column (each thread reads all weights, its
    // rows stay in cache and are finished by `after` at once).
    const ROW_BLOCK: usize = 8 * MR;
    if m >= 2 * ROW_BLOCK * threads || threads == 1 {
        dst.par_chunks_mut(ROW_BLOCK * n)
            .enumerate()
            .for_each(|(b, rows)| {
                let first = b * ROW_BLOCK;
                // SAFETY: this task writes rows first.. of `dst` (its chunk), all tiles.
                unsafe { block(&out, a, w, base, first..first + rows.len() / n, 0..tiles) };
                rows.chunks_exact_mut(n).for_each(after);
            });
        return;
    }
    // Small ones (a query of a few dozen tokens): groups of column tiles, then `after` by rows.
    let group = tiles.div_ceil(2 * threads).max(1);
    (0..tiles.div_ceil(group)).into_par_iter().for_each(|g| {
        let tiles = g * group..((g + 1) * group).min(tiles);
        // SAFETY: tasks write disjoint column tiles of every row of `dst`.
        unsafe { block(&out, a, w, base, 0..m, tiles) };
    });
    dst.par_chunks_mut(n).with_min_len(8).for_each(after);
}

/// `dst`, written by tasks at disjoint blocks.
struct Out(*mut f32);
// SAFETY: each task writes only its own block (see `matmul`), and `dst` outlives the tasks.
unsafe impl Sync for Out {}
unsafe impl Send for Out {}

/// One block of rows × column tiles, micro-tile by micro-tile.
///
/// # Safety
/// `out` points at the a.rows × w.n output; `rows` and `tiles` lie inside it, and no other
/// thread writes them meanwhile.
unsafe fn block(
    out: &Out,
    a: &QuantizedRows,
    w: &PackedWeights,
    base: Base,
    rows: std::ops::Range<usize>,
    tiles: std::ops::Range<usize>,
) {
    let (tile, n) = (w.isa.tile(), w.n);
    for t in tiles {
        let columns = t * tile..((t + 1) * tile).min(n);
        let mut r = rows.start;
        while r < rows.end {
            let count = (rows.end - r).min(MR);
            let job = Tile {
                // SAFETY: (r, columns.start) lies inside the output (caller).
                dst: unsafe { out.0.add(r * n + columns.start) },
                ld: n,
                columns: columns.len(),
                rows: count,
                bias: &base.bias[columns.start..],
                residual: base.residual.map(|x| &x[r * n + columns.start..]),
                scales: &w.scales[columns.start..],
                sums: &w.sums[columns.start..],
                row_scales: &a.scales[r..r + count],
                row_zeros: &a.zeros[r..r + count],
                depth: w.k_pad,
            };
            // SAFETY: the tile's rows and columns lie inside the output (caller) and inside
            // `a` and `w` (r < a.rows, t < ⌈w.n / tile⌉); the CPU runs the packed kernel.
            unsafe {
                match w.isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512Vnni => x86::vnni(
                        &job,
                        a.bytes[r * a.stride..].as_ptr(),
                        a.stride,
                        w.bytes[t * tile * w.k_pad..].as_ptr(),
                    ),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => x86::avx2(
                        &job,
                        a.words[r * a.stride..].as_ptr(),
                        a.stride,
                        w.words[t * tile * w.k_pad..].as_ptr(),
                    ),
                    _ => scalar(
                        &job,
                        &a.bytes[r * a.stride..],
                        a.stride,
                        &w.bytes[t * tile * w.k_pad..],
                    ),
                }
            }
            r += count;
        }
    }
}

/// One micro-tile: `rows` (≤ MR) rows × `columns` (≤ the tile width) of the output.
struct Tile<'a> {
    dst: *mut f32,
    /// Row stride of `dst` and `residual`.
    ld: usize,
    columns: usize,
    rows: usize,
    /// From the tile's first column on (`bias` and `residual` unpadded, `scales` and `sums`
    /// padded to the tile's width).
    bias: &'a [f32],
    residual: Option<&'a [f32]>,
    scales: &'a [f32],
    sums: &'a [i32],
    row_scales: &'a [f32],
    row_zeros: &'a [i32],
    depth: usize,
}

impl Tile<'_> {
    /// The epilogue every kernel computes, for one value: the exact integer sum without the
    /// zero point, converted once and scaled by one fused multiply-add onto residual + bias.
    #[inline(always)]
    fn finish(&self, acc: i32, r: usize, c: usize) -> f32 {
        let exact = acc.wrapping_sub(self.row_zeros[r].wrapping_mul(self.sums[c]));
        let base = match self.residual {
            Some(x) => x[r * self.ld + c] + self.bias[c],
            None => self.bias[c],
        };
        (exact as f32).mul_add(self.scales[c] * self.row_scales[r], base)
    }
}

/// The reference kernel on the 4-deep packing.
fn scalar(job: &Tile, a: &[u8], lda: usize, w: &[i8]) {
    const TILE: usize = 64;
    for r in 0..job.rows {
        let row = &a[r * lda..r * lda + job.depth];
        for c in 0..job.columns {
            let mut acc = 0i32;
            for (g, pair) in row.chunks_exact(4).enumerate() {
                let weights = &w[(g * TILE + c) * 4..(g * TILE + c) * 4 + 4];
                for (&x, &y) in pair.iter().zip(weights) {
                    acc += i32::from(x) * i32::from(y);
                }
            }
            // SAFETY: (r, c) lies inside the output (see `block`).
            unsafe { *job.dst.add(r * job.ld + c) = job.finish(acc, r, c) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{parameters, Tile, MR};
    use std::arch::x86_64::*;

    /// `quantize_scalar` with AVX-512: 16 values at a time (`vcvtps2dq` rounds half to even).
    ///
    /// # Safety
    /// The CPU has AVX-512 F; `out` is at least as long as `row`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn quantize_avx512(row: &[f32], out: &mut [u8]) -> (f32, i32) {
        assert!(out.len() >= row.len());
        let n = row.len();
        let full = n / 16 * 16;
        let (mut lo, mut hi) = (
            _mm512_set1_ps(f32::INFINITY),
            _mm512_set1_ps(f32::NEG_INFINITY),
        );
        let tail: __mmask16 = ((1u32 << (n - full)) - 1) as u16;
        // SAFETY: loads of whole vectors below `full`, a masked load of the rest.
        unsafe {
            for i in (0..full).step_by(16) {
                let x = _mm512_loadu_ps(row.as_ptr().add(i));
                lo = _mm512_min_ps(lo, x);
                hi = _mm512_max_ps(hi, x);
            }
            if tail != 0 {
                let x = _mm512_maskz_loadu_ps(tail, row.as_ptr().add(full));
                // Masked-off lanes read 0, which the range holds anyway.
                lo = _mm512_min_ps(lo, x);
                hi = _mm512_max_ps(hi, x);
            }
        }
        let (scale, zero, inverse) = parameters(_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
        let (inverse, zero_f) = (_mm512_set1_ps(inverse), _mm512_set1_ps(zero as f32));
        let (floor, ceiling) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
        let code = |x: __m512| {
            let v = _mm512_cvtps_epi32(_mm512_fmadd_ps(x, inverse, zero_f));
            _mm512_min_epi32(_mm512_max_epi32(v, floor), ceiling)
        };
        // SAFETY: as above; stores of 16 bytes below `full`, a masked store of the rest.
        unsafe {
            for i in (0..full).step_by(16) {
                let v = code(_mm512_loadu_ps(row.as_ptr().add(i)));
                _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), _mm512_cvtepi32_epi8(v));
            }
            if tail != 0 {
                let v = code(_mm512_maskz_loadu_ps(tail, row.as_ptr().add(full)));
                _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(full).cast(), tail, v);
            }
        }
        out[n..].fill(0);
        (scale, zero)
    }

    /// `quantize_scalar` with AVX2, into int16: 8 values at a time.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `out` is at least as long as `row`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize_avx2(row: &[f32], out: &mut [i16]) -> (f32, i32) {
        assert!(out.len() >= row.len());
        let n = row.len();
        let full = n / 8 * 8;
        let (mut lo, mut hi) = (
            _mm256_set1_ps(f32::INFINITY),
            _mm256_set1_ps(f32::NEG_INFINITY),
        );
        // SAFETY: loads of whole vectors below `full`.
        unsafe {
            for i in (0..full).step_by(8) {
                let x = _mm256_loadu_ps(row.as_ptr().add(i));
                lo = _mm256_min_ps(lo, x);
                hi = _mm256_max_ps(hi, x);
            }
        }
        let (mut lows, mut highs) = ([0f32; 8], [0f32; 8]);
        // SAFETY: 8 floats each.
        unsafe {
            _mm256_storeu_ps(lows.as_mut_ptr(), lo);
            _mm256_storeu_ps(highs.as_mut_ptr(), hi);
        }
        let rest = &row[full..];
        let lo = lows
            .iter()
            .chain(rest)
            .fold(f32::INFINITY, |m, &x| m.min(x));
        let hi = highs
            .iter()
            .chain(rest)
            .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let (scale, zero, inverse_s) = parameters(lo, hi);
        let (inverse, zero_f) = (_mm256_set1_ps(inverse_s), _mm256_set1_ps(zero as f32));
        let (floor, ceiling) = (_mm256_setzero_si256(), _mm256_set1_epi32(255));
        // SAFETY: as above; 8 int16 stored per 8 values below `full`.
        unsafe {
            for i in (0..full).step_by(8) {
                let x = _mm256_loadu_ps(row.as_ptr().add(i));
                let v = _mm256_cvtps_epi32(_mm256_fmadd_ps(x, inverse, zero_f));
                let v = _mm256_min_epi32(_mm256_max_epi32(v, floor), ceiling);
                // int32 → int16 within each 128-bit half, then the halves' results together.
                let packed = _mm256_packs_epi32(v, v);
                let packed = _mm256_permute4x64_epi64(packed, 0b1000);
                _mm_storeu_si128(
                    out.as_mut_ptr().add(i).cast(),
                    _mm256_castsi256_si128(packed),
                );
            }
        }
        for (o, &x) in out[full..n].iter_mut().zip(rest) {
            *o = x
                .mul_add(inverse_s, zero as f32)
                .round_ties_even()
                .clamp(0.0, 255.0) as i16;
        }
        out[n..].fill(0);
        (scale, zero)
    }

    /// One tile with AVX-512 VNNI: MR rows × 64 columns, 4 k per step.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VNNI; `a` holds `job.rows` rows of `job.depth` bytes `lda`
    /// apart, `w` one packed 64-column tile of depth `job.depth`; the tile lies in `dst`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn vnni(job: &Tile, a: *const u8, lda: usize, w: *const i8) {
        // The row count is a constant in each instance, so the accumulators stay in registers.
        unsafe {
            match job.rows {
                6 => vnni_rows::<6>(job, a, lda, w),
                5 => vnni_rows::<5>(job, a, lda, w),
                4 => vnni_rows::<4>(job, a, lda, w),
                3 => vnni_rows::<3>(job, a, lda, w),
                2 => vnni_rows::<2>(job, a, lda, w),
                _ => vnni_rows::<1>(job, a, lda, w),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni_rows<const R: usize>(job: &Tile, a: *const u8, lda: usize, w: *const i8) {
        const { assert!(R <= MR) };
        let mut acc = [[_mm512_setzero_si512(); 4]; R];
        for g in 0..job.depth / 4 {
            // SAFETY: group g of the tile is 256 bytes at g·256; row r's group g is 4 bytes at
            // r·lda + 4g (caller).
            unsafe {
                let b = w.add(g * 256);
                let b = [
                    _mm512_loadu_si512(b.cast()),
                    _mm512_loadu_si512(b.add(64).cast()),
                    _mm512_loadu_si512(b.add(128).cast()),
                    _mm512_loadu_si512(b.add(192).cast()),
                ];
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x =
                        _mm512_set1_epi32(a.add(r * lda + 4 * g).cast::<i32>().read_unaligned());
                    for (acc, b) in acc.iter_mut().zip(b) {
                        *acc = _mm512_dpbusd_epi32(*acc, x, b);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let zero = _mm512_set1_epi32(job.row_zeros[r]);
            let row_scale = _mm512_set1_ps(job.row_scales[r]);
            for (j, acc) in acc.iter().enumerate() {
                let first = 16 * j;
                if first >= job.columns {
                    break;
                }
                let mask: __mmask16 = if job.columns - first >= 16 {
                    0xFFFF
                } else {
                    (1u16 << (job.columns - first)) - 1
                };
                // SAFETY: `scales`/`sums` are padded to the tile's 64 columns; the masked loads
                // and stores touch only the tile's columns of row r (caller).
                unsafe {
                    let sums = _mm512_loadu_si512(job.sums.as_ptr().add(first).cast());
                    let exact = _mm512_sub_epi32(*acc, _mm512_mullo_epi32(zero, sums));
                    let scale =
                        _mm512_mul_ps(_mm512_loadu_ps(job.scales.as_ptr().add(first)), row_scale);
                    let mut base = _mm512_maskz_loadu_ps(mask, job.bias.as_ptr().add(first));
                    if let Some(x) = job.residual {
                        let x = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(r * job.ld + first));
                        base = _mm512_add_ps(x, base);
                    }
                    let y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), scale, base);
                    _mm512_mask_storeu_ps(job.dst.add(r * job.ld + first), mask, y);
                }
            }
        }
    }

    /// One tile with AVX2: MR rows × 16 columns, 2 k per step, on int16 values.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `a` holds `job.rows` rows of `job.depth` int16 `lda` apart,
    /// `w` one packed 16-column tile of depth `job.depth`; the tile lies in `dst`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(job: &Tile, a: *const i16, lda: usize, w: *const i16) {
        unsafe {
            match job.rows {
                6 => avx2_rows::<6>(job, a, lda, w),
                5 => avx2_rows::<5>(job, a, lda, w),
                4 => avx2_rows::<4>(job, a, lda, w),
                3 => avx2_rows::<3>(job, a, lda, w),
                2 => avx2_rows::<2>(job, a, lda, w),
                _ => avx2_rows::<1>(job, a, lda, w),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_rows<const R: usize>(job: &Tile, a: *const i16, lda: usize, w: *const i16) {
        const { assert!(R <= MR) };
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        for g in 0..job.depth / 2 {
            // SAFETY: group g of the tile is 32 int16 at g·32; row r's group g is 2 int16 at
            // r·lda + 2g (caller).
            unsafe {
                let b = w.add(g * 32);
                let b = [
                    _mm256_loadu_si256(b.cast()),
                    _mm256_loadu_si256(b.add(16).cast()),
                ];
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x =
                        _mm256_set1_epi32(a.add(r * lda + 2 * g).cast::<i32>().read_unaligned());
                    for (acc, b) in acc.iter_mut().zip(b) {
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(x, b));
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let zero = _mm256_set1_epi32(job.row_zeros[r]);
            let row_scale = _mm256_set1_ps(job.row_scales[r]);
            for (j, acc) in acc.iter().enumerate() {
                let first = 8 * j;
                if first >= job.columns {
                    break;
                }
                // SAFETY: `scales`/`sums` are padded to the tile's columns; only the tile's
                // columns of row r are read from `bias`/`residual` and written (a partial
                // vector goes through buffers).
                unsafe {
                    let sums = _mm256_loadu_si256(job.sums.as_ptr().add(first).cast());
                    let exact = _mm256_sub_epi32(*acc, _mm256_mullo_epi32(zero, sums));
                    let scale =
                        _mm256_mul_ps(_mm256_loadu_ps(job.scales.as_ptr().add(first)), row_scale);
                    let count = (job.columns - first).min(8);
                    let load = |p: *const f32| {
                        if count == 8 {
                            _mm256_loadu_ps(p)
                        } else {
                            let mut buffer = [0f32; 8];
                            std::ptr::copy_nonoverlapping(p, buffer.as_mut_ptr(), count);
                            _mm256_loadu_ps(buffer.as_ptr())
                        }
                    };
                    let mut base = load(job.bias.as_ptr().add(first));
                    if let Some(x) = job.residual {
                        base = _mm256_add_ps(load(x.as_ptr().add(r * job.ld + first)), base);
                    }
                    let y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(exact), scale, base);
                    let d = job.dst.add(r * job.ld + first);
                    if count == 8 {
                        _mm256_storeu_ps(d, y);
                    } else {
                        let mut buffer = [0f32; 8];
                        _mm256_storeu_ps(buffer.as_mut_ptr(), y);
                        std::ptr::copy_nonoverlapping(buffer.as_ptr(), d, count);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: u32) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (x % 20_001) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    fn kernels() -> Vec<Isa> {
        [Isa::Avx512Vnni, Isa::Avx2, Isa::Scalar]
            .into_iter()
            .filter(|isa| isa.runs_here())
            .collect()
    }

    /// Sizes that exercise every remainder: rows not a multiple of 6, k not a multiple of 4,
    /// columns not a multiple of 16 or 64, and enough rows to split between threads.
    const SHAPES: [(usize, usize, usize); 4] =
        [(1, 7, 5), (13, 30, 70), (7, 384, 1152), (250, 64, 96)];

    /// Each kernel equals the f64 sum of the same quantized values, and all kernels agree
    /// bit for bit.
    #[test]
    fn kernels_compute_the_exact_quantized_product() {
        for (m, k, n) in SHAPES {
            let x = matrix(m, k, 1);
            // A GELU-like, mostly positive input in some rows.
            let x: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    if (i / k) % 3 == 0 {
                        v.max(-0.1) * 3.0
                    } else {
                        *v
                    }
                })
                .collect();
            let w = matrix(k, n, 2);
            let (bias, residual) = (matrix(1, n, 3), matrix(m, n, 6));
            let mut first: Option<Vec<f32>> = None;
            for isa in kernels() {
                let packed = PackedWeights::quantize(&w, k, n, isa);
                let mut q = QuantizedRows::new(isa);
                q.quantize(&x, m, k);
                let (xq, wq) = (q.dequantize(), packed.dequantize());
                let mut y = vec![f32::NAN; m * n];
                let base = Base {
                    bias: &bias[..n],
                    residual: Some(&residual),
                };
                matmul(&mut y, &q, &packed, base, &|row| row[0] += 1.0);
                for r in 0..m {
                    for c in 0..n {
                        let want: f64 = (residual[r * n + c] + bias[c]) as f64
                            + f64::from(u8::from(c == 0))
                            + (0..k)
                                .map(|i| xq[r * k + i] as f64 * wq[i * n + c] as f64)
                                .sum::<f64>();
                        let got = y[r * n + c] as f64;
                        assert!(
                            (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                            "{isa:?} {m}x{k}x{n} at ({r},{c}): {got} vs {want}"
                        );
                    }
                }
                match &first {
                    None => first = Some(y),
                    Some(f) => assert!(f == &y, "{isa:?} differs from the first kernel"),
                }
            }
        }
    }

    /// The integer dot product, exactly: every kernel's output equals, bit for bit, the epilogue
    /// applied to the int64 sum Σ (a − zero)·w of the codes it was given, for random inputs of
    /// awkward shapes (and the codes are the same for every kernel).
    #[test]
    fn kernels_compute_the_exact_integer_dot() {
        for (m, k, n) in SHAPES.into_iter().chain([(6, 1536, 384), (40, 384, 64)]) {
            let x: Vec<f32> = matrix(m, k, 7).iter().map(|v| v * 4.0 + 0.5).collect();
            let w = matrix(k, n, 8);
            let (bias, residual) = (matrix(1, n, 9), matrix(m, n, 10));
            let mut first_codes: Option<(Vec<i32>, Vec<i32>)> = None;
            for isa in kernels() {
                let packed = PackedWeights::quantize(&w, k, n, isa);
                let mut q = QuantizedRows::new(isa);
                q.quantize(&x, m, k);
                let (xq, wq) = (q.codes(), packed.codes());
                assert!(xq.iter().all(|v| (0..=255).contains(v)), "{isa:?}");
                assert!(wq.iter().all(|v| (-127..=127).contains(v)), "{isa:?}");
                for c in 0..n {
                    let sum: i32 = (0..k).map(|i| wq[i * n + c]).sum();
                    assert_eq!(packed.sums[c], sum, "{isa:?} column {c}");
                }
                match &first_codes {
                    None => first_codes = Some((xq.clone(), wq.clone())),
                    Some((fx, fw)) => {
                        assert!(fx == &xq && fw == &wq, "{isa:?}: other codes")
                    }
                }
                for with_residual in [false, true] {
                    let base = Base {
                        bias: &bias[..n],
                        residual: with_residual.then_some(&residual[..]),
                    };
                    let mut y = vec![f32::NAN; m * n];
                    matmul(&mut y, &q, &packed, base, &|_| {});
                    for r in 0..m {
                        for c in 0..n {
                            let exact: i64 = (0..k)
                                .map(|i| {
                                    i64::from(xq[r * k + i] - q.zeros[r]) * i64::from(wq[i * n + c])
                                })
                                .sum();
                            let add = if with_residual {
                                residual[r * n + c] + bias[c]
                            } else {
                                bias[c]
                            };
                            let want = (exact as f32).mul_add(packed.scales[c] * q.scales[r], add);
                            assert_eq!(
                                y[r * n + c].to_bits(),
                                want.to_bits(),
                                "{isa:?} {m}x{k}x{n} at ({r},{c}): {} vs {want}",
                                y[r * n + c]
                            );
                        }
                    }
                }
            }
        }
    }

    /// Against the f32 product: the quantization error stays at the size 8 bits allow.
    #[test]
    fn product_is_close_to_f32() {
        let (m, k, n) = (32, 384, 384);
        let x = matrix(m, k, 4);
        let w = matrix(k, n, 5);
        for isa in kernels() {
            let packed = PackedWeights::quantize(&w, k, n, isa);
            let mut q = QuantizedRows::new(isa);
            q.quantize(&x, m, k);
            let mut y = vec![0f32; m * n];
            let zeros = vec![0f32; n];
            let base = Base {
                bias: &zeros,
                residual: None,
            };
            matmul(&mut y, &q, &packed, base, &|_| {});
            let (mut err, mut norm) = (0f64, 0f64);
            for r in 0..m {
                for c in 0..n {
                    let want: f64 = (0..k)
                        .map(|i| x[r * k + i] as f64 * w[i * n + c] as f64)
                        .sum();
                    err += (y[r * n + c] as f64 - want).powi(2);
                    norm += want.powi(2);
                }
            }
            let relative = (err / norm).sqrt();
            assert!(relative < 0.01, "{isa:?}: relative error {relative}");
        }
    }

    #[test]
    fn rows_quantize_with_an_exact_zero() {
        let mut q = QuantizedRows::new(Isa::Scalar);
        let x = [
            -1.0, 0.0, 0.5, 3.0, 0.0, //
            0.0, 0.0, 0.0, 2.0, 2.0, //
            0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        q.quantize(&x, 3, 5);
        let back = q.dequantize();
        assert_eq!(back[1], 0.0);
        assert_eq!(back[4], 0.0);
        for (a, b) in back.iter().zip(&x) {
            assert!((a - b).abs() <= 4.0 / 255.0 / 2.0 + 1e-6, "{a} vs {b}");
        }
        // A row without negative values has zero point 0; a row of zeros, scale 0.
        assert_eq!(&back[5..8], &[0.0, 0.0, 0.0]);
        assert!((back[8] - 2.0).abs() < 1e-6);
        assert_eq!((q.scales[2], q.zeros[2]), (0.0, 0));
        assert_eq!(&back[10..], &[0.0; 5]);
    }
}
