//! Vector arithmetic shared by the classifier and the models (`triage-models` re-exports it in its
//! kernels): one dot product for the whole workspace.

/// Lanes of the partial sums: wide enough for the compiler to keep them in vector registers
/// (float sums are not reassociated otherwise).
const LANES: usize = 16;

/// Sum of products in 16 independent lanes, so the compiler vectorises it.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    for (a, b) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for i in 0..LANES {
            lanes[i] += a[i] * b[i];
        }
    }
    let tail: f32 = a
        .chunks_exact(LANES)
        .remainder()
        .iter()
        .zip(b.chunks_exact(LANES).remainder())
        .map(|(a, b)| a * b)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_a_plain_sum() {
        // 37 values: the 16-lane loop and its remainder both run.
        let a: Vec<f32> = (0..37).map(|i| i as f32 / 7.0 - 2.0).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 / 11.0).collect();
        let want: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        assert!((f64::from(dot(&a, &b)) - want).abs() < 1e-5);
        assert_eq!(dot(&[], &[]), 0.0);
    }
}
