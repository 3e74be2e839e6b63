//! The same suite against a Qdrant server, when `QDRANT_URL` names one (e.g. `http://127.0.0.1:6334`;
//! `scripts/qdrant-tests.sh` starts a local server from `QDRANT_BIN` and runs these). Without it each
//! test says it did nothing: the embedded backend's run of the suite is in `main.rs`. QDRANT_SHARDS
//! and QDRANT_REPLICATION set the layout (`scripts/qdrant-cluster-test.sh` runs them on 3 nodes).

use std::time::{Duration, Instant};
use triage_core::CaseStore;
use triage_store::{testsuite, QdrantConfig, QdrantStore};

const DIM: usize = 384;

/// Runs `suite` on fresh collections of the server named by QDRANT_URL: plain, int8-quantized and,
/// on a cluster (QDRANT_DISTRIBUTED set), sharded by district; without a server it notes that
/// nothing ran.
fn on_server(test: &str, suite: fn(&dyn CaseStore, usize)) {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!("{test}: QDRANT_URL is not set, nothing run against a Qdrant server");
        return;
    };
    let plain = config(&url, test, false);
    let mut layouts = vec![
        QdrantConfig {
            int8: true,
            collection: format!("{}-int8", plain.collection),
            ..plain.clone()
        },
        plain,
    ];
    if distributed() {
        layouts.push(config(&url, test, true));
    }
    for layout in layouts {
        let store =
            QdrantStore::open(layout, DIM).expect("the Qdrant server at QDRANT_URL answers");
        suite(&store, DIM);
    }
}

fn distributed() -> bool {
    std::env::var_os("QDRANT_DISTRIBUTED").is_some()
}

fn config(url: &str, test: &str, shard_by_district: bool) -> QdrantConfig {
    let number = |var: &str| std::env::var(var).ok().map(|n| n.parse().unwrap());
    QdrantConfig {
        collection: format!("triage-test-{test}-{shard_by_district}-{:x}", rand_suffix()),
        shard_number: number("QDRANT_SHARDS"),
        replication_factor: number("QDRANT_REPLICATION"),
        shard_by_district,
        ..QdrantConfig::new(url)
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn qdrant_suite_crud() {
    on_server("crud", testsuite::crud);
}

#[test]
fn qdrant_suite_search_and_filters() {
    on_server("search", testsuite::search_and_filters);
}

#[test]
fn qdrant_suite_edge_cases() {
    on_server("edge", testsuite::edge_cases);
}

#[test]
fn qdrant_suite_scroll_order_and_combined_filters() {
    on_server("scroll", testsuite::scroll_order_and_combined_filters);
}

#[test]
fn qdrant_suite_concurrent_use() {
    on_server("concurrent", testsuite::concurrent_use);
}

#[test]
fn qdrant_suite_district_change() {
    on_server("district", testsuite::district_change);
}

/// A single server (not a cluster) cannot shard by district: the error says what to change.
#[test]
fn district_sharding_on_a_single_server_is_a_clear_error() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!("QDRANT_URL is not set, nothing run against a Qdrant server");
        return;
    };
    if distributed() {
        eprintln!("the server is a cluster: district sharding is run by the suite instead");
        return;
    }
    let sharded = config(&url, "single", true);
    let error = QdrantStore::open(sharded.clone(), DIM)
        .err()
        .expect("a single server refuses shard keys");
    assert!(
        error.to_string().contains("distributed (cluster) mode"),
        "{error}"
    );
    // Nothing half-made is left behind: the same collection opens with the plain layout.
    let plain = QdrantConfig {
        shard_by_district: false,
        ..sharded
    };
    testsuite::crud(&QdrantStore::open(plain, DIM).unwrap(), DIM);
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
