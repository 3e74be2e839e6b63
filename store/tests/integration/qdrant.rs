//! The same suite against a Qdrant server, when `QDRANT_URL` names one (e.g. `http://127.0.0.1:6334`;
//! `scripts/qdrant-tests.sh` starts a local server from `QDRANT_BIN` and runs these). Without it each
//! test says it did nothing: the embedded backend's run of the suite is in `main.rs`.

use std::time::{Duration, Instant};
use triage_store::{testsuite, QdrantConfig, QdrantStore};

const DIM: usize = 384;

/// A fresh collection on the server named by QDRANT_URL, or None (and a note) without one.
fn server(test: &str) -> Option<QdrantStore> {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!("{test}: QDRANT_URL is not set, nothing run against a Qdrant server");
        return None;
    };
    let config = QdrantConfig {
        collection: format!("triage-test-{test}-{:x}", rand_suffix()),
        ..QdrantConfig::new(&url)
    };
    Some(QdrantStore::open(config, DIM).expect("the Qdrant server at QDRANT_URL answers"))
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn qdrant_suite_crud() {
    if let Some(store) = server("crud") {
        testsuite::crud(&store, DIM);
    }
}

#[test]
fn qdrant_suite_search_and_filters() {
    if let Some(store) = server("search") {
        testsuite::search_and_filters(&store, DIM);
    }
}

#[test]
fn qdrant_suite_edge_cases() {
    if let Some(store) = server("edge") {
        testsuite::edge_cases(&store, DIM);
    }
}

#[test]
fn qdrant_suite_scroll_order_and_combined_filters() {
    if let Some(store) = server("scroll") {
        testsuite::scroll_order_and_combined_filters(&store, DIM);
    }
}

#[test]
fn qdrant_suite_concurrent_use() {
    if let Some(store) = server("concurrent") {
        testsuite::concurrent_use(&store, DIM);
    }
}

/// No server at all: a clear error naming the address, after a few quick retries, not a hang.
#[test]
fn an_unreachable_server_is_a_clear_error() {
    let started = Instant::now();
    let config = QdrantConfig {
        timeout: Duration::from_secs(2),
        ..QdrantConfig::new("http://127.0.0.1:9")
    };
    let error = QdrantStore::open(config, DIM)
        .err()
        .expect("nothing listens on port 9");
    let message = error.to_string();
    assert!(message.contains("http://127.0.0.1:9"), "{message}");
    assert!(
        message.contains("does not answer after 5 attempts"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
