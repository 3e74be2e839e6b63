//! `triage audit verify` and `triage audit report` on a trail written through the core API (the
//! service's handlers append the same records).

use crate::{run_ok, triage};
use std::path::Path;
use triage_core::audit::{
    AuditLog, AuditSettings, Choice, DecisionRecord, Event, Models, Record, Route, SuggestionRecord,
};

fn write_trail(data: &Path) {
    let log = AuditLog::open(
        &data.join("audit"),
        AuditSettings {
            key: Some(b"k".to_vec()),
            ..Default::default()
        },
    )
    .unwrap();
    let models = Models {
        embedder: "multilingual-e5-small".into(),
        generator: None,
        classifier_version: "v1".into(),
    };
    for i in 0..20 {
        let suggestion = SuggestionRecord {
            category: Some(format!("cat-{}", i % 2)),
            confidence: 0.8,
            units: vec!["unit-1".into()],
            ..Default::default()
        };
        log.append(
            Record::new(
                format!("r{i}"),
                Route::Triage,
                models.clone(),
                Event::Suggestion(suggestion),
            )
            .with_text("电话13812345678"),
        )
        .unwrap();
        let suggested = format!("cat-{}", i % 2);
        let chosen = if i % 4 == 0 {
            "cat-9".to_string()
        } else {
            suggested.clone()
        };
        log.append(Record::new(
            format!("f{i}"),
            Route::Feedback,
            models.clone(),
            Event::Decision(DecisionRecord {
                suggestion_request_id: Some(format!("r{i}")),
                category: Choice::new(chosen, Some(suggested)),
                unit: None,
            }),
        ))
        .unwrap();
    }
    log.close().unwrap();
}

#[test]
fn audit_verify_names_a_tampered_record_and_report_writes_both_files() {
    let data = tempfile::tempdir().unwrap();
    write_trail(data.path());
    let verify = || {
        let mut cmd = triage();
        cmd.arg("--data-dir")
            .arg(data.path())
            .args(["audit", "verify", "--audit-key", "k"]);
        cmd
    };
    let out = run_ok(&mut verify());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("stream main: 40 records (seq 0..=39)"),
        "{stdout}"
    );
    assert!(stdout.contains("signature verified"), "{stdout}");

    // Change the category of record 10 (line 11): verify fails and names it.
    let segment = data.path().join("audit/main/000000000000.jsonl");
    let text = std::fs::read_to_string(&segment).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    assert!(lines[10].contains(r#""category":"cat-1""#));
    lines[10] = lines[10].replace(r#""category":"cat-1""#, r#""category":"cat-0""#);
    std::fs::write(&segment, lines.join("\n") + "\n").unwrap();
    let out = verify().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("PROBLEM main: 000000000000.jsonl:11 (seq 10): edited"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed verification"));
    std::fs::write(&segment, text).unwrap();

    let report = data.path().join("report");
    let today = chrono::Utc::now().date_naive().to_string();
    run_ok(
        triage()
            .arg("--data-dir")
            .arg(data.path())
            .args(["audit", "report", "--from", &today, "--to", &today, "--out"])
            .arg(&report),
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("audit-report.json")).unwrap()).unwrap();
    assert_eq!(
        (json["suggestions"].as_u64(), json["decisions"].as_u64()),
        (Some(20), Some(20))
    );
    // Decisions 0, 4, 8, 12, 16 corrected the suggestion: 15 of 20 accepted.
    assert_eq!(json["overall"]["acceptance_rate"].as_f64(), Some(0.75));
    let md = std::fs::read_to_string(report.join("audit-report.md")).unwrap();
    assert!(md.contains("## Per suggested category"), "{md}");
}
