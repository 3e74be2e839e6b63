//! `/openapi.json` against the router: every `/v1` route the router has is documented with each of
//! its methods, and every documented operation reaches a handler (not the 404/405 fallback).
//!
//! axum cannot list a router's routes, so they are read from the `.route("…", get(..).post(..))`
//! calls in `src/http/*.rs`: a route added in any of those files without a line in
//! `openapi.rs` fails here.

use super::*;
use std::collections::BTreeSet;

/// (method, path) of every `/v1` route registered in the HTTP module's source.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let route =
        regex::Regex::new(r#"\.route\(\s*"(/v1[^"]*)"\s*,\s*((?:\.?\s*[a-z]+\([^()]*\)\s*)+)"#)
            .unwrap();
    let method = regex::Regex::new(r"([a-z]+)\(").unwrap();
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        if entry.path().extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(entry.path()).unwrap();
        for c in route.captures_iter(&source) {
            for m in method.captures_iter(&c[2]) {
                found.insert((m[1].to_string(), c[1].to_string()));
            }
        }
    }
    found
}

#[tokio::test]
async fn openapi_matches_the_router() {
    let state = ready_state(Keys::new(), Limits::default());
    let (status, doc) = send(&state, "GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    let registered = routes_in_source();
    assert!(
        registered.len() >= 14,
        "the route reader found {registered:?}"
    );
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let phantom: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.rs: {undocumented:?}"
    );
    assert!(phantom.is_empty(), "documented but not routed: {phantom:?}");

    // And each documented operation reaches a handler of the real router.
    for (method, path) in &documented {
        let uri = path.replace("{id}", "no-such-id");
        let (status, body) = send(
            &state,
            &method.to_uppercase(),
            &uri,
            (method == "post").then_some("{}"),
            None,
        )
        .await;
        let fallback = status == StatusCode::METHOD_NOT_ALLOWED
            || (status == StatusCode::NOT_FOUND && body["error"] == "Not Found");
        assert!(!fallback, "{method} {path}: {status} {body}");
    }
    // Every documented request and response schema resolves.
    let text = doc.to_string();
    for reference in regex::Regex::new(r##""#/components/schemas/([A-Za-z0-9_]+)""##)
        .unwrap()
        .captures_iter(&text)
    {
        assert!(
            doc["components"]["schemas"][&reference[1]].is_object(),
            "{} is referenced but not defined",
            &reference[1]
        );
    }
}
