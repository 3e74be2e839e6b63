//! Products with Q8_0 weights on x86-64, for one input row (decode) or many (prompt blocks).
//!
//! This reads the GGUF's Q8_0 blocks where they are (no padded or repacked copy) and does what
//! llama.cpp does: quantize each input row to Q8_0 (int8 per 32 values, f16 scale) and sum
//! int8 products per block, with AVX-512 VNNI where the CPU has it.
//!
//! Every output `y[i][r]` is computed by the same operations whatever the number of input rows
//! and however the work is split between threads: a row of a prompt block gets the same bits
//! as the same row run alone. Several input rows share each load of a weight block (a block of
//! 4 rows reads the weights once instead of 4 times), which is what makes prompts faster than
//! decode per token. The threads are `pool`'s: the caller never waits for a worker that has
//! not started.

use half::f16;

const BLOCK: usize = 32;
/// A Q8_0 block: f16 scale, then 32 int8 values.
const BLOCK_BYTES: usize = 34;
/// Input rows that share one pass over the weights.
const TILE: usize = 4;
/// Weight rows per unit of work handed to a thread (about 11 KB at width 640: stays in L1
/// while the input tiles go by).
const ROWS_PER_UNIT: usize = 16;

/// Q8_0 rows as GGUF stores them: `blocks` blocks per row.
pub(crate) struct Q8Rows<'a> {
    pub bytes: &'a [u8],
    pub blocks: usize,
}

/// Whether `matmul` runs on this CPU.
pub(crate) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
fn vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

/// Input rows quantized like llama.cpp's `quantize_row_q8_0`: per 32 values, the scale
/// `max|x| / 127` (rounded to f16) and the values divided by it, rounded half to even.
struct Quantized {
    scales: Vec<f32>,
    values: Vec<i8>,
}

fn quantize(x: &[f32]) -> Quantized {
    let mut scales = Vec::with_capacity(x.len() / BLOCK);
    let mut values = Vec::with_capacity(x.len());
    for block in x.chunks_exact(BLOCK) {
        let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let inverse = if max == 0.0 { 0.0 } else { 127.0 / max };
        scales.push(f16::from_f32(max / 127.0).to_f32());
        values.extend(block.iter().map(|v| (v * inverse).round_ties_even() as i8));
    }
    Quantized { scales, values }
}

/// `y = x Wᵀ`: `x` is `m` rows of `rows.blocks * 32` values, `y` is `m` rows of `n` outputs
/// (one per weight row). Work is split between candle's threads by weight rows.
pub(crate) fn matmul(rows: &Q8Rows, x: &[f32], y: &mut [f32], n: usize) {
    assert!(supported(), "q8_0::matmul needs AVX2, FMA and F16C");
    let width = rows.blocks * BLOCK;
    assert!(width > 0 && x.len().is_multiple_of(width));
    let m = x.len() / width;
    assert_eq!(y.len(), m * n);
    assert!(rows.bytes.len() >= n * rows.blocks * BLOCK_BYTES);
    let input = quantize(x);
    let row_bytes = rows.blocks * BLOCK_BYTES;
    let out = SharedOut(y.as_mut_ptr());
    let run = |units: std::ops::Range<usize>| {
        let first = units.start * ROWS_PER_UNIT;
        let last = (units.end * ROWS_PER_UNIT).min(n);
        for i in (0..m).step_by(TILE) {
            let inputs = (m - i).min(TILE);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU features were checked above; the weight rows first..last and the
            // input rows i..i+inputs lie inside `rows` and `input` (asserted); each (row, output)
            // pair is written by the one thread that holds its unit.
            unsafe {
                let tile = x86::Tile {
                    values: input.values.as_ptr().add(i * width),
                    scales: input.scales.as_ptr().add(i * rows.blocks),
                    inputs,
                    blocks: rows.blocks,
                };
                for r in first..last {
                    let weights = rows.bytes.as_ptr().add(r * row_bytes);
                    let mut sums = [0f32; TILE];
                    if vnni() {
                        x86::row_vnni(weights, &tile, &mut sums)
                    } else {
                        x86::row_avx2(weights, &tile, &mut sums)
                    }
                    for (j, s) in sums[..inputs].iter().enumerate() {
                        out.at((i + j) * n + r).write(*s);
                    }
                }
            }
        }
    };
    let units = n.div_ceil(ROWS_PER_UNIT);
    crate::pool::for_each_chunk(units, chunk(units), &run);
}

/// Rows of a tile: one AVX-512 vector of int32 or f32 lanes.
const TILE_ROWS: usize = 16;
/// A tile block: 16 rows' f16 scales, then their 32 values each as `w + 128` (u8), in 8 groups
/// of 4 values by row: `[group][row][4]`, so one 64-byte load holds 4 values of all 16 rows.
const TILE_BYTES: usize = TILE_ROWS * 2 + TILE_ROWS * BLOCK;

/// Q8_0 weights ready for `Q8Matrix::matmul`: `n` rows of `k` values.
///
/// With AVX-512 VNNI and `n` a multiple of 16 the rows are stored in tiles of 16 (the GGUF's
/// bytes rearranged, the same size, no second copy): `vpdpbusd` then multiplies 4 values of 16
/// rows by 4 input values in one instruction and sums each row's block in an int32 lane, 13
/// instructions per 16 × 32 multiply-adds instead of about 6 per 32 in the row kernel. Every
/// output is computed the same way whatever the number of input rows (one decode token or a
/// prompt block): per block, the exact integer dot product, then `acc = fma(dot, dw·dx, acc)`
/// in block order. Without VNNI the rows stay as the file has them (`matmul` above).
pub(crate) struct Q8Matrix {
    n: usize,
    k: usize,
    tiled: bool,
    bytes: Vec<u8>,
}

impl Q8Matrix {
    /// An empty matrix of `k` values per row; `push` adds rows in Q8_0 bytes.
    pub fn builder(k: usize, rows: usize) -> Q8Builder {
        assert!(k.is_multiple_of(BLOCK));
        let tiled = tiles_supported() && rows.is_multiple_of(TILE_ROWS);
        Q8Builder {
            matrix: Q8Matrix {
                n: 0,
                k,
                tiled,
                bytes: Vec::with_capacity(rows * k / BLOCK * BLOCK_BYTES),
            },
            pending: Vec::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn width(&self) -> usize {
        self.k
    }

    /// `y = x Wᵀ` for `m` input rows of `k` values (`y`: `m` rows of `n`).
    pub fn matmul(&self, x: &[f32], y: &mut [f32]) {
        if !self.tiled {
            let rows = Q8Rows {
                bytes: &self.bytes,
                blocks: self.k / BLOCK,
            };
            return matmul(&rows, x, y, self.n);
        }
        #[cfg(target_arch = "x86_64")]
        {
            let blocks = self.k / BLOCK;
            assert!(x.len().is_multiple_of(self.k));
            let m = x.len() / self.k;
            assert_eq!(y.len(), m * self.n);
            let input = quantize(x);
            let sums: Vec<i32> = input
                .values
                .chunks_exact(BLOCK)
                .map(|b| b.iter().map(|&v| i32::from(v)).sum())
                .collect();
            let out = SharedOut(y.as_mut_ptr());
            let n = self.n;
            let run = |tiles: std::ops::Range<usize>| {
                for t in tiles {
                    for i in (0..m).step_by(TILE) {
                        // SAFETY: tiles_supported() held when the matrix was built; tile t and
                        // input rows i..i+TILE (or fewer) lie inside `bytes` and `input`; tile
                        // t's outputs are written by the one thread holding it.
                        unsafe {
                            x86::tile_vnni(
                                self.bytes.as_ptr().add(t * blocks * TILE_BYTES),
                                &x86::Inputs {
                                    values: input.values.as_ptr().add(i * self.k),
                                    scales: input.scales.as_ptr().add(i * blocks),
                                    sums: sums.as_ptr().add(i * blocks),
                                    rows: (m - i).min(TILE),
                                    blocks,
                                },
                                out.at(i * n + t * TILE_ROWS),
                                n,
                            )
                        }
                    }
                }
            };
            let tiles = n / TILE_ROWS;
            crate::pool::for_each_chunk(tiles, chunk(tiles), &run);
        }
    }

    /// Row `r` dequantized (an embedding lookup).
    pub fn row(&self, r: usize, out: &mut [f32]) {
        let blocks = self.k / BLOCK;
        assert!(r < self.n && out.len() == self.k);
        for (b, out) in out.chunks_exact_mut(BLOCK).enumerate() {
            if self.tiled {
                let tile = &self.bytes[(r / TILE_ROWS * blocks + b) * TILE_BYTES..][..TILE_BYTES];
                let lane = r % TILE_ROWS;
                let d = f16::from_le_bytes([tile[2 * lane], tile[2 * lane + 1]]).to_f32();
                for (j, o) in out.iter_mut().enumerate() {
                    let byte = tile[TILE_ROWS * 2 + (j / 4 * TILE_ROWS + lane) * 4 + j % 4];
                    *o = d * (i32::from(byte) - 128) as f32;
                }
            } else {
                let block = &self.bytes[(r * blocks + b) * BLOCK_BYTES..][..BLOCK_BYTES];
                let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
                for (o, &q) in out.iter_mut().zip(&block[2..]) {
                    *o = d * f32::from(q as i8);
                }
            }
        }
    }
}

/// Builds a `Q8Matrix` from rows of Q8_0 bytes, tiling 16 rows at a time as they come.
pub(crate) struct Q8Builder {
    matrix: Q8Matrix,
    pending: Vec<u8>,
}

impl Q8Builder {
    /// Appends whole rows of Q8_0 bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        let row_bytes = self.matrix.k / BLOCK * BLOCK_BYTES;
        assert!(bytes.len().is_multiple_of(row_bytes));
        if !self.matrix.tiled {
            self.matrix.bytes.extend_from_slice(bytes);
            self.matrix.n += bytes.len() / row_bytes;
            return;
        }
        self.pending.extend_from_slice(bytes);
        let group = TILE_ROWS * row_bytes;
        let whole = self.pending.len() / group * group;
        for rows in self.pending[..whole].chunks_exact(group) {
            tile_rows(rows, self.matrix.k / BLOCK, &mut self.matrix.bytes);
            self.matrix.n += TILE_ROWS;
        }
        self.pending.drain(..whole);
    }

    pub fn finish(self) -> Q8Matrix {
        assert!(self.pending.is_empty(), "rows left over from the last tile");
        self.matrix
    }
}

/// 16 rows of `blocks` Q8_0 blocks as tiles, appended to `out`.
fn tile_rows(rows: &[u8], blocks: usize, out: &mut Vec<u8>) {
    let row_bytes = blocks * BLOCK_BYTES;
    for b in 0..blocks {
        let block = |r: usize| &rows[r * row_bytes + b * BLOCK_BYTES..][..BLOCK_BYTES];
        for r in 0..TILE_ROWS {
            out.extend_from_slice(&block(r)[..2]);
        }
        for g in 0..BLOCK / 4 {
            for r in 0..TILE_ROWS {
                out.extend(block(r)[2 + 4 * g..][..4].iter().map(|&q| q ^ 0x80));
            }
        }
    }
}

/// The kernel `Q8Matrix` uses on this CPU.
pub(crate) fn kernel_name() -> &'static str {
    if tiles_supported() {
        "AVX-512 VNNI tiles of 16 rows"
    } else if supported() {
        "AVX2 rows"
    } else {
        "candle"
    }
}

/// Whether the tiled kernel runs on this CPU.
fn tiles_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        vnni() && supported() && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Units of work per chunk a thread claims: about 8 chunks per thread, so a thread that the OS
/// holds up leaves little for the others to wait on.
fn chunk(units: usize) -> usize {
    units.div_ceil(crate::pool::threads() * 8).max(1)
}

/// The output, written by several threads at disjoint places.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

impl SharedOut {
    /// SAFETY: `i` is inside the output.
    unsafe fn at(self, i: usize) -> *mut f32 {
        // SAFETY: as the caller promises.
        unsafe { self.0.add(i) }
    }
}
// SAFETY: threads write disjoint elements (one weight row each) and the caller waits for all.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, BLOCK_BYTES, TILE};
    use std::arch::x86_64::*;

    /// Up to `TILE` quantized input rows of `blocks` blocks each, one after another.
    pub(super) struct Tile {
        pub values: *const i8,
        pub scales: *const f32,
        pub inputs: usize,
        pub blocks: usize,
    }

    /// One weight row against the tile's input rows. Per (row, input) the operations are the
    /// same whatever the tile holds: even and odd blocks in two accumulators (consecutive
    /// multiply-adds then do not wait for each other), their sum reduced the same way.
    macro_rules! row_kernel {
        ($name:ident, $features:literal, $dot:ident) => {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(weights: *const u8, tile: &Tile, sums: &mut [f32; TILE]) {
                // SAFETY: as the caller promises (see `inner`).
                unsafe {
                    match tile.inputs {
                        1 => inner::<1>(weights, tile, sums),
                        2 => inner::<2>(weights, tile, sums),
                        3 => inner::<3>(weights, tile, sums),
                        _ => inner::<4>(weights, tile, sums),
                    }
                }

                #[inline]
                #[target_feature(enable = $features)]
                unsafe fn inner<const N: usize>(
                    weights: *const u8,
                    tile: &Tile,
                    sums: &mut [f32; TILE],
                ) {
                    // SAFETY (whole body): the caller guarantees `blocks` weight blocks at
                    // `weights` and `inputs` rows of `blocks` blocks at `values`/`scales`.
                    unsafe {
                        let width = tile.blocks * BLOCK;
                        let mut acc = [[_mm256_setzero_ps(); 2]; N];
                        for b in 0..tile.blocks {
                            let block = weights.add(b * BLOCK_BYTES);
                            let scale = half::f16::from_bits(block.cast::<u16>().read_unaligned());
                            let scale = scale.to_f32();
                            let w = _mm256_loadu_si256(block.add(2).cast());
                            let magnitude = _mm256_sign_epi8(w, w);
                            for (j, acc) in acc.iter_mut().enumerate() {
                                let a = _mm256_loadu_si256(
                                    tile.values.add(j * width + b * BLOCK).cast(),
                                );
                                let d = scale * *tile.scales.add(j * tile.blocks + b);
                                // |w| times a with w's sign: an unsigned × signed product, as the
                                // instructions want, with the same value as w × a.
                                let dot = $dot(magnitude, _mm256_sign_epi8(a, w));
                                let acc = &mut acc[b % 2];
                                *acc = _mm256_fmadd_ps(
                                    _mm256_cvtepi32_ps(dot),
                                    _mm256_set1_ps(d),
                                    *acc,
                                );
                            }
                        }
                        for (sum, acc) in sums.iter_mut().zip(&acc) {
                            // Horizontal sum of the 16 lanes.
                            let acc = _mm256_add_ps(acc[0], acc[1]);
                            let half = _mm_add_ps(
                                _mm256_castps256_ps128(acc),
                                _mm256_extractf128_ps(acc, 1),
                            );
                            let half = _mm_add_ps(half, _mm_movehl_ps(half, half));
                            *sum = _mm_cvtss_f32(_mm_add_ss(half, _mm_movehdup_ps(half)));
                        }
                    }
                }
            }
        };
    }

    /// Up to `TILE` quantized input rows for `tile_vnni`, with each block's sum of values.
    pub(super) struct Inputs {
        pub values: *const i8,
        pub scales: *const f32,
        pub sums: *const i32,
        pub rows: usize,
        pub blocks: usize,
    }

    /// One tile (16 weight rows, all blocks) against the input rows: writes 16 outputs per
    /// input row at `out + row * stride`. Per (weight row, input row), lane by lane: the int32
    /// sum of (w + 128)·x over the block's 32 values, less 128·Σx (exact), converted to f32 and
    /// added as `fma(dot, dw·dx, acc)`, blocks in order. The same for any number of rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
    pub(super) unsafe fn tile_vnni(tile: *const u8, x: &Inputs, out: *mut f32, stride: usize) {
        // SAFETY (whole body): the caller guarantees `blocks` tile blocks at `tile`, `rows`
        // input rows of `blocks` blocks and 16 outputs per input row at `out`.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); TILE];
            let width = x.blocks * BLOCK;
            for b in 0..x.blocks {
                let block = tile.add(b * super::TILE_BYTES);
                let dw = _mm512_cvtph_ps(_mm256_loadu_si256(block.cast()));
                let quants = block.add(super::TILE_ROWS * 2);
                let w: [__m512i; 8] =
                    std::array::from_fn(|g| _mm512_loadu_si512(quants.add(g * 64).cast()));
                for (j, acc) in acc.iter_mut().enumerate().take(x.rows) {
                    let a = x.values.add(j * width + b * BLOCK).cast::<i32>();
                    let mut dot = _mm512_setzero_si512();
                    for (g, w) in w.iter().enumerate() {
                        dot = _mm512_dpbusd_epi32(
                            dot,
                            *w,
                            _mm512_set1_epi32(a.add(g).read_unaligned()),
                        );
                    }
                    let at = j * x.blocks + b;
                    let dot = _mm512_sub_epi32(dot, _mm512_set1_epi32(128 * *x.sums.add(at)));
                    let d = _mm512_mul_ps(dw, _mm512_set1_ps(*x.scales.add(at)));
                    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), d, *acc);
                }
            }
            for (j, acc) in acc.iter().enumerate().take(x.rows) {
                _mm512_storeu_ps(out.add(j * stride), *acc);
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn dot_avx2(unsigned: __m256i, signed: __m256i) -> __m256i {
        // Pairs of products into int16 (at most 2 × 128 × 127: no saturation), then into int32.
        _mm256_madd_epi16(_mm256_maddubs_epi16(unsigned, signed), _mm256_set1_epi16(1))
    }

    #[inline]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn dot_vnni(unsigned: __m256i, signed: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), unsigned, signed)
    }

    row_kernel!(row_avx2, "avx2,fma,f16c", dot_avx2);
    row_kernel!(row_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", dot_vnni);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q8_0 bytes of rows of `blocks` blocks with the given int8 values and per-block scales.
    fn encode(values: &[i8], scales: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for (chunk, scale) in values.chunks(BLOCK).zip(scales) {
            out.extend_from_slice(&f16::from_f32(*scale).to_le_bytes());
            out.extend(chunk.iter().map(|v| *v as u8));
        }
        out
    }

    /// 600 weight rows (more than one unit, so the threads split them) of 2 blocks, values
    /// spanning the int8 range, and `m` input rows.
    fn case(m: usize) -> (Vec<i8>, Vec<f32>, Vec<u8>, Vec<f32>) {
        let (n, blocks) = (600, 2);
        let values: Vec<i8> = (0..n * blocks * BLOCK)
            .map(|i| ((i * 37 % 255) as i32 - 127) as i8)
            .collect();
        let scales: Vec<f32> = (0..n * blocks)
            .map(|i| [0.5, 0.25, 0.125, 2.0][i % 4])
            .collect();
        let bytes = encode(&values, &scales);
        let x: Vec<f32> = (0..m * blocks * BLOCK)
            .map(|i| ((i as f32) * 0.37).sin() * 3.0 + (i / 64) as f32 * 0.1)
            .collect();
        (values, scales, bytes, x)
    }

    /// `matmul` for 1 to 9 input rows (full tiles and remainders) against the same sum in f64
    /// over the quantized input: the kernels' only rounding is their f32 accumulation.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn matches_the_exact_product() {
        assert!(supported(), "x86-64-v3 builds need AVX2, FMA and F16C");
        let (n, blocks) = (600, 2);
        for m in [1, 3, 4, 5, 9] {
            let (values, scales, bytes, x) = case(m);
            let input = quantize(&x);
            let mut y = vec![0f32; m * n];
            matmul(
                &Q8Rows {
                    bytes: &bytes,
                    blocks,
                },
                &x,
                &mut y,
                n,
            );
            for i in 0..m {
                for r in 0..n {
                    // Each block's term in f64; the kernels round only their f32 sums, so the
                    // error is bounded by the size of the terms (not of their sum).
                    let terms: Vec<f64> = (0..blocks)
                        .map(|b| {
                            let d = f64::from(scales[r * blocks + b])
                                * f64::from(input.scales[i * blocks + b]);
                            let dot: i64 = (0..BLOCK)
                                .map(|j| {
                                    i64::from(values[(r * blocks + b) * BLOCK + j])
                                        * i64::from(input.values[(i * blocks + b) * BLOCK + j])
                                })
                                .sum();
                            d * dot as f64
                        })
                        .collect();
                    let want: f64 = terms.iter().sum();
                    let size: f64 = terms.iter().map(|t| t.abs()).sum();
                    let got = f64::from(y[i * n + r]);
                    let close = (got - want).abs() < 1e-5 * size.max(1.0);
                    assert!(close, "{m} rows, input {i}, row {r}: {got} vs {want}");
                }
            }
        }
    }

    /// A row's outputs do not depend on the rows computed with it (prompt blocks of any size
    /// give the bits of a single-row decode step), nor on the instruction set.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_row_gets_the_same_bits_alone_or_in_a_block() {
        let (n, blocks, m) = (600, 2, 7);
        let (_, _, bytes, x) = case(m);
        let rows = Q8Rows {
            bytes: &bytes,
            blocks,
        };
        let mut together = vec![0f32; m * n];
        matmul(&rows, &x, &mut together, n);
        for (i, row) in x.chunks_exact(blocks * BLOCK).enumerate() {
            let mut alone = vec![0f32; n];
            matmul(&rows, row, &mut alone, n);
            assert_eq!(alone, together[i * n..(i + 1) * n], "input row {i}");
        }
        if vnni() {
            let input = quantize(&x);
            let tile = x86::Tile {
                values: input.values.as_ptr(),
                scales: input.scales.as_ptr(),
                inputs: TILE,
                blocks,
            };
            for r in 0..n {
                let (mut a, mut b) = ([0f32; TILE], [0f32; TILE]);
                // SAFETY: the CPU has AVX-512 VNNI (and AVX2, asserted by supported() in
                // matmul above); row r and TILE input rows lie inside `bytes` and `input`.
                unsafe {
                    let weights = bytes.as_ptr().add(r * blocks * BLOCK_BYTES);
                    x86::row_avx2(weights, &tile, &mut a);
                    x86::row_vnni(weights, &tile, &mut b);
                }
                assert_eq!(a, b, "row {r}: AVX2 and VNNI differ");
            }
        }
    }

    /// `Q8Matrix` (tiled where the CPU has AVX-512 VNNI) against the straightforward
    /// definition, bit for bit: per block the exact integer dot product, then
    /// `fma(dot, dw·dx, acc)` in block order. Any number of input rows (full tiles and
    /// remainders) gives each row the bits it gets alone; `row` dequantizes what was stored.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn tiled_matrix_matches_the_definition_bit_for_bit() {
        let (n, blocks) = (600 - 600 % TILE_ROWS, 2);
        let k = blocks * BLOCK;
        let (values, scales, _, x) = case(9);
        let values = &values[..n * k];
        let bytes = encode(values, &scales[..n * blocks]);
        let mut builder = Q8Matrix::builder(k, n);
        // In uneven pieces, as the loader reads them.
        let row_bytes = blocks * BLOCK_BYTES;
        builder.push(&bytes[..7 * row_bytes]);
        builder.push(&bytes[7 * row_bytes..]);
        let matrix = builder.finish();
        assert_eq!(matrix.tiled, tiles_supported());
        for m in [1, 3, 4, 5, 9] {
            let x = &x[..m * k];
            let input = quantize(x);
            let mut y = vec![0f32; m * n];
            matrix.matmul(x, &mut y);
            if matrix.tiled {
                for i in 0..m {
                    for r in 0..n {
                        let mut acc = 0f32;
                        for b in 0..blocks {
                            let dot: i32 = (0..BLOCK)
                                .map(|j| {
                                    i32::from(values[(r * blocks + b) * BLOCK + j])
                                        * i32::from(input.values[(i * blocks + b) * BLOCK + j])
                                })
                                .sum();
                            let dw = f16::from_f32(scales[r * blocks + b]).to_f32();
                            acc = (dot as f32).mul_add(dw * input.scales[i * blocks + b], acc);
                        }
                        assert_eq!(y[i * n + r].to_bits(), acc.to_bits(), "{m} rows: {i}, {r}");
                    }
                }
            }
            for (i, row) in x.chunks_exact(k).enumerate() {
                let mut alone = vec![0f32; n];
                matrix.matmul(row, &mut alone);
                assert_eq!(alone, y[i * n..(i + 1) * n], "{m} rows: input row {i}");
            }
        }
        let mut row = vec![0f32; k];
        for r in [0, 17, n - 1] {
            matrix.row(r, &mut row);
            for (j, got) in row.iter().enumerate() {
                let want = f16::from_f32(scales[r * blocks + j / BLOCK]).to_f32()
                    * f32::from(values[r * k + j]);
                assert_eq!(*got, want, "row {r}, value {j}");
            }
        }
    }

    #[test]
    fn quantizes_like_llama_cpp() {
        // max |x| = 2.54: scale 0.02, values x / 0.02 rounded half to even.
        let mut x = vec![0.0f32; BLOCK];
        x[..4].copy_from_slice(&[2.54, -1.27, 0.01, 0.03]);
        let q = quantize(&x);
        assert_eq!(q.scales, vec![f16::from_f32(0.02).to_f32()]);
        assert_eq!(&q.values[..4], &[127, -64, 0, 2]);
        assert_eq!(quantize(&[0.0; BLOCK]).values, vec![0; BLOCK]);
    }
}
