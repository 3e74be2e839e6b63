//! [`AuditLog`]: a bounded channel in front of one writer thread that seals, writes and syncs
//! records in batches.
//!
//! Why a thread and not a lock around the file: a request must never wait for the disk. The
//! channel decouples them; a full channel (the disk is slower than the requests, or failing) is
//! answered at once with an error the caller can act on, and counted. Batching gives group
//! commit for free: while one `fdatasync` runs, the next batch gathers.

use super::segment::{
    check_line, check_stream_name, list_segments, read_first_line, read_tail, seal, segment_name,
    Checked, Head, LOCK_FILE,
};
use super::{
    AuditSettings, Entry, Event, Incident, Record, RemovedSegment, RequestContext, Retention,
    StoredRecord, StoredText, GENESIS,
};
use crate::{Error, Result};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Records sealed before one write and sync.
const MAX_BATCH: usize = 4096;
/// How often retention looks for old segments besides after each new segment.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Attempts to write after the log was closed before the writer gives up.
const ATTEMPTS_WHEN_CLOSING: u64 = 3;

enum Msg {
    Record(Box<Record>),
    Flush(SyncSender<()>),
}

#[derive(Default)]
struct Shared {
    accepted: AtomicU64,
    taken: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    lost: AtomicU64,
    durable_next_seq: AtomicU64,
    failure: Mutex<Option<(DateTime<Utc>, String)>>,
    writer_alive: AtomicBool,
    closing: AtomicBool,
}

/// What `/health` and the metrics need to know about the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditHealth {
    /// The log takes records and writes them.
    pub healthy: bool,
    /// Why not, when not.
    pub problem: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    /// Records `append` accepted since the log was opened.
    pub accepted: u64,
    /// Records `append` refused (queue full, writer stopped): each one an unaudited request.
    pub dropped: u64,
    /// Failed attempts to write or sync (each is retried).
    pub write_errors: u64,
    /// Records waiting for the writer, and the most that may wait.
    pub queued: u64,
    pub queue: usize,
    /// Records `0..durable_next_seq` of this stream are synced to disk.
    pub durable_next_seq: u64,
}

/// The audit log of one stream, open for appending. Put one in the app state; call
/// [`append`](Self::append) once per served suggestion or decision. Dropping it writes what is
/// queued and closes the stream.
pub struct AuditLog {
    sender: Option<SyncSender<Msg>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    settings: AuditSettings,
    dir: PathBuf,
}

impl AuditLog {
    /// Opens (or creates) the stream `settings.stream` under `audit_dir` (`DATA_DIR/audit`).
    /// Fails when another process has the stream open, when the directory cannot be written,
    /// or when the last record is damaged (not just cut short by a crash, which is repaired
    /// and recorded).
    pub fn open(audit_dir: &Path, settings: AuditSettings) -> Result<Self> {
        check_stream_name(&settings.stream)?;
        if settings.queue == 0 {
            return Err(Error::InvalidInput(
                "the audit queue must hold at least one record".into(),
            ));
        }
        let dir = audit_dir.join(&settings.stream);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        fs2::FileExt::try_lock_exclusive(&lock).map_err(|_| {
            Error::Conflict(format!(
                "the audit stream {} is open in another process: give each replica its own \
                 audit stream",
                dir.display()
            ))
        })?;
        let recovered = recover(&dir, &settings)?;
        let shared = Arc::new(Shared {
            writer_alive: AtomicBool::new(true),
            durable_next_seq: AtomicU64::new(recovered.next_seq),
            ..Default::default()
        });
        let (sender, receiver) = sync_channel(settings.queue);
        let writer = Writer {
            dir: dir.clone(),
            settings: settings.clone(),
            shared: shared.clone(),
            _lock: lock,
            next_seq: recovered.next_seq,
            last_hash: recovered.last_hash.clone(),
            durable: (recovered.next_seq, recovered.last_hash),
            pending: VecDeque::new(),
            segment: recovered.segment,
            dropped_noted: 0,
            head_written: None,
            head_at: Instant::now(),
            last_retention: Instant::now(),
            rotated: false,
        };
        let incidents = recovered.incidents;
        let thread = std::thread::Builder::new()
            .name(format!("audit-{}", settings.stream))
            .spawn(move || writer.run(receiver, incidents))
            .map_err(|e| Error::io(&dir, e))?;
        Ok(Self {
            sender: Some(sender),
            shared,
            thread: Some(thread),
            settings,
            dir,
        })
    }

    /// The stream's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn settings(&self) -> &AuditSettings {
        &self.settings
    }

    /// Queues a record and returns at once. `Err(NotReady)` when the queue is full or the writer
    /// has stopped: the record is not kept, and the count of refused records goes into the log
    /// as an incident once it can write again. Durable once the next [`flush`](Self::flush)
    /// returns, normally within one disk sync.
    pub fn append(&self, record: Record) -> Result<()> {
        let Some(sender) = &self.sender else {
            return Err(Error::NotReady("the audit log is closed".into()));
        };
        match sender.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => {
                self.shared.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                Err(Error::NotReady(format!(
                    "the audit log is not keeping up ({} records queued){}",
                    self.settings.queue,
                    self.failure_note()
                )))
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                Err(Error::NotReady("the audit writer has stopped".into()))
            }
        }
    }

    fn failure_note(&self) -> String {
        match &*self.shared.failure.lock().expect("audit failure lock") {
            Some((since, error)) => format!("; writing fails since {since}: {error}"),
            None => String::new(),
        }
    }

    pub fn health(&self) -> AuditHealth {
        let failure = self
            .shared
            .failure
            .lock()
            .expect("audit failure lock")
            .clone();
        let accepted = self.shared.accepted.load(Ordering::Relaxed);
        let queued = accepted.saturating_sub(self.shared.taken.load(Ordering::Relaxed));
        let problem = if !self.shared.writer_alive.load(Ordering::Relaxed) {
            Some("the audit writer has stopped".to_string())
        } else if let Some((since, error)) = &failure {
            Some(format!(
                "audit records cannot be written since {since}: {error}"
            ))
        } else if queued >= self.settings.queue as u64 {
            Some(format!("the audit queue is full ({queued} records)"))
        } else {
            None
        };
        AuditHealth {
            healthy: problem.is_none(),
            problem,
            failing_since: failure.map(|(since, _)| since),
            accepted,
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            write_errors: self.shared.write_errors.load(Ordering::Relaxed),
            queued,
            queue: self.settings.queue,
            durable_next_seq: self.shared.durable_next_seq.load(Ordering::Relaxed),
        }
    }

    /// `Err(NotReady)` naming the problem when the log cannot take records now.
    pub fn ensure_healthy(&self) -> Result<()> {
        match self.health().problem {
            None => Ok(()),
            Some(problem) => Err(Error::NotReady(problem)),
        }
    }

    /// What a handler calls before serving a suggestion: [`ensure_healthy`](Self::ensure_healthy)
    /// when `refuse_unaudited` is set, otherwise always `Ok` (the service then serves and
    /// counts the unaudited requests in `health().dropped`).
    pub fn admit(&self) -> Result<()> {
        if self.settings.refuse_unaudited {
            self.ensure_healthy()
        } else {
            Ok(())
        }
    }

    /// Waits until every record appended before this call is synced, and the head file with
    /// it. Returns the stream's durable record count.
    pub fn flush(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let Some(sender) = &self.sender else {
            return Err(Error::NotReady("the audit log is closed".into()));
        };
        let (tx, rx) = sync_channel(1);
        let mut msg = Msg::Flush(tx);
        loop {
            match sender.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => {
                    return Err(Error::NotReady(format!(
                        "audit records not durable after {timeout:?}{}",
                        self.failure_note()
                    )))
                }
            }
        }
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| {
                Error::NotReady(format!(
                    "audit records not durable after {timeout:?}{}",
                    self.failure_note()
                ))
            })?;
        Ok(self.shared.durable_next_seq.load(Ordering::Relaxed))
    }

    /// Writes what is queued, updates the head file and closes the stream. `Err` when records
    /// could not be written (the disk kept failing).
    pub fn close(mut self) -> Result<()> {
        self.shut_down();
        match self.shared.lost.load(Ordering::Relaxed) {
            0 => Ok(()),
            lost => Err(Error::NotReady(format!(
                "{lost} audit records could not be written to {}",
                self.dir.display()
            ))),
        }
    }

    fn shut_down(&mut self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// A record sealed and waiting to be written.
struct Line {
    seq: u64,
    hash: String,
    day: NaiveDate,
    bytes: Vec<u8>,
}

/// The segment being appended to.
struct Segment {
    first_seq: u64,
    path: PathBuf,
    /// None until opened, and after a failed write (reopened, and the partial write cut off,
    /// on the next try).
    file: Option<File>,
    /// Bytes known to be written and synced.
    len: u64,
    day: NaiveDate,
}

struct Writer {
    dir: PathBuf,
    settings: AuditSettings,
    shared: Arc<Shared>,
    _lock: File,
    /// The next record's seq and prev_hash.
    next_seq: u64,
    last_hash: String,
    /// The same for what is synced.
    durable: (u64, String),
    pending: VecDeque<Line>,
    segment: Option<Segment>,
    dropped_noted: u64,
    /// The `next_seq` the head file was last written with, and when.
    head_written: Option<u64>,
    head_at: Instant,
    last_retention: Instant,
    rotated: bool,
}

struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.writer_alive.store(false, Ordering::Relaxed);
    }
}

impl Writer {
    fn run(mut self, receiver: Receiver<Msg>, incidents: Vec<Incident>) {
        let _alive = AliveGuard(self.shared.clone());
        for incident in incidents {
            tracing::error!(?incident, dir = %self.dir.display(), "audit log: found on opening");
            self.seal(Utc::now(), Entry::Incident { incident });
        }
        self.commit(true);
        self.retention();
        loop {
            let head_due = self.head_written != Some(self.durable.0);
            let first = if head_due {
                let wait = self
                    .settings
                    .head_interval
                    .saturating_sub(self.head_at.elapsed());
                match receiver.recv_timeout(wait) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        self.commit(true);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match receiver.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                }
            };
            self.note_dropped();
            let mut flushes = Vec::new();
            self.take(first, &mut flushes);
            while self.pending.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(msg) => self.take(msg, &mut flushes),
                    Err(_) => break,
                }
            }
            self.commit(!flushes.is_empty());
            if self.pending.is_empty() {
                for flush in flushes {
                    let _ = flush.send(());
                }
            }
            if self.rotated || self.last_retention.elapsed() >= RETENTION_EVERY {
                self.retention();
            }
        }
        self.note_dropped();
        self.commit(true);
        if !self.pending.is_empty() {
            let lost = self.pending.len() as u64;
            self.shared.lost.fetch_add(lost, Ordering::Relaxed);
            tracing::error!(lost, dir = %self.dir.display(), "audit log: records not written at close");
        }
    }

    fn take(&mut self, msg: Msg, flushes: &mut Vec<SyncSender<()>>) {
        match msg {
            Msg::Record(record) => {
                self.shared.taken.fetch_add(1, Ordering::Relaxed);
                self.seal_request(*record);
            }
            Msg::Flush(reply) => flushes.push(reply),
        }
    }

    /// Records, in the chain, how many appends were refused since the last note.
    fn note_dropped(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped > self.dropped_noted {
            let count = dropped - self.dropped_noted;
            self.dropped_noted = dropped;
            self.seal(
                Utc::now(),
                Entry::Incident {
                    incident: Incident::Dropped { count },
                },
            );
        }
    }

    fn seal_request(&mut self, record: Record) {
        let request = RequestContext {
            request_id: record.request_id,
            key_name: record.key_name,
            route: record.route,
            models: record.models,
            case_id: record.case_id,
            district: record.district,
            text: record
                .text
                .as_deref()
                .and_then(|t| StoredText::new(self.settings.text, t)),
        };
        let entry = match record.event {
            Event::Suggestion(mut suggestion) => {
                // Four decimals are all an audit needs (an f32 probability widened to f64 prints
                // as 0.9100000262260437); NaN would serialise as null and not read back.
                suggestion.confidence = if suggestion.confidence.is_finite() {
                    (suggestion.confidence * 1e4).round() / 1e4
                } else {
                    0.0
                };
                Entry::Suggestion {
                    request,
                    suggestion,
                }
            }
            Event::Decision(decision) => Entry::Decision { request, decision },
        };
        self.seal(record.time, entry);
    }

    fn seal(&mut self, time: DateTime<Utc>, entry: Entry) {
        let mut record = StoredRecord {
            seq: self.next_seq,
            time,
            prev_hash: std::mem::take(&mut self.last_hash),
            hash: String::new(),
            entry,
        };
        let bytes = seal(&mut record);
        self.last_hash.clone_from(&record.hash);
        self.next_seq += 1;
        self.pending.push_back(Line {
            seq: record.seq,
            hash: record.hash,
            day: time.date_naive(),
            bytes,
        });
    }

    /// Writes and syncs everything pending (and the head file when due), retrying with backoff
    /// while the disk fails. Once it works again, records how long it failed.
    fn commit(&mut self, force_head: bool) {
        loop {
            let mut attempts = 0u64;
            let mut since = None;
            let mut error = String::new();
            let mut backoff = Duration::from_millis(20);
            loop {
                let result = self
                    .write_pending()
                    .map_err(|e| e.to_string())
                    .and_then(|()| self.write_head(force_head || attempts > 0));
                match result {
                    Ok(()) => break,
                    Err(e) => {
                        attempts += 1;
                        self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
                        let since = *since.get_or_insert_with(Utc::now);
                        if attempts == 1 {
                            tracing::error!(error = %e, dir = %self.dir.display(), "audit log: write failed; retrying");
                        }
                        *self.shared.failure.lock().expect("audit failure lock") =
                            Some((since, e.clone()));
                        error = e;
                        if self.shared.closing.load(Ordering::Relaxed)
                            && attempts >= ATTEMPTS_WHEN_CLOSING
                        {
                            return;
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
            let Some(since) = since else { return };
            *self.shared.failure.lock().expect("audit failure lock") = None;
            tracing::warn!(attempts, dir = %self.dir.display(), "audit log: writing works again");
            self.seal(
                Utc::now(),
                Entry::Incident {
                    incident: Incident::WriteFailed {
                        since,
                        attempts,
                        error,
                    },
                },
            );
        }
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        let max = self.settings.segment_max_bytes;
        let daily = self.settings.rotate_daily;
        let full = |seg: &Segment, extra: u64, line: &Line| {
            // A segment holds at least one record, however long.
            let used = seg.len + extra;
            used > 0 && (used + line.bytes.len() as u64 > max || (daily && line.day > seg.day))
        };
        while let Some(front) = self.pending.front() {
            if self.segment.as_ref().is_none_or(|seg| full(seg, 0, front)) {
                let (seq, day) = (front.seq, front.day);
                self.start_segment(seq, day)?;
            }
            let seg = self.segment.as_mut().expect("a segment was started");
            if seg.file.is_none() {
                seg.file = Some(open_segment(&seg.path, seg.len)?);
            }
            let mut buf = Vec::new();
            let mut n = 0;
            for line in &self.pending {
                if n > 0 && full(seg, buf.len() as u64, line) {
                    break;
                }
                buf.extend_from_slice(&line.bytes);
                n += 1;
            }
            let file = seg.file.as_mut().expect("opened above");
            if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
                seg.file = None;
                return Err(e);
            }
            seg.len += buf.len() as u64;
            for line in self.pending.drain(..n) {
                self.durable = (line.seq + 1, line.hash);
            }
            self.shared
                .durable_next_seq
                .store(self.durable.0, Ordering::Relaxed);
        }
        Ok(())
    }

    fn start_segment(&mut self, first_seq: u64, day: NaiveDate) -> std::io::Result<()> {
        let path = self.dir.join(segment_name(first_seq));
        // Empty: anything there is a partial write of these same records from a failed try.
        let file = open_segment(&path, 0)?;
        File::open(&self.dir)?.sync_all()?;
        self.segment = Some(Segment {
            first_seq,
            path,
            file: Some(file),
            len: 0,
            day,
        });
        self.rotated = true;
        Ok(())
    }

    fn write_head(&mut self, force: bool) -> std::result::Result<(), String> {
        if self.head_written == Some(self.durable.0)
            || (!force && self.head_at.elapsed() < self.settings.head_interval)
        {
            return Ok(());
        }
        let mut head = Head {
            stream: self.settings.stream.clone(),
            next_seq: self.durable.0,
            last_hash: self.durable.1.clone(),
            time: Utc::now(),
            mac: None,
        };
        head.sign(self.settings.key.as_deref());
        head.write(&self.dir).map_err(|e| e.to_string())?;
        self.head_written = Some(head.next_seq);
        self.head_at = Instant::now();
        Ok(())
    }

    /// Drops whole segments whose last record is older than the retention, after writing (and
    /// syncing) a record that describes them.
    fn retention(&mut self) {
        self.last_retention = Instant::now();
        self.rotated = false;
        let (Some(days), Some(current)) = (
            self.settings.retention_days,
            self.segment.as_ref().map(|s| s.first_seq),
        ) else {
            return;
        };
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
        let segments = match list_segments(&self.dir) {
            Ok(segments) => segments,
            Err(error) => {
                tracing::warn!(%error, "audit retention: cannot list segments");
                return;
            }
        };
        let mut removed = Vec::new();
        let mut paths = Vec::new();
        for (first_seq, path) in segments {
            if first_seq >= current {
                break;
            }
            // Never delete what cannot be described: a damaged segment stays for `verify`.
            let Ok(tail) = read_tail(&path) else { break };
            let Some(Checked::Record {
                record,
                intact: true,
            }) = tail.line.as_deref().map(check_line)
            else {
                break;
            };
            if record.time >= cutoff {
                break;
            }
            removed.push(RemovedSegment {
                file: segment_name(first_seq),
                first_seq,
                last_seq: record.seq,
                last_hash: record.hash,
                last_time: record.time,
            });
            paths.push(path);
        }
        if removed.is_empty() {
            return;
        }
        self.seal(
            Utc::now(),
            Entry::Retention {
                retention: Retention { days, removed },
            },
        );
        self.commit(true);
        if !self.pending.is_empty() {
            return;
        }
        for path in paths {
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(%error, path = %path.display(), "audit retention: cannot delete");
            }
        }
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
    }
}

/// Opens a segment for appending and cuts it back to `good_len` (a write that failed halfway
/// leaves a partial line).
fn open_segment(path: &Path, good_len: u64) -> std::io::Result<File> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    if file.metadata()?.len() > good_len {
        file.set_len(good_len)?;
    }
    Ok(file)
}

/// Where the log stands on disk when it is opened.
struct Recovered {
    next_seq: u64,
    last_hash: String,
    segment: Option<Segment>,
    incidents: Vec<Incident>,
}

fn recover(dir: &Path, settings: &AuditSettings) -> Result<Recovered> {
    let mut incidents = Vec::new();
    let mut segments = list_segments(dir)?;
    let had_segments = !segments.is_empty();
    let mut last: Option<(Box<StoredRecord>, Segment)> = None;
    while let Some((first_seq, path)) = segments.pop() {
        let tail = read_tail(&path).map_err(|e| Error::io(&path, e))?;
        if tail.torn > 0 {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            file.set_len(tail.complete_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(&path, e))?;
            incidents.push(Incident::TornTail {
                segment: segment_name(first_seq),
                bytes: tail.torn,
            });
        }
        let Some(line) = tail.line else {
            // Created but never written (a crash or a failed first write): nothing to keep.
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            continue;
        };
        let Checked::Record {
            record,
            intact: true,
        } = check_line(&line)
        else {
            return Err(Error::Conflict(format!(
                "{}: the last audit record is damaged; run `triage audit verify` to see what \
                 else is, then move {} aside to start a new chain",
                path.display(),
                dir.display()
            )));
        };
        let day = read_first_line(&path)
            .ok()
            .flatten()
            .and_then(|l| match check_line(&l) {
                Checked::Record { record, .. } => Some(record.time.date_naive()),
                _ => None,
            })
            .unwrap_or_else(|| Utc::now().date_naive());
        let segment = Segment {
            first_seq,
            path,
            file: None,
            len: tail.complete_len,
            day,
        };
        last = Some((record, segment));
        break;
    }
    let (next_seq, last_hash, segment) = match last {
        Some((record, segment)) => (record.seq + 1, record.hash, Some(segment)),
        None => (0, GENESIS.to_string(), None),
    };
    match Head::read(dir) {
        Ok(None) if had_segments => incidents.push(Incident::HeadMissing),
        Ok(None) => {
            // A new stream: the head exists from the start, so a missing one later means
            // someone removed it. Written here so that an unwritable directory fails `open`.
            let mut head = Head {
                stream: settings.stream.clone(),
                next_seq: 0,
                last_hash: GENESIS.into(),
                time: Utc::now(),
                mac: None,
            };
            head.sign(settings.key.as_deref());
            head.write(dir)?;
        }
        Err(reason) => incidents.push(Incident::HeadInvalid { reason }),
        Ok(Some(head)) => {
            if let Some(key) = &settings.key {
                if !head.signature_matches(key) {
                    incidents.push(Incident::HeadInvalid {
                        reason: match head.mac {
                            None => "the head file is not signed".into(),
                            Some(_) => "the head file's signature does not match the key".into(),
                        },
                    });
                }
            }
            if head.next_seq > next_seq
                || (head.next_seq == next_seq && head.last_hash != last_hash)
            {
                incidents.push(Incident::TailBehindHead {
                    head_next_seq: head.next_seq,
                    head_last_hash: head.last_hash,
                    found_next_seq: next_seq,
                    found_last_hash: last_hash.clone(),
                });
            }
        }
    }
    Ok(Recovered {
        next_seq,
        last_hash,
        segment,
        incidents,
    })
}
