//! One-vs-rest linear SVM (L2-regularised, squared hinge loss) trained by dual coordinate
//! descent, the algorithm of LIBLINEAR (Hsieh et al., 2008). Fast on sparse text features.

use super::sparse::{dot, SparseVec};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Weights of one binary classifier per class, plus a bias per class.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinearOvr {
    pub dim: usize,
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

impl LinearOvr {
    /// Trains on `xs` with class indices `ys` in `0..classes`. `c` is the usual SVM cost.
    pub fn train(
        xs: &[SparseVec],
        ys: &[usize],
        classes: usize,
        dim: usize,
        c: f32,
        seed: u64,
    ) -> Self {
        let trained: Vec<(Vec<f32>, f32)> = (0..classes)
            .into_par_iter()
            .map(|class| {
                let y: Vec<f32> = ys
                    .iter()
                    .map(|&l| if l == class { 1.0 } else { -1.0 })
                    .collect();
                train_binary(xs, &y, dim, c, seed + class as u64)
            })
            .collect();
        let (weights, bias) = trained.into_iter().unzip();
        Self { dim, weights, bias }
    }

    /// Trains on the `rows` of `xs` (gold classes in `gold`). Only classes present in these rows
    /// get a model; the others score `UNKNOWN_CLASS_SCORE` in `margins`.
    pub fn fit_rows(
        xs: &[SparseVec],
        gold: &[usize],
        rows: &[usize],
        (classes, dim): (usize, usize),
        c: f32,
        seed: u64,
    ) -> Self {
        let x: Vec<SparseVec> = rows.iter().map(|&i| xs[i].clone()).collect();
        let y: Vec<usize> = rows.iter().map(|&i| gold[i]).collect();
        let mut model = Self::train(&x, &y, classes, dim, c, seed);
        for class in 0..classes {
            if !y.contains(&class) {
                model.weights[class] = Vec::new();
            }
        }
        model
    }

    /// The decision value of every class for one input (`UNKNOWN_CLASS_SCORE` for a class the
    /// model never saw).
    pub fn margins(&self, x: &SparseVec) -> Vec<f32> {
        self.weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| {
                if w.is_empty() {
                    UNKNOWN_CLASS_SCORE
                } else {
                    dot(w, x) + b
                }
            })
            .collect()
    }
}

/// Raw score of a class a method knows nothing about.
pub const UNKNOWN_CLASS_SCORE: f32 = -1e4;

/// Bias is learned as the weight of a constant feature of value `BIAS_FEATURE`, as LIBLINEAR does.
const BIAS_FEATURE: f32 = 1.0;
const MAX_EPOCHS: usize = 50;
const TOLERANCE: f32 = 0.05;

fn train_binary(xs: &[SparseVec], y: &[f32], dim: usize, c: f32, seed: u64) -> (Vec<f32>, f32) {
    let n = xs.len();
    let diag = 0.5 / c; // squared hinge: D_ii = 1 / (2C)
    let q: Vec<f32> = xs
        .iter()
        .map(|x| x.iter().map(|(_, v)| v * v).sum::<f32>() + BIAS_FEATURE * BIAS_FEATURE + diag)
        .collect();
    let mut w = vec![0f32; dim];
    let mut b = 0f32;
    let mut alpha = vec![0f32; n];
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..MAX_EPOCHS {
        order.shuffle(&mut rng);
        let (mut pg_max, mut pg_min) = (f32::NEG_INFINITY, f32::INFINITY);
        for &i in &order {
            let g = y[i] * (dot(&w, &xs[i]) + b * BIAS_FEATURE) - 1.0 + diag * alpha[i];
            let pg = if alpha[i] == 0.0 { g.min(0.0) } else { g };
            pg_max = pg_max.max(pg);
            pg_min = pg_min.min(pg);
            if pg.abs() > 1e-12 {
                let old = alpha[i];
                alpha[i] = (old - g / q[i]).max(0.0);
                let step = (alpha[i] - old) * y[i];
                for &(j, v) in &xs[i] {
                    w[j as usize] += step * v;
                }
                b += step * BIAS_FEATURE;
            }
        }
        if pg_max - pg_min < TOLERANCE {
            break;
        }
    }
    (w, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_three_classes() {
        // Class k lives on feature k, with a shared noise feature 3.
        let xs: Vec<SparseVec> = (0..30)
            .map(|i| vec![((i % 3) as u32, 1.0), (3, 0.5)])
            .collect();
        let ys: Vec<usize> = (0..30).map(|i| i % 3).collect();
        let model = LinearOvr::train(&xs, &ys, 3, 4, 1.0, 7);
        for (x, &y) in xs.iter().zip(&ys) {
            let m = model.margins(x);
            let best = (0..3).max_by(|&a, &b| m[a].total_cmp(&m[b])).unwrap();
            assert_eq!(best, y);
            assert!(
                m[y] > 0.5,
                "margin of the true class should be clearly positive: {m:?}"
            );
        }
    }
}
