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
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type TermMap<V> = HashMap<Term, V, BuildHasherDefault<TermHasher>>;

/// A variant key (see `variant_keys`).
pub type VariantKey = u64;

pub type VariantMap<V> = HashMap<VariantKey, V, BuildHasherDefault<TermHasher>>;

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

/// Each n-gram (lengths `min..=max`, no break) with its *variant keys*: for every interior
/// position (not the first or last character) that holds a number or an identifier (a digit, a
/// Latin letter, a Chinese numeral), the hash of the gram with that character left out. Two
/// different grams with a key in common are the same name with another number: "东六线以" and
/// "东四线以", "市一中学" and "市二中学", "a6栋" and "a7栋" — numbered places are different places.
/// Any other one-character difference is left alone: it is as often a spelling variant of one
/// place (金麓/金路, 中茂城/中贸城) or another word ("高铁线路"/"高铁铁路") as another place, and
/// a difference at the edge of a gram is a different context ("区丽发新"/"是丽发新"). Sorted, distinct.
pub fn variant_keys(chars: &[char], min: usize, max: usize) -> Vec<(VariantKey, Term)> {
    let mut out = Vec::new();
    for n in min.max(3)..=max {
        for w in chars.windows(n) {
            if w.contains(&' ') {
                continue;
            }
            let term = hash_gram(w);
            for k in (1..n - 1).filter(|&k| is_number_like(w[k])) {
                // 64-bit FNV-1a of (length, position, the other characters): a collision would
                // pair two unrelated terms, so the key is wider than a term's hash.
                let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ ((n as u64) << 8 | k as u64);
                for (i, &c) in w.iter().enumerate() {
                    let c = if i == k { 0 } else { c as u32 };
                    for b in c.to_le_bytes() {
                        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
                    }
                }
                out.push((h, term));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// A character that numbers or labels a place: a digit, a Latin letter, a Chinese numeral.
pub fn is_number_like(c: char) -> bool {
    c.is_ascii_alphanumeric() || c.is_numeric() || "〇零一二两三四五六七八九十".contains(c)
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

/// Which messages contain each term, in time order: how many messages of a time range contain a
/// term (`count`). Messages are added in time order (an untimed one takes the time of the one
/// before); each is a rank into `times`, so a posting costs 4 bytes.
#[derive(Debug, Default, Clone)]
pub struct TermTimeline {
    times: Vec<i64>,
    postings: TermMap<Vec<u32>>,
}

impl TermTimeline {
    /// An empty timeline with room for the terms of `df` whose frequency passes `keep` (their
    /// lists sized exactly; only those terms may be added).
    pub fn with_capacity(df: &DocFreq, keep: impl Fn(u32) -> bool) -> Self {
        let mut postings = TermMap::default();
        for (&t, &n) in &df.counts {
            if keep(n) {
                postings.insert(t, Vec::with_capacity(n as usize));
            }
        }
        Self {
            times: Vec::with_capacity(df.docs as usize),
            postings,
        }
    }

    /// Adds the next message (times must not decrease; a smaller one is taken as the last).
    pub fn add(&mut self, time: i64, terms: &[Term]) {
        let time = self.times.last().map_or(time, |&last| time.max(last));
        let rank = self.times.len() as u32;
        self.times.push(time);
        for &t in terms {
            self.postings.entry(t).or_default().push(rank);
        }
    }

    /// Messages with a time in `from..=to` that contain `t`.
    pub fn count(&self, t: Term, from: i64, to: i64) -> u32 {
        let Some(list) = self.postings.get(&t) else {
            return 0;
        };
        let lo = self.times.partition_point(|&x| x < from) as u32;
        let hi = self.times.partition_point(|&x| x <= to) as u32;
        (list.partition_point(|&r| r < hi) - list.partition_point(|&r| r < lo)) as u32
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
    fn variant_keys_pair_interior_substitutions_only() {
        let keys = |s: &str| variant_keys(&s.chars().collect::<Vec<_>>(), 3, 4);
        let shared = |a: &str, b: &str| {
            let kb = keys(b);
            keys(a)
                .into_iter()
                .filter(|(k, t)| kb.iter().any(|(k2, t2)| k2 == k && t2 != t))
                .count()
        };
        // 六/四 inside the gram: one key in common per gram around it.
        assert!(shared("东六线以西", "东四线以西") > 0);
        assert!(shared("a6栋楼", "a7栋楼") > 0);
        // A different first character (a different context, not a different name): none.
        assert_eq!(shared("区丽发新城", "是丽发新城"), 0);
        // A spelling variant or another word in the middle: none.
        assert_eq!(shared("金麓西岸", "金路西岸"), 0);
        assert_eq!(shared("高铁线路", "高铁铁路"), 0);
        // Unrelated strings share none.
        assert_eq!(shared("伊景园滨河苑", "丽发新城小区"), 0);
    }

    #[test]
    fn timeline_counts_a_term_within_a_time_range() {
        let mut tl = TermTimeline::default();
        for (time, terms) in [
            (10, vec![1, 2]),
            (20, vec![1]),
            (20, vec![2]),
            (35, vec![1, 2]),
        ] {
            tl.add(time, &terms);
        }
        assert_eq!(tl.count(1, i64::MIN, i64::MAX), 3);
        assert_eq!(tl.count(1, 11, 35), 2);
        assert_eq!(tl.count(2, 20, 20), 1);
        assert_eq!(tl.count(2, 21, 34), 0);
        assert_eq!(tl.count(3, i64::MIN, i64::MAX), 0);
    }

    #[test]
    fn head_is_capped_and_lower_cased() {
        let chars = term_chars(None, "ABCdef", 4, true);
        assert_eq!(chars, vec!['a', 'b', 'c', 'd']);
    }
}
