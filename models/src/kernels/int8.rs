//! int8 matrix products for the encoder's dense layers: `dst (m × n) = base + A (m × k) · W (k × n)`.
//! k is cut into blocks (a length per matrix, a multiple of 16: `bert.rs` uses 32 and 64). W is
//! quantized per block of each output column (symmetric int8, at load time) and A per block of
//! each row (u8 with a zero point, per call); a block's products are summed exactly in int32,
//! and the blocks' sums are added in f32, each times its two scales.
//!
//! Why blocks: with one scale per column and per row (the first version), every vector stayed
//! within cosine 0.9997 of f32's, yet recall@10 against f32-built stores was 0.963: the ten
//! nearest cases are often closer together than that error. One large value set the step for a
//! whole row or column; a scale per block follows the values. Shorter blocks are closer to f32,
//! longer ones faster (one f32 step per block; measured: README, "The int8 encoder").
//! Why ±120 for weights: the e5 weights came as q4_0 (a scale per block of 32, each value a
//! whole number of steps, the largest 8 steps). 120 = 8 × 15, so in blocks of 32 their int8
//! codes are exact; other weights lose 1/20 of a bit against ±127.
//! Why u8 with a zero point for activations: GELU outputs barely go below zero, so a symmetric
//! code would waste half of its values. The zero point comes out exactly:
//! Σ (a − z)·w = Σ a·w − z·Σ w, with Σ w per block and column computed at load time; all of
//! these are integers below 2²⁴, so the subtraction is exact in f32.
//!
//! Kernels, chosen at run time (one binary runs everywhere):
//! - AVX-512 VNNI: `vpdpbusd` multiplies 64 u8 × i8 pairs and adds them in fours to 16 int32
//!   lanes in one instruction, 4× the multiply-adds of an f32 FMA of the same width. A 3-row ×
//!   64-column tile keeps 12 int32 accumulators for the block and 12 f32 sums in registers; the
//!   weights are packed so that one tile's four vectors for four k are 256 consecutive bytes.
//! - AVX2: `vpmaddwd` on values widened to int16 (exact: `vpmaddubsw` would saturate its int16
//!   pair sums at 255·127·2), 3 rows × 16 columns.
//! - scalar loops otherwise (and as the tests' reference).
//!
//! All three compute the same integers and the same f32 operations in the same order, so they
//! give bit-identical results: a vector does not depend on the CPU that computed it.

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

/// Rows of one micro-tile (its f32 sums and int32 accumulators fill the registers).
const MR: usize = 3;
/// Columns are padded to a multiple of this (every tile width divides it).
const COLUMN_ALIGN: usize = 64;
/// What a block's length must be a multiple of (the quantizers' vectors, the kernels' groups).
const BLOCK_ALIGN: usize = 16;
/// The largest weight code (see the module's comment).
const WEIGHT_STEPS: f32 = 120.0;

/// A k × n weight matrix quantized per block of each column and packed for one kernel.
pub struct PackedWeights {
    isa: Isa,
    k: usize,
    n: usize,
    k_pad: usize,
    /// k values per scale.
    block: usize,
    /// int8 values (as i16 for AVX2), tile by tile: tile t holds columns t·tile.. for every
    /// group of k in turn; within a group, column-major with the group's k values adjacent.
    bytes: Vec<i8>,
    words: Vec<i16>,
    /// Tile by tile, block by block, one per column of the tile (zeros for padding): the
    /// scale, and the sum of the block's codes.
    scales: Vec<f32>,
    sums: Vec<f32>,
}

impl PackedWeights {
    /// `w` is k × n, row-major (input-major: row i holds input i's weight for every output),
    /// with a scale per `block` inputs of each column (a multiple of 16).
    pub fn quantize(w: &[f32], k: usize, n: usize, isa: Isa, block: usize) -> Self {
        assert_eq!(w.len(), k * n);
        assert!(
            block > 0 && block.is_multiple_of(BLOCK_ALIGN),
            "block {block}"
        );
        let (k_pad, n_pad) = (k.next_multiple_of(block), n.next_multiple_of(COLUMN_ALIGN));
        let blocks = k_pad / block;
        // Codes k_pad × n_pad, and per block and column its scale and code sum.
        let mut codes = vec![0i8; k_pad * n_pad];
        let (mut scales, mut sums) = (vec![0f32; blocks * n_pad], vec![0f32; blocks * n_pad]);
        for b in 0..blocks {
            let rows = b * block..((b + 1) * block).min(k);
            for c in 0..n {
                let max = rows.clone().fold(0f32, |m, i| m.max(w[i * n + c].abs()));
                if max == 0.0 {
                    continue;
                }
                let inverse = WEIGHT_STEPS / max;
                let mut sum = 0;
                for i in rows.clone() {
                    let q = (w[i * n + c] * inverse)
                        .round_ties_even()
                        .clamp(-WEIGHT_STEPS, WEIGHT_STEPS) as i8;
                    codes[i * n_pad + c] = q;
                    sum += i32::from(q);
                }
                scales[b * n_pad + c] = max / WEIGHT_STEPS;
                sums[b * n_pad + c] = sum as f32;
            }
        }
        let (tile, group) = (isa.tile(), isa.group());
        let mut packed = Vec::with_capacity(k_pad * n_pad);
        let (mut tile_scales, mut tile_sums) = (Vec::new(), Vec::new());
        for t in 0..n_pad / tile {
            for g in 0..k_pad / group {
                for c in t * tile..(t + 1) * tile {
                    for i in g * group..(g + 1) * group {
                        packed.push(codes[i * n_pad + c]);
                    }
                }
            }
            for b in 0..blocks {
                tile_scales.extend_from_slice(&scales[b * n_pad + t * tile..][..tile]);
                tile_sums.extend_from_slice(&sums[b * n_pad + t * tile..][..tile]);
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
            block,
            bytes,
            words,
            scales: tile_scales,
            sums: tile_sums,
        }
    }

    fn blocks(&self) -> usize {
        self.k_pad / self.block
    }

    /// k values per scale.
    pub fn block(&self) -> usize {
        self.block
    }

    /// Where column c's value for input i sits in `scales` and `sums`.
    #[cfg(test)]
    fn at(&self, i: usize, c: usize) -> usize {
        let tile = self.isa.tile();
        ((c / tile) * self.blocks() + i / self.block) * tile + c % tile
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
            .map(|(at, &q)| q as f32 * self.scales[self.at(at / n, at % n)])
            .collect()
    }
}

/// Rows of activations quantized for one kernel: u8 with a zero point and a scale per block of
/// each row (`x ≈ scale · (q − zero)`), each row padded with zeros to the packed depth. Kept
/// between calls so its buffers are reused.
pub struct QuantizedRows {
    isa: Isa,
    rows: usize,
    k: usize,
    stride: usize,
    block: usize,
    bytes: Vec<u8>,
    words: Vec<i16>,
    /// Row by row, one per block: the scale and the zero point (a whole number, as f32).
    scales: Vec<f32>,
    zeros: Vec<f32>,
}

impl QuantizedRows {
    pub fn new(isa: Isa) -> Self {
        Self {
            isa,
            rows: 0,
            k: 0,
            stride: 0,
            block: BLOCK_ALIGN,
            bytes: Vec::new(),
            words: Vec::new(),
            scales: Vec::new(),
            zeros: Vec::new(),
        }
    }

    /// Quantizes `x` (rows × k, row-major) with a scale per `block` values of each row (the
    /// weights' block: `PackedWeights::block`).
    pub fn quantize(&mut self, x: &[f32], rows: usize, k: usize, block: usize) {
        assert_eq!(x.len(), rows * k);
        assert!(
            block > 0 && block.is_multiple_of(BLOCK_ALIGN),
            "block {block}"
        );
        let stride = k.next_multiple_of(block);
        let blocks = stride / block;
        self.rows = rows;
        self.k = k;
        self.stride = stride;
        self.block = block;
        self.scales.resize(rows * blocks, 0.0);
        self.zeros.resize(rows * blocks, 0.0);
        let isa = self.isa;
        let parameters = self
            .scales
            .par_chunks_mut(blocks)
            .zip(self.zeros.par_chunks_mut(blocks));
        if isa.wide() {
            self.words.resize(rows * stride, 0);
            self.words
                .par_chunks_mut(stride)
                .zip(x.par_chunks(k))
                .zip(parameters)
                .with_min_len(32)
                .for_each(|((out, row), (scales, zeros))| {
                    quantize_row(row, out, scales, zeros, block, |values, out| {
                        // SAFETY: the wide layout is AVX2's, which this CPU runs (`Isa::detect`).
                        #[cfg(target_arch = "x86_64")]
                        if values.len() == block {
                            return unsafe { x86::quantize_block_avx2(values, out) };
                        }
                        quantize_block_scalar(values, out)
                    })
                });
        } else {
            self.bytes.resize(rows * stride, 0);
            self.bytes
                .par_chunks_mut(stride)
                .zip(x.par_chunks(k))
                .zip(parameters)
                .with_min_len(32)
                .for_each(|((out, row), (scales, zeros))| {
                    quantize_row(row, out, scales, zeros, block, |values, out| {
                        // SAFETY: the CPU runs AVX-512 (`Isa::detect`).
                        #[cfg(target_arch = "x86_64")]
                        if isa == Isa::Avx512Vnni && values.len() == block {
                            return unsafe { x86::quantize_block_avx512(values, out) };
                        }
                        quantize_block_scalar(values, out)
                    })
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

    /// Row r's scale and zero point for input i.
    #[cfg(test)]
    fn parameters(&self, r: usize, i: usize) -> (f32, f32) {
        let at = r * (self.stride / self.block) + i / self.block;
        (self.scales[at], self.zeros[at])
    }

    /// The rows as the kernels see them, `scale · (q − zero)`: for tests and error estimates.
    #[cfg(test)]
    pub fn dequantize(&self) -> Vec<f32> {
        let k = self.k;
        self.codes()
            .iter()
            .enumerate()
            .map(|(at, &q)| {
                let (scale, zero) = self.parameters(at / k, at % k);
                scale * (q as f32 - zero)
            })
            .collect()
    }
}

/// Quantizes one row block by block with `block_codes` (which writes a block's codes and
/// returns its scale and zero point), and zeroes the padding.
fn quantize_row<T: Copy + Default>(
    row: &[f32],
    out: &mut [T],
    scales: &mut [f32],
    zeros: &mut [f32],
    block: usize,
    block_codes: impl Fn(&[f32], &mut [T]) -> (f32, i32),
) {
    for (((values, out), scale), zero) in row
        .chunks(block)
        .zip(out.chunks_mut(block))
        .zip(scales.iter_mut())
        .zip(zeros.iter_mut())
    {
        let (s, z) = block_codes(values, out);
        (*scale, *zero) = (s, z as f32);
    }
    out[row.len()..].fill(T::default());
}

/// A block's scale, zero point and the factor that quantizes it, from its minimum and maximum:
/// the range, widened to hold 0 (so that zero is exact), over the 255 steps of a u8. Every
/// kernel computes a value as `round_half_even(x · inverse + zero)` (one fused multiply-add)
/// clamped to 0..=255, so all give the same codes.
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

/// One block's codes, for u8 (VNNI, scalar) or int16 (AVX2) storage.
fn quantize_block_scalar<T: From<u8>>(block: &[f32], out: &mut [T]) -> (f32, i32) {
    let (lo, hi) = super::min_max(block);
    let (scale, zero, inverse) = parameters(lo, hi);
    for (o, &x) in out.iter_mut().zip(block) {
        *o = T::from(
            x.mul_add(inverse, zero as f32)
                .round_ties_even()
                .clamp(0.0, 255.0) as u8,
        );
    }
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
    assert_eq!(
        a.block, w.block,
        "activations and weights quantized in other blocks"
    );
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
    const ROW_BLOCK: usize = 16 * MR;
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
    let (tile, n, blocks) = (w.isa.tile(), w.n, w.blocks());
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
                scales: &w.scales[t * blocks * tile..(t + 1) * blocks * tile],
                sums: &w.sums[t * blocks * tile..(t + 1) * blocks * tile],
                row_scales: &a.scales[r * blocks..(r + count) * blocks],
                row_zeros: &a.zeros[r * blocks..(r + count) * blocks],
                blocks,
                block: w.block,
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
    /// From the tile's first column on (unpadded).
    bias: &'a [f32],
    residual: Option<&'a [f32]>,
    /// The tile's weight scales and code sums, block by block, one per column of the tile.
    scales: &'a [f32],
    sums: &'a [f32],
    /// The tile's rows' scales and zero points, row by row, one per block.
    row_scales: &'a [f32],
    row_zeros: &'a [f32],
    blocks: usize,
    /// k values per block.
    block: usize,
}

impl Tile<'_> {
    /// What the sums start from: residual + bias.
    #[inline(always)]
    fn base(&self, r: usize, c: usize) -> f32 {
        match self.residual {
            Some(x) => x[r * self.ld + c] + self.bias[c],
            None => self.bias[c],
        }
    }

    /// One block's step, as every kernel computes it: the block's exact integer sum without
    /// the zero point (`acc − zero · Σw`, exact in f32), times both scales, added to `sum`.
    #[inline(always)]
    fn add_block(&self, sum: f32, acc: i32, r: usize, b: usize, j: usize) -> f32 {
        let (row, column) = (r * self.blocks + b, b * self.tile_width() + j);
        let exact = (-self.row_zeros[row]).mul_add(self.sums[column], acc as f32);
        exact.mul_add(self.row_scales[row] * self.scales[column], sum)
    }

    /// Columns per block in `scales` and `sums`.
    fn tile_width(&self) -> usize {
        self.scales.len() / self.blocks
    }
}

/// The reference kernel on the 4-deep packing.
fn scalar(job: &Tile, a: &[u8], lda: usize, w: &[i8]) {
    const TILE: usize = 64;
    for r in 0..job.rows {
        for c in 0..job.columns {
            let mut sum = job.base(r, c);
            for b in 0..job.blocks {
                let mut acc = 0i32;
                for g in b * job.block / 4..(b + 1) * job.block / 4 {
                    let x = &a[r * lda + 4 * g..][..4];
                    let y = &w[(g * TILE + c) * 4..][..4];
                    for (&x, &y) in x.iter().zip(y) {
                        acc += i32::from(x) * i32::from(y);
                    }
                }
                sum = job.add_block(sum, acc, r, b, c);
            }
            // SAFETY: (r, c) lies inside the output (see `block`).
            unsafe { *job.dst.add(r * job.ld + c) = sum };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{parameters, Tile};
    use std::arch::x86_64::*;

    /// `quantize_block_scalar` for one whole block with AVX-512, 16 values at a time
    /// (`vcvtps2dq` rounds half to even).
    ///
    /// # Safety
    /// The CPU has AVX-512 F; `block` is a multiple of 16 values long, `out` as long.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn quantize_block_avx512(block: &[f32], out: &mut [u8]) -> (f32, i32) {
        assert!(block.len().is_multiple_of(16) && out.len() >= block.len());
        let (mut lo, mut hi) = (
            _mm512_set1_ps(f32::INFINITY),
            _mm512_set1_ps(f32::NEG_INFINITY),
        );
        for i in (0..block.len()).step_by(16) {
            // SAFETY: a whole vector inside `block` (asserted above).
            let x = unsafe { _mm512_loadu_ps(block.as_ptr().add(i)) };
            (lo, hi) = (_mm512_min_ps(lo, x), _mm512_max_ps(hi, x));
        }
        let (scale, zero, inverse) = parameters(_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
        let (inverse, zero_f) = (_mm512_set1_ps(inverse), _mm512_set1_ps(zero as f32));
        let (floor, ceiling) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
        for i in (0..block.len()).step_by(16) {
            // SAFETY: as above; 16 bytes of `out` (asserted above).
            unsafe {
                let x = _mm512_loadu_ps(block.as_ptr().add(i));
                let v = _mm512_cvtps_epi32(_mm512_fmadd_ps(x, inverse, zero_f));
                let v = _mm512_min_epi32(_mm512_max_epi32(v, floor), ceiling);
                _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), _mm512_cvtepi32_epi8(v));
            }
        }
        (scale, zero)
    }

    /// `quantize_block_scalar` for one whole block with AVX2, into int16, 8 values at a time.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `block` is a multiple of 8 values long, `out` as long.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize_block_avx2(block: &[f32], out: &mut [i16]) -> (f32, i32) {
        assert!(block.len().is_multiple_of(8) && out.len() >= block.len());
        let (mut lo, mut hi) = (
            _mm256_set1_ps(f32::INFINITY),
            _mm256_set1_ps(f32::NEG_INFINITY),
        );
        for i in (0..block.len()).step_by(8) {
            // SAFETY: a whole vector inside `block` (asserted above).
            let x = unsafe { _mm256_loadu_ps(block.as_ptr().add(i)) };
            (lo, hi) = (_mm256_min_ps(lo, x), _mm256_max_ps(hi, x));
        }
        let (mut lows, mut highs) = ([0f32; 8], [0f32; 8]);
        // SAFETY: 8 floats each.
        unsafe {
            _mm256_storeu_ps(lows.as_mut_ptr(), lo);
            _mm256_storeu_ps(highs.as_mut_ptr(), hi);
        }
        let lo = lows.iter().fold(f32::INFINITY, |m, &x| m.min(x));
        let hi = highs.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let (scale, zero, inverse) = parameters(lo, hi);
        let (inverse, zero_f) = (_mm256_set1_ps(inverse), _mm256_set1_ps(zero as f32));
        let (floor, ceiling) = (_mm256_setzero_si256(), _mm256_set1_epi32(255));
        for i in (0..block.len()).step_by(8) {
            // SAFETY: as above; 8 int16 of `out` (asserted above).
            unsafe {
                let x = _mm256_loadu_ps(block.as_ptr().add(i));
                let v = _mm256_cvtps_epi32(_mm256_fmadd_ps(x, inverse, zero_f));
                let v = _mm256_min_epi32(_mm256_max_epi32(v, floor), ceiling);
                // int32 → int16 within each 128-bit half, then the halves' results together.
                let packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(v, v), 0b1000);
                _mm_storeu_si128(
                    out.as_mut_ptr().add(i).cast(),
                    _mm256_castsi256_si128(packed),
                );
            }
        }
        (scale, zero)
    }

    /// One tile with AVX-512 VNNI: up to 3 rows × 64 columns, 4 k per step.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VNNI; `a` holds `job.rows` rows of `job.blocks` blocks `lda`
    /// bytes apart, `w` one packed 64-column tile of that depth; the tile lies in `dst`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn vnni(job: &Tile, a: *const u8, lda: usize, w: *const i8) {
        // The row count is a constant in each instance, so the accumulators stay in registers.
        unsafe {
            match job.rows {
                3 => vnni_rows::<3>(job, a, lda, w),
                2 => vnni_rows::<2>(job, a, lda, w),
                _ => vnni_rows::<1>(job, a, lda, w),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni_rows<const R: usize>(job: &Tile, a: *const u8, lda: usize, w: *const i8) {
        const { assert!(R <= super::MR) };
        let masks: [__mmask16; 4] = std::array::from_fn(|j| {
            let left = job.columns.saturating_sub(16 * j).min(16);
            ((1u32 << left) - 1) as u16
        });
        let mut sum = [[_mm512_setzero_ps(); 4]; R];
        for (r, sum) in sum.iter_mut().enumerate() {
            for (j, sum) in sum.iter_mut().enumerate() {
                if masks[j] == 0 {
                    break;
                }
                // SAFETY: masked loads of the tile's columns of row r (caller).
                unsafe {
                    let mut base = _mm512_maskz_loadu_ps(masks[j], job.bias.as_ptr().add(16 * j));
                    if let Some(x) = job.residual {
                        let x =
                            _mm512_maskz_loadu_ps(masks[j], x.as_ptr().add(r * job.ld + 16 * j));
                        base = _mm512_add_ps(x, base);
                    }
                    *sum = base;
                }
            }
        }
        for b in 0..job.blocks {
            let mut acc = [[_mm512_setzero_si512(); 4]; R];
            for g in b * job.block / 4..(b + 1) * job.block / 4 {
                // SAFETY: group g of the tile is 256 bytes at g·256; row r's group g is 4 bytes
                // at r·lda + 4g (caller).
                unsafe {
                    let y = w.add(g * 256);
                    let y = [
                        _mm512_loadu_si512(y.cast()),
                        _mm512_loadu_si512(y.add(64).cast()),
                        _mm512_loadu_si512(y.add(128).cast()),
                        _mm512_loadu_si512(y.add(192).cast()),
                    ];
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_epi32(
                            a.add(r * lda + 4 * g).cast::<i32>().read_unaligned(),
                        );
                        for (acc, y) in acc.iter_mut().zip(y) {
                            *acc = _mm512_dpbusd_epi32(*acc, x, y);
                        }
                    }
                }
            }
            // `Tile::add_block`, 16 columns at a time.
            for r in 0..R {
                let at = r * job.blocks + b;
                let zero = _mm512_set1_ps(job.row_zeros[at]);
                let row_scale = _mm512_set1_ps(job.row_scales[at]);
                for j in 0..4 {
                    // SAFETY: the tile's scales and sums hold 64 per block.
                    unsafe {
                        let column = b * 64 + 16 * j;
                        let sums = _mm512_loadu_ps(job.sums.as_ptr().add(column));
                        let scales = _mm512_loadu_ps(job.scales.as_ptr().add(column));
                        let exact = _mm512_fnmadd_ps(zero, sums, _mm512_cvtepi32_ps(acc[r][j]));
                        sum[r][j] =
                            _mm512_fmadd_ps(exact, _mm512_mul_ps(row_scale, scales), sum[r][j]);
                    }
                }
            }
        }
        for (r, sum) in sum.iter().enumerate() {
            for (j, sum) in sum.iter().enumerate() {
                if masks[j] == 0 {
                    break;
                }
                // SAFETY: a masked store of the tile's columns of row r (caller).
                unsafe { _mm512_mask_storeu_ps(job.dst.add(r * job.ld + 16 * j), masks[j], *sum) };
            }
        }
    }

    /// One tile with AVX2: up to 3 rows × 16 columns, 2 k per step, on int16 values.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `a` holds `job.rows` rows of `job.blocks` blocks `lda` int16
    /// apart, `w` one packed 16-column tile of that depth; the tile lies in `dst`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(job: &Tile, a: *const i16, lda: usize, w: *const i16) {
        unsafe {
            match job.rows {
                3 => avx2_rows::<3>(job, a, lda, w),
                2 => avx2_rows::<2>(job, a, lda, w),
                _ => avx2_rows::<1>(job, a, lda, w),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_rows<const R: usize>(job: &Tile, a: *const i16, lda: usize, w: *const i16) {
        const { assert!(R <= super::MR) };
        // Partial vectors go through buffers (AVX2 has no masked f32 loads by lane count).
        let counts: [usize; 2] = std::array::from_fn(|j| job.columns.saturating_sub(8 * j).min(8));
        let load = |p: *const f32, count: usize| {
            let mut buffer = [0f32; 8];
            // SAFETY: `count` values at `p` lie in the tile's row (caller).
            unsafe {
                std::ptr::copy_nonoverlapping(p, buffer.as_mut_ptr(), count);
                _mm256_loadu_ps(buffer.as_ptr())
            }
        };
        let mut sum = [[_mm256_setzero_ps(); 2]; R];
        for (r, sum) in sum.iter_mut().enumerate() {
            for (j, sum) in sum.iter_mut().enumerate() {
                if counts[j] == 0 {
                    break;
                }
                // SAFETY: the tile's columns of row r (caller).
                let mut base = load(unsafe { job.bias.as_ptr().add(8 * j) }, counts[j]);
                if let Some(x) = job.residual {
                    let x = load(unsafe { x.as_ptr().add(r * job.ld + 8 * j) }, counts[j]);
                    base = _mm256_add_ps(x, base);
                }
                *sum = base;
            }
        }
        for b in 0..job.blocks {
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            for g in b * job.block / 2..(b + 1) * job.block / 2 {
                // SAFETY: group g of the tile is 32 int16 at g·32; row r's group g is 2 int16
                // at r·lda + 2g (caller).
                unsafe {
                    let y = w.add(g * 32);
                    let y = [
                        _mm256_loadu_si256(y.cast()),
                        _mm256_loadu_si256(y.add(16).cast()),
                    ];
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = _mm256_set1_epi32(
                            a.add(r * lda + 2 * g).cast::<i32>().read_unaligned(),
                        );
                        for (acc, y) in acc.iter_mut().zip(y) {
                            *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(x, y));
                        }
                    }
                }
            }
            // `Tile::add_block`, 8 columns at a time.
            for r in 0..R {
                let at = r * job.blocks + b;
                let zero = _mm256_set1_ps(job.row_zeros[at]);
                let row_scale = _mm256_set1_ps(job.row_scales[at]);
                for j in 0..2 {
                    // SAFETY: the tile's scales and sums hold 16 per block.
                    unsafe {
                        let column = b * 16 + 8 * j;
                        let sums = _mm256_loadu_ps(job.sums.as_ptr().add(column));
                        let scales = _mm256_loadu_ps(job.scales.as_ptr().add(column));
                        let exact = _mm256_fnmadd_ps(zero, sums, _mm256_cvtepi32_ps(acc[r][j]));
                        sum[r][j] =
                            _mm256_fmadd_ps(exact, _mm256_mul_ps(row_scale, scales), sum[r][j]);
                    }
                }
            }
        }
        for (r, sum) in sum.iter().enumerate() {
            for (j, sum) in sum.iter().enumerate() {
                if counts[j] == 0 {
                    break;
                }
                let mut buffer = [0f32; 8];
                // SAFETY: `counts[j]` values of the tile's row r (caller).
                unsafe {
                    _mm256_storeu_ps(buffer.as_mut_ptr(), *sum);
                    std::ptr::copy_nonoverlapping(
                        buffer.as_ptr(),
                        job.dst.add(r * job.ld + 8 * j),
                        counts[j],
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block lengths the encoder uses (see `bert.rs`).
    const BLOCKS: [usize; 2] = [32, 64];

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

    /// Sizes that exercise every remainder: rows not a multiple of 3, k not a multiple of the
    /// block, columns not a multiple of 16 or 64, and enough rows to split between threads.
    const SHAPES: [(usize, usize, usize); 5] = [
        (1, 7, 5),
        (13, 30, 70),
        (5, 100, 20),
        (7, 384, 1152),
        (250, 64, 96),
    ];

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
            let mut first: [Option<Vec<f32>>; 2] = [None, None];
            for (isa, block) in kernels().into_iter().flat_map(|i| BLOCKS.map(|b| (i, b))) {
                let packed = PackedWeights::quantize(&w, k, n, isa, block);
                let mut q = QuantizedRows::new(isa);
                q.quantize(&x, m, k, block);
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
                match &first[block / 32 - 1] {
                    None => first[block / 32 - 1] = Some(y),
                    Some(f) => assert!(f == &y, "{isa:?} differs from the first kernel"),
                }
            }
        }
    }

    /// The integer dot product, exactly: every kernel's output equals, bit for bit, the blocks'
    /// int64 sums Σ (a − zero)·w of the codes it was given, each scaled and added in f32 in
    /// block order onto residual + bias, for random inputs of awkward shapes (and the codes are
    /// the same for every kernel).
    #[test]
    fn kernels_compute_the_exact_integer_dot() {
        for (m, k, n) in SHAPES.into_iter().chain([(6, 1536, 384), (40, 384, 64)]) {
            let x: Vec<f32> = matrix(m, k, 7).iter().map(|v| v * 4.0 + 0.5).collect();
            let w = matrix(k, n, 8);
            let (bias, residual) = (matrix(1, n, 9), matrix(m, n, 10));
            let mut first_codes: [Option<(Vec<i32>, Vec<i32>)>; 2] = [None, None];
            for (isa, block) in kernels().into_iter().flat_map(|i| BLOCKS.map(|b| (i, b))) {
                let packed = PackedWeights::quantize(&w, k, n, isa, block);
                let mut q = QuantizedRows::new(isa);
                q.quantize(&x, m, k, block);
                let (xq, wq) = (q.codes(), packed.codes());
                assert!(xq.iter().all(|v| (0..=255).contains(v)), "{isa:?}");
                assert!(wq.iter().all(|v| (-120..=120).contains(v)), "{isa:?}");
                for c in 0..n {
                    for b in 0..k.div_ceil(block) {
                        let sum: i32 = (b * block..((b + 1) * block).min(k))
                            .map(|i| wq[i * n + c])
                            .sum();
                        let at = packed.at(b * block, c);
                        assert_eq!(packed.sums[at], sum as f32, "{isa:?} column {c}");
                    }
                }
                match &first_codes[block / 32 - 1] {
                    None => first_codes[block / 32 - 1] = Some((xq.clone(), wq.clone())),
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
                            let mut want = if with_residual {
                                residual[r * n + c] + bias[c]
                            } else {
                                bias[c]
                            };
                            for b in 0..k.div_ceil(block) {
                                let (scale, zero) = q.parameters(r, b * block);
                                let exact: i64 = (b * block..((b + 1) * block).min(k))
                                    .map(|i| {
                                        i64::from(xq[r * k + i] - zero as i32)
                                            * i64::from(wq[i * n + c])
                                    })
                                    .sum();
                                let weight_scale = packed.scales[packed.at(b * block, c)];
                                want = (exact as f32).mul_add(scale * weight_scale, want);
                            }
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

    /// Weights that came as q4_0 (whole steps of a scale per block of 32, the largest 8 steps)
    /// keep their values: the codes are 15 × the steps and scale · code gives the weight back.
    #[test]
    fn q4_blocks_are_stored_exactly() {
        const BLOCK: usize = 32;
        let (k, n) = (96, 70);
        let steps = matrix(k, n, 11);
        let mut w = vec![0f32; k * n];
        for c in 0..n {
            for b in 0..k / BLOCK {
                let scale = 0.001 + 0.01 * ((b * n + c) % 17) as f32;
                for i in b * BLOCK..(b + 1) * BLOCK {
                    // One value per block at −8 steps, the others in −8..=7.
                    let q = if i == b * BLOCK + c % BLOCK {
                        -8.0
                    } else {
                        ((steps[i * n + c] + 1.0) * 7.99).floor() - 8.0
                    };
                    w[i * n + c] = q * scale;
                }
            }
        }
        for isa in kernels() {
            let packed = PackedWeights::quantize(&w, k, n, isa, BLOCK);
            assert!(packed.codes().iter().all(|q| q % 15 == 0), "{isa:?}");
            for (got, want) in packed.dequantize().iter().zip(&w) {
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs(),
                    "{isa:?}: {got} vs {want}"
                );
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
            let packed = PackedWeights::quantize(&w, k, n, isa, 32);
            let mut q = QuantizedRows::new(isa);
            q.quantize(&x, m, k, 32);
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
        q.quantize(&x, 3, 5, 32);
        let back = q.dequantize();
        assert_eq!(back[1], 0.0);
        assert_eq!(back[4], 0.0);
        for (a, b) in back.iter().zip(&x) {
            assert!((a - b).abs() <= 4.0 / 255.0 / 2.0 + 1e-6, "{a} vs {b}");
        }
        // A row without negative values has zero point 0; a row of zeros, scale 0.
        assert_eq!(&back[5..8], &[0.0, 0.0, 0.0]);
        assert!((back[8] - 2.0).abs() < 1e-6);
        assert_eq!((q.scales[2], q.zeros[2]), (0.0, 0.0));
        assert_eq!(&back[10..], &[0.0; 5]);
    }
}
