//! Storage faults with the real binary, models and store: damaged store and classifier files,
//! a disk that fills up during an import and a batch job (a real ENOSPC from a small tmpfs the
//! test mounts: run as root, as CI does), and `kill -9` during `train` and during a write-back.
//! Each ends with every acknowledged case still there and a message that says what to do.

use super::service::http;
use super::{demo, repo, run_ok, triage};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A copy of the demo data directory (sample imported, classifier trained) to damage.
fn copy_of_demo() -> tempfile::TempDir {
    let demo = demo();
    let _guard = demo.lock();
    let copy = tempfile::tempdir().unwrap();
    copy_tree(demo.dir.path(), copy.path());
    copy
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file under `dir` with its SHA-256: what "changes nothing" is checked against.
fn digest(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                let bytes = std::fs::read(entry.path()).unwrap();
                out.insert(entry.path(), format!("{:x}", Sha256::digest(&bytes)));
            }
        }
    }
    out
}

fn cmd(dir: &Path) -> Command {
    let mut cmd = triage();
    cmd.arg("--data-dir").arg(dir);
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `triage store check` on `dir`: its output, after checking that it changed no file.
fn store_check(dir: &Path) -> Output {
    let before = digest(dir);
    let out = cmd(dir).args(["store", "check"]).output().unwrap();
    assert_eq!(before, digest(dir), "store check changed files");
    out
}

fn cases_read_back(check: &Output) -> usize {
    let out = text(check);
    let at = out.find(" cases of ").unwrap_or_else(|| panic!("{out}"));
    let start = out[..at].rfind(' ').map_or(0, |i| i + 1);
    out[start..at].parse().unwrap()
}

/// Starts `triage serve` on `dir` and returns what `/health` says once loading has failed (503,
/// `not_ready`, with the cause); the service keeps running and retries, as it does for a store
/// that is not there yet.
fn serve_health(dir: &Path) -> String {
    use std::io::BufRead;
    let mut child = cmd(dir)
        .args(["serve", "--bind", "127.0.0.1:0", "--no-draft"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .trim_start_matches("listening on http://")
        .to_string();
    let started = Instant::now();
    let said = loop {
        let (status, body) = http(&addr, "GET", "/health", None);
        assert_ne!(status, 200, "the service started on damaged files: {body}");
        if body.contains("failed to load") {
            assert_eq!(status, 503, "{body}");
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    said
}

fn classify(dir: &Path) -> Output {
    cmd(dir)
        .args(["classify", "--no-draft", "小区楼下餐馆油烟太大"])
        .output()
        .unwrap()
}

#[test]
fn a_damaged_classifier_is_named_with_the_command_that_rebuilds_it() {
    let dir = copy_of_demo();
    let version = std::fs::read_to_string(dir.path().join("classifier/current")).unwrap();
    let file = dir
        .path()
        .join(format!("classifier/{}.bin", version.trim()));
    let bytes = std::fs::read(&file).unwrap();
    for damage in ["truncated", "overwritten"] {
        match damage {
            "truncated" => std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap(),
            _ => {
                let mut b = bytes.clone();
                b[..64].fill(0xff);
                std::fs::write(&file, &b).unwrap();
            }
        }
        let out = classify(dir.path());
        assert!(!out.status.success(), "{damage}: classify worked");
        let said = text(&out);
        assert!(
            said.contains(&file.display().to_string()) && said.contains("triage train"),
            "{damage}: {said}"
        );
        let check = store_check(dir.path());
        let said = text(&check);
        assert_eq!(check.status.code(), Some(1), "{damage}: {said}");
        assert!(
            said.contains("DAMAGED") && said.contains(&file.display().to_string()),
            "{damage}: {said}"
        );
        assert!(said.contains("triage train"), "{damage}: {said}");
        assert_eq!(cases_read_back(&check), 1300, "{said}");
        if damage == "truncated" {
            let health = serve_health(dir.path());
            let file = file.display().to_string();
            assert!(
                health.contains(&file) && health.contains("triage train"),
                "{health}"
            );
        }
    }
    run_ok(cmd(dir.path()).arg("train"));
    run_ok(cmd(dir.path()).args(["classify", "--no-draft", "公交车不按站停车"]));
    assert!(store_check(dir.path()).status.success());
}

#[test]
fn a_damaged_store_is_named_with_the_command_that_rebuilds_it() {
    for damage in [
        "config truncated",
        "segments removed",
        "segment files truncated",
        "vectors and payloads truncated",
    ] {
        let dir = copy_of_demo();
        let store = dir.path().join("store");
        match damage {
            "config truncated" => {
                let config = store.join("edge_config.json");
                let bytes = std::fs::read(&config).unwrap();
                std::fs::write(&config, &bytes[..bytes.len() / 3]).unwrap();
            }
            "segments removed" => {
                for entry in std::fs::read_dir(store.join("segments")).unwrap().flatten() {
                    std::fs::remove_dir_all(entry.path()).unwrap();
                }
            }
            "segment files truncated" => {
                // Every file of every segment cut to half its length.
                for file in digest(&store.join("segments")).keys() {
                    let len = std::fs::metadata(file).unwrap().len();
                    truncate(file, len / 2);
                }
            }
            _ => {
                // Only the bulk data (vectors and payloads) cut to one page: the store opens,
                // and reading the cases back finds it.
                for file in digest(&store.join("segments")).keys() {
                    let name = file.file_name().unwrap().to_string_lossy();
                    if name.starts_with("chunk_") || name.starts_with("page_") {
                        truncate(file, 4096);
                    }
                }
            }
        }
        if damage != "vectors and payloads truncated" {
            let out = classify(dir.path());
            let said = text(&out);
            assert!(!out.status.success(), "{damage}: classify worked: {said}");
            assert!(
                said.contains(&store.display().to_string()) && said.contains("triage import"),
                "{damage}: {said}"
            );
        }
        if damage == "segment files truncated" {
            let health = serve_health(dir.path());
            let store = store.display().to_string();
            assert!(
                health.contains(&store) && health.contains("triage import"),
                "{health}"
            );
        }
        let check = store_check(dir.path());
        let said = text(&check);
        assert_eq!(check.status.code(), Some(1), "{damage}: {said}");
        assert!(
            said.contains("store: DAMAGED") && said.contains("triage import"),
            "{damage}: {said}"
        );
        assert!(
            said.contains(&store.display().to_string()),
            "{damage}: the original store is named: {said}"
        );
    }
}

fn truncate(file: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// A tmpfs of the test's own (needs root, as CI runs); unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test fills a small file system of its own and could not mount one on {} \
             ({}): run the tests as root (CI does), or with CAP_SYS_ADMIN",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self(dir.to_path_buf())
    }

    /// Fills the file system up to `leave` free bytes with a file of its own.
    fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.0.join("filler");
        let stat = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.0)
            .output()
            .unwrap();
        let avail: u64 = String::from_utf8_lossy(&stat.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let size = avail.saturating_sub(leave);
        let file = std::fs::File::create(&filler).unwrap();
        use std::io::Write;
        let mut w = std::io::BufWriter::new(file);
        let block = vec![0u8; 64 << 10];
        let mut written = 0;
        while written < size {
            let n = (size - written).min(block.len() as u64) as usize;
            w.write_all(&block[..n]).unwrap();
            written += n as u64;
        }
        w.flush().unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_import_and_batch_and_both_resume_once_space_is_back() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&tmp.path().join("disk"), "96m");
    let data = tmp.path().join("disk/data");
    let sample = repo().join("data/sample/cases.jsonl");

    // Import: the store is created, then the disk fills part way through (the store refuses
    // writes with less than 16 MiB free: see MIN_FREE_BYTES).
    run_ok(
        cmd(&data)
            .arg("import")
            .arg(repo().join("data/sample/replies.jsonl")),
    );
    let filler = fs.fill((16 << 20) + (1 << 20));
    let out = cmd(&data).arg("import").arg(&sample).output().unwrap();
    let said = text(&out);
    assert!(
        !out.status.success(),
        "the import did not notice the full disk: {said}"
    );
    assert!(said.contains("No space left on device"), "{said}");
    assert!(said.contains("run the same command again"), "{said}");
    std::fs::remove_file(&filler).unwrap();
    run_ok(cmd(&data).arg("import").arg(&sample));
    let check = store_check(&data);
    assert!(check.status.success(), "{}", text(&check));
    assert_eq!(
        cases_read_back(&check),
        1300,
        "cases lost: {}",
        text(&check)
    );

    // Batch: the output fills the disk part way through (chunks of 64 lines, so that some are
    // checkpointed before it is full).
    run_ok(cmd(&data).arg("train"));
    let output = tmp.path().join("disk/out.jsonl");
    let batch = || {
        cmd(&data)
            .args(["batch", "--fast", "--chunk", "64", "--input"])
            .arg(&sample)
            .arg("--output")
            .arg(&output)
            .output()
            .unwrap()
    };
    let filler = fs.fill(300 << 10);
    let out = batch();
    let said = text(&out);
    assert!(
        !out.status.success(),
        "the batch did not notice the full disk: {said}"
    );
    assert!(said.contains("No space left on device"), "{said}");
    let checkpoint = std::fs::read_to_string(tmp.path().join("disk/out.jsonl.checkpoint"))
        .expect("chunks were checkpointed before the disk filled");
    assert!(checkpoint.contains("\"consumed\""), "{checkpoint}");
    std::fs::remove_file(&filler).unwrap();
    let done = batch();
    assert!(done.status.success(), "{}", text(&done));
    let lines: Vec<u64> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["line"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        lines,
        (1..=1050).collect::<Vec<_>>(),
        "every line once, in order"
    );
}

/// Starts `args` on `dir` and kills it (SIGKILL) after `after`; true when it was still running.
fn kill_during(dir: &Path, args: &[&str], after: Duration) -> bool {
    let mut child = cmd(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    true
}

#[test]
fn kill_9_during_train_leaves_the_previous_classifier_current_and_usable() {
    let dir = copy_of_demo();
    let current = || std::fs::read_to_string(dir.path().join("classifier/current")).unwrap();
    let mut kept = 0;
    for ms in [300, 1500, 4000] {
        let before = current();
        if kill_during(dir.path(), &["train"], Duration::from_millis(ms)) {
            // Train saves the new classifier, then switches `current` to it, then still prints
            // and flushes: a kill after the switch leaves the new, complete classifier current
            // (classify and store check below load it). Before the switch, the previous one stays.
            if current() == before {
                kept += 1;
            }
        }
        run_ok(cmd(dir.path()).args(["classify", "--no-draft", "公交车不按站停车"]));
        let check = store_check(dir.path());
        assert!(check.status.success(), "{}", text(&check));
        assert_eq!(cases_read_back(&check), 1300, "{}", text(&check));
    }
    assert!(
        kept > 0,
        "no kill landed before train switched to its new classifier"
    );
}

#[test]
fn kill_9_during_a_write_back_leaves_the_store_readable_and_the_job_resumes() {
    let dir = copy_of_demo();
    let output = dir.path().join("write-back.jsonl");
    let args = [
        "batch",
        "--from-store",
        "--write-back",
        "--output",
        output.to_str().unwrap(),
    ];
    let mut killed = 0;
    for ms in [1500, 4000] {
        if kill_during(dir.path(), &args, Duration::from_millis(ms)) {
            killed += 1;
        }
        let check = store_check(dir.path());
        assert!(
            check.status.success(),
            "after a kill at {ms} ms: {}",
            text(&check)
        );
        assert_eq!(cases_read_back(&check), 1300);
    }
    assert!(killed > 0, "the write-back always finished before the kill");
    let done = run_ok(cmd(dir.path()).args(args));
    let lines = std::fs::read_to_string(&output).unwrap().lines().count();
    assert_eq!(lines, 1300, "{}", text(&done));
}
