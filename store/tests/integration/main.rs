//! The embedded store on disk: the shared suite, plus what only a local store can show
//! (exclusive lock, crash durability, reopen).

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
        store.upsert(&[(testsuite::case("x", Some("a"), None, None), testsuite::vector(DIM, 3))]).unwrap();
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
    assert!(err.contains(&dir.path().join("store").display().to_string()), "{err}");
}

/// Kill -9 a writer at several points: every case it acknowledged is there after reopening.
#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    for (round, wait_for) in [3usize, 17, 40].into_iter().enumerate() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_store-tool"))
            .args(["write", dir.path().to_str().unwrap(), "384", "8"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut acked = 0usize;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(Ok(line)) = lines.next() {
            acked = line.trim_start_matches("acked ").parse().unwrap();
            if acked >= wait_for * 8 {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let store = EdgeStore::open(dir.path(), DIM).unwrap();
        for n in 0..acked {
            assert!(store.get(&format!("case-{n}")).unwrap().is_some(), "round {round}: acked case-{n} lost");
        }
        assert!(store.count(&CaseFilter::default()).unwrap() >= acked);
    }
}
