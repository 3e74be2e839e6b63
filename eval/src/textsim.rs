//! Text-overlap metrics for generated text (work-order titles, reply drafts) against a human
//! reference, on characters: Chinese has no spaces, so word-level ROUGE would need a segmenter
//! and would then measure the segmenter too.
//!
//! Both ignore whitespace and keep punctuation. Both are 0..1 (1 = identical).

/// Characters compared: everything but whitespace.
fn chars(text: &str) -> Vec<char> {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Length of the longest common subsequence of two character sequences (O(n·m) time, O(m) space).
fn lcs(a: &[char], b: &[char]) -> usize {
    if a.is_empty() || b.is_empty() {
        return 0;
    }
    let mut row = vec![0usize; b.len() + 1];
    for &x in a {
        let mut diagonal = 0; // row[j-1] of the previous row
        for (j, &y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// ROUGE-L F1 on characters: LCS / |candidate| (precision), LCS / |reference| (recall), their
/// harmonic mean. 0 when either side is empty.
pub fn rouge_l_chars(candidate: &str, reference: &str) -> f64 {
    let (c, r) = (chars(candidate), chars(reference));
    let l = lcs(&c, &r) as f64;
    if l == 0.0 {
        return 0.0;
    }
    let (p, rec) = (l / c.len() as f64, l / r.len() as f64);
    2.0 * p * rec / (p + rec)
}

/// chrF (Popović 2015) as sacrebleu 2 computes it for one sentence: character n-grams of orders
/// 1..=6 (whitespace removed), per order precision and recall, F-beta with β = 2 (recall weighs
/// more), averaged over the orders that both texts are long enough to have.
pub fn chrf(candidate: &str, reference: &str) -> f64 {
    const MAX_ORDER: usize = 6;
    const BETA_SQ: f64 = 4.0;
    let (c, r) = (chars(candidate), chars(reference));
    let mut total = 0.0;
    let mut effective = 0;
    for n in 1..=MAX_ORDER {
        let (hyp, refs) = (ngrams(&c, n), ngrams(&r, n));
        let (n_hyp, n_ref) = (hyp.values().sum::<usize>(), refs.values().sum::<usize>());
        if n_hyp == 0 || n_ref == 0 {
            continue;
        }
        effective += 1;
        let matched: usize = hyp
            .iter()
            .map(|(g, &k)| k.min(refs.get(g).copied().unwrap_or(0)))
            .sum();
        let (p, rec) = (matched as f64 / n_hyp as f64, matched as f64 / n_ref as f64);
        let denominator = BETA_SQ * p + rec;
        if denominator > 0.0 {
            total += (1.0 + BETA_SQ) * p * rec / denominator;
        }
    }
    if effective == 0 {
        0.0
    } else {
        total / effective as f64
    }
}

fn ngrams(chars: &[char], n: usize) -> std::collections::HashMap<&[char], usize> {
    let mut out = std::collections::HashMap::new();
    if chars.len() >= n {
        for gram in chars.windows(n) {
            *out.entry(gram).or_insert(0) += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn rouge_l_by_hand() {
        assert!(close(rouge_l_chars("路灯坏了", "路灯坏了"), 1.0));
        assert!(close(rouge_l_chars("", "路灯"), 0.0));
        assert!(close(rouge_l_chars("噪音", "路灯"), 0.0));
        // LCS("A3区路灯不亮", "路灯坏了") = 路灯 (2): P = 2/7, R = 2/4, F = 4/11.
        assert!(close(rouge_l_chars("A3区路灯不亮", "路灯坏了"), 4.0 / 11.0));
        // A subsequence, not a substring: LCS("路x灯y坏", "路灯坏") = 3: P = 3/5, R = 1.
        assert!(close(rouge_l_chars("路x灯y坏", "路灯坏"), 0.75));
        // Whitespace is ignored, punctuation is not.
        assert!(close(rouge_l_chars("路 灯", "路灯"), 1.0));
        assert!(rouge_l_chars("路灯？", "路灯") < 1.0);
    }

    #[test]
    fn chrf_by_hand() {
        assert!(close(chrf("路灯坏了", "路灯坏了"), 1.0));
        assert!(close(chrf("噪音", "路灯"), 0.0));
        assert!(close(chrf("", "路灯"), 0.0));
        // "ab" vs "abc": order 1 P=1 R=2/3, order 2 P=1 R=1/2, order 3 has no hypothesis gram.
        let f = |p: f64, r: f64| 5.0 * p * r / (4.0 * p + r);
        let expected = (f(1.0, 2.0 / 3.0) + f(1.0, 0.5)) / 2.0;
        assert!(close(chrf("ab", "abc"), expected), "{}", chrf("ab", "abc"));
        // Recall weighs more than precision (β = 2).
        assert!(chrf("ab", "abcd") < chrf("abcdxy", "abcd"));
    }
}
