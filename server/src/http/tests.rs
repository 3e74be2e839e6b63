//! Handler tests: every route and error status through `app(state).oneshot(..)`.
//! The HTTP seam is tested alone here, over a hashed bag-of-characters embedder and an in-memory
//! store; the real models and the real store are exercised by tests/integration.

mod audit;
mod fuzz;
mod openapi;

use super::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use std::sync::Mutex;
use tower::ServiceExt;
use triage_core::classify::{Classifier, ClassifierConfig, LabeledExample};
use triage_core::pipeline::Pipeline;
use triage_core::units::UnitDirectory;
use triage_core::{Case, CaseFilter, CaseStore, EmbedKind, Embedder, Hit, Page, Taxonomy};

const DIM: usize = 64;

/// Characters hashed into 64 buckets: similar texts get similar vectors.
struct CharEmbedder;

impl Embedder for CharEmbedder {
    fn model_id(&self) -> &str {
        "char-hash"
    }
    fn dim(&self) -> usize {
        DIM
    }
    fn max_tokens(&self) -> usize {
        512
    }
    fn embed(&self, texts: &[&str], _: EmbedKind) -> triage_core::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; DIM];
                t.chars().for_each(|c| v[c as usize % DIM] += 1.0);
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.iter_mut().for_each(|x| *x /= n);
                v
            })
            .collect())
    }
}

#[derive(Default)]
struct MemStore(Mutex<Vec<(Case, Vec<f32>)>>);

impl CaseStore for MemStore {
    fn backend(&self) -> &str {
        "memory"
    }
    fn upsert(&self, cases: &[(Case, Vec<f32>)]) -> triage_core::Result<()> {
        let mut all = self.0.lock().unwrap();
        for (c, v) in cases {
            all.retain(|(x, _)| x.id != c.id);
            all.push((c.clone(), v.clone()));
        }
        Ok(())
    }
    fn delete(&self, id: &str) -> triage_core::Result<bool> {
        let mut all = self.0.lock().unwrap();
        let before = all.len();
        all.retain(|(x, _)| x.id != id);
        Ok(all.len() < before)
    }
    fn get(&self, id: &str) -> triage_core::Result<Option<Case>> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|(c, _)| c.id == id)
            .map(|(c, _)| c.clone()))
    }
    fn search(
        &self,
        vector: &[f32],
        k: usize,
        filter: &CaseFilter,
    ) -> triage_core::Result<Vec<Hit>> {
        let mut hits: Vec<Hit> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| !filter.labeled_only || c.label.is_some())
            .filter(|(c, _)| !filter.with_reply || c.reply.is_some())
            .map(|(c, v)| Hit {
                case: c.clone(),
                score: triage_core::classify::dot(v, vector),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        Ok(hits)
    }
    fn count(&self, _: &CaseFilter) -> triage_core::Result<usize> {
        Ok(self.0.lock().unwrap().len())
    }
    fn scroll(&self, _: &CaseFilter, _: Option<&str>, _: usize) -> triage_core::Result<Page> {
        Ok(Page {
            cases: self.0.lock().unwrap().clone(),
            next: None,
        })
    }
    fn optimize(&self) -> triage_core::Result<()> {
        Ok(())
    }
}

fn taxonomy() -> Taxonomy {
    Taxonomy::from_json(r#"{"交通运输": {"公交": []}, "教育文体": {"学校": []}}"#).unwrap()
}

fn ready_state(keys: Keys, limits: Limits) -> Arc<AppState> {
    ready_state_with(keys, limits, None)
}

/// `ready_state` with an audit trail.
fn ready_state_with(
    keys: Keys,
    limits: Limits,
    audit: Option<triage_core::audit::AuditLog>,
) -> Arc<AppState> {
    let store = Arc::new(MemStore::default());
    let embedder = Arc::new(CharEmbedder);
    let rows = [
        ("公交车不按站停车", "交通运输"),
        ("公交线路太绕", "交通运输"),
        ("学校乱收费", "教育文体"),
        ("老师体罚学生", "教育文体"),
    ];
    let mut cases = Vec::new();
    for i in 0..40 {
        let (text, label) = rows[i % 4];
        let text = format!("{text}{i}");
        let v = embedder
            .embed(&[&text], EmbedKind::Passage)
            .unwrap()
            .remove(0);
        cases.push((
            Case {
                id: format!("c{i}"),
                text,
                label: Some(label.into()),
                ..Default::default()
            },
            v,
        ));
    }
    store.upsert(&cases).unwrap();
    let examples: Vec<LabeledExample> = cases
        .iter()
        .map(|(c, v)| LabeledExample {
            text: &c.text,
            vector: v,
            label: c.label.as_deref().unwrap(),
        })
        .collect();
    let config = ClassifierConfig {
        ngram_bits: 12,
        ..Default::default()
    };
    let classifier = Classifier::train(&examples, &taxonomy(), None, "char-hash", config).unwrap();
    let pipeline = Pipeline::builder(embedder)
        .store(store)
        .taxonomy(taxonomy())
        .units(
            UnitDirectory::from_toml(
                "[[unit]]\nid = \"bus\"\nname = \"公交集团\"\ncategories = [\"交通运输\"]\n",
            )
            .unwrap(),
        )
        .classifier(Some(classifier))
        .build()
        .unwrap();
    let state = AppState::with_audit(
        keys,
        limits,
        serde_json::json!({"name": "test"}),
        jobs_dir(),
        audit,
    );
    let _ = state.pipeline.set(Arc::new(pipeline));
    state
}

/// A fresh folder for the batch jobs of one test.
fn jobs_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("triage-jobs-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn send(
    state: &Arc<AppState>,
    method: &str,
    uri: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    send_as(state, method, uri, "application/json", body, key).await
}

async fn send_as(
    state: &Arc<AppState>,
    method: &str,
    uri: &str,
    content_type: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", content_type);
    }
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let req = req
        .body(Body::from(body.unwrap_or_default().to_string()))
        .unwrap();
    let response = app(state.clone()).oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
        String::from_utf8_lossy(&bytes).into(),
    ));
    (status, value)
}

#[tokio::test]
async fn triage_search_feedback_and_cases() {
    let state = ready_state(HashMap::new(), Limits::default());
    let (status, body) = send(
        &state,
        "POST",
        "/v1/triage",
        Some(r#"{"text": "公交车不按站停车", "draft": false}"#),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["categories"][0]["id"], "交通运输");
    assert_eq!(body["units"][0]["unit_id"], "bus");
    assert!(body["timings_ms"]["embed"].is_number());

    let (status, body) = send(
        &state,
        "POST",
        "/v1/search",
        Some(r#"{"text": "学校乱收费", "k": 2}"#),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["results"].as_array().unwrap().len(), 2);

    let (status, body) = send(
        &state,
        "POST",
        "/v1/feedback",
        Some(r#"{"text": "校车超载", "category": "教育文体", "case_id": "fb1"}"#),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = send(&state, "GET", "/v1/cases/fb1", None, None).await;
    assert_eq!(
        (status, body["label"].as_str()),
        (StatusCode::OK, Some("教育文体"))
    );

    let (status, _) = send(
        &state,
        "POST",
        "/v1/cases",
        Some(r#"[{"id": "n1", "text": "公交站牌损坏", "label": "交通运输"}]"#),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = send(&state, "DELETE", "/v1/cases/n1", None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = send(&state, "GET", "/v1/cases/n1", None, None).await;
    assert_eq!(
        (status, body["error_type"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    for uri in ["/v1/taxonomy", "/v1/units", "/info", "/health"] {
        let (status, _) = send(&state, "GET", uri, None, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    let (status, body) = send(&state, "GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body
        .as_str()
        .unwrap()
        .contains("triage_requests_total{route=\"/v1/triage\",status=\"200\"} 1"));
}

#[tokio::test]
async fn a_units_correction_counts_at_once_and_units_say_where_they_come_from() {
    let state = ready_state(HashMap::new(), Limits::default());
    let (status, body) = send(&state, "GET", "/v1/units", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["units"][0]["id"], "bus");
    assert_eq!(body["units"][0]["source"], "configured");
    assert_eq!(body["units"][0]["cases"], 0);

    // The directory's rule: the bus company handles transport, not a school's complaint.
    let complaint = r#"{"text": "学校门口的校车总是乱停乱放", "draft": false}"#;
    let (_, before) = send(&state, "POST", "/v1/triage", Some(complaint), None).await;
    assert!(
        before["units"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["kind"] != "similar_cases")),
        "{before}"
    );
    // A call-taker routes such a complaint to the bus company: the next one hears of it.
    let (status, body) = send(
        &state,
        "POST",
        "/v1/feedback",
        Some(r#"{"text": "学校门口的校车总是乱停", "category": "教育文体", "unit": "公交集团"}"#),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, after) = send(&state, "POST", "/v1/triage", Some(complaint), None).await;
    let bus = after["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit_id"] == "bus")
        .unwrap_or_else(|| panic!("{after}"));
    let similar = bus["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "similar_cases")
        .unwrap_or_else(|| panic!("{bus}"));
    assert_eq!(similar["count"], 1);
    assert!(
        similar["text"]
            .as_str()
            .unwrap()
            .starts_with("处理过 1 件相似案件"),
        "{similar}"
    );
    // An unknown unit is refused, not stored.
    let (status, body) = send(
        &state,
        "POST",
        "/v1/feedback",
        Some(r#"{"text": "校车", "category": "教育文体", "unit": "不存在的单位"}"#),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn errors_share_one_shape() {
    let limits = Limits {
        max_body_bytes: 2048,
        max_text_chars: 50,
        ..Default::default()
    };
    let state = ready_state(HashMap::new(), limits);
    let cases = [
        (r#"{"text": "#, StatusCode::BAD_REQUEST),
        (r#"{"txt": "x"}"#, StatusCode::UNPROCESSABLE_ENTITY),
        (r#"{"text": "   "}"#, StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (body, expected) in cases {
        let (status, value) = send(&state, "POST", "/v1/triage", Some(body), None).await;
        assert_eq!(status, expected, "{body}: {value}");
        assert!(
            value["error"].is_string() && value["error_type"].is_string(),
            "{value}"
        );
    }
    let long = "长".repeat(60);
    for (route, body) in [
        ("/v1/triage", serde_json::json!({ "text": long })),
        ("/v1/search", serde_json::json!({ "text": long })),
        (
            "/v1/feedback",
            serde_json::json!({ "text": long, "category": "交通运输" }),
        ),
    ] {
        let body = body.to_string();
        let (status, value) = send(&state, "POST", route, Some(&body), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{route}");
        assert!(
            value["error"].as_str().unwrap().contains("limit is 50"),
            "{route}: {value}"
        );
    }
    let huge = format!(r#"{{"text": "{}"}}"#, "x".repeat(4096));
    let (status, value) = send(&state, "POST", "/v1/triage", Some(&huge), None).await;
    assert_eq!(
        (status, value["error_type"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large"))
    );
    let (status, value) = send(
        &state,
        "POST",
        "/v1/feedback",
        Some(r#"{"text": "x", "category": "不存在"}"#),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{value}");
}

/// The plain-text answers of axum and tower (a body over the limit announced by its
/// Content-Length, a wrong content type, an unknown route or method) come back in the one shape:
/// `{"error", "error_type"}` on `/v1/*`, GeoReport's `[{"code", "description"}]` on Open311.
#[tokio::test]
async fn framework_rejections_use_the_error_shape() {
    let limits = Limits {
        max_body_bytes: 1024,
        ..Default::default()
    };
    let state = ready_state(HashMap::new(), limits);
    let answer = |req: Request<Body>| {
        let state = state.clone();
        async move {
            let response = app(state).oneshot(req).await.unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
            (status, headers, body)
        }
    };
    let huge = format!(r#"{{"text": "{}"}}"#, "x".repeat(4096));
    let (status, _, body) = answer(
        Request::post("/v1/triage")
            .header("content-type", "application/json")
            .header("content-length", huge.len())
            .body(Body::from(huge.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error_type"], "too_large", "{body}");
    assert!(body["error"].is_string(), "{body}");

    let (status, _, body) = answer(
        Request::post("/v1/feedback")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from("text=x&category=y"))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert_eq!(body["error_type"], "unsupported_media_type", "{body}");

    let (status, _, body) = answer(Request::get("/v1/nothing").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body["error_type"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, headers, body) =
        answer(Request::get("/v1/triage").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(body["error_type"], "method_not_allowed", "{body}");
    assert!(headers.contains_key("allow"), "the Allow header is kept");

    // Open311 keeps GeoReport's own form, for its framework rejections too.
    let (status, _, body) = answer(
        Request::post("/open311/v2/requests.json")
            .header("content-type", "text/plain")
            .body(Body::from("description=路灯坏了"))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert_eq!(body[0]["code"], 415, "{body}");
    assert!(body[0]["description"].is_string(), "{body}");
    let (status, _, body) = answer(
        Request::post("/open311/v2/requests.json")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", huge.len())
            .body(Body::from(huge))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body[0]["code"].as_u64()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some(413))
    );
}

#[tokio::test]
async fn not_ready_until_loaded() {
    let state = AppState::new(
        HashMap::new(),
        Limits::default(),
        serde_json::json!({}),
        jobs_dir(),
    );
    let (status, body) = send(&state, "GET", "/health", None, None).await;
    assert_eq!(
        (status, body["error_type"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("not_ready"))
    );
    let (status, _) = send(&state, "POST", "/v1/triage", Some(r#"{"text": "x"}"#), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn keys_and_roles() {
    let keys = parse_keys("admin:aaaaaaaaaaaaaaaaaaaa\ncall-taker:cccccccccccccccccccc").unwrap();
    let state = ready_state(keys, Limits::default());
    let (status, _) = send(&state, "GET", "/v1/taxonomy", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(
        &state,
        "GET",
        "/v1/taxonomy",
        None,
        Some("wrongwrongwrongwrong"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(
        &state,
        "GET",
        "/v1/taxonomy",
        None,
        Some("cccccccccccccccccccc"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        &state,
        "DELETE",
        "/v1/cases/c1",
        None,
        Some("cccccccccccccccccccc"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(
        &state,
        "DELETE",
        "/v1/cases/c1",
        None,
        Some("aaaaaaaaaaaaaaaaaaaa"),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Health stays public so a load balancer can probe it.
    let (status, _) = send(&state, "GET", "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(parse_keys("admin:short").is_err());
    assert!(parse_keys("root:aaaaaaaaaaaaaaaaaaaa").is_err());
}

#[tokio::test]
async fn sheds_load_with_retry_after() {
    let limits = Limits {
        workers: 1,
        queue_depth: 1,
        ..Default::default()
    };
    let state = ready_state(HashMap::new(), limits);
    // Hold the only admission slot with a slow job, then ask for more.
    let busy = state.clone();
    let slow = tokio::spawn(async move {
        busy.run_model(|| {
            std::thread::sleep(std::time::Duration::from_millis(500));
            Ok(())
        })
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let req = Request::post("/v1/triage")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"text": "公交", "draft": false}"#))
        .unwrap();
    let response = app(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    slow.await.unwrap().unwrap();
    assert!(state
        .metrics
        .render()
        .contains("triage_shed_requests_total 1"));
}

#[tokio::test]
async fn a_request_past_the_time_limit_gets_504_in_the_shared_error_shape() {
    let limits = Limits {
        request_timeout: std::time::Duration::from_millis(50),
        workers: 1,
        ..Default::default()
    };
    let state = ready_state(HashMap::new(), limits);
    // The model worker is busy past the limit: the request waits for it and runs out of time.
    let mut busy = Vec::new();
    for _ in 0..state.limits.workers {
        let state = state.clone();
        busy.push(tokio::spawn(async move {
            state
                .run_model(|| {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    Ok(())
                })
                .await
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (status, body) = send(
        &state,
        "POST",
        "/v1/triage",
        Some(r#"{"text": "公交车不停站", "draft": false}"#),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error_type"], "timeout");
    assert!(body["error"].is_string());
    for job in busy {
        job.await.unwrap().unwrap();
    }
    assert!(state.metrics.render().contains("status=\"504\""));
}

/// GeoReport v2 field lists (https://wiki.open311.org/GeoReport_v2) and a client's request sequence.
#[tokio::test]
async fn open311_conformance() {
    let state = ready_state(HashMap::new(), Limits::default());
    let (status, services) = send(&state, "GET", "/open311/v2/services.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for field in [
        "service_code",
        "service_name",
        "description",
        "metadata",
        "type",
        "keywords",
        "group",
    ] {
        assert!(
            services[0].get(field).is_some(),
            "services.json lacks {field}: {services}"
        );
    }

    let req = Request::post("/open311/v2/requests.json")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("description=%E5%85%AC%E4%BA%A4%E8%BD%A6%E4%B8%8D%E6%8C%89%E7%AB%99%E5%81%9C%E8%BD%A6&address_string=A2%E5%8C%BA&email=a%40b.c"))
        .unwrap();
    let response = app(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: serde_json::Value = serde_json::from_slice(
        &axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    let id = created[0]["service_request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(created[0]["service_code"], "交通运输", "{created}");
    assert!(
        created[0].get("agency_responsible").is_some()
            && created[0].get("x_triage_categories").is_some()
    );

    let (status, one) = send(
        &state,
        "GET",
        &format!("/open311/v2/requests/{id}.json"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    for field in [
        "service_request_id",
        "status",
        "status_notes",
        "service_name",
        "service_code",
        "description",
        "agency_responsible",
        "service_notice",
        "requested_datetime",
        "updated_datetime",
        "expected_datetime",
        "address",
        "address_id",
        "zipcode",
        "lat",
        "long",
        "media_url",
    ] {
        assert!(one[0].get(field).is_some(), "request lacks {field}: {one}");
    }
    assert_eq!(one[0]["status"], "open");
    assert!(
        !one.to_string().contains("a@b.c"),
        "personal fields are never returned"
    );

    let (status, list) = send(
        &state,
        "GET",
        "/open311/v2/requests.json?service_code=%E4%BA%A4%E9%80%9A%E8%BF%90%E8%BE%93&status=open",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["service_request_id"] == id.as_str()));

    let (status, err) = send(&state, "GET", "/open311/v2/requests/nope.json", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        err[0]["code"] == 404 && err[0]["description"].is_string(),
        "GeoReport error shape: {err}"
    );
}

#[tokio::test]
async fn batch_jobs_run_report_progress_and_keep_their_output() {
    let keys = parse_keys("admin:admin-key-0123456789,call-taker:taker-key-0123456789").unwrap();
    let state = ready_state(keys, Limits::default());
    let input = "{\"id\": \"j1\", \"text\": \"公交车不按站停车\"}\nnot json\n{\"id\": \"j2\", \"text\": \"学校乱收费\"}\n";
    let ndjson = "application/x-ndjson";
    let taker = Some("taker-key-0123456789");
    let admin = Some("admin-key-0123456789");
    let (status, _) = send_as(&state, "POST", "/v1/jobs", ndjson, Some(input), taker).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only admins start jobs");
    let (status, body) = send_as(
        &state,
        "POST",
        "/v1/jobs?flag=true",
        ndjson,
        Some(input),
        admin,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown options are named: {body}"
    );
    let (status, body) = send_as(&state, "POST", "/v1/jobs", ndjson, Some(""), admin).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = send(&state, "POST", "/v1/jobs", Some("{}"), admin).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = send(&state, "GET", "/v1/jobs/nope", None, taker).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, job) = send_as(&state, "POST", "/v1/jobs", ndjson, Some(input), admin).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let done = loop {
        let (status, job) = send(&state, "GET", &format!("/v1/jobs/{id}"), None, taker).await;
        assert_eq!(status, StatusCode::OK);
        match job["state"].as_str() {
            Some("done") => break job,
            Some("failed") => panic!("{job}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    let counts = &done["progress"]["counts"];
    assert_eq!(
        (counts["classified"].as_u64(), counts["errors"].as_u64()),
        (Some(2), Some(1)),
        "{done}"
    );
    let (status, output) = send(&state, "GET", &format!("/v1/jobs/{id}/output"), None, taker).await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<serde_json::Value> = output
        .as_str()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["category"], "交通运输");
    assert!(lines[1]["error"].is_string());
    assert_eq!(lines[2]["category"], "教育文体");
    let (_, all) = send(&state, "GET", "/v1/jobs", None, taker).await;
    assert_eq!(all.as_array().map(Vec::len), Some(1));
}

#[test]
fn a_failing_store_is_503_and_its_cause_stays_in_the_log() {
    let error = ApiError::from(triage_core::Error::Store(
        "store http://10.0.0.5:6334: search: connection refused".into(),
    ));
    assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error.error_type, "store_unavailable");
    assert!(!error.message.contains("10.0.0.5"), "{}", error.message);
}

#[tokio::test]
async fn hotspots_alerts_and_digest_are_bounded_and_keyed() {
    let keys = parse_keys("call-taker:cccccccccccccccccccc").unwrap();
    let state = ready_state(keys, Limits::default());
    let key = Some("cccccccccccccccccccc");
    // Three timed cases in April 2019, one in March.
    let (status, body) = send(
        &state,
        "POST",
        "/v1/cases",
        Some(
            r#"[{"id": "t1", "text": "学校门口乱停车", "label": "教育文体", "time": "2019-04-02 09:00:00"},
                {"id": "t2", "text": "学校门口乱停车严重", "label": "教育文体", "time": "2019-04-03 09:00:00"},
                {"id": "t3", "text": "公交车不按站停车", "label": "交通运输", "time": "2019-04-05 09:00:00"},
                {"id": "t4", "text": "公交线路太绕", "label": "交通运输", "time": "2019-03-20 09:00:00"}]"#,
        ),
        key,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    for uri in ["/v1/hotspots", "/v1/alerts", "/v1/digest?period=day"] {
        let (status, body) = send(&state, "GET", uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(body["error_type"], "unauthorized", "{uri}");
    }
    let (status, body) = send(&state, "GET", "/v1/hotspots?top=5", None, key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["hotspots"].as_array().unwrap().len() <= 5);
    assert!(body["params"]["link_cosine"].is_number());
    assert_eq!(body["input"]["analysed"], 44);
    let (status, body) = send(
        &state,
        "GET",
        "/v1/alerts?from=2019-01-01&to=2019-12-31&limit=3",
        None,
        key,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["alerts"].as_array().unwrap().len() <= 3);
    assert!(body["total"].is_number() && body["params"]["recent_days"] == 30.0);
    let (status, body) = send(
        &state,
        "GET",
        "/v1/digest?period=month&date=2019-04-10&utc_offset=8",
        None,
        key,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The memory store ignores time filters; the digest counts by the period's bounds itself.
    assert_eq!(body["digest"]["total"]["current"], 3, "{body}");
    assert_eq!(body["digest"]["total"]["previous"], 1, "{body}");
    assert_eq!(body["digest"]["by_category"]["教育文体"]["current"], 2);
    assert!(body["digest"]["hotspots"].is_array());

    // Bad queries: 422 in the shared shape, naming what is wrong.
    for (uri, says) in [
        ("/v1/hotspots?top=0", "top"),
        ("/v1/hotspots?top=101", "top"),
        ("/v1/hotspots?top=many", "top"),
        ("/v1/hotspots?colour=red", "colour"),
        ("/v1/hotspots?from=2020-02-01&to=2020-01-01", "ends before"),
        ("/v1/hotspots?from=yesterday", "yesterday"),
        ("/v1/hotspots?category=nonsense", "nonsense"),
        ("/v1/alerts?limit=0", "limit"),
        ("/v1/alerts?recent_days=1000", "recent_days"),
        ("/v1/digest", "period"),
        ("/v1/digest?period=year", "year"),
        ("/v1/digest?period=week&date=2019-13-01", "date"),
        ("/v1/digest?period=week&utc_offset=99", "utc_offset"),
    ] {
        let (status, body) = send(&state, "GET", uri, None, key).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
        assert_eq!(body["error_type"], "validation", "{uri}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{uri}: {body}"
        );
    }
}
