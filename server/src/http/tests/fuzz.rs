//! Fuzzing in the test suite (bounded, on stable): random and mutated requests against the real
//! router (`app(state)`: every middleware, extractor and handler; the classifier, unit directory
//! and taxonomy are real, the embedder and store are this module's fast stand-ins so that 20,000
//! requests fit in the CI budget). Every answer must be 2xx or 4xx in the one error shape
//! (GeoReport's on Open311), never 5xx, never a panic; `/health` answers 200 afterwards.
//!
//! The JSONL readers get the same treatment: the case-line parser, `triage import`'s reader and
//! the batch reader (which batch jobs use for their uploads) over random bytes and lines.
//!
//! `FUZZ_REQUESTS=200000 cargo test --release -p triage-server fuzz -- --nocapture` runs longer.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-key-0123456789";
const TAKER: &str = "taker-key-0123456789";

/// Strings that have broken parsers and renderers before: RTL and zero-width marks, NUL and
/// other controls, a BOM, combining marks, astral characters, CJK, 10,000-character lines,
/// JSON and form metacharacters, and plain random Unicode.
fn edge_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".into()),
        Just("\u{202E}公交车\u{202C}不按站\u{200F}停车\u{200B}".into()),
        Just("\0".into()),
        Just("a\0b\u{1}\u{7f}\u{1b}[31m".into()),
        Just("\u{FEFF}学校乱收费".into()),
        Just("e\u{301}\u{301}\u{301}\u{20DD}".into()),
        Just("😀\u{1F1E8}\u{1F1F3}𠀀\u{10FFFF}".into()),
        Just("公交车不按站停车，电话13812345678".into()),
        Just("【slot】「quote」c12".into()),
        Just("长".repeat(10_000)),
        Just("x".repeat(10_001)),
        Just("\"\\/\n\r\t{}[],:&=%+#?".into()),
        Just("2025-03-01T00:00:00+08:00".into()),
        Just("交通运输".into()),
        Just("bus".into()),
        Just("c1".into()),
        "\\PC{0,30}",
        "[\\x00-\\x1f\\u{80}-\\u{9f}\\u{fff0}-\\u{ffff}]{1,8}",
        any::<String>(),
    ]
}

/// Field names the handlers read (and a few they do not).
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec![
            "text", "title", "district", "time", "draft", "k", "filter", "category", "unit",
            "case_id", "suggested_category", "suggested_unit", "suggestion_request_id", "id",
            "label", "reply", "from_store", "fast", "write_back", "dry_run", "labeled_only",
            "with_reply", "time_from", "time_to", "description", "service_code",
        ])
        .prop_map(String::from),
        1 => edge_string(),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![Just(0u64), Just(1), Just(10), Just(101), Just(u64::MAX)]
            .prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        edge_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request body that is mostly right: the fields a route wants with edge-case values.
fn plausible_object() -> impl Strategy<Value = serde_json::Value> {
    (
        edge_string(),
        prop::option::of(edge_string()),
        prop::option::of(prop_oneof![
            Just(json!("交通运输")),
            edge_string().prop_map(|s| json!(s))
        ]),
        prop::option::of(any::<bool>()),
        prop::option::of(prop_oneof![
            Just(json!(3)),
            Just(json!(0)),
            Just(json!(-1)),
            Just(json!("5"))
        ]),
    )
        .prop_map(|(text, title, category, draft, k)| {
            let mut o = json!({"text": text});
            if let Some(t) = title {
                o["title"] = json!(t);
            }
            if let Some(c) = category {
                o["category"] = c;
            }
            if let Some(d) = draft {
                o["draft"] = json!(d);
            }
            if let Some(k) = k {
                o["k"] = k;
            }
            o
        })
}

/// Byte-level mutations of a body: insert, delete or replace bytes at random places.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, byte, op) in edits {
        let at = if bytes.is_empty() {
            0
        } else {
            at % (bytes.len() + 1)
        };
        match op % 3 {
            0 => bytes.insert(at, byte),
            1 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ if at < bytes.len() => bytes[at] = byte,
            _ => bytes.push(byte),
        }
    }
    bytes
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let lone_surrogates = prop_oneof![
        Just(r#"{"text": "\ud800"}"#),
        Just(r#"{"text": "a\udfffb", "draft": false}"#),
        Just(r#"{"text": "\ud83d\ude00\ud83d", "category": "交通运输"}"#),
        Just(r#"{"id": "s1", "text": "\udc00"}"#),
        Just("{\"text\": \"\\u0000\\u202e\"}"),
    ]
    .prop_map(|s| s.as_bytes().to_vec());
    let jsonl = prop::collection::vec(
        prop_oneof![
            3 => json_value().prop_map(|v| v.to_string()),
            3 => (edge_string(), edge_string())
                .prop_map(|(id, text)| json!({"id": id, "text": text}).to_string()),
            1 => edge_string(),
            1 => Just(r#"{"id": "j", "text": "\ud800"}"#.to_string()),
        ],
        0..6,
    )
    .prop_map(|lines| lines.join("\n").into_bytes());
    let form = prop::collection::vec(
        (
            prop_oneof![
                4 => prop::sample::select(vec![
                    "description", "service_code", "address_string", "lat", "long", "email",
                    "phone", "media_url",
                ])
                .prop_map(String::from),
                1 => edge_string(),
            ],
            edge_string(),
            any::<bool>(),
        ),
        0..6,
    )
    .prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v, encode)| {
                if *encode {
                    format!("{}={}", percent_encode(k), percent_encode(v))
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join("&")
            .into_bytes()
    });
    prop_oneof![
        3 => plausible_object().prop_map(|v| v.to_string().into_bytes()),
        3 => json_value().prop_map(|v| v.to_string().into_bytes()),
        2 => (
            plausible_object(),
            prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..5)
        )
            .prop_map(|(v, edits)| mutate(v.to_string().into_bytes(), &edits)),
        1 => lone_surrogates,
        2 => jsonl,
        2 => form,
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(Vec::new()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("c1".to_string()),
        Just("..".to_string()),
        Just("%2e%2e".to_string()),
        Just("%00".to_string()),
        Just("x.json".to_string()),
        Just("a".repeat(5000)),
        Just("job-20250101T000000-abcd".to_string()),
        edge_string().prop_map(|s| percent_encode(&s)),
    ];
    let routes = prop::sample::select(vec![
        "/",
        "/health",
        "/info",
        "/metrics",
        "/openapi.json",
        "/v1/triage",
        "/v1/triage/stream",
        "/v1/cases",
        "/v1/cases/{}",
        "/v1/search",
        "/v1/feedback",
        "/v1/taxonomy",
        "/v1/units",
        "/v1/jobs",
        "/v1/jobs/{}",
        "/v1/jobs/{}/output",
        "/v1/audit/report",
        "/open311/v2/services.json",
        "/open311/v2/requests.json",
        "/open311/v2/requests/{}",
        "/v1/{}",
        "/{}",
        "/v1/triage/{}",
        "//v1//triage",
        "/V1/TRIAGE",
    ]);
    let query = prop::option::of(
        prop::collection::vec((key(), edge_string()), 0..4).prop_map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
                .collect::<Vec<_>>()
                .join("&")
        }),
    );
    let report_query = prop_oneof![
        Just("from=2025-01-01&to=2025-01-31".to_string()),
        Just("from=2025-01-31&to=2025-01-01".to_string()),
        Just("from=2025-01-01T00:00:00%2B08:00&to=2030-01-01&format=markdown".to_string()),
        Just("from=x&to=y&format=pdf".to_string()),
    ];
    (routes, segment, query, report_query, any::<bool>()).prop_map(
        |(route, segment, query, report, raw_report)| {
            let mut path = route.replace("{}", &segment);
            if route == "/v1/audit/report" && raw_report {
                path = format!("{path}?{report}");
            } else if let Some(q) = query {
                path = format!("{path}?{q}");
            }
            path
        },
    )
}

#[derive(Debug, Clone)]
struct Fuzzed {
    method: &'static str,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn request() -> impl Strategy<Value = Fuzzed> {
    let method = prop_oneof![
        6 => Just("POST"),
        4 => Just("GET"),
        1 => Just("DELETE"),
        1 => Just("PUT"),
        1 => Just("PATCH"),
        1 => Just("OPTIONS"),
    ];
    let content_type = prop::option::of(prop_oneof![
        4 => Just(b"application/json".to_vec()),
        1 => Just(b"application/json; charset=utf-8".to_vec()),
        2 => Just(b"application/x-ndjson".to_vec()),
        2 => Just(b"application/x-www-form-urlencoded".to_vec()),
        1 => Just(b"text/plain".to_vec()),
        1 => Just(b"multipart/form-data; boundary=x".to_vec()),
        1 => "[ -~]{0,40}".prop_map(String::into_bytes),
    ]);
    let authorization = prop::option::of(prop_oneof![
        4 => Just(format!("Bearer {TAKER}").into_bytes()),
        3 => Just(format!("Bearer {ADMIN}").into_bytes()),
        1 => Just(b"Bearer ".to_vec()),
        1 => Just(format!("Basic {ADMIN}").into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]);
    let extra = prop::option::of((
        prop_oneof![
            Just("content-length".to_string()),
            Just("accept".to_string()),
            Just("x-request-id".to_string()),
            Just("transfer-encoding".to_string()),
            Just("content-encoding".to_string()),
            "[a-z-]{1,20}",
        ],
        prop_oneof![
            Just(b"0".to_vec()),
            Just(b"99999999999".to_vec()),
            Just(b"gzip".to_vec()),
            Just(b"chunked".to_vec()),
            Just("x".repeat(8000).into_bytes()),
            prop::collection::vec(any::<u8>(), 0..30),
        ],
    ));
    (method, path(), content_type, authorization, extra, body()).prop_map(
        |(method, path, content_type, authorization, extra, body)| {
            let mut headers = Vec::new();
            if let Some(c) = content_type {
                headers.push(("content-type".to_string(), c));
            }
            if let Some(a) = authorization {
                headers.push(("authorization".to_string(), a));
            }
            if let Some((name, value)) = extra {
                headers.push((name, value));
            }
            Fuzzed {
                method,
                path,
                headers,
                body,
            }
        },
    )
}

/// Checks one answer; `Err` names what is wrong with it.
/// `Ok(None)` for a request no client could send (an invalid URI).
async fn check(router: &Router, fuzzed: &Fuzzed) -> Result<Option<StatusCode>, String> {
    let mut builder = Request::builder().method(fuzzed.method).uri(&fuzzed.path);
    for (name, value) in &fuzzed.headers {
        let Ok(value) = axum::http::HeaderValue::from_bytes(value) else {
            continue; // not sendable over HTTP/1.1: a client library refuses it too
        };
        builder = builder.header(name.as_str(), value);
    }
    let Ok(req) = builder.body(Body::from(fuzzed.body.clone())) else {
        return Ok(None); // not a URI a client can send
    };
    let response = router
        .clone()
        .oneshot(req)
        .await
        .map_err(|e| format!("{e}"))?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    if !(status.is_success() || status.is_client_error()) {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        ));
    }
    if status.is_client_error() {
        let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
            format!(
                "{status} not in the error shape: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )
        })?;
        let shaped = if fuzzed.path.starts_with("/open311/") {
            body[0]["code"] == status.as_u16() && body[0]["description"].is_string()
        } else {
            body["error"].is_string() && body["error_type"].is_string()
        };
        if !shaped {
            return Err(format!("{status} not in the error shape: {body}"));
        }
    }
    Ok(Some(status))
}

fn fuzz_state() -> (Arc<AppState>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let keys = parse_keys(&format!(
        "admin:fuzz-admin:{ADMIN}\ncall-taker:fuzz:{TAKER}"
    ))
    .unwrap();
    let audit = triage_core::audit::AuditLog::open(
        &dir.path().join("audit"),
        triage_core::audit::AuditSettings::default(),
    )
    .unwrap();
    let limits = Limits {
        max_upload_bytes: 1 << 20,
        ..Default::default()
    };
    (ready_state_with(keys, limits, Some(audit)), dir)
}

#[test]
fn random_and_mutated_requests_to_every_route_never_get_a_5xx() {
    // Requests to send, at least (a few generated ones are not valid URIs and are not sent).
    let requests: usize = std::env::var("FUZZ_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let generated = requests + requests / 10;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (state, _dir) = runtime.block_on(async { fuzz_state() });
    let router = app(state.clone());
    let sent = AtomicUsize::new(0);
    let succeeded = AtomicUsize::new(0);
    let started = Instant::now();
    let mut runner = TestRunner::new(Config {
        cases: generated as u32,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    });
    let result = runner.run(&request(), |fuzzed| {
        let status = runtime
            .block_on(check(&router, &fuzzed))
            .map_err(TestCaseError::fail)?;
        if let Some(status) = status {
            sent.fetch_add(1, Ordering::Relaxed);
            succeeded.fetch_add(status.is_success() as usize, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let sent = sent.into_inner();
    let elapsed = started.elapsed();
    // Jobs the fuzzer started stop at their next chunk.
    state.stopping.store(true, Ordering::Relaxed);
    let (status, health) = runtime.block_on(send(&state, "GET", "/health", None, None));
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["audit"]["healthy"], true, "{health}");
    eprintln!(
        "fuzz: {sent} requests sent ({generated} generated) in {:.1} s: {} 2xx, {} 4xx, 0 others, \
         0 outside the error shape",
        elapsed.as_secs_f64(),
        succeeded.load(Ordering::Relaxed),
        sent - succeeded.load(Ordering::Relaxed),
    );
    assert!(
        sent >= requests,
        "only {sent} of {generated} generated requests could be sent (want {requests})"
    );
    runtime.shutdown_timeout(Duration::from_secs(5));
}

/// The case-line parser, `triage import`'s reader and the batch reader (batch jobs' uploads go
/// through it) over random lines and bytes: no panic, every line accounted for.
#[test]
fn the_jsonl_readers_take_any_bytes() {
    let state = ready_state(Keys::new(), Limits::default());
    let pipeline = state.pipeline.get().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let line = prop_oneof![
        3 => json_value().prop_map(|v| v.to_string()),
        3 => (edge_string(), edge_string(), prop::option::of(edge_string()))
            .prop_map(|(id, text, label)| json!({"id": id, "text": text, "label": label}).to_string()),
        1 => edge_string(),
        1 => Just(r#"{"id": "s", "text": "\ud800"}"#.to_string()),
        1 => prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ];
    let file = (
        prop::collection::vec(line, 0..12),
        prop::collection::vec(any::<u8>(), 0..8),
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let counter = AtomicUsize::new(0);
    runner
        .run(&file, |(lines, raw_tail, final_newline)| {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            for l in &lines {
                let _ = triage_core::ingest::parse_case_line(l);
            }
            let mut bytes = lines.join("\n").into_bytes();
            bytes.extend_from_slice(&raw_tail);
            if final_newline {
                bytes.push(b'\n');
            }
            let input = dir.path().join(format!("in-{n}.jsonl"));
            std::fs::write(&input, &bytes).unwrap();
            let expected = bytes.split(|&b| b == b'\n').count()
                - usize::from(bytes.is_empty() || bytes.ends_with(b"\n"));

            let importer = triage_core::ingest::Importer {
                pipeline: &pipeline,
                batch_size: 4,
                checkpoint_dir: None,
            };
            let summary = importer
                .import_file(&input, &mut |_| {})
                .map_err(|e| TestCaseError::fail(format!("import failed: {e}")))?;
            let accounted = summary.imported + summary.updated + summary.skipped.len();
            prop_assert!(
                accounted <= expected,
                "import: {accounted} results for {expected} lines"
            );

            let spec = triage_core::batch::BatchSpec {
                source: triage_core::batch::Source::File(input.clone()),
                output: dir.path().join(format!("out-{n}.jsonl")),
                fast: n.is_multiple_of(2),
                draft: false,
                write_back: triage_core::batch::WriteBack::Off,
                shard: triage_core::batch::Shard::default(),
                chunk: 3,
            };
            let done = triage_core::batch::run(&pipeline, &spec, &mut |_| true)
                .map_err(|e| TestCaseError::fail(format!("batch failed: {e}")))?;
            let counts = &done.counts;
            prop_assert_eq!(counts.classified + counts.errors, expected as u64);
            let out = std::fs::read_to_string(&spec.output).unwrap();
            prop_assert_eq!(out.lines().count(), expected);
            for (i, l) in out.lines().enumerate() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                prop_assert_eq!(v["line"].as_u64(), Some(i as u64 + 1));
            }
            Ok(())
        })
        .unwrap();
}
