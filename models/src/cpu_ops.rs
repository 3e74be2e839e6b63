//! Element-wise and attention arithmetic of the Gemma 3 forward pass on plain slices, where
//! candle's ops cost more than the arithmetic: its GELU calls the C library's `tanh` per
//! element (7% of a decode step), and attention for one new token as two batched matmuls set
//! up a thread pool and read the CPU count from /proc for a few thousand multiply-adds.
//! Loops are written so the compiler vectorizes them (independent lanes, no branches).

/// `e^x` for x in [-87, 88] (clamped), relative error below 2e-7: `2^n e^r` with
/// `n = round(x / ln 2)` and Cephes' polynomial for `e^r`, |r| <= ln 2 / 2.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    // ln 2 in two parts, so that r keeps its precision.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// GELU with the tanh approximation (Gemma's `gelu_pytorch_tanh`), times `up`:
/// `0.5 x (1 + tanh(u)) = x / (1 + e^(-2u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`.
pub(crate) fn gelu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for ((o, &x), &u) in out.iter_mut().zip(gate).zip(up) {
        let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
        *o = x / (1.0 + exp(-2.0 * inner)) * u;
    }
}

/// Sum of products in 16 independent lanes (the order the compiler may vectorize).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    for (a, b) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        for i in 0..16 {
            lanes[i] += a[i] * b[i];
        }
    }
    let tail: f32 = a
        .chunks_exact(16)
        .remainder()
        .iter()
        .zip(b.chunks_exact(16).remainder())
        .map(|(a, b)| a * b)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// Attention of one query position over `keys` cached positions, every key visible.
/// `q`: heads × head_dim; `k`, `v`: key/value head `g`, position `t` at
/// `offset + g * head_stride + t * head_dim` (head_dim contiguous); `groups` query heads share
/// a key/value head. Writes heads × head_dim to `out`.
pub(crate) struct OneQuery<'a> {
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

pub(crate) fn attend_one(a: &OneQuery, out: &mut [f32]) {
    let hd = a.head_dim;
    let mut weights = vec![0f32; a.keys];
    for (h, (q, out)) in
        a.q.chunks_exact(hd)
            .zip(out.chunks_exact_mut(hd))
            .enumerate()
    {
        let g = h / a.groups;
        let key = |t: usize| &a.k[a.k_offset + g * a.head_stride + t * hd..][..hd];
        let value = |t: usize| &a.v[a.v_offset + g * a.head_stride + t * hd..][..hd];
        for (t, w) in weights.iter_mut().enumerate() {
            *w = dot(q, key(t)) * a.scale;
        }
        let max = weights.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for w in weights.iter_mut() {
            *w = exp(*w - max);
            sum += *w;
        }
        out.fill(0.0);
        for (t, w) in weights.iter().enumerate() {
            let p = w / sum;
            for (o, v) in out.iter_mut().zip(value(t)) {
                *o += p * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        for i in -8700..8800 {
            let x = i as f32 / 100.0;
            let (ours, std) = (exp(x), x.exp());
            assert!(
                ((ours - std) / std).abs() < 3e-7,
                "exp({x}): {ours} vs {std}"
            );
        }
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
