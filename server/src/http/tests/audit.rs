//! The audit trail as the service writes it: every suggestion served and every decision, with
//! the request id the client saw, the key's name and the masked text; refused or reported when
//! the trail cannot be written.

use super::*;
use serde_json::json;
use std::time::Duration;
use triage_core::audit::{verify, AuditLog, AuditSettings, Entry, StoredRecord, TextPolicy};

const ADMIN: &str = "admin-key-0123456789";
const TAKER: &str = "taker-key-0123456789";

fn keys() -> Keys {
    parse_keys(&format!("admin:auditor:{ADMIN}\ncall-taker:desk-7:{TAKER}")).unwrap()
}

fn audited(dir: &std::path::Path, settings: AuditSettings) -> Arc<AppState> {
    let log = AuditLog::open(dir, settings).unwrap();
    ready_state_with(keys(), Limits::default(), Some(log))
}

fn records(state: &AppState, dir: &std::path::Path) -> Vec<StoredRecord> {
    state
        .audit
        .as_ref()
        .unwrap()
        .flush(Duration::from_secs(10))
        .unwrap();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir.join("main")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
    }
    out.sort_by_key(|r: &StoredRecord| r.seq);
    out
}

async fn post_form(state: &Arc<AppState>, uri: &str, body: &str, key: &str) -> serde_json::Value {
    let req = Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    serde_json::from_slice(
        &axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn every_suggestion_and_decision_is_recorded_and_joined() {
    let tmp = tempfile::tempdir().unwrap();
    let state = audited(tmp.path(), AuditSettings::default());
    let phone = "13812345678";
    let text = format!("公交车不按站停车，我的电话{phone}");
    let (status, suggestion) = send(
        &state,
        "POST",
        "/v1/triage",
        Some(&json!({"text": text, "draft": false}).to_string()),
        Some(TAKER),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{suggestion}");
    let request_id = suggestion["request_id"].as_str().unwrap().to_string();
    assert!(request_id.starts_with("req-"), "{request_id}");
    assert_eq!(suggestion["categories"][0]["id"], "交通运输");

    // The stream's first event carries the request id too.
    let (status, events) = send(
        &state,
        "POST",
        "/v1/triage/stream",
        Some(r#"{"text": "学校乱收费"}"#),
        Some(TAKER),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let events = events.as_str().unwrap().to_string();
    assert!(events.contains("\"request_id\":\"req-"), "{events}");

    let created = post_form(
        &state,
        "/open311/v2/requests.json",
        "description=%E5%85%AC%E4%BA%A4%E7%BA%BF%E8%B7%AF%E5%A4%AA%E7%BB%95",
        TAKER,
    )
    .await;
    let service_request = created[0]["service_request_id"].as_str().unwrap();
    assert!(created[0]["x_triage_request_id"].is_string(), "{created}");

    // Accepted, then corrected.
    for (category, case_id) in [("交通运输", "d1"), ("教育文体", "d2")] {
        let (status, body) = send(
            &state,
            "POST",
            "/v1/feedback",
            Some(
                &json!({"text": text, "category": category, "case_id": case_id,
                        "suggested_category": "交通运输", "unit": "bus", "suggested_unit": "bus",
                        "suggestion_request_id": request_id})
                .to_string(),
            ),
            Some(TAKER),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(body["request_id"].is_string());
    }

    let input = "{\"id\": \"j1\", \"text\": \"公交车不按站停车\"}\nnot json\n{\"id\": \"j2\", \"text\": \"学校乱收费\"}\n";
    let (status, job) = send_as(
        &state,
        "POST",
        "/v1/jobs",
        "application/x-ndjson",
        Some(input),
        Some(ADMIN),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    loop {
        let (_, job) = send(&state, "GET", &format!("/v1/jobs/{id}"), None, Some(ADMIN)).await;
        match job["state"].as_str() {
            Some("done") => break,
            Some("failed") => panic!("{job}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }

    let all = records(&state, tmp.path());
    let routes: Vec<String> = all
        .iter()
        .map(|r| match &r.entry {
            Entry::Suggestion { request, .. } | Entry::Decision { request, .. } => {
                serde_json::to_value(request.route)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        routes,
        [
            "triage",
            "triage_stream",
            "open311",
            "feedback",
            "feedback",
            "jobs",
            "jobs"
        ]
    );
    let Entry::Suggestion {
        request,
        suggestion: first,
    } = &all[0].entry
    else {
        unreachable!()
    };
    assert_eq!(request.request_id, request_id);
    assert_eq!(request.key_name.as_deref(), Some("desk-7"));
    assert_eq!(first.category.as_deref(), Some("交通运输"));
    assert_eq!(request.models.embedder, "char-hash");
    assert!(!request.models.classifier_version.is_empty());
    let kept = serde_json::to_string(&request.text).unwrap();
    assert!(!kept.contains(phone), "the text is masked: {kept}");
    assert!(kept.contains("公交车不按站停车"), "{kept}");
    let Entry::Suggestion { request, .. } = &all[2].entry else {
        unreachable!()
    };
    assert_eq!(request.case_id.as_deref(), Some(service_request));
    let Entry::Decision { decision, .. } = &all[4].entry else {
        unreachable!()
    };
    assert_eq!(
        decision.suggestion_request_id.as_deref(),
        Some(request_id.as_str())
    );
    assert_eq!(decision.category.chosen, "教育文体");
    let Entry::Suggestion { request, .. } = &all[5].entry else {
        unreachable!()
    };
    assert_eq!(request.request_id, format!("{id}:1"));
    assert_eq!(request.key_name.as_deref(), Some("auditor"));
    let Entry::Suggestion { request, .. } = &all[6].entry else {
        unreachable!()
    };
    assert_eq!(request.request_id, format!("{id}:3"), "line 2 was not JSON");

    let checked = verify(tmp.path(), None).unwrap();
    assert!(
        checked.is_clean(),
        "{:?}",
        checked.findings().collect::<Vec<_>>()
    );

    // The report: admins only; one accepted and one corrected decision, joined by request id.
    let today = chrono::Utc::now().date_naive();
    let uri = format!("/v1/audit/report?from={today}&to={today}");
    let (status, _) = send(&state, "GET", &uri, None, Some(TAKER)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, report) = send(&state, "GET", &uri, None, Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["suggestions"], 5, "{report}");
    assert_eq!(report["decisions_matched"], 2, "{report}");
    assert_eq!(report["overall"]["accepted"], 1, "{report}");
    assert_eq!(report["overall"]["corrected"], 1, "{report}");
    let (status, markdown) = send(
        &state,
        "GET",
        &format!("{uri}&format=markdown"),
        None,
        Some(ADMIN),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(markdown.as_str().unwrap().starts_with('#'), "{markdown}");
    for bad in [
        "from=March&to=2025-01-01",
        "from=2025-02-01&to=2025-01-01",
        "to=2025-01-01",
    ] {
        let (status, body) = send(
            &state,
            "GET",
            &format!("/v1/audit/report?{bad}"),
            None,
            Some(ADMIN),
        )
        .await;
        assert!(status.is_client_error(), "{bad}: {status}");
        assert!(body["error_type"].is_string(), "{bad}: {body}");
    }
}

#[tokio::test]
async fn the_text_policy_keeps_only_a_hash_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = AuditSettings {
        text: TextPolicy::Sha256,
        ..Default::default()
    };
    let state = audited(tmp.path(), settings);
    let (status, _) = send(
        &state,
        "POST",
        "/v1/triage",
        Some(r#"{"text": "学校乱收费", "draft": false}"#),
        Some(TAKER),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let line = serde_json::to_string(&records(&state, tmp.path())[0]).unwrap();
    assert!(!line.contains("学校乱收费"), "{line}");
    assert!(
        line.contains(&triage_core::audit::sha256_hex("学校乱收费".as_bytes())),
        "{line}"
    );
}

/// A real ENOSPC (the segment is a link to /dev/full): with --audit-refuse-unaudited the service
/// answers 503 and /health says why; without, it serves, says "degraded", and counts.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_trail_that_cannot_be_written_is_reported_and_by_setting_refused() {
    for refuse in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let settings = AuditSettings {
            queue: 4,
            refuse_unaudited: refuse,
            ..Default::default()
        };
        let state = audited(tmp.path(), settings);
        let segment = tmp.path().join("main/000000000000.jsonl");
        std::os::unix::fs::symlink("/dev/full", &segment).unwrap();
        let body = r#"{"text": "公交车不按站停车", "draft": false}"#;
        // The first record finds the disk full.
        let (status, _) = send(&state, "POST", "/v1/triage", Some(body), Some(TAKER)).await;
        assert_eq!(status, StatusCode::OK);
        let log = state.audit.as_ref().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while log.health().healthy {
            assert!(
                std::time::Instant::now() < deadline,
                "the write never failed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (status, health) = send(&state, "GET", "/health", None, None).await;
        let (triaged, answer) = send(&state, "POST", "/v1/triage", Some(body), Some(TAKER)).await;
        let (_, metrics) = send(&state, "GET", "/metrics", None, Some(TAKER)).await;
        let metrics = metrics.as_str().unwrap().to_string();
        assert!(metrics.contains("triage_audit_healthy 0"), "{metrics}");
        if refuse {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
            assert!(
                health["error"].as_str().unwrap().contains("No space left"),
                "{health}"
            );
            assert_eq!(triaged, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
            assert!(
                answer["error"].as_str().unwrap().contains("unaudited"),
                "{answer}"
            );
            let (status, _) = send(
                &state,
                "POST",
                "/v1/feedback",
                Some(r#"{"text": "x", "category": "交通运输"}"#),
                Some(TAKER),
            )
            .await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        } else {
            assert_eq!(status, StatusCode::OK, "{health}");
            assert_eq!(health["status"], "degraded", "{health}");
            assert_eq!(health["audit"]["healthy"], false, "{health}");
            assert_eq!(triaged, StatusCode::OK, "{answer}");
        }
        // Space is back: the records kept meanwhile are written and the service is whole again.
        std::fs::remove_file(&segment).unwrap();
        while !log.health().healthy {
            assert!(std::time::Instant::now() < deadline + Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (status, health) = send(&state, "GET", "/health", None, None).await;
        assert_eq!(
            (status, health["status"].as_str()),
            (StatusCode::OK, Some("ok"))
        );
        log.flush(Duration::from_secs(10)).unwrap();
        assert!(verify(tmp.path(), None).unwrap().is_clean());
    }
}

#[test]
fn keys_carry_names_and_unnamed_keys_get_one_that_hides_them() {
    let keys = parse_keys(
        "admin:alice@city:aaaaaaaaaaaaaaaaaaaa\ncall-taker:cccccccccccccccccccc\n# comment",
    )
    .unwrap();
    assert_eq!(keys["aaaaaaaaaaaaaaaaaaaa"].name, "alice@city");
    assert_eq!(keys["aaaaaaaaaaaaaaaaaaaa"].role, Role::Admin);
    let unnamed = &keys["cccccccccccccccccccc"].name;
    assert!(
        unnamed.starts_with("call-taker-") && unnamed.len() == 19,
        "{unnamed}"
    );
    assert!(!unnamed.contains("cccc"));
    assert!(parse_keys("admin:bad name:aaaaaaaaaaaaaaaaaaaa").is_err());
    assert!(parse_keys("admin:a:aaaaaaaaaaaaaaaaaaaa,admin:b:aaaaaaaaaaaaaaaaaaaa").is_err());
}
