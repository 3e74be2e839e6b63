//! Distinctive terms: character n-grams of a message's head, hashed, with document frequencies.
//!
//! Chinese has no spaces, and the names that make a hotspot specific (a compound, a road, a
//! school, a company, a lending platform) are mostly not in any dictionary. Character 3- and
//! 4-grams catch them without one: a 4-character name is one 4-gram and two 3-grams, a longer one
//! several overlapping grams. Whether a gram is *distinctive* is decided by how few messages
//! share it (its document frequency), not by a list of names.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A term: the 32-bit FNV-1a hash of a character n-gram. Collisions (about one pair in four
/// billion) only merge two terms' counts; nothing relies on a term being exact.
pub type Term = u32;

/// Hasher for keys that are already hashes: one multiplication spreads the bits for the table.
#[derive(Default, Clone, Copy)]
pub struct TermHasher(u64);

impl Hasher for TermHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x100000001b3);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type TermMap<V> = HashMap<Term, V, BuildHasherDefault<TermHasher>>;

/// The characters terms are taken from: title and body, lower-cased (`lower`; one character for
/// one, so positions agree either way), at most `max_chars`; every character that is not a letter
/// or digit (punctuation, spaces) breaks n-grams.
pub fn term_chars(title: Option<&str>, text: &str, max_chars: usize, lower: bool) -> Vec<char> {
    let mut out = Vec::with_capacity(max_chars.min(text.len() + 64));
    let title = title.map(str::trim).filter(|t| !t.is_empty());
    // A body that repeats its title adds nothing (Case::full_text skips it the same way).
    let body = match title {
        Some(t) if text.starts_with(t) => &text[t.len()..],
        _ => text,
    };
    for (i, part) in [title.unwrap_or(""), body].into_iter().enumerate() {
        if i == 1 && !out.is_empty() {
            out.push(' ');
        }
        for ch in part.chars() {
            if out.len() >= max_chars {
                return out;
            }
            out.push(if !ch.is_alphanumeric() {
                ' '
            } else if lower {
                let mut lowered = ch.to_lowercase();
                match (lowered.next(), lowered.next()) {
                    (Some(l), None) => l,
                    _ => ch,
                }
            } else {
                ch
            });
        }
    }
    out
}

fn hash_gram(chars: &[char]) -> Term {
    let mut h: u32 = 0x811c_9dc5;
    for &c in chars {
        for b in (c as u32).to_le_bytes() {
            h = (h ^ b as u32).wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// The distinct n-grams (lengths `min..=max`) of `chars` that contain no break, sorted.
pub fn ngrams(chars: &[char], min: usize, max: usize) -> Vec<Term> {
    let mut out = Vec::with_capacity(chars.len() * (max + 1 - min));
    for n in min..=max {
        for w in chars.windows(n) {
            if w.iter().all(|c| *c != ' ') {
                out.push(hash_gram(w));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Every n-gram of `chars` with its text, for naming a hotspot's place after the fact.
pub fn ngram_spans(chars: &[char], min: usize, max: usize) -> Vec<(Term, usize, usize)> {
    let mut out = Vec::new();
    for n in min..=max {
        for (start, w) in chars.windows(n).enumerate() {
            if w.iter().all(|c| *c != ' ') {
                out.push((hash_gram(w), start, start + n));
            }
        }
    }
    out
}

/// Document frequencies of terms, counted as messages arrive.
#[derive(Debug, Default, Clone)]
pub struct DocFreq {
    counts: TermMap<u32>,
    docs: u32,
}

impl DocFreq {
    pub fn add(&mut self, terms: &[Term]) {
        self.docs += 1;
        for t in terms {
            *self.counts.entry(*t).or_insert(0) += 1;
        }
    }

    pub fn get(&self, term: Term) -> u32 {
        self.counts.get(&term).copied().unwrap_or(0)
    }

    pub fn docs(&self) -> u32 {
        self.docs
    }

    /// Inverse document frequency, `ln(N / df)` (0 for a term in every message).
    pub fn idf(&self, term: Term) -> f32 {
        idf(self.get(term), self.docs)
    }
}

/// `ln(N / df)`, with `df` at least 1.
pub fn idf(df: u32, docs: u32) -> f32 {
    ((docs.max(1) as f32) / (df.max(1) as f32)).ln().max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grams_break_at_punctuation_and_dedup() {
        let chars = term_chars(Some("丽发新城"), "丽发新城，搅拌站", 100, true);
        let grams = ngrams(&chars, 3, 4);
        // 丽发新城 twice (title, body) counts once; nothing spans the comma.
        let title_only = ngrams(&term_chars(Some("丽发新城"), "", 100, true), 3, 4);
        assert!(title_only.iter().all(|t| grams.contains(t)));
        assert_eq!(grams.len(), 3 + 1); // 丽发新, 发新城, 丽发新城, 搅拌站
    }

    #[test]
    fn head_is_capped_and_lower_cased() {
        let chars = term_chars(None, "ABCdef", 4, true);
        assert_eq!(chars, vec!['a', 'b', 'c', 'd']);
    }
}
