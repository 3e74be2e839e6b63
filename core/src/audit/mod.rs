//! The audit trail (算法审计): every suggestion served and every call-taker decision, as a
//! hash-chained, append-only log that `verify` can check and `report` can summarise.
//!
//! # On disk
//! `DATA_DIR/audit/<stream>/` holds JSONL segments named by the sequence number of their first
//! record (`000000000000.jsonl`, …), a `HEAD.json` and a `LOCK`. One line is one [`StoredRecord`]:
//! its `hash` is the SHA-256 of the record without `hash` in canonical JSON (keys sorted, compact:
//! [`canonical`]), and the line is `{"hash":"<hex>",` followed by the rest of that canonical form,
//! so a line is checked by hashing its own bytes after the hash member. The hash covers `seq` and
//! `prev_hash`: the previous record's hash, or [`GENESIS`] for the first record of the log. A segment's first record chains to the previous segment's last, so
//! the chain runs through the whole stream and removing a whole segment breaks it like removing
//! one line. A new segment starts when the current one would pass
//! [`AuditSettings::segment_max_bytes`] or (with `rotate_daily`) at a new UTC day.
//!
//! The chain cannot show that records were cut off the *end*. `HEAD.json` says how far the log
//! was durable when it was last written (`next_seq` and the last hash), signed with HMAC-SHA256
//! when a key is configured ([`AuditSettings::key`]). `verify` compares the log with it; the
//! writer compares them when it opens the log and, finding fewer records than the head names,
//! writes an [`Incident`] into the chain before it goes on, so the evidence is not overwritten
//! by the next head. What this does and does not catch is listed on [`verify`].
//!
//! One writer per stream: replicas sharing a data directory each take their own stream name
//! ([`AuditSettings::stream`]); `verify` and `report` read every stream.
//!
//! # Writing
//! [`AuditLog::append`] puts the record on a bounded channel and returns at once; one writer
//! thread masks or hashes the complaint text, seals each record (seq, prev_hash, hash), writes
//! what has arrived as one batch and `fdatasync`s it. A record is durable when the batch it
//! arrived in has been synced ([`AuditLog::flush`] waits for that); the head file follows each
//! synced batch (at most every [`AuditSettings::head_interval`]). When the channel is full, or
//! the disk refuses a write, `append` returns an error, [`AuditLog::health`] says so and counts,
//! and once the writer can write again it records how many appends were refused and how long
//! writing failed, as incidents in the chain. With `refuse_unaudited`, [`AuditLog::admit`] lets
//! a handler refuse to serve while the log cannot take records.

mod canonical;
mod report;
mod segment;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

pub use canonical::{canonical, hmac_sha256_hex, sha256_hex};
pub use report::{report, AuditReport, Correction, RateRow};
pub use segment::Head;
pub use verify::{verify, Finding, Location, Problem, SignatureCheck, StreamReport, VerifyReport};
pub use writer::{AuditHealth, AuditLog};

use crate::pipeline::Suggestion;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The `prev_hash` of the first record of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Which door a record came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// `POST /v1/triage`
    Triage,
    /// `POST /v1/triage/stream`
    TriageStream,
    /// `/open311/v2/requests`
    Open311,
    /// A batch job (`POST /v1/jobs`)
    Jobs,
    /// `POST /v1/feedback`
    Feedback,
    /// The command line (`triage classify`, `triage batch`)
    Cli,
}

/// The models that produced a suggestion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Models {
    pub embedder: String,
    /// None when no draft was written (the generator played no part).
    pub generator: Option<String>,
    pub classifier_version: String,
}

impl Models {
    /// `embedder / generator / classifier_version`, the key of the per-model rows of a report.
    pub fn label(&self) -> String {
        format!(
            "{} / {} / {}",
            self.embedder,
            self.generator.as_deref().unwrap_or("-"),
            self.classifier_version
        )
    }
}

/// What was suggested. Ids, not display names, so renaming a category keeps the figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SuggestionRecord {
    /// The top category's id (even when abstaining: what the model leaned to).
    pub category: Option<String>,
    /// The top category's calibrated probability.
    pub confidence: f64,
    /// True when the suggestion left the choice to a person.
    pub abstain: bool,
    /// Unit ids, best first.
    pub units: Vec<String>,
    /// The past case this complaint was flagged as a repeat of.
    pub duplicate: Option<String>,
    /// SHA-256 of the work order as served. Hashes rather than the text, because both are
    /// generated from the complaint and may repeat personal data; the hash proves which one
    /// was served when the text is kept elsewhere.
    pub work_order_sha256: Option<String>,
    /// SHA-256 of the reply draft as served (after the faithfulness guard).
    pub draft_sha256: Option<String>,
}

impl SuggestionRecord {
    /// The record of a pipeline suggestion; `work_order` is the work order text as served.
    pub fn from_suggestion(s: &Suggestion, work_order: Option<&str>) -> Self {
        let top = s.categories.first();
        Self {
            category: top.map(|c| c.id.clone()),
            confidence: top.map_or(0.0, |c| f64::from(c.probability)),
            abstain: s.abstain,
            units: s.units.iter().map(|u| u.unit_id.clone()).collect(),
            duplicate: s.duplicate.as_ref().map(|d| d.case_id.clone()),
            work_order_sha256: work_order.map(|w| sha256_hex(w.as_bytes())),
            draft_sha256: s.draft.as_deref().map(|d| sha256_hex(d.as_bytes())),
        }
    }
}

/// Whether a person kept what was suggested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Accepted,
    Corrected,
    /// No suggestion was known when the decision was recorded (the report may still find it by
    /// the request or case id).
    Unknown,
}

/// One value a person chose, beside what had been suggested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub chosen: String,
    pub suggested: Option<String>,
    pub outcome: Outcome,
}

impl Choice {
    /// Compares ids: resolve names to ids before (the taxonomy's and unit directory's lookups).
    pub fn new(chosen: impl Into<String>, suggested: Option<String>) -> Self {
        let chosen = chosen.into();
        let outcome = match &suggested {
            None => Outcome::Unknown,
            Some(s) if *s == chosen => Outcome::Accepted,
            Some(_) => Outcome::Corrected,
        };
        Self {
            chosen,
            suggested,
            outcome,
        }
    }
}

/// A call-taker's decision on a suggestion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The request id of the suggestion decided on, when the client sends it back.
    pub suggestion_request_id: Option<String>,
    pub category: Choice,
    pub unit: Option<Choice>,
}

/// What a request record says happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Suggestion(SuggestionRecord),
    Decision(DecisionRecord),
}

/// How the complaint's text is kept in the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextPolicy {
    /// Phone and ID numbers and e-mail addresses replaced (`pii::mask`).
    #[default]
    Masked,
    /// Only the SHA-256 of the text: proves which text it was, shows nothing.
    Sha256,
    /// Not kept at all.
    Omit,
}

/// The complaint text as stored: `{"masked": "…"}` or `{"sha256": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredText {
    Masked(String),
    Sha256(String),
}

impl StoredText {
    pub fn new(policy: TextPolicy, text: &str) -> Option<Self> {
        match policy {
            TextPolicy::Masked => Some(Self::Masked(crate::pii::mask(text))),
            TextPolicy::Sha256 => Some(Self::Sha256(sha256_hex(text.as_bytes()))),
            TextPolicy::Omit => None,
        }
    }
}

/// What a handler appends: one per served suggestion or decision. The log adds `seq`,
/// `prev_hash` and `hash`, and applies the text policy.
#[derive(Clone)]
pub struct Record {
    pub time: DateTime<Utc>,
    pub request_id: String,
    /// The API key's name (never the key itself).
    pub key_name: Option<String>,
    pub route: Route,
    pub models: Models,
    pub case_id: Option<String>,
    pub district: Option<String>,
    /// The complaint as received. Never written as is: masked, hashed or dropped by
    /// [`AuditSettings::text`], on the writer thread.
    pub text: Option<String>,
    pub event: Event,
}

impl std::fmt::Debug for Record {
    // The complaint text stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("time", &self.time)
            .field("request_id", &self.request_id)
            .field("key_name", &self.key_name)
            .field("route", &self.route)
            .field("models", &self.models)
            .field("case_id", &self.case_id)
            .field("district", &self.district)
            .field("text_chars", &self.text.as_ref().map(|t| t.chars().count()))
            .field("event", &self.event)
            .finish()
    }
}

impl Record {
    /// A record stamped now; set the optional fields with the `with_*` methods.
    pub fn new(request_id: impl Into<String>, route: Route, models: Models, event: Event) -> Self {
        Self {
            time: Utc::now(),
            request_id: request_id.into(),
            key_name: None,
            route,
            models,
            case_id: None,
            district: None,
            text: None,
            event,
        }
    }

    pub fn with_key_name(mut self, name: Option<impl Into<String>>) -> Self {
        self.key_name = name.map(Into::into);
        self
    }

    pub fn with_case_id(mut self, id: Option<impl Into<String>>) -> Self {
        self.case_id = id.map(Into::into);
        self
    }

    pub fn with_district(mut self, district: Option<impl Into<String>>) -> Self {
        self.district = district.map(Into::into);
        self
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
}

/// The request fields of a stored suggestion or decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestContext {
    pub request_id: String,
    pub key_name: Option<String>,
    pub route: Route,
    pub models: Models,
    pub case_id: Option<String>,
    pub district: Option<String>,
    pub text: Option<StoredText>,
}

/// A segment dropped by retention, described well enough to check the chain across the hole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedSegment {
    pub file: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_hash: String,
    pub last_time: DateTime<Utc>,
}

/// Written before retention deletes segments, so the hole at the start of the log is explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub days: u32,
    pub removed: Vec<RemovedSegment>,
}

/// Something the writer noticed about the log itself, kept in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Incident {
    /// `append` refused this many records (queue full, or writing failing) since the last record.
    Dropped { count: u64 },
    /// Writing failed from `since` until this record; the records sealed meanwhile were kept
    /// and written once it worked again.
    WriteFailed {
        since: DateTime<Utc>,
        attempts: u64,
        error: String,
    },
    /// A crash left a partial line at the end of a segment; it was cut off when the log was
    /// reopened (it had not been synced, so it was never reported durable).
    TornTail { segment: String, bytes: u64 },
    /// On opening, the log ended before what the head file had signed off: records at the end
    /// were removed (or the last one replaced) while the service was down.
    TailBehindHead {
        head_next_seq: u64,
        head_last_hash: String,
        found_next_seq: u64,
        found_last_hash: String,
    },
    /// On opening, the head file was missing although segments exist.
    HeadMissing,
    /// On opening, the head file did not parse or its signature did not match.
    HeadInvalid { reason: String },
}

impl Incident {
    /// True for incidents that mean the log was tampered with or damaged (not just busy).
    pub fn is_damage(&self) -> bool {
        match self {
            Incident::Dropped { .. } | Incident::WriteFailed { .. } | Incident::TornTail { .. } => {
                false
            }
            Incident::TailBehindHead { .. }
            | Incident::HeadMissing
            | Incident::HeadInvalid { .. } => true,
        }
    }
}

/// The kinds of stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Suggestion {
        #[serde(flatten)]
        request: RequestContext,
        suggestion: SuggestionRecord,
    },
    Decision {
        #[serde(flatten)]
        request: RequestContext,
        decision: DecisionRecord,
    },
    Retention {
        retention: Retention,
    },
    Incident {
        incident: Incident,
    },
}

/// One line of a segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub prev_hash: String,
    pub hash: String,
    #[serde(flatten)]
    pub entry: Entry,
}

/// Settings of the audit log; see `triage serve --help` for each one's flag.
#[derive(Clone)]
pub struct AuditSettings {
    /// This writer's stream (a subdirectory of the audit directory). Replicas sharing a data
    /// directory each need their own; a second writer on a stream is refused.
    pub stream: String,
    pub text: TextPolicy,
    /// Records waiting for the writer, at most; beyond it `append` refuses.
    pub queue: usize,
    pub segment_max_bytes: u64,
    /// Start a new segment at each new UTC day.
    pub rotate_daily: bool,
    /// Delete whole segments whose last record is older than this (recorded in the chain).
    pub retention_days: Option<u32>,
    /// Ask handlers (through [`AuditLog::admit`]) to refuse suggestions while the log cannot take
    /// records, rather than serve unaudited ones.
    pub refuse_unaudited: bool,
    /// Signs the head file (HMAC-SHA256). Without it the head still catches accidental
    /// truncation, but not someone who rewrites it too.
    pub key: Option<Vec<u8>>,
    /// Least time between head file updates (each costs a write, two fsyncs and a rename).
    /// Zero: after every synced batch.
    pub head_interval: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            stream: "main".into(),
            text: TextPolicy::Masked,
            queue: 4096,
            segment_max_bytes: 64 << 20,
            rotate_daily: true,
            retention_days: None,
            refuse_unaudited: false,
            key: None,
            head_interval: Duration::ZERO,
        }
    }
}

impl std::fmt::Debug for AuditSettings {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSettings")
            .field("stream", &self.stream)
            .field("text", &self.text)
            .field("queue", &self.queue)
            .field("segment_max_bytes", &self.segment_max_bytes)
            .field("rotate_daily", &self.rotate_daily)
            .field("retention_days", &self.retention_days)
            .field("refuse_unaudited", &self.refuse_unaudited)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("head_interval", &self.head_interval)
            .finish()
    }
}
