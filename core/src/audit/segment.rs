//! Files of a stream: segment names, reading a segment's last line, the head file, and sealing
//! and checking one line.

use super::canonical::{canonical, hex, hmac_sha256_hex, sha256_hex};
use super::StoredRecord;
use crate::{fsutil, Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub(crate) const HEAD_FILE: &str = "HEAD.json";
pub(crate) const LOCK_FILE: &str = "LOCK";

pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:012}.jsonl")
}

/// The first sequence number a segment's name gives, if it is a segment.
pub(crate) fn segment_first_seq(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".jsonl")?;
    (!stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

/// The segments of a stream directory, oldest first.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        if let Some(first) = name.to_str().and_then(segment_first_seq) {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The streams under an audit directory (subdirectories with a segment or a head file).
pub(crate) fn list_streams(audit_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(audit_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(audit_dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(audit_dir, e))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let has_log = path.join(HEAD_FILE).exists() || !list_segments(&path)?.is_empty();
        if let (true, Some(name)) = (has_log, entry.file_name().to_str()) {
            out.push((name.to_string(), path));
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn check_stream_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::InvalidInput(format!(
            "audit stream name {name:?}: use 1-64 letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

/// The end of a segment: its last complete line and what follows it.
pub(crate) struct Tail {
    /// The last newline-terminated line, without the newline.
    pub line: Option<Vec<u8>>,
    /// Bytes up to and including the last newline.
    pub complete_len: u64,
    /// Bytes after the last newline: a line a crash cut short.
    pub torn: u64,
}

/// Reads backwards from the end, so opening a long segment costs a few kilobytes.
pub(crate) fn read_tail(path: &Path) -> std::io::Result<Tail> {
    const STEP: u64 = 16 << 10;
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut pos = len;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if let Some(end) = buf.iter().rposition(|&b| b == b'\n') {
            let start = buf[..end].iter().rposition(|&b| b == b'\n');
            if start.is_some() || pos == 0 {
                let complete_len = pos + end as u64 + 1;
                return Ok(Tail {
                    line: Some(buf[start.map_or(0, |s| s + 1)..end].to_vec()),
                    complete_len,
                    torn: len - complete_len,
                });
            }
        } else if pos == 0 {
            return Ok(Tail {
                line: None,
                complete_len: 0,
                torn: len,
            });
        }
        let step = STEP.min(pos);
        pos -= step;
        let mut chunk = vec![0u8; step as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
}

/// Reads a segment's first line (to learn the day it was started).
pub(crate) fn read_first_line(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    Ok(line.ends_with(b"\n").then(|| {
        line.pop();
        line
    }))
}

/// How a line starts: the hash member first, then the canonical body without its `{`.
const HASH_PREFIX: &[u8] = br#"{"hash":""#;
const HASH_HEX: usize = 64;

/// Seals a record: sets its hash (SHA-256 of the canonical form of the record without `hash`)
/// and returns the line to write, with its newline. The line is that canonical form with the
/// hash member put first (`{"hash":"…",` + the rest), so that checking a line needs no
/// re-serialisation: strip the member, hash the bytes.
pub(crate) fn seal(record: &mut StoredRecord) -> Vec<u8> {
    record.hash.clear();
    let mut value = serde_json::to_value(&*record).expect("a record serialises");
    if let Some(map) = value.as_object_mut() {
        map.remove("hash");
    }
    let body = canonical(&value);
    record.hash = sha256_hex(&body);
    let mut line = Vec::with_capacity(body.len() + HASH_PREFIX.len() + HASH_HEX + 3);
    line.extend_from_slice(HASH_PREFIX);
    line.extend_from_slice(record.hash.as_bytes());
    line.extend_from_slice(b"\",");
    line.extend_from_slice(&body[1..]);
    line.push(b'\n');
    line
}

/// Whether a line's stored hash matches its bytes; None when the line is not laid out as the
/// writer lays it out (then it was rewritten, or is not a record).
fn intact(line: &[u8]) -> Option<bool> {
    let start = HASH_PREFIX.len();
    let end = start + HASH_HEX;
    if line.len() <= end + 2
        || !line.starts_with(HASH_PREFIX)
        || &line[end..end + 2] != b"\","
        || !line[start..end]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    let mut digest = Sha256::new();
    digest.update(b"{");
    digest.update(&line[end + 2..]);
    Some(hex(&digest.finalize()).as_bytes() == &line[start..end])
}

/// One line, checked.
pub(crate) enum Checked<T> {
    /// Not a JSON object with a `hash`.
    Unparseable(String),
    /// Its hash matches its bytes (`intact`) or not; the record as it reads.
    Record { record: Box<T>, intact: bool },
    /// The hash does or does not match, but the content is not a record of a known shape.
    Unknown { intact: bool, error: String },
}

/// Checks a line and reads it as a `T` (a whole [`StoredRecord`], or the few fields `verify`
/// needs).
pub(crate) fn check_as<T: serde::de::DeserializeOwned>(line: &[u8]) -> Checked<T> {
    let intact = match intact(line) {
        Some(intact) => intact,
        None => {
            // Not the writer's layout: a record someone re-serialised, or not a record.
            return match serde_json::from_slice::<Value>(line) {
                Ok(Value::Object(map)) if map.contains_key("hash") => {
                    match serde_json::from_slice(line) {
                        Ok(record) => Checked::Record {
                            record: Box::new(record),
                            intact: false,
                        },
                        Err(e) => Checked::Unknown {
                            intact: false,
                            error: e.to_string(),
                        },
                    }
                }
                Ok(_) => Checked::Unparseable("not a JSON object with a hash".into()),
                Err(e) => Checked::Unparseable(e.to_string()),
            };
        }
    };
    match serde_json::from_slice::<T>(line) {
        Ok(record) => Checked::Record {
            record: Box::new(record),
            intact,
        },
        Err(e) if e.is_data() => Checked::Unknown {
            intact,
            error: e.to_string(),
        },
        Err(e) => Checked::Unparseable(e.to_string()),
    }
}

pub(crate) fn check_line(line: &[u8]) -> Checked<StoredRecord> {
    check_as(line)
}

/// The head file: how far the stream was durable when it was last written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub stream: String,
    /// The sequence number the next record will get (records durable: `0..next_seq`).
    pub next_seq: u64,
    /// The hash of record `next_seq - 1` ([`super::GENESIS`] when there is none).
    pub last_hash: String,
    pub time: DateTime<Utc>,
    /// HMAC-SHA256 over the canonical form of the other fields, when a key is configured.
    pub mac: Option<String>,
}

impl Head {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).expect("a head serialises");
        if let Some(map) = value.as_object_mut() {
            map.remove("mac");
        }
        canonical(&value)
    }

    pub(crate) fn sign(&mut self, key: Option<&[u8]>) {
        self.mac = key.map(|k| hmac_sha256_hex(k, &self.signed_bytes()));
    }

    /// Whether `mac` matches `key`.
    pub fn signature_matches(&self, key: &[u8]) -> bool {
        self.mac.as_deref() == Some(hmac_sha256_hex(key, &self.signed_bytes()).as_str())
    }

    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a head serialises");
        bytes.push(b'\n');
        fsutil::write_atomic(&dir.join(HEAD_FILE), &bytes)
    }

    /// `Ok(None)` when there is no head file; `Err(reason)` when it does not parse.
    pub(crate) fn read(dir: &Path) -> std::result::Result<Option<Self>, String> {
        let path = dir.join(HEAD_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}
