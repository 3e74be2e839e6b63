//! The audit log's tests: writing and reading back, every kind of single-record tampering on a
//! 10,000-record log, many writers, a full queue and a full disk, retention, recovery, report.

use super::*;
use crate::Error;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &[u8] = b"audit test key";

fn models(classifier: &str) -> Models {
    Models {
        embedder: "multilingual-e5-small".into(),
        generator: Some("gemma-3-270m".into()),
        classifier_version: classifier.into(),
    }
}

fn suggestion(i: usize) -> Record {
    Record::new(
        format!("req-{i}"),
        Route::Triage,
        models("v1"),
        Event::Suggestion(SuggestionRecord {
            category: Some(format!("cat-{}", i % 7)),
            confidence: 0.5 + (i % 50) as f64 / 100.0,
            abstain: i.is_multiple_of(11),
            units: vec![format!("unit-{}", i % 5), format!("unit-{}", (i + 1) % 5)],
            duplicate: i.is_multiple_of(13).then(|| format!("case-{}", i / 2)),
            work_order_sha256: Some(sha256_hex(format!("work order {i}").as_bytes())),
            draft_sha256: Some(sha256_hex(format!("draft {i}").as_bytes())),
        }),
    )
    .with_key_name(Some("desk-1"))
    .with_case_id(Some(format!("case-{i}")))
    .with_district(Some(format!("district-{}", i % 3)))
    .with_text(format!("第{i}号：楼下夜里施工噪音扰民，请回电13812345678"))
}

fn decision(i: usize) -> Record {
    let suggested = format!("cat-{}", i % 7);
    let chosen = if i.is_multiple_of(3) {
        "cat-0".to_string()
    } else {
        suggested.clone()
    };
    Record::new(
        format!("fb-{i}"),
        Route::Feedback,
        models("v1"),
        Event::Decision(DecisionRecord {
            suggestion_request_id: Some(format!("req-{i}")),
            category: Choice::new(chosen, Some(suggested)),
            unit: Some(Choice::new(
                format!("unit-{}", i % 5),
                Some(format!("unit-{}", i % 5)),
            )),
        }),
    )
    .with_key_name(Some("desk-2"))
    .with_text(format!("第{i}号"))
}

/// Every fourth record a decision on the suggestion before it.
fn record(i: usize) -> Record {
    if i % 4 == 3 {
        decision(i - 1)
    } else {
        suggestion(i)
    }
}

fn settings() -> AuditSettings {
    AuditSettings {
        key: Some(KEY.to_vec()),
        rotate_daily: false,
        ..Default::default()
    }
}

/// Appends, waiting out a full queue (the tests want every record, not the refusal).
fn append_all(log: &AuditLog, records: impl IntoIterator<Item = Record>) {
    for record in records {
        let mut record = Some(record);
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(r) = record.take() {
            let retry = r.clone();
            if log.append(r).is_err() {
                assert!(Instant::now() < deadline, "audit queue stayed full");
                std::thread::sleep(Duration::from_micros(200));
                record = Some(retry);
            }
        }
    }
}

fn write_log(audit: &Path, settings: AuditSettings, n: usize) {
    let log = AuditLog::open(audit, settings).unwrap();
    append_all(&log, (0..n).map(record));
    log.close().unwrap();
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\n").unwrap_or(l).to_vec())
        .collect()
}

fn stored(line: &[u8]) -> StoredRecord {
    serde_json::from_slice(line).unwrap()
}

#[test]
fn records_read_back_masked_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let audit = tmp.path().join("audit");
    write_log(&audit, settings(), 8);
    let report = verify(&audit, Some(KEY)).unwrap();
    assert!(report.is_clean(), "{:?}", report.streams[0].findings);
    let stream = &report.streams[0];
    assert_eq!(
        (stream.records, stream.first_seq, stream.last_seq),
        (8, Some(0), Some(7))
    );
    assert_eq!(stream.signature, SignatureCheck::Verified);

    let segment = audit.join("main/000000000000.jsonl");
    let raw = std::fs::read_to_string(&segment).unwrap();
    assert!(
        !raw.contains("13812345678"),
        "complaint text written unmasked"
    );
    let all = lines(&segment);
    let first = stored(&all[0]);
    assert_eq!(first.prev_hash, GENESIS);
    assert_eq!(stored(&all[1]).prev_hash, first.hash);
    let Entry::Suggestion {
        request,
        suggestion,
    } = &first.entry
    else {
        panic!("{first:?}")
    };
    assert_eq!(request.key_name.as_deref(), Some("desk-1"));
    assert_eq!(request.route, Route::Triage);
    assert_eq!(
        request.text,
        Some(StoredText::Masked(
            "第0号：楼下夜里施工噪音扰民，请回电[手机号]".into()
        ))
    );
    assert_eq!(suggestion.category.as_deref(), Some("cat-0"));
    let Entry::Decision { decision, .. } = &stored(&all[3]).entry else {
        panic!()
    };
    assert_eq!(decision.category.outcome, Outcome::Accepted);
    // A line is its canonical form with the hash first: verify hashes the bytes after it.
    let mut value: Value = serde_json::from_slice(&all[2]).unwrap();
    assert_eq!(layout(&value), all[2]);
    let hash = value.as_object_mut().unwrap().remove("hash").unwrap();
    assert_eq!(Value::String(sha256_hex(&canonical(&value))), hash);
}

#[test]
fn text_policy_sha256_and_omit() {
    for (policy, expect) in [
        (
            TextPolicy::Sha256,
            Some(StoredText::Sha256(sha256_hex(
                "第0号：楼下夜里施工噪音扰民，请回电13812345678".as_bytes(),
            ))),
        ),
        (TextPolicy::Omit, None),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        write_log(
            tmp.path(),
            AuditSettings {
                text: policy,
                ..settings()
            },
            1,
        );
        let all = lines(&tmp.path().join("main/000000000000.jsonl"));
        let Entry::Suggestion { request, .. } = stored(&all[0]).entry else {
            panic!()
        };
        assert_eq!(request.text, expect);
    }
    let debug = format!("{:?}", suggestion(0));
    assert!(
        !debug.contains("1381234"),
        "Debug shows the complaint text: {debug}"
    );
}

/// A 10,000-record log in 20-odd segments, loaded into memory; each tampering is applied to the
/// files, verified and undone.
struct Tamper {
    _tmp: tempfile::TempDir,
    audit: PathBuf,
    segments: Vec<(PathBuf, Vec<Vec<u8>>)>,
    /// seq → (segment, line index)
    index: Vec<(usize, usize)>,
}

#[derive(Clone)]
enum Change {
    Lines(Vec<Vec<u8>>),
    Bytes(Vec<u8>),
    Remove,
}

impl Tamper {
    fn new(n: usize) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let audit = tmp.path().join("audit");
        write_log(
            &audit,
            AuditSettings {
                segment_max_bytes: 256 << 10,
                queue: 1 << 14,
                ..settings()
            },
            n,
        );
        let dir = audit.join("main");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        paths.sort();
        let segments: Vec<_> = paths.into_iter().map(|p| (p.clone(), lines(&p))).collect();
        let mut index = Vec::new();
        for (s, (_, lines)) in segments.iter().enumerate() {
            for (l, line) in lines.iter().enumerate() {
                assert_eq!(stored(line).seq as usize, index.len());
                index.push((s, l));
            }
        }
        assert_eq!(index.len(), n);
        Self {
            _tmp: tmp,
            audit,
            segments,
            index,
        }
    }

    fn name(&self, segment: usize) -> String {
        self.segments[segment]
            .0
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    fn check(&self, changes: &[(usize, Change)]) -> VerifyReport {
        self.check_with(changes, |_| {})
    }

    fn check_with(&self, changes: &[(usize, Change)], also: impl Fn(&Path)) -> VerifyReport {
        for (s, change) in changes {
            let path = &self.segments[*s].0;
            match change {
                Change::Lines(lines) => std::fs::write(path, join(lines)).unwrap(),
                Change::Bytes(bytes) => std::fs::write(path, bytes).unwrap(),
                Change::Remove => std::fs::remove_file(path).unwrap(),
            }
        }
        let head = std::fs::read(self.audit.join("main/HEAD.json")).unwrap();
        also(&self.audit.join("main"));
        let report = verify(&self.audit, Some(KEY)).unwrap();
        for (s, _) in changes {
            std::fs::write(&self.segments[*s].0, join(&self.segments[*s].1)).unwrap();
        }
        std::fs::write(self.audit.join("main/HEAD.json"), head).unwrap();
        report
    }

    fn line(&self, seq: usize) -> &[u8] {
        let (s, l) = self.index[seq];
        &self.segments[s].1[l]
    }

    fn location(&self, seq: usize) -> (String, u64) {
        let (s, l) = self.index[seq];
        (self.name(s), l as u64 + 1)
    }
}

fn join(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// Whether a finding names the record at `(segment, line)` with `seq`.
fn names(report: &VerifyReport, (segment, line): &(String, u64), seq: u64) -> bool {
    let at = |l: &Location| l.segment == *segment && l.line == *line;
    report.findings().any(|(_, f)| {
        at(&f.at)
            || match &f.problem {
                Problem::ChainBroken { previous } => at(previous),
                Problem::Reordered { after } => at(after),
                Problem::Missing { from_seq, to_seq }
                | Problem::TruncatedTail { from_seq, to_seq } => {
                    (*from_seq..=*to_seq).contains(&seq)
                }
                _ => false,
            }
    })
}

/// A record laid out as the writer lays it out: its hash first, then the canonical rest.
fn layout(value: &Value) -> Vec<u8> {
    let mut body = value.clone();
    let hash = body.as_object_mut().unwrap().remove("hash").unwrap();
    let mut line = format!(r#"{{"hash":{hash},"#).into_bytes();
    line.extend_from_slice(&canonical(&body)[1..]);
    line
}

/// An edit by someone who recomputes the record's own hash.
fn rehash(value: &mut Value) -> Vec<u8> {
    value.as_object_mut().unwrap().remove("hash");
    let hash = sha256_hex(&canonical(value));
    value
        .as_object_mut()
        .unwrap()
        .insert("hash".into(), Value::String(hash));
    layout(value)
}

fn flip_hex(s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

/// The `k`-th kind of edit of one line: a field changed (hash kept), the hash itself, an edit
/// with the hash recomputed, or bytes changed without regard to JSON.
fn edit(line: &[u8], k: usize) -> (Vec<u8>, &'static str) {
    let mut v: Value = serde_json::from_slice(line).unwrap();
    let is_suggestion = v["kind"] == "suggestion";
    let what = match k % 12 {
        0 if is_suggestion => {
            v["suggestion"]["category"] = "cat-x".into();
            "suggestion category"
        }
        0 => {
            v["decision"]["category"]["chosen"] = "cat-x".into();
            "decision category"
        }
        1 if is_suggestion => {
            v["suggestion"]["confidence"] = 0.99.into();
            "confidence"
        }
        1 => {
            v["decision"]["unit"]["chosen"] = "unit-x".into();
            "decision unit"
        }
        2 => {
            v["request_id"] = "req-forged".into();
            "request id"
        }
        3 => {
            v["time"] = "2020-01-01T00:00:00Z".into();
            "time"
        }
        4 => {
            v["seq"] = (v["seq"].as_u64().unwrap() + 1).into();
            "seq"
        }
        5 => {
            v["prev_hash"] = flip_hex(v["prev_hash"].as_str().unwrap()).into();
            "prev_hash"
        }
        6 => {
            v["hash"] = flip_hex(v["hash"].as_str().unwrap()).into();
            "hash only"
        }
        7 => {
            v["key_name"] = "admin".into();
            "key name"
        }
        8 => {
            v["text"] = serde_json::json!({"masked": "另一段文字"});
            "text"
        }
        9 => {
            v["route"] = "open311".into();
            return (rehash(&mut v), "route, hash recomputed");
        }
        10 => {
            v["models"]["classifier_version"] = "v0".into();
            return (rehash(&mut v), "classifier version, hash recomputed");
        }
        _ => {
            let mut bytes = line.to_vec();
            let i = bytes.len() / 2;
            bytes[i] = if bytes[i] == b'7' { b'8' } else { b'7' };
            return (bytes, "one byte");
        }
    };
    (layout(&v), what)
}

#[test]
fn verify_catches_every_single_record_tampering_in_10k() {
    let started = Instant::now();
    let n = 10_000;
    let t = Tamper::new(n);
    let clean = t.check(&[]);
    assert!(clean.is_clean(), "{:?}", clean.streams[0].findings);
    let segments = t.segments.len();
    assert!(segments >= 10, "{segments} segments");

    // Positions: first, last, both ends of every segment, the rest at random.
    let mut positions: Vec<usize> = vec![0, 1, n - 2, n - 1];
    let mut first = 0;
    for (_, lines) in &t.segments {
        positions.extend([first, first + lines.len() - 1]);
        first += lines.len();
    }
    let mut rng = StdRng::seed_from_u64(18);
    while positions.len() < 200 {
        positions.push(rng.gen_range(0..n));
    }
    positions.sort();
    positions.dedup();

    let mut tried = 0;
    let mut missed = Vec::new();
    for (k, &seq) in positions.iter().enumerate() {
        let (s, l) = t.index[seq];
        let at = t.location(seq);

        // Edit: every position, a different kind of edit in turn.
        let (edited, what) = edit(t.line(seq), k);
        let mut lines = t.segments[s].1.clone();
        lines[l] = edited;
        let report = t.check(&[(s, Change::Lines(lines))]);
        tried += 1;
        if !names(&report, &at, seq as u64) {
            missed.push(format!("edit ({what}) of seq {seq}"));
        }

        // Delete: the record's seq must be named as missing.
        let mut lines = t.segments[s].1.clone();
        lines.remove(l);
        let report = t.check(&[(s, Change::Lines(lines))]);
        tried += 1;
        let exact = report.findings().any(|(_, f)| {
            matches!(f.problem,
                Problem::Missing { from_seq, to_seq } | Problem::TruncatedTail { from_seq, to_seq }
                    if (from_seq, to_seq) == (seq as u64, seq as u64))
        });
        if !exact {
            missed.push(format!("delete of seq {seq}"));
        }

        // Swap with the next record (across a segment boundary too).
        if seq + 1 < n {
            let (s2, l2) = t.index[seq + 1];
            let report = if s2 == s {
                let mut lines = t.segments[s].1.clone();
                lines.swap(l, l2);
                t.check(&[(s, Change::Lines(lines))])
            } else {
                let mut a = t.segments[s].1.clone();
                let mut b = t.segments[s2].1.clone();
                std::mem::swap(&mut a[l], &mut b[l2]);
                t.check(&[(s, Change::Lines(a)), (s2, Change::Lines(b))])
            };
            tried += 1;
            let reordered = report.findings().any(|(_, f)| {
                matches!(&f.problem, Problem::Reordered { after }
                    if f.at.seq == Some(seq as u64) && after.seq == Some(seq as u64 + 1))
            });
            if !reordered {
                missed.push(format!("swap of seq {seq} and {}", seq + 1));
            }
        }
    }

    // Delete each whole segment: its exact range must be named.
    let mut first = 0u64;
    for s in 0..segments {
        let last = first + t.segments[s].1.len() as u64 - 1;
        let report = t.check(&[(s, Change::Remove)]);
        tried += 1;
        let exact = report.findings().any(|(_, f)| {
            matches!(f.problem,
                Problem::Missing { from_seq, to_seq } | Problem::TruncatedTail { from_seq, to_seq }
                    if (from_seq, to_seq) == (first, last))
        });
        if !exact {
            missed.push(format!(
                "delete of segment {} (seq {first}..={last})",
                t.name(s)
            ));
        }
        first = last + 1;
    }

    // Truncate the last line: all of it, half of it, only its newline.
    let s = segments - 1;
    let at = t.location(n - 1);
    let whole = join(&t.segments[s].1);
    let last_len = t.segments[s].1.last().unwrap().len();
    for (what, cut) in [
        ("whole", last_len + 1),
        ("half", last_len / 2 + 1),
        ("newline", 1),
    ] {
        let report = t.check(&[(s, Change::Bytes(whole[..whole.len() - cut].to_vec()))]);
        tried += 1;
        if !names(&report, &at, n as u64 - 1) {
            missed.push(format!("truncation of the last line ({what})"));
        }
    }

    // The head file: removed, or rewritten to hide a cut-off record without the key.
    let cut = t.segments[s].1[..t.segments[s].1.len() - 1].to_vec();
    let prev = stored(t.line(n - 2));
    for (what, forge) in [("unsigned", false), ("forged", true)] {
        let report = t.check_with(&[(s, Change::Lines(cut.clone()))], |dir| {
            let mut head = Head {
                stream: "main".into(),
                next_seq: n as u64 - 1,
                last_hash: prev.hash.clone(),
                time: chrono::Utc::now(),
                mac: None,
            };
            if forge {
                head.sign(Some(b"a guessed key"));
            }
            std::fs::write(dir.join("HEAD.json"), serde_json::to_vec(&head).unwrap()).unwrap();
        });
        tried += 1;
        let caught = report
            .findings()
            .any(|(_, f)| matches!(f.problem, Problem::HeadUnsigned | Problem::HeadForged));
        if !caught {
            missed.push(format!("truncation with a rewritten head ({what})"));
        }
    }
    let report = t.check_with(&[], |dir| {
        std::fs::remove_file(dir.join("HEAD.json")).unwrap()
    });
    tried += 1;
    if !report
        .findings()
        .any(|(_, f)| f.problem == Problem::HeadMissing)
    {
        missed.push("removed head file".into());
    }

    assert!(
        missed.is_empty(),
        "{} of {tried} tamperings not caught and named: {:#?}",
        missed.len(),
        missed
    );
    eprintln!(
        "tampering: {tried} cases on {n} records in {segments} segments, all caught and named, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn findings_name_segment_line_and_seq() {
    let t = Tamper::new(50);
    let (s, l) = t.index[20];
    let mut lines = t.segments[s].1.clone();
    lines[l] = edit(&lines[l], 0).0;
    let report = t.check(&[(s, Change::Lines(lines))]);
    let findings: Vec<String> = report.findings().map(|(_, f)| f.to_string()).collect();
    assert_eq!(
        findings,
        ["000000000000.jsonl:21 (seq 20): edited: its content does not match its hash"]
    );
}

#[test]
fn many_threads_append_in_one_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Arc::new(
        AuditLog::open(
            tmp.path(),
            AuditSettings {
                queue: 1 << 16,
                segment_max_bytes: 512 << 10,
                ..settings()
            },
        )
        .unwrap(),
    );
    let threads = 8;
    let per = 1_000;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let log = log.clone();
            scope.spawn(move || {
                for i in 0..per {
                    log.append(suggestion(t * per + i)).unwrap();
                }
            });
        }
    });
    assert_eq!(
        log.flush(Duration::from_secs(30)).unwrap(),
        (threads * per) as u64
    );
    let health = log.health();
    assert!(health.healthy && health.dropped == 0, "{health:?}");
    Arc::into_inner(log).unwrap().close().unwrap();

    let report = verify(tmp.path(), Some(KEY)).unwrap();
    assert!(report.is_clean(), "{:?}", report.streams[0].findings);
    assert_eq!(report.streams[0].records, (threads * per) as u64);
    // Each thread's records are in the order it appended them.
    let mut last = vec![None; threads];
    for (_, path) in super::segment::list_segments(&tmp.path().join("main")).unwrap() {
        for line in lines(&path) {
            let Entry::Suggestion { request, .. } = stored(&line).entry else {
                panic!()
            };
            let i: usize = request.request_id["req-".len()..].parse().unwrap();
            assert!(last[i / per].is_none_or(|prev| prev < i));
            last[i / per] = Some(i);
        }
    }
}

#[test]
fn a_full_queue_refuses_at_once_and_the_log_records_how_many() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Arc::new(
        AuditLog::open(
            tmp.path(),
            AuditSettings {
                queue: 16,
                ..settings()
            },
        )
        .unwrap(),
    );
    let (ok, refused) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                scope.spawn(move || {
                    let (mut ok, mut refused) = (0u64, 0u64);
                    for i in 0..2_000 {
                        let started = Instant::now();
                        match log.append(suggestion(t * 2_000 + i)) {
                            Ok(()) => ok += 1,
                            Err(Error::NotReady(_)) => refused += 1,
                            Err(e) => panic!("{e}"),
                        }
                        assert!(
                            started.elapsed() < Duration::from_millis(50),
                            "append blocked"
                        );
                    }
                    (ok, refused)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    assert_eq!(ok + refused, 8_000);
    log.flush(Duration::from_secs(30)).unwrap();
    let health = log.health();
    assert_eq!((health.accepted, health.dropped), (ok, refused));
    Arc::into_inner(log).unwrap().close().unwrap();

    let report = verify(tmp.path(), Some(KEY)).unwrap();
    let stream = &report.streams[0];
    assert!(stream.findings.is_empty(), "{:?}", stream.findings);
    let noted: u64 = stream
        .incidents
        .iter()
        .map(|(_, i)| match i {
            Incident::Dropped { count } => *count,
            _ => 0,
        })
        .sum();
    assert_eq!(noted, refused, "the chain records every refused append");
    assert_eq!(stream.records, ok + stream.incidents.len() as u64);
    eprintln!("full queue (16): {ok} accepted, {refused} refused");
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A real ENOSPC without root: the first segment is a link to /dev/full until the "disk" is
/// given back.
#[cfg(target_os = "linux")]
#[test]
fn a_failing_disk_shows_in_health_and_is_recorded_when_it_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(
        tmp.path(),
        AuditSettings {
            queue: 8,
            refuse_unaudited: true,
            ..settings()
        },
    )
    .unwrap();
    let segment = tmp.path().join("main/000000000000.jsonl");
    std::os::unix::fs::symlink("/dev/full", &segment).unwrap();
    log.append(suggestion(0)).unwrap();
    wait_for("the write to fail", || log.health().failing_since.is_some());
    let health = log.health();
    assert!(!health.healthy && health.write_errors >= 1, "{health:?}");
    assert!(health.problem.unwrap().contains("No space left"));
    assert!(matches!(log.admit(), Err(Error::NotReady(_))));
    assert!(log.flush(Duration::from_millis(100)).is_err());
    // The queue fills; then appends are refused at once, and counted.
    let mut refused = 0;
    for i in 1..40 {
        if log.append(suggestion(i)).is_err() {
            refused += 1;
        }
    }
    assert!(refused >= 40 - 1 - 8 - 1, "{refused} refused");
    assert_eq!(log.health().dropped, refused);

    std::fs::remove_file(&segment).unwrap();
    wait_for("writing to work again", || log.health().healthy);
    log.admit().unwrap();
    log.flush(Duration::from_secs(10)).unwrap();
    log.close().unwrap();

    let report = verify(tmp.path(), Some(KEY)).unwrap();
    let stream = &report.streams[0];
    assert!(stream.findings.is_empty(), "{:?}", stream.findings);
    let kinds: Vec<_> = stream.incidents.iter().map(|(_, i)| i.clone()).collect();
    assert!(kinds.iter().any(
        |i| matches!(i, Incident::WriteFailed { error, .. } if error.contains("No space left"))
    ));
    assert!(
        kinds.contains(&Incident::Dropped { count: refused }),
        "{kinds:?}"
    );
    assert_eq!(stream.records, 40 - refused + 2);
}

/// The same on a real full file system: a 1 MiB tmpfs filled by another file. Mounting needs
/// root (or CAP_SYS_ADMIN), as CI and the test script have; without it the test fails and says
/// so rather than pass without having run.
#[cfg(target_os = "linux")]
#[test]
fn a_full_tmpfs_fails_writes_until_space_is_freed() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("fs");
    std::fs::create_dir(&mount).unwrap();
    let _unmount = crate::testfs::Tmpfs::mount(&mount, "1m");

    let log = AuditLog::open(
        &mount,
        AuditSettings {
            queue: 64,
            ..settings()
        },
    )
    .unwrap();
    append_all(&log, (0..10).map(record));
    log.flush(Duration::from_secs(10)).unwrap();
    // Fill the file system.
    let filler = mount.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).and_then(|()| f.sync_all()).is_ok() {}
    }
    for i in 10..20 {
        let _ = log.append(record(i));
    }
    wait_for("the write to fail", || log.health().failing_since.is_some());
    assert!(log.ensure_healthy().is_err());
    std::fs::remove_file(&filler).unwrap();
    wait_for("writing to work again", || log.health().healthy);
    log.flush(Duration::from_secs(10)).unwrap();
    log.close().unwrap();
    let report = verify(&mount, Some(KEY)).unwrap();
    let stream = &report.streams[0];
    assert!(stream.findings.is_empty(), "{:?}", stream.findings);
    assert!(stream
        .incidents
        .iter()
        .any(|(_, i)| matches!(i, Incident::WriteFailed { .. })));
}

#[test]
fn reopening_continues_the_chain_and_one_writer_per_stream() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), settings(), 10);
    let log = AuditLog::open(tmp.path(), settings()).unwrap();
    let second = AuditLog::open(tmp.path(), settings());
    assert!(
        matches!(second, Err(Error::Conflict(_))),
        "a second writer was let in"
    );
    let other = AuditLog::open(
        tmp.path(),
        AuditSettings {
            stream: "replica-2".into(),
            ..settings()
        },
    )
    .unwrap();
    append_all(&log, (10..20).map(record));
    append_all(&other, (0..5).map(record));
    log.close().unwrap();
    other.close().unwrap();
    let report = verify(tmp.path(), Some(KEY)).unwrap();
    assert!(
        report.is_clean(),
        "{:?}",
        report.findings().collect::<Vec<_>>()
    );
    let counts: Vec<_> = report
        .streams
        .iter()
        .map(|s| (s.stream.as_str(), s.records, s.last_seq))
        .collect();
    assert_eq!(counts, [("main", 20, Some(19)), ("replica-2", 5, Some(4))]);
    assert!(AuditLog::open(
        tmp.path(),
        AuditSettings {
            stream: "../x".into(),
            ..settings()
        }
    )
    .is_err());
}

#[test]
fn a_torn_last_line_is_cut_and_recorded_on_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), settings(), 5);
    let segment = tmp.path().join("main/000000000000.jsonl");
    let mut bytes = std::fs::read(&segment).unwrap();
    let torn = br#"{"hash":"0123","seq":5,"#;
    bytes.extend_from_slice(torn);
    std::fs::write(&segment, &bytes).unwrap();
    write_log(tmp.path(), settings(), 2);
    let report = verify(tmp.path(), Some(KEY)).unwrap();
    let stream = &report.streams[0];
    assert!(stream.is_clean(), "{:?}", stream.findings);
    assert_eq!(stream.records, 8);
    assert_eq!(
        stream.incidents[0].1,
        Incident::TornTail {
            segment: "000000000000.jsonl".into(),
            bytes: torn.len() as u64
        }
    );
}

#[test]
fn records_cut_off_while_down_are_recorded_when_reopened() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), settings(), 10);
    let segment = tmp.path().join("main/000000000000.jsonl");
    let mut all = lines(&segment);
    all.truncate(7);
    std::fs::write(&segment, join(&all)).unwrap();
    let report = verify(tmp.path(), Some(KEY)).unwrap();
    assert!(matches!(
        report.streams[0].findings[..],
        [Finding {
            problem: Problem::TruncatedTail {
                from_seq: 7,
                to_seq: 9
            },
            ..
        }]
    ));
    // The writer notices, says so in the chain, and goes on from what is there: the evidence
    // is not overwritten by the next head file.
    write_log(tmp.path(), settings(), 1);
    let report = verify(tmp.path(), Some(KEY)).unwrap();
    let stream = &report.streams[0];
    assert!(stream.findings.is_empty(), "{:?}", stream.findings);
    assert!(!stream.is_clean());
    assert!(matches!(
        stream.incidents[..],
        [(
            _,
            Incident::TailBehindHead {
                head_next_seq: 10,
                found_next_seq: 7,
                ..
            }
        )]
    ));
}

#[test]
fn a_damaged_last_record_stops_the_writer_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), settings(), 3);
    let segment = tmp.path().join("main/000000000000.jsonl");
    let mut all = lines(&segment);
    all[2] = edit(&all[2], 0).0;
    std::fs::write(&segment, join(&all)).unwrap();
    let Err(Error::Conflict(message)) = AuditLog::open(tmp.path(), settings()) else {
        panic!("opened a log whose last record is damaged")
    };
    assert!(message.contains("triage audit verify"), "{message}");
}

#[test]
fn retention_drops_old_segments_and_the_chain_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let small = AuditSettings {
        segment_max_bytes: 8 << 10,
        ..settings()
    };
    let log = AuditLog::open(tmp.path(), small.clone()).unwrap();
    let old = chrono::Utc::now() - chrono::Duration::days(40);
    append_all(
        &log,
        (0..100).map(|i| Record {
            time: old,
            ..record(i)
        }),
    );
    append_all(&log, (100..120).map(record));
    log.close().unwrap();
    let before = super::segment::list_segments(&tmp.path().join("main")).unwrap();

    let log = AuditLog::open(
        tmp.path(),
        AuditSettings {
            retention_days: Some(30),
            ..small.clone()
        },
    )
    .unwrap();
    log.flush(Duration::from_secs(10)).unwrap();
    log.close().unwrap();
    let after = super::segment::list_segments(&tmp.path().join("main")).unwrap();
    assert!(
        after.len() < before.len() && after.len() >= 2,
        "{} -> {}",
        before.len(),
        after.len()
    );
    let report = verify(tmp.path(), Some(KEY)).unwrap();
    let stream = &report.streams[0];
    assert!(stream.is_clean(), "{:?}", stream.findings);
    assert_eq!(stream.retained_from_seq, Some(after[0].0));
    assert_eq!(stream.first_seq, Some(after[0].0));

    // Deleting the oldest segment left is still caught.
    std::fs::remove_file(&after[0].1).unwrap();
    let report = verify(tmp.path(), Some(KEY)).unwrap();
    assert!(report.findings().any(|(_, f)| f.problem
        == Problem::Missing {
            from_seq: after[0].0,
            to_seq: after[1].0 - 1
        }));
}

#[test]
fn report_joins_decisions_to_suggestions() {
    let tmp = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now();
    let sug = |id: &str, cat: &str, unit: &str, case: Option<&str>, version: &str| {
        Record::new(
            id,
            Route::Triage,
            models(version),
            Event::Suggestion(SuggestionRecord {
                category: Some(cat.into()),
                confidence: 0.9,
                units: vec![unit.into()],
                ..Default::default()
            }),
        )
        .with_case_id(case)
        .with_district(Some("D1"))
    };
    let dec =
        |id: &str, of: Option<&str>, case: Option<&str>, cat: Choice, unit: Option<Choice>| {
            Record::new(
                id,
                Route::Feedback,
                models("v2"),
                Event::Decision(DecisionRecord {
                    suggestion_request_id: of.map(Into::into),
                    category: cat,
                    unit,
                }),
            )
            .with_case_id(case)
        };
    let log = AuditLog::open(tmp.path(), settings()).unwrap();
    append_all(
        &log,
        [
            sug("r1", "A", "U1", None, "v1"),
            sug("r2", "A", "U1", Some("c2"), "v2"),
            sug("r3", "B", "U2", None, "v2"),
            // Accepted category, corrected unit, joined by request id.
            dec(
                "f1",
                Some("r1"),
                None,
                Choice::new("A", Some("A".into())),
                Some(Choice::new("U2", Some("U1".into()))),
            ),
            // Nothing suggested in the decision: joined by case id, corrected A -> B.
            dec("f2", None, Some("c2"), Choice::new("B", None), None),
            // No suggestion anywhere.
            dec("f3", None, Some("c9"), Choice::new("B", None), None),
            // Outside the period.
            Record {
                time: now - chrono::Duration::days(3),
                ..sug("r0", "A", "U1", None, "v1")
            },
        ],
    );
    log.close().unwrap();
    let r = report(
        tmp.path(),
        now - chrono::Duration::hours(1),
        now + chrono::Duration::hours(1),
    )
    .unwrap();
    assert_eq!((r.suggestions, r.decisions, r.decisions_matched), (3, 3, 2));
    assert_eq!(r.decisions_without_suggestion, 1);
    let a = r.per_category.iter().find(|row| row.key == "A").unwrap();
    assert_eq!(
        (a.suggestions, a.decisions, a.accepted, a.corrected),
        (2, 2, 1, 1)
    );
    assert_eq!(a.acceptance_rate, Some(0.5));
    let u1 = r.per_unit.iter().find(|row| row.key == "U1").unwrap();
    assert_eq!((u1.unit_accepted, u1.unit_corrected), (0, 1));
    let v1 = r
        .per_classifier_version
        .iter()
        .find(|row| row.key == "v1")
        .unwrap();
    assert_eq!((v1.suggestions, v1.accepted, v1.corrected), (1, 1, 0));
    let d1 = r.per_district.iter().find(|row| row.key == "D1").unwrap();
    assert_eq!((d1.decisions, d1.accepted, d1.corrected), (2, 1, 1));
    assert_eq!(
        r.category_corrections,
        [Correction {
            from: "A".into(),
            to: "B".into(),
            n: 1
        }]
    );
    assert_eq!(r.overall.acceptance_rate, Some(0.5));
    let md = r.to_markdown();
    assert!(
        md.contains("| A | 2 | 0 | 2 | 1 | 1 | 50.0% | 50.0% | 0.0% |"),
        "{md}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["per_category"][0]["key"], "A");
}
