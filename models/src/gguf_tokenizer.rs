//! A SentencePiece-BPE tokenizer built from GGUF metadata (`tokenizer.ggml.*`), for models that
//! ship no `tokenizer.json` (Gemma's GGUF files). The GGUF has tokens, scores and token types but
//! no merges: like SentencePiece's BPE (and llama.cpp), encoding repeatedly merges the adjacent
//! pair whose concatenation is in the vocabulary with the highest score; characters left without
//! a token fall back to `<0xNN>` byte tokens.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use std::collections::{BinaryHeap, HashMap};

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

const SPACE: char = '▁';

#[derive(Debug, Clone)]
pub struct GgufTokenizer {
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    ids: HashMap<String, u32>,
    /// User-defined pieces (whitespace runs, HTML tags) by their first byte, longest first:
    /// matched whole in the raw text, before spaces become `▁` (their pieces hold raw spaces).
    user_defined: HashMap<u8, Vec<(String, u32)>>,
    byte_ids: [Option<u32>; 256],
    pub bos: u32,
    pub eos: u32,
    unk: u32,
    add_bos: bool,
    add_space_prefix: bool,
}

fn strings(content: &Content, key: &str) -> Result<Vec<String>> {
    match content.metadata.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|e| Error::Tokenizer(format!("{key}: {e}")))
            })
            .collect(),
        _ => Err(Error::Tokenizer(format!("GGUF metadata has no {key}"))),
    }
}

fn number<T>(
    content: &Content,
    key: &str,
    read: impl Fn(&Value) -> candle_core::Result<T>,
) -> Option<T> {
    content.metadata.get(key).and_then(|v| read(v).ok())
}

impl GgufTokenizer {
    pub fn from_gguf(content: &Content) -> Result<Self> {
        let model = content
            .metadata
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .cloned();
        if model.as_deref() != Some("llama") {
            return Err(Error::Tokenizer(format!(
                "GGUF tokenizer model {model:?} is not SentencePiece (\"llama\"); put a tokenizer.json beside the model"
            )));
        }
        let pieces = strings(content, "tokenizer.ggml.tokens")?;
        let scores: Vec<f32> = match content.metadata.get("tokenizer.ggml.scores") {
            Some(Value::Array(v)) => v.iter().map(|x| x.to_f32().unwrap_or(0.0)).collect(),
            _ => vec![0.0; pieces.len()],
        };
        let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(Value::Array(v)) => v.iter().map(|x| x.to_i32().unwrap_or(NORMAL)).collect(),
            _ => vec![NORMAL; pieces.len()],
        };
        let id = |key: &str, default: u32| number(content, key, Value::to_u32).unwrap_or(default);
        let flag =
            |key: &str, default: bool| number(content, key, Value::to_bool).unwrap_or(default);
        Ok(Self::new(
            pieces,
            scores,
            types,
            id("tokenizer.ggml.bos_token_id", 1),
            id("tokenizer.ggml.eos_token_id", 2),
            id("tokenizer.ggml.unknown_token_id", 0),
            flag("tokenizer.ggml.add_bos_token", true),
            flag("tokenizer.ggml.add_space_prefix", true),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pieces: Vec<String>,
        scores: Vec<f32>,
        types: Vec<i32>,
        bos: u32,
        eos: u32,
        unk: u32,
        add_bos: bool,
        add_space_prefix: bool,
    ) -> Self {
        let ids = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i as u32))
            .collect();
        let mut user_defined: HashMap<u8, Vec<(String, u32)>> = HashMap::new();
        for (i, piece) in pieces.iter().enumerate() {
            if types[i] == USER_DEFINED && !piece.is_empty() {
                user_defined
                    .entry(piece.as_bytes()[0])
                    .or_default()
                    .push((piece.clone(), i as u32));
            }
        }
        for candidates in user_defined.values_mut() {
            candidates.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        }
        let mut byte_ids = [None; 256];
        for (i, t) in types.iter().enumerate() {
            if *t == BYTE {
                let hex = pieces[i].trim_start_matches("<0x").trim_end_matches('>');
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    byte_ids[b as usize] = Some(i as u32);
                }
            }
        }
        Self {
            pieces,
            scores,
            types,
            ids,
            user_defined,
            byte_ids,
            bos,
            eos,
            unk,
            add_bos,
            add_space_prefix,
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// Token ids of `text`, with the BOS token first when the model wants it. Control tokens
    /// written in the text (e.g. "<eos>") are not special: they are tokenized as plain text, so
    /// untrusted text cannot end a turn or a document.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 2 + 2);
        if self.add_bos {
            out.push(self.bos);
        }
        // User-defined pieces split the text (leftmost, longest at a position); the text between
        // them is merged by score.
        let (mut fragment_start, mut at) = (0, 0);
        while at < text.len() {
            let piece = self
                .user_defined
                .get(&text.as_bytes()[at])
                .and_then(|candidates| {
                    candidates
                        .iter()
                        .find(|(p, _)| text[at..].starts_with(p.as_str()))
                });
            match piece {
                Some((p, id)) => {
                    self.encode_fragment(&text[fragment_start..at], &mut out);
                    out.push(*id);
                    at += p.len();
                    fragment_start = at;
                }
                None => at += text[at..].chars().next().map_or(1, char::len_utf8),
            }
        }
        self.encode_fragment(&text[fragment_start..], &mut out);
        out
    }

    /// Merges one stretch of text between user-defined pieces. As in llama.cpp, the optional
    /// space prefix goes before each stretch (each follows the start or such a piece).
    fn encode_fragment(&self, raw: &str, out: &mut Vec<u32>) {
        if raw.is_empty() {
            return;
        }
        let mut text = String::with_capacity(raw.len() + 3);
        if self.add_space_prefix {
            text.push(SPACE);
        }
        text.extend(raw.chars().map(|c| if c == ' ' { SPACE } else { c }));
        let text = text.as_str();
        // Symbols are byte ranges of the text, linked as a list so merges are O(1).
        let mut start: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let n = start.len();
        start.push(text.len());
        let mut len: Vec<usize> = (0..n).map(|i| start[i + 1] - start[i]).collect();
        let mut prev: Vec<Option<usize>> = (0..n).map(|i| i.checked_sub(1)).collect();
        let mut next: Vec<Option<usize>> = (0..n).map(|i| (i + 1 < n).then_some(i + 1)).collect();

        #[derive(PartialEq)]
        struct Bigram {
            score: f32,
            left: usize,
            right: usize,
            size: usize,
        }
        impl Eq for Bigram {}
        impl PartialOrd for Bigram {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for Bigram {
            // Highest score first; among equals, the leftmost (as SentencePiece does).
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.score
                    .total_cmp(&other.score)
                    .then_with(|| other.left.cmp(&self.left))
            }
        }
        let mut queue = BinaryHeap::new();
        let try_add = |queue: &mut BinaryHeap<Bigram>, left: usize, right: usize, len: &[usize]| {
            let piece = &text[start[left]..start[left] + len[left] + len[right]];
            if let Some(&id) = self.ids.get(piece) {
                if matches!(self.types[id as usize], NORMAL | USER_DEFINED | UNKNOWN)
                    || self.types[id as usize] == 0
                {
                    queue.push(Bigram {
                        score: self.scores[id as usize],
                        left,
                        right,
                        size: piece.len(),
                    });
                }
            }
        };
        for i in 1..n {
            try_add(&mut queue, i - 1, i, &len);
        }
        while let Some(b) = queue.pop() {
            // Skip bigrams made stale by an earlier merge of either side.
            if len[b.left] == 0
                || len[b.right] == 0
                || len[b.left] + len[b.right] != b.size
                || next[b.left] != Some(b.right)
            {
                continue;
            }
            len[b.left] += len[b.right];
            len[b.right] = 0;
            next[b.left] = next[b.right];
            if let Some(after) = next[b.right] {
                prev[after] = Some(b.left);
            }
            if let Some(before) = prev[b.left] {
                try_add(&mut queue, before, b.left, &len);
            }
            if let Some(after) = next[b.left] {
                try_add(&mut queue, b.left, after, &len);
            }
        }
        let mut i = Some(0);
        while let Some(s) = i {
            let piece = &text[start[s]..start[s] + len[s]];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for byte in piece.bytes() {
                        out.push(self.byte_ids[byte as usize].unwrap_or(self.unk));
                    }
                }
            }
            i = next[s];
        }
    }

    /// The bytes a token stands for (control tokens stand for nothing).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(piece) = self.pieces.get(id as usize) else {
            return Vec::new();
        };
        match self.types[id as usize] {
            CONTROL | UNKNOWN => Vec::new(),
            BYTE => self
                .byte_ids
                .iter()
                .position(|b| *b == Some(id))
                .map(|b| vec![b as u8])
                .unwrap_or_default(),
            _ => piece.replace(SPACE, " ").into_bytes(),
        }
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id)).collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match (self.add_space_prefix, text.strip_prefix(' ')) {
            (true, Some(rest)) => rest.to_string(),
            _ => text,
        }
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.types.get(id as usize) == Some(&CONTROL)
    }

    pub fn piece_id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: control tokens, bytes for 'x' and the bytes of "é", pieces with scores,
    /// user-defined pieces as Gemma's GGUF stores them (a tag, raw whitespace runs).
    fn toy() -> GgufTokenizer {
        toy_with_space_prefix(false)
    }

    fn toy_with_space_prefix(add_space_prefix: bool) -> GgufTokenizer {
        let mut pieces: Vec<String> = [
            "<pad>", "<eos>", "<bos>", "<unk>", "<0x78>", "<0xC3>", "<0xA9>",
        ]
        .map(String::from)
        .to_vec();
        let mut types = vec![CONTROL, CONTROL, CONTROL, UNKNOWN, BYTE, BYTE, BYTE];
        let mut scores = vec![0.0; 7];
        for (p, s) in [
            ("▁", -1.0),
            ("a", -2.0),
            ("b", -2.0),
            ("ab", -1.5),
            ("▁ab", -0.5),
            ("c", -3.0),
            ("bc", -0.1),
            ("<br>", 0.0),
            ("  ", 0.0),
            ("   ", 0.0),
            ("\n", 0.0),
        ] {
            pieces.push(p.into());
            scores.push(s);
            let user_defined = ["<br>", "  ", "   ", "\n"].contains(&p);
            types.push(if user_defined { USER_DEFINED } else { NORMAL });
        }
        GgufTokenizer::new(pieces, scores, types, 2, 1, 3, true, add_space_prefix)
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let t = toy();
        let id = |p: &str| t.piece_id(p).unwrap();
        // "abc": "bc" (-0.1) beats "ab" (-1.5), leaving "a" + "bc".
        assert_eq!(t.encode("abc"), vec![2, id("a"), id("bc")]);
        // " ab": "▁a" is not a piece, "ab" merges, then "▁ab".
        assert_eq!(t.encode(" ab"), vec![2, id("▁ab")]);
        // Unknown characters become their UTF-8 bytes.
        assert_eq!(t.encode("xé"), vec![2, 4, 5, 6]);
        assert_eq!(t.encode(""), vec![2]);
    }

    #[test]
    fn user_defined_pieces_match_whole_and_control_text_does_not() {
        let t = toy();
        let ids = t.encode("a<br>b");
        assert_eq!(
            ids,
            vec![
                2,
                t.piece_id("a").unwrap(),
                t.piece_id("<br>").unwrap(),
                t.piece_id("b").unwrap()
            ]
        );
        assert!(
            !t.encode("<eos>").contains(&1),
            "text that looks like a control token stays text"
        );
    }

    #[test]
    fn whitespace_runs_match_in_raw_text_longest_first() {
        let t = toy();
        let id = |p: &str| t.piece_id(p).unwrap();
        // Three spaces are one piece; a single space stays "▁" and merges with what follows.
        assert_eq!(t.encode("a   b"), vec![2, id("a"), id("   "), id("b")]);
        assert_eq!(
            t.encode("a     ab"),
            vec![2, id("a"), id("   "), id("  "), id("ab")]
        );
        assert_eq!(t.encode("a ab\n"), vec![2, id("a"), id("▁ab"), id("\n")]);
    }

    #[test]
    fn space_prefix_goes_before_each_stretch_of_text() {
        let t = toy_with_space_prefix(true);
        let id = |p: &str| t.piece_id(p).unwrap();
        assert_eq!(
            t.encode("ab<br>ab"),
            vec![2, id("▁ab"), id("<br>"), id("▁ab")]
        );
        assert_eq!(t.decode(&t.encode("ab")), "ab");
    }

    #[test]
    fn decodes_bytes_and_spaces() {
        let t = toy();
        for text in ["abc", " ab ab", "xé", "a<br>b", "a   b\n"] {
            assert_eq!(t.decode(&t.encode(text)), text);
        }
    }
}
