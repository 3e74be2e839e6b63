//! The embedded store on disk: the shared suite, plus what only a local store can show
//! (exclusive lock, crash durability, reopen).

mod qdrant;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use triage_core::{CaseFilter, CaseStore};
use triage_store::{testsuite, EdgeStore};

const DIM: usize = 384;

#[test]
fn suite_crud() {
    let dir = tempfile::tempdir().unwrap();
    testsuite::crud(&EdgeStore::open(dir.path(), DIM).unwrap(), DIM);
}

#[test]
fn suite_search_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    testsuite::search_and_filters(&EdgeStore::open(dir.path(), DIM).unwrap(), DIM);
}

#[test]
fn reopens_with_its_cases_and_checks_dimension() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EdgeStore::open(dir.path(), DIM).unwrap();
        store
            .upsert(&[(
                testsuite::case("x", Some("a"), None, None),
                testsuite::vector(DIM, 3),
            )])
            .unwrap();
    }
    let store = EdgeStore::open(dir.path(), DIM).unwrap();
    assert_eq!(store.get("x").unwrap().unwrap().label.as_deref(), Some("a"));
    drop(store);
    let err = EdgeStore::open(dir.path(), 768).err().unwrap().to_string();
    assert!(err.contains("384") && err.contains("768"), "{err}");
}

#[test]
fn second_open_is_refused_while_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EdgeStore::open(dir.path(), DIM).unwrap();
    let err = EdgeStore::open(dir.path(), DIM).err().unwrap().to_string();
    assert!(err.contains("in use by another process"), "{err}");
    // Another process gets the same answer.
    let out = Command::new(env!("CARGO_BIN_EXE_store-tool"))
        .args(["write", dir.path().to_str().unwrap(), "384", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another process"));
}

#[test]
fn corrupt_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(EdgeStore::open(dir.path(), DIM).unwrap());
    std::fs::write(dir.path().join("store/edge_config.json"), b"{ garbage").unwrap();
    let err = EdgeStore::open(dir.path(), DIM).err().unwrap().to_string();
    assert!(
        err.contains(&dir.path().join("store").display().to_string()),
        "{err}"
    );
}

/// Without its segments qdrant-edge would open an empty store and the cases would silently vanish.
#[test]
fn missing_segments_are_an_error_not_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EdgeStore::open(dir.path(), DIM).unwrap();
        store
            .upsert(&[(
                testsuite::case("x", None, None, None),
                testsuite::vector(DIM, 1),
            )])
            .unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("store/segments")).unwrap();
    let err = EdgeStore::open(dir.path(), DIM).err().unwrap().to_string();
    assert!(err.contains("segments") && err.contains("missing"), "{err}");
}

/// Kill -9 a writer (batches of 128, as the importer writes) at several points: every case it
/// acknowledged is there after reopening. Each round rewrites the earlier cases, so overwrites are
/// killed mid-way too.
#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    for (round, wait_for) in [3usize, 17, 40, 1, 9, 25].into_iter().enumerate() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_store-tool"))
            .args(["write", dir.path().to_str().unwrap(), "384", "128"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut acked = 0usize;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(Ok(line)) = lines.next() {
            acked = line.trim_start_matches("acked ").parse().unwrap();
            if acked >= wait_for * 128 {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let store = EdgeStore::open(dir.path(), DIM).unwrap();
        for n in 0..acked {
            assert!(
                store.get(&format!("case-{n}")).unwrap().is_some(),
                "round {round}: acked case-{n} lost"
            );
        }
        assert!(store.count(&CaseFilter::default()).unwrap() >= acked);
    }
}

#[test]
fn suite_edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    testsuite::edge_cases(&EdgeStore::open(dir.path(), DIM).unwrap(), DIM);
}

#[test]
fn suite_scroll_order_and_combined_filters() {
    let dir = tempfile::tempdir().unwrap();
    testsuite::scroll_order_and_combined_filters(&EdgeStore::open(dir.path(), DIM).unwrap(), DIM);
}

#[test]
fn suite_district_change() {
    let dir = tempfile::tempdir().unwrap();
    testsuite::district_change(&EdgeStore::open(dir.path(), DIM).unwrap(), DIM);
}

#[test]
fn suite_concurrent_use() {
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn CaseStore> =
        std::sync::Arc::new(EdgeStore::open(dir.path(), DIM).unwrap());
    testsuite::concurrent_use(store.as_ref(), DIM);
}

/// qdrant-edge 0.7.2 never truncates its WAL; opening prunes it. Pruning must keep the operation
/// numbers going up, or updates to existing cases after a reopen would be silently ignored.
#[test]
fn wal_is_pruned_on_open_and_updates_still_apply() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("store/wal");
    let closed_files = || {
        let names = std::fs::read_dir(&wal)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap());
        names.filter(|n| n.starts_with("closed-")).count()
    };
    let rows = |label: &str| -> Vec<_> {
        (0..128u32)
            .map(|i| {
                (
                    testsuite::case(&format!("p{i}"), Some(label), None, None),
                    testsuite::vector(DIM, i),
                )
            })
            .collect()
    };
    let grown = {
        let store = EdgeStore::open(dir.path(), DIM).unwrap();
        for round in 0..80 {
            store.upsert(&rows(&format!("v{round}"))).unwrap();
        }
        closed_files()
    };
    assert!(
        grown >= 3,
        "80 batches fill several 4 MiB WAL files, found {grown} closed"
    );
    for round in 80..83 {
        let store = EdgeStore::open(dir.path(), DIM).unwrap();
        assert_eq!(
            store.get("p5").unwrap().unwrap().label,
            Some(format!("v{}", round - 1)),
            "the last update is kept"
        );
        store.upsert(&rows(&format!("v{round}"))).unwrap();
        assert_eq!(
            store.get("p5").unwrap().unwrap().label,
            Some(format!("v{round}")),
            "an update after reopening applies"
        );
    }
    let store = EdgeStore::open(dir.path(), DIM).unwrap();
    assert_eq!(closed_files(), 1, "only the newest closed WAL file is kept");
    assert_eq!(
        store.get("p127").unwrap().unwrap().label.as_deref(),
        Some("v82")
    );
    assert_eq!(store.count(&CaseFilter::default()).unwrap(), 128);
}
