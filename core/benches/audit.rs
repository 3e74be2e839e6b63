//! Audit log micro-benchmark: append throughput (one and several threads), time until durable,
//! verify and report time, for N records (default 100,000).
//!
//! ```text
//! cargo bench -p triage-core --bench audit            # 100k records in a temporary directory
//! cargo bench -p triage-core --bench audit -- 20000 /mnt/ssd/tmp
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};
use triage_core::audit::{
    report, sha256_hex, verify, AuditLog, AuditSettings, Choice, DecisionRecord, Event, Models,
    Record, Route, SuggestionRecord,
};

fn record(i: usize) -> Record {
    let models = Models {
        embedder: "multilingual-e5-small".into(),
        generator: Some("gemma-3-270m".into()),
        classifier_version: "2024-06-01T00:00:00Z/ensemble".into(),
    };
    let event = if i % 4 == 3 {
        Event::Decision(DecisionRecord {
            suggestion_request_id: Some(format!("req-{}", i - 1)),
            category: Choice::new(
                format!("cat-{}", i % 29),
                Some(format!("cat-{}", (i - 1) % 29)),
            ),
            unit: Some(Choice::new(
                format!("unit-{}", i % 40),
                Some(format!("unit-{}", i % 40)),
            )),
        })
    } else {
        Event::Suggestion(SuggestionRecord {
            category: Some(format!("cat-{}", i % 29)),
            confidence: 0.4 + (i % 60) as f64 / 100.0,
            abstain: i.is_multiple_of(9),
            units: (0..3).map(|k| format!("unit-{}", (i + k) % 40)).collect(),
            duplicate: None,
            work_order_sha256: Some(sha256_hex(format!("work order {i}").as_bytes())),
            draft_sha256: Some(sha256_hex(format!("draft {i}").as_bytes())),
        })
    };
    // A typical complaint: ~120 characters with a phone number to mask.
    let text = format!(
        "第{i}号来电：小区门口道路施工，夜间十一点后仍有机械作业，噪音很大影响休息，已多次反映未解决，\
         希望有关部门尽快处理并回复。联系电话13812345678，地址某某区某某街道某某小区三栋。"
    );
    Record::new(format!("req-{i}"), Route::Triage, models, event)
        .with_key_name(Some("desk-07"))
        .with_case_id(Some(format!("case-{i}")))
        .with_district(Some(format!("district-{}", i % 12)))
        .with_text(text)
}

/// Appends `n` records from `threads` threads, retrying when the queue is full; returns the
/// time until all were accepted, until all were durable, and how many appends were refused.
fn run(dir: &std::path::Path, n: usize, threads: usize) -> (Duration, Duration, u64) {
    let log = Arc::new(
        AuditLog::open(
            dir,
            AuditSettings {
                stream: format!("t{threads}"),
                key: Some(b"bench".to_vec()),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let records: Vec<Vec<Record>> = (0..threads)
        .map(|t| {
            (0..n / threads)
                .map(|i| record(t * n / threads + i))
                .collect()
        })
        .collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for chunk in records {
            let log = log.clone();
            scope.spawn(move || {
                for r in chunk {
                    let mut r = Some(r);
                    while let Some(rec) = r.take() {
                        let again = rec.clone();
                        if log.append(rec).is_err() {
                            std::thread::sleep(Duration::from_micros(50));
                            r = Some(again);
                        }
                    }
                }
            });
        }
    });
    let accepted = started.elapsed();
    log.flush(Duration::from_secs(600)).unwrap();
    let durable = started.elapsed();
    let dropped = log.health().dropped;
    Arc::into_inner(log).unwrap().close().unwrap();
    (accepted, durable, dropped)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let base = args.get(1).map(std::path::PathBuf::from);
    let tmp = match &base {
        Some(b) => tempfile::tempdir_in(b).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let audit = tmp.path().join("audit");
    println!("audit log: {n} records in {}", audit.display());
    for threads in [1, 4] {
        let (accepted, durable, refused) = run(&audit, n, threads);
        println!(
            "append, {threads} thread(s): {:>8.0} records/s accepted, {:>8.0} records/s durable \
             ({:.2} s; full-queue retries {refused})",
            n as f64 / accepted.as_secs_f64(),
            n as f64 / durable.as_secs_f64(),
            durable.as_secs_f64()
        );
    }
    // Latency of one append call on an idle log.
    let log = AuditLog::open(
        &audit,
        AuditSettings {
            stream: "latency".into(),
            key: Some(b"bench".to_vec()),
            ..Default::default()
        },
    )
    .unwrap();
    let mut times: Vec<Duration> = (0..2_000)
        .map(|i| {
            let r = record(i);
            let t = Instant::now();
            log.append(r).unwrap();
            let e = t.elapsed();
            if i % 50 == 0 {
                log.flush(Duration::from_secs(10)).unwrap();
            }
            e
        })
        .collect();
    times.sort();
    println!(
        "append call on an idle log: p50 {:.1} µs, p99 {:.1} µs",
        times[times.len() / 2].as_secs_f64() * 1e6,
        times[times.len() * 99 / 100].as_secs_f64() * 1e6
    );
    drop(log);
    let bytes: u64 = walk(&audit.join("t1"));
    println!("on disk: {:.0} bytes/record", bytes as f64 / n as f64);

    let started = Instant::now();
    let result = verify(&audit, Some(b"bench")).unwrap();
    let took = started.elapsed();
    let records: u64 = result.streams.iter().map(|s| s.records).sum();
    assert!(result.findings().next().is_none());
    println!(
        "verify: {records} records in {:.2} s ({:.0} records/s)",
        took.as_secs_f64(),
        records as f64 / took.as_secs_f64()
    );
    let now = chrono::Utc::now();
    let started = Instant::now();
    let r = report(
        &audit,
        now - chrono::Duration::days(1),
        now + chrono::Duration::days(1),
    )
    .unwrap();
    println!(
        "report: {} records read in {:.2} s ({} suggestions, {} decisions)",
        r.records_read,
        started.elapsed().as_secs_f64(),
        r.suggestions,
        r.decisions
    );
}

fn walk(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}
