//! The real `triage` binary with the real models and an on-disk store in a temp dir: the CLI
//! pipeline (import → train → classify), and the HTTP service on a loopback port.

mod audit;
mod batch;
mod browser;
mod cli;
mod eval;
mod faults;
mod hotspots;
mod qdrant;
mod service;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

pub fn triage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_triage"))
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("triage runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A data directory with the shipped sample imported and a classifier trained, built once and
/// shared; `lock()` serialises the tests that use it (the store admits one process at a time).
pub struct Demo {
    pub dir: tempfile::TempDir,
    lock: Mutex<()>,
}

impl Demo {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = triage();
        cmd.arg("--data-dir").arg(self.dir.path());
        cmd
    }
}

pub fn demo() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| {
        let demo = Demo {
            dir: tempfile::tempdir().unwrap(),
            lock: Mutex::new(()),
        };
        let sample = repo().join("data/sample");
        run_ok(
            demo.cmd()
                .arg("import")
                .arg(sample.join("cases.jsonl"))
                .arg(sample.join("replies.jsonl")),
        );
        run_ok(demo.cmd().arg("train"));
        demo
    })
}
