//! Matrix × vector for Q8_0 weights on x86-64: the products of one decode step.
//!
//! candle 0.11 multiplies a single row by Q8_0 weights either with its generic kernel (AVX2
//! without VNNI: 18 GMAC/s here) or, when the input width is a multiple of 256, with weights
//! repacked into a second copy; Gemma 3 270M's width is 640 and its vocabulary projection alone
//! is 178 MB of Q8_0 read at every token. This reads the GGUF's Q8_0 blocks where they are and
//! does what llama.cpp does: quantize the input to Q8_0 (int8 per 32 values, f16 scale) and sum
//! int8 products per block, with AVX-512 VNNI where the CPU has it.

use half::f16;

const BLOCK: usize = 32;
/// A Q8_0 block: f16 scale, then 32 int8 values.
const BLOCK_BYTES: usize = 34;

/// Q8_0 rows as GGUF stores them; each row is `stride` blocks, of which the first `blocks` are
/// used (the rest being zero padding).
pub(crate) struct Q8Rows<'a> {
    pub bytes: &'a [u8],
    pub blocks: usize,
    pub stride: usize,
}

/// Whether `gemv` runs on this CPU.
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

/// The input quantized like llama.cpp's `quantize_row_q8_0`: per 32 values, the scale
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

/// `y = W x`, one output per row of `rows`; `x.len()` is `rows.blocks * 32`. Rows are split
/// between `threads` threads of rayon's pool (each output is computed by one thread, so the
/// result does not depend on the split).
pub(crate) fn gemv(rows: &Q8Rows, x: &[f32], y: &mut [f32], threads: usize) {
    assert!(supported(), "q8_0::gemv needs AVX2, FMA and F16C");
    assert_eq!(x.len(), rows.blocks * BLOCK);
    assert!(rows.bytes.len() >= y.len() * rows.stride * BLOCK_BYTES);
    let input = quantize(x);
    let row_bytes = rows.stride * BLOCK_BYTES;
    let run = |first: usize, out: &mut [f32]| {
        let bytes = &rows.bytes[first * row_bytes..(first + out.len()) * row_bytes];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU features were checked above; `bytes` holds `out.len()` rows of
        // `stride` blocks and the input `blocks` blocks (asserted).
        unsafe {
            if vnni() {
                x86::rows_vnni(bytes, row_bytes, rows.blocks, &input, out)
            } else {
                x86::rows_avx2(bytes, row_bytes, rows.blocks, &input, out)
            }
        }
    };
    if threads <= 1 || y.len() < 512 {
        run(0, y);
        return;
    }
    // A few chunks per thread, so a thread that the OS delays holds up little.
    use rayon::prelude::*;
    let chunk = y.len().div_ceil(threads * 4).next_multiple_of(8);
    y.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, out)| run(i * chunk, out));
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Quantized, BLOCK, BLOCK_BYTES};
    use std::arch::x86_64::*;

    /// One kernel per instruction set: the loop over rows and blocks is the same, the int8
    /// dot product of a block differs (`$dot`: 32 int8 pairs into 8 int32 lanes). One row at a
    /// time, so the weights stream through memory in order (interleaving 2-8 rows ran 4x slower
    /// on the test machine's AMD EPYC), even and odd blocks in two accumulators so that
    /// consecutive multiply-adds do not wait for each other.
    macro_rules! rows_kernel {
        ($name:ident, $features:literal, $dot:ident) => {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                bytes: &[u8],
                row_bytes: usize,
                blocks: usize,
                input: &Quantized,
                out: &mut [f32],
            ) {
                assert!(bytes.len() >= out.len() * row_bytes && row_bytes >= blocks * BLOCK_BYTES);
                assert!(input.values.len() >= blocks * BLOCK && input.scales.len() >= blocks);
                let values = input.values.as_ptr();
                for (r, y) in out.iter_mut().enumerate() {
                    let mut acc = [_mm256_setzero_ps(); 2];
                    for b in 0..blocks {
                        // SAFETY: row r and block b lie inside `bytes`, input block b inside
                        // `input` (asserted above); the loads are unaligned.
                        let (w, a, scale) = unsafe {
                            let block = bytes.as_ptr().add(r * row_bytes + b * BLOCK_BYTES);
                            let scale = half::f16::from_bits(block.cast::<u16>().read_unaligned());
                            (
                                _mm256_loadu_si256(block.add(2).cast()),
                                _mm256_loadu_si256(values.add(b * BLOCK).cast()),
                                scale.to_f32() * *input.scales.get_unchecked(b),
                            )
                        };
                        // |w| times a with w's sign: an unsigned × signed product, as the
                        // instructions want, with the same value as w × a.
                        let sums = $dot(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
                        let acc = &mut acc[b % 2];
                        *acc =
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(scale), *acc);
                    }
                    // Horizontal sum of the 16 lanes.
                    let acc = _mm256_add_ps(acc[0], acc[1]);
                    let half =
                        _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
                    let half = _mm_add_ps(half, _mm_movehl_ps(half, half));
                    *y = _mm_cvtss_f32(_mm_add_ss(half, _mm_movehdup_ps(half)));
                }
            }
        };
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

    rows_kernel!(rows_avx2, "avx2,fma,f16c", dot_avx2);
    rows_kernel!(rows_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", dot_vnni);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q8_0 bytes of rows of `blocks` blocks with the given int8 values and per-block scales,
    /// each row followed by `pad` zero blocks.
    fn encode(values: &[i8], scales: &[f32], blocks: usize, pad: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (b, (chunk, scale)) in values.chunks(BLOCK).zip(scales).enumerate() {
            out.extend_from_slice(&f16::from_f32(*scale).to_le_bytes());
            out.extend(chunk.iter().map(|v| *v as u8));
            if (b + 1) % blocks == 0 {
                out.resize(out.len() + pad * BLOCK_BYTES, 0);
            }
        }
        out
    }

    /// Every kernel this CPU runs, and `gemv` on one and two threads, against the same sum in
    /// f64 over the quantized input (the kernels' only rounding is their f32 accumulation).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn matches_the_exact_product() {
        assert!(supported(), "x86-64-v3 builds need AVX2, FMA and F16C");
        // 600 rows (enough to split between threads) of 2 blocks, values spanning the int8
        // range, with one padding block per row.
        let (n, blocks) = (600, 2);
        let values: Vec<i8> = (0..n * blocks * BLOCK)
            .map(|i| ((i * 37 % 255) as i32 - 127) as i8)
            .collect();
        let scales: Vec<f32> = (0..n * blocks)
            .map(|i| [0.5, 0.25, 0.125, 2.0][i % 4])
            .collect();
        let bytes = encode(&values, &scales, blocks, 1);
        let x: Vec<f32> = (0..blocks * BLOCK)
            .map(|i| ((i as f32) * 0.37).sin() * 3.0)
            .collect();
        let rows = Q8Rows {
            bytes: &bytes,
            blocks,
            stride: blocks + 1,
        };
        let input = quantize(&x);
        let expected: Vec<f64> = (0..n)
            .map(|r| {
                (0..blocks)
                    .map(|b| {
                        let d = f64::from(scales[r * blocks + b]) * f64::from(input.scales[b]);
                        let dot: i64 = (0..BLOCK)
                            .map(|j| {
                                i64::from(values[(r * blocks + b) * BLOCK + j])
                                    * i64::from(input.values[b * BLOCK + j])
                            })
                            .sum();
                        d * dot as f64
                    })
                    .sum()
            })
            .collect();
        let check = |what: &str, y: &[f32]| {
            for (r, (got, want)) in y.iter().zip(&expected).enumerate() {
                let close = (f64::from(*got) - want).abs() < 1e-4 * want.abs().max(1.0);
                assert!(close, "{what}, row {r}: {got} vs {want}");
            }
        };
        let row_bytes = rows.stride * BLOCK_BYTES;
        let mut y = vec![0.0; n];
        // SAFETY: supported() checked; `bytes` holds n rows of `stride` blocks.
        unsafe { x86::rows_avx2(&bytes, row_bytes, blocks, &input, &mut y) };
        check("AVX2", &y);
        if vnni() {
            // SAFETY: as above, and the CPU has AVX-512 VNNI.
            unsafe { x86::rows_vnni(&bytes, row_bytes, blocks, &input, &mut y) };
            check("VNNI", &y);
        }
        for threads in [1, 2] {
            gemv(&rows, &x, &mut y, threads);
            check(&format!("gemv on {threads} threads"), &y);
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
