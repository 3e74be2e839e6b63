//! `verify`: reads every stream of an audit directory and names each record that was edited,
//! removed, reordered or cut off.

use super::segment::{
    check_as, check_line, list_segments, list_streams, segment_first_seq, Checked, Head,
};
use super::{Entry, Incident, GENESIS};
use crate::{Error, Result};
use rayon::prelude::*;
use serde::Deserialize;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a record is (or was): segment file, 1-based line, and its sequence number when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub segment: String,
    pub line: u64,
    pub seq: Option<u64>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.segment, self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        Ok(())
    }
}

/// What is wrong at a location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The line is not a record (cut short, or overwritten).
    Unparseable {
        error: String,
    },
    /// The segment's last line has no newline: the file was cut short (or a crash cut a write;
    /// the writer repairs that, and records it, when it opens the log).
    CutShort,
    /// The record's content does not match its hash: edited.
    Edited,
    /// The record's hash matches its content, but its content is not a record this version
    /// reads (edited with the hash recomputed, or written by a newer version).
    UnknownShape {
        error: String,
    },
    /// `prev_hash` does not match the hash of the record before: that record was edited and
    /// its hash recomputed (or this one's `prev_hash` was).
    ChainBroken {
        previous: Location,
    },
    /// The first record does not chain to the genesis value (or, after retention, to the last
    /// record retention removed).
    BadGenesis,
    /// Records `from_seq..=to_seq` are not in the log (removed, or a whole segment removed);
    /// noticed at this location (the record after the hole).
    Missing {
        from_seq: u64,
        to_seq: u64,
    },
    /// This record comes after a later one: records were swapped or moved.
    Reordered {
        after: Location,
    },
    /// A sequence number seen before (a copied or inserted record).
    Duplicate {
        expected_seq: u64,
    },
    /// The segment's name says it starts at another record (renamed or reordered).
    SegmentMisnamed {
        first_seq_by_name: u64,
    },
    /// The head file says records `from_seq..=to_seq` were durable; the log ends before them.
    TruncatedTail {
        from_seq: u64,
        to_seq: u64,
    },
    /// The record the head file signed off has another hash now: rewritten history.
    HeadMismatch {
        head_hash: String,
        found_hash: String,
    },
    HeadMissing,
    HeadInvalid {
        reason: String,
    },
    /// A key was given but the head file has no signature.
    HeadUnsigned,
    /// The head file's signature does not match the key: the head was rewritten.
    HeadForged,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unparseable { error } => write!(f, "not a record ({error})"),
            Problem::CutShort => write!(f, "cut short: the segment does not end with a newline"),
            Problem::Edited => write!(f, "edited: its content does not match its hash"),
            Problem::UnknownShape { error } => write!(f, "not a record this version reads ({error})"),
            Problem::ChainBroken { previous } => write!(
                f,
                "chain broken: prev_hash does not match {previous}, which was edited with its hash recomputed"
            ),
            Problem::BadGenesis => write!(f, "the first record does not chain to the genesis value"),
            Problem::Missing { from_seq, to_seq } => {
                write!(f, "records seq {from_seq}..={to_seq} are missing before this line")
            }
            Problem::Reordered { after } => write!(f, "out of order: comes after {after}"),
            Problem::Duplicate { expected_seq } => {
                write!(f, "duplicate sequence number (expected seq {expected_seq})")
            }
            Problem::SegmentMisnamed { first_seq_by_name } => write!(
                f,
                "the segment's name says it starts at seq {first_seq_by_name}"
            ),
            Problem::TruncatedTail { from_seq, to_seq } => write!(
                f,
                "cut off: the head file signed off records up to seq {to_seq}; seq {from_seq}..={to_seq} are gone"
            ),
            Problem::HeadMismatch { head_hash, found_hash } => write!(
                f,
                "the head file signed off hash {head_hash}; the record has {found_hash}"
            ),
            Problem::HeadMissing => write!(f, "the head file is missing"),
            Problem::HeadInvalid { reason } => write!(f, "the head file is unreadable: {reason}"),
            Problem::HeadUnsigned => write!(f, "the head file is not signed (a key was given)"),
            Problem::HeadForged => {
                write!(f, "the head file's signature does not match the key: it was rewritten")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub at: Location,
    #[serde(flatten)]
    pub problem: Problem,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.problem)
    }
}

/// Whether the head file's signature was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureCheck {
    /// The signature matches the key given.
    Verified,
    /// No key given: the head file's signature (if any) was not checked.
    NotChecked,
    /// A key was given and the head failed (see the findings).
    Failed,
    /// No head file to check.
    NoHead,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub stream: String,
    pub dir: PathBuf,
    pub segments: usize,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Records before this seq were removed by retention, as the log itself records.
    pub retained_from_seq: Option<u64>,
    pub head: Option<Head>,
    pub signature: SignatureCheck,
    pub findings: Vec<Finding>,
    /// What the writer recorded about the log itself (refused appends, write failures, damage
    /// found when it was opened).
    pub incidents: Vec<(Location, Incident)>,
}

impl StreamReport {
    /// No findings and no recorded damage.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && !self.incidents.iter().any(|(_, i)| i.is_damage())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub dir: PathBuf,
    pub streams: Vec<StreamReport>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.streams.iter().all(StreamReport::is_clean)
    }

    pub fn findings(&self) -> impl Iterator<Item = (&str, &Finding)> {
        self.streams
            .iter()
            .flat_map(|s| s.findings.iter().map(move |f| (s.stream.as_str(), f)))
    }
}

/// Checks every stream under `audit_dir` (`DATA_DIR/audit`). With `key`, also the head files'
/// signatures.
///
/// Detected, and named by segment, line and seq: any edit of a record (its hash no longer
/// matches; or, with the hash recomputed, the next record's `prev_hash` no longer does, or for
/// the last record the head file's hash); a removed record or run of records, a removed segment
/// (a gap in the sequence numbers, at the start too unless a retention record in the chain
/// explains it); swapped or moved records; a duplicated record; records cut off the end, up to
/// what the head file signed off; a damaged, missing or (with a key) forged head file.
///
/// Not detectable: records appended after the head file was last written and cut off before
/// the next write (at most one batch with the default `head_interval`); anything done by
/// someone who can rewrite the whole chain *and* the head file — without a key that is anyone
/// who can write the directory, with a key anyone who has it; rolling the log back to an older
/// state together with an older signed head file (only a copy of the head kept elsewhere, e.g.
/// sent to an auditor now and then, catches that); deleting a whole stream directory.
///
/// On a log being written, the last line may be caught half-written (`CutShort` or
/// `Unparseable` on the live segment's last line): run it again.
pub fn verify(audit_dir: &Path, key: Option<&[u8]>) -> Result<VerifyReport> {
    let streams = list_streams(audit_dir)?
        .into_iter()
        .map(|(name, dir)| verify_stream(&name, &dir, key))
        .collect::<Result<_>>()?;
    Ok(VerifyReport {
        dir: audit_dir.to_path_buf(),
        streams,
    })
}

/// The fields of a record the chain check reads (the rest is skipped, not parsed).
#[derive(Deserialize)]
struct Link {
    seq: u64,
    prev_hash: String,
    hash: String,
    kind: Kind,
    #[allow(dead_code)] // read so that a record without a time is not a record
    time: chrono::DateTime<chrono::Utc>,
}

#[derive(Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Suggestion,
    Decision,
    Retention,
    Incident,
}

/// The highest record seen so far: what the next one should chain to.
struct Last {
    seq: u64,
    hash: String,
    at: Location,
}

struct Scan {
    findings: Vec<Finding>,
    incidents: Vec<(Location, Incident)>,
    last: Option<Last>,
    first: Option<(u64, String, Location)>,
    /// Holes in the sequence not (yet) explained by a record found later: start → (end, where
    /// noticed).
    missing: BTreeMap<u64, (u64, Location)>,
    /// From retention records: the last seq of each removed segment, and its hash.
    removed_ends: BTreeMap<u64, String>,
    /// The head's last record, when seen: its hash and location.
    head_seq: Option<u64>,
    at_head: Option<(String, Location)>,
    records: u64,
}

impl Scan {
    fn find(&mut self, at: Location, problem: Problem) {
        self.findings.push(Finding { at, problem });
    }

    fn line(
        &mut self,
        segment: &str,
        first_seq_by_name: Option<u64>,
        n: u64,
        line: &[u8],
        checked: Checked<Link>,
    ) {
        let at = |seq| Location {
            segment: segment.to_string(),
            line: n,
            seq,
        };
        let (record, intact) = match checked {
            Checked::Unparseable(error) => {
                self.find(at(None), Problem::Unparseable { error });
                return;
            }
            Checked::Unknown { intact, error } => {
                let problem = if intact {
                    Problem::UnknownShape { error }
                } else {
                    Problem::Edited
                };
                self.find(at(None), problem);
                // It most likely holds the expected place; assume so, so that one damaged
                // line is one finding.
                self.assume_next(at(None), None);
                return;
            }
            Checked::Record { record, intact } => (record, intact),
        };
        self.records += 1;
        if !intact {
            // Its seq may be what was edited: it takes the expected place, and its stored hash
            // (what the next record chained to) stays the link.
            self.find(at(Some(record.seq)), Problem::Edited);
            self.assume_next(at(Some(record.seq)), Some(record.hash.clone()));
            return;
        }
        let seq = record.seq;
        if n == 1 {
            if let Some(by_name) = first_seq_by_name.filter(|&s| s != seq) {
                self.find(
                    at(Some(seq)),
                    Problem::SegmentMisnamed {
                        first_seq_by_name: by_name,
                    },
                );
            }
        }
        if self.head_seq == Some(seq) {
            self.at_head = Some((record.hash.clone(), at(Some(seq))));
        }
        if matches!(record.kind, Kind::Retention | Kind::Incident) {
            let entry = match check_line(line) {
                Checked::Record { record, .. } => Some(record.entry),
                _ => None,
            };
            match entry {
                Some(Entry::Retention { retention }) => {
                    for removed in &retention.removed {
                        self.removed_ends
                            .insert(removed.last_seq, removed.last_hash.clone());
                    }
                }
                Some(Entry::Incident { incident }) => {
                    self.incidents.push((at(Some(seq)), incident))
                }
                Some(Entry::Suggestion { .. } | Entry::Decision { .. }) | None => {
                    self.find(
                        at(Some(seq)),
                        Problem::UnknownShape {
                            error: "an unreadable retention or incident record".into(),
                        },
                    );
                }
            }
        }
        let Some(last) = &self.last else {
            self.first = Some((seq, record.prev_hash.clone(), at(Some(seq))));
            if seq == 0 && record.prev_hash != GENESIS {
                self.find(at(Some(seq)), Problem::BadGenesis);
            }
            if seq > 0 {
                // Removed, unless a retention record explains it (settled at the end).
                self.missing.insert(0, (seq - 1, at(Some(seq))));
            }
            self.last = Some(Last {
                seq,
                hash: record.hash.clone(),
                at: at(Some(seq)),
            });
            return;
        };
        let expected = last.seq + 1;
        if seq == expected {
            if record.prev_hash != last.hash {
                let previous = last.at.clone();
                self.find(at(Some(seq)), Problem::ChainBroken { previous });
            }
        } else if seq > expected {
            // The chain is broken here too; the hole says why.
            self.missing.insert(expected, (seq - 1, at(Some(seq))));
        } else {
            // Earlier than expected: a record from a hole noticed before has turned up here
            // (reordered), or a sequence number repeats.
            let after = last.at.clone();
            if self.fill(seq) {
                self.find(at(Some(seq)), Problem::Reordered { after });
            } else {
                self.find(
                    at(Some(seq)),
                    Problem::Duplicate {
                        expected_seq: expected,
                    },
                );
            }
            return;
        }
        self.last = Some(Last {
            seq,
            hash: record.hash.clone(),
            at: at(Some(seq)),
        });
    }

    /// A damaged record takes the next place in the sequence.
    fn assume_next(&mut self, at: Location, hash: Option<String>) {
        let seq = self
            .last
            .as_ref()
            .map_or(at.seq.unwrap_or(0), |l| l.seq + 1);
        self.last = Some(Last {
            seq,
            hash: hash.unwrap_or_default(),
            at: Location {
                seq: Some(seq),
                ..at
            },
        });
    }

    /// Removes `seq` from the holes; true when it was in one.
    fn fill(&mut self, seq: u64) -> bool {
        let Some((&start, (end, at))) = self.missing.range(..=seq).next_back() else {
            return false;
        };
        let (end, at) = (*end, at.clone());
        if seq > end {
            return false;
        }
        self.missing.remove(&start);
        if start < seq {
            self.missing.insert(start, (seq - 1, at.clone()));
        }
        if seq < end {
            self.missing.insert(seq + 1, (end, at));
        }
        true
    }
}

fn verify_stream(name: &str, dir: &Path, key: Option<&[u8]>) -> Result<StreamReport> {
    let segments = list_segments(dir)?;
    let mut scan = Scan {
        findings: Vec::new(),
        incidents: Vec::new(),
        last: None,
        first: None,
        missing: BTreeMap::new(),
        removed_ends: BTreeMap::new(),
        head_seq: None,
        at_head: None,
        records: 0,
    };
    let head_location = |line| Location {
        segment: super::segment::HEAD_FILE.into(),
        line,
        seq: None,
    };
    let (head, signature) = match Head::read(dir) {
        Ok(Some(head)) => {
            let signature = match key {
                None => SignatureCheck::NotChecked,
                Some(_) if head.mac.is_none() => {
                    scan.find(head_location(0), Problem::HeadUnsigned);
                    SignatureCheck::Failed
                }
                Some(key) if !head.signature_matches(key) => {
                    scan.find(head_location(0), Problem::HeadForged);
                    SignatureCheck::Failed
                }
                Some(_) => SignatureCheck::Verified,
            };
            (Some(head), signature)
        }
        Ok(None) => {
            if !segments.is_empty() {
                scan.find(head_location(0), Problem::HeadMissing);
            }
            (None, SignatureCheck::NoHead)
        }
        Err(reason) => {
            scan.find(head_location(0), Problem::HeadInvalid { reason });
            (None, SignatureCheck::Failed)
        }
    };
    scan.head_seq = head.as_ref().and_then(|h| h.next_seq.checked_sub(1));
    let mut last_line = (String::new(), 0u64);
    for (_, path) in &segments {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let by_name = segment_first_seq(&file_name);
        // Lines are hashed in parallel, then chained in order.
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let lines: Vec<&[u8]> = bytes
            .split_inclusive(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\n").unwrap_or(l))
            .collect();
        let checked: Vec<Checked<Link>> = lines.par_iter().map(|l| check_as::<Link>(l)).collect();
        let n = lines.len() as u64;
        for (i, (line, checked)) in lines.iter().zip(checked).enumerate() {
            scan.line(&file_name, by_name, i as u64 + 1, line, checked);
        }
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            scan.find(
                Location {
                    segment: file_name.clone(),
                    line: n,
                    seq: None,
                },
                Problem::CutShort,
            );
        }
        last_line = (file_name, n);
    }

    // The start: record 0 with the genesis hash, or the hole a retention record explains.
    let mut retained_from_seq = None;
    if let Some((first_seq, prev_hash, at)) = scan.first.clone() {
        if first_seq > 0 {
            let from = scan
                .removed_ends
                .range(..first_seq)
                .next_back()
                .map_or(0, |(to, _)| to + 1);
            if from > 0 {
                retained_from_seq = Some(from);
                if let Some((end, noticed)) = scan.missing.remove(&0) {
                    if end >= from {
                        scan.missing.insert(from, (end, noticed));
                    }
                }
            }
            if from == first_seq && scan.removed_ends.get(&(first_seq - 1)) != Some(&prev_hash) {
                scan.find(at, Problem::BadGenesis);
            }
        }
    }
    for (from_seq, (to_seq, at)) in std::mem::take(&mut scan.missing) {
        scan.find(at, Problem::Missing { from_seq, to_seq });
    }

    // The end: at least what the head signed off, with the hash it signed off.
    let last_seq = scan.last.as_ref().map(|l| l.seq);
    if let (Some(head), Some(head_seq)) = (&head, scan.head_seq) {
        let found_next = last_seq.map_or(0, |s| s + 1);
        if head.next_seq > found_next {
            scan.find(
                Location {
                    segment: last_line.0.clone(),
                    line: last_line.1 + 1,
                    seq: Some(found_next),
                },
                Problem::TruncatedTail {
                    from_seq: found_next,
                    to_seq: head_seq,
                },
            );
        } else if let Some((found_hash, at)) = scan.at_head.clone() {
            if found_hash != head.last_hash {
                scan.find(
                    at,
                    Problem::HeadMismatch {
                        head_hash: head.last_hash.clone(),
                        found_hash,
                    },
                );
            }
        }
    }
    Ok(StreamReport {
        stream: name.to_string(),
        dir: dir.to_path_buf(),
        segments: segments.len(),
        records: scan.records,
        first_seq: scan.first.as_ref().map(|f| f.0),
        last_seq,
        retained_from_seq,
        head,
        signature,
        findings: scan.findings,
        incidents: scan.incidents,
    })
}
