//! The ensemble: a log-linear combination of the methods' calibrated log-probabilities,
//! `score(c) = Σ_m w_mc · log p_m(c) + b_c`, fitted by gradient descent on out-of-fold predictions.
//! A method may be trusted more for some categories than for others (the lexical model for
//! keyword-heavy ones, the neighbours for recurring complaints), so each weight is per class.

use super::calibrate::log_softmax;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stacker {
    /// `weights[m][c]`: trust in method m's log-probability for class c.
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

/// Keeps log-probabilities finite for classes a method gives no mass.
pub const LOG_FLOOR: f32 = -20.0;
const STEPS: usize = 400;
const LEARNING_RATE: f32 = 0.5;
const BIAS_L2: f32 = 1e-2;

impl Stacker {
    /// Mean weight of each method over the classes, for reports.
    pub fn method_weights(&self) -> Vec<f32> {
        self.weights
            .iter()
            .map(|w| w.iter().sum::<f32>() / w.len().max(1) as f32)
            .collect()
    }

    /// Equal trust in every method, no class bias.
    pub fn uniform(methods: usize, classes: usize) -> Self {
        Self {
            weights: vec![vec![1.0; classes]; methods],
            bias: vec![0.0; classes],
        }
    }

    /// `inputs[i][m]` is method m's log-probability vector for example i.
    pub fn fit(inputs: &[Vec<Vec<f32>>], gold: &[usize], classes: usize) -> Self {
        let methods = inputs.first().map_or(0, Vec::len);
        let mut s = Self::uniform(methods, classes);
        let n = inputs.len().max(1) as f32;
        // Adam keeps the steps sensible whatever the scale of the log-probabilities.
        let params = methods * classes + classes;
        let (mut m1, mut m2) = (vec![0f32; params], vec![0f32; params]);
        for step in 1..=STEPS {
            let mut grad = vec![0f32; params];
            for (x, &g) in inputs.iter().zip(gold) {
                let p: Vec<f32> = s.log_probs(x).into_iter().map(f32::exp).collect();
                for c in 0..classes {
                    let err = p[c] - if c == g { 1.0 } else { 0.0 };
                    for (m, lp) in x.iter().enumerate() {
                        grad[m * classes + c] += err * lp[c].max(LOG_FLOOR) / n;
                    }
                    grad[methods * classes + c] += err / n;
                }
            }
            for c in 0..classes {
                grad[methods * classes + c] += BIAS_L2 * s.bias[c];
            }
            for (k, gk) in grad.iter().enumerate() {
                m1[k] = 0.9 * m1[k] + 0.1 * gk;
                m2[k] = 0.999 * m2[k] + 0.001 * gk * gk;
                let m1h = m1[k] / (1.0 - 0.9f32.powi(step as i32));
                let m2h = m2[k] / (1.0 - 0.999f32.powi(step as i32));
                let delta = LEARNING_RATE / (step as f32).sqrt() * m1h / (m2h.sqrt() + 1e-8);
                if k < methods * classes {
                    // A method may be ignored, never trusted backwards.
                    let w = &mut s.weights[k / classes][k % classes];
                    *w = (*w - delta).max(0.0);
                } else {
                    s.bias[k - methods * classes] -= delta;
                }
            }
        }
        s
    }

    /// Combined log-probabilities over classes.
    pub fn log_probs(&self, inputs: &[Vec<f32>]) -> Vec<f32> {
        let classes = self.bias.len();
        let scores: Vec<f32> = (0..classes)
            .map(|c| {
                self.bias[c]
                    + inputs
                        .iter()
                        .zip(&self.weights)
                        .map(|(lp, w)| w[c] * lp[c].max(LOG_FLOOR))
                        .sum::<f32>()
            })
            .collect();
        log_softmax(&scores, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusts_the_informative_method() {
        // Method 0 is always right and confident, method 1 is noise.
        let mut inputs = Vec::new();
        let mut gold = Vec::new();
        for i in 0..200 {
            let g = i % 2;
            let good = if g == 0 {
                vec![-0.1, -2.4]
            } else {
                vec![-2.4, -0.1]
            };
            let noise = if (i / 3) % 2 == 0 {
                vec![-0.1, -2.4]
            } else {
                vec![-2.4, -0.1]
            };
            inputs.push(vec![good, noise]);
            gold.push(g);
        }
        let s = Stacker::fit(&inputs, &gold, 2);
        for c in 0..2 {
            assert!(s.weights[0][c] > 3.0 * s.weights[1][c], "{s:?}");
        }
        let p = s.log_probs(&inputs[0]);
        assert!(p[0].exp() > 0.9);
    }
}
