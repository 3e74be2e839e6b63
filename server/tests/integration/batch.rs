//! `triage batch` with the real models on the demo store: input order, bad lines, kill -9 at
//! random points and resume, write-back of predictions (never labels), shards.

use super::{demo, repo, run_ok};
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// 160 real cases and four bad lines among them.
fn input(dir: &Path) -> std::path::PathBuf {
    let sample = std::fs::read_to_string(repo().join("data/sample/cases.jsonl")).unwrap();
    let path = dir.join("in.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    for (i, line) in sample.lines().take(160).enumerate() {
        match i {
            10 => file.write_all(b"{not json\n").unwrap(),
            50 => file
                .write_all(b"{\"id\": \"x\", \"text\": \"\"}\n")
                .unwrap(),
            90 => file.write_all(b"\xff\xfe\n").unwrap(),
            120 => file.write_all(b"\n").unwrap(),
            _ => {}
        }
        writeln!(file, "{line}").unwrap();
    }
    path
}

#[test]
fn killed_at_random_points_it_resumes_without_losing_or_repeating_a_line() {
    let demo = demo();
    let _guard = demo.lock();
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let batch = |out: &Path| {
        let mut cmd = demo.cmd();
        cmd.args(["batch", "--chunk", "8", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(out);
        cmd
    };

    let clean = dir.path().join("clean.jsonl");
    let out = run_ok(&mut batch(&clean));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("164 read, 160 classified"), "{summary}");
    let expected = lines(&clean);
    assert_eq!(expected.len(), 164, "one output line per input line");
    let errors = lines(&dir.path().join("clean.jsonl.errors.jsonl"));
    let bad: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(bad, [11, 52, 93, 124], "{errors:?}");

    // Kill -9 at pseudo-random points of the job (seeded: the same run every time), chosen by
    // how far the output got rather than by time, so a fast machine cannot finish first.
    let killed = dir.path().join("killed.jsonl");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut partial = Vec::new();
    for base in [10, 45, 85, 125] {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let target = base + (seed % 25) as usize;
        let mut child = batch(&killed).spawn().unwrap();
        let written = || std::fs::read_to_string(&killed).map_or(0, |t| t.lines().count());
        while written() < target && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        partial.push(written());
    }
    assert!(
        partial.iter().any(|&n| n > 0 && n < 164),
        "some kill landed mid-job: lines after each kill {partial:?}"
    );
    let out = run_ok(&mut batch(&killed));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("164 read"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let got = lines(&killed);
    let numbers: Vec<u64> = got.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(
        numbers,
        (1..=164).collect::<Vec<_>>(),
        "every line once, in order"
    );
    for (a, b) in got.iter().zip(&expected) {
        assert_eq!(a["category"], b["category"], "{a} vs {b}");
    }
    assert_eq!(
        lines(&dir.path().join("killed.jsonl.errors.jsonl")).len(),
        4
    );

    // The same command again has nothing left to do; another job may not reuse the output.
    let again = run_ok(&mut batch(&killed));
    assert!(String::from_utf8_lossy(&again.stdout).contains("164 read"));
    assert_eq!(lines(&killed).len(), 164);
    let other = demo
        .cmd()
        .args(["batch", "--fast", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&killed)
        .output()
        .unwrap();
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("different job"));
}

#[test]
fn shards_split_a_job_and_fast_mode_agrees_on_clear_cases() {
    let demo = demo();
    let _guard = demo.lock();
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let mut seen = Vec::new();
    for shard in ["0/2", "1/2"] {
        let out = dir.path().join(format!("shard{}.jsonl", &shard[..1]));
        run_ok(
            demo.cmd()
                .args(["batch", "--fast", "--shard", shard, "--input"])
                .arg(&input)
                .arg("--output")
                .arg(&out),
        );
        seen.extend(lines(&out).iter().map(|r| r["line"].as_u64().unwrap()));
    }
    seen.sort();
    assert_eq!(
        seen,
        (1..=164).collect::<Vec<_>>(),
        "the shards cover every line once"
    );

    // The fast (lexical) path agrees with the labels on most of these past cases.
    let fast = dir.path().join("fast.jsonl");
    run_ok(
        demo.cmd()
            .args(["batch", "--fast", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&fast),
    );
    let records = lines(&fast);
    let labeled: Vec<&Value> = records.iter().filter(|r| r["label"].is_string()).collect();
    let right = labeled
        .iter()
        .filter(|r| r["label"] == r["category"])
        .count();
    assert!(right * 10 >= labeled.len() * 8, "{right}/{}", labeled.len());
    assert!(records
        .iter()
        .all(|r| r["similar"].as_array().is_none_or(Vec::is_empty)));
}

#[test]
fn write_back_stores_predictions_and_never_touches_labels() {
    let demo = demo();
    let _guard = demo.lock();
    let dir = tempfile::tempdir().unwrap();
    let job = |name: &str, extra: &[&str]| {
        let out = run_ok(
            demo.cmd()
                .args([
                    "batch",
                    "--from-store",
                    "--category",
                    "教育文体",
                    "--write-back",
                    "--json",
                ])
                .args(extra)
                .arg("--output")
                .arg(dir.path().join(name)),
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let dry = job("dry.jsonl", &["--dry-run"]);
    let n = dry["counts"]["written_back"].as_u64().unwrap();
    assert!(n > 10, "{dry}");
    assert_eq!(dry["counts"]["classified"].as_u64(), Some(n));
    // Where the analyze stage's time went, step by step.
    for step in ["search", "classify", "units", "work_order"] {
        let secs = dry["counts"]["analysis_cpu_seconds"][step].as_f64();
        assert!(secs.is_some_and(|s| s > 0.0), "{step}: {dry}");
    }

    let records = lines(&dir.path().join("dry.jsonl"));
    let id = records[0]["id"].as_str().unwrap().to_string();
    // A stored case is never its own similar case.
    assert!(records.iter().all(|r| r["similar"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["id"] != r["id"])));
    let applied = job("apply.jsonl", &[]);
    assert_eq!(applied["counts"]["written_back"].as_u64(), Some(n));
    // Everything is written now: a second dry run sees nothing to change.
    let again = job("dry2.jsonl", &["--dry-run"]);
    let changes = &again["counts"]["changes"];
    for (old, row) in changes.as_object().unwrap() {
        for (new, _) in row.as_object().unwrap() {
            assert_eq!(old, new, "after write-back, old = new: {changes}");
        }
    }
    // The label of a written-back case is what it was.
    let after = lines(&dir.path().join("dry2.jsonl"));
    let record = after.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(record["label"], "教育文体");
}

#[test]
fn drafts_are_written_per_line_and_refused_in_fast_mode() {
    let demo = demo();
    let _guard = demo.lock();
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(repo().join("data/sample/cases.jsonl")).unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        sample.lines().take(3).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let output = dir.path().join("out.jsonl");
    run_ok(
        demo.cmd()
            .args(["batch", "--draft", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output),
    );
    let records = lines(&output);
    assert_eq!(records.len(), 3);
    for r in &records {
        let draft = r["draft"].as_str().unwrap_or_default();
        assert!(draft.chars().count() > 10, "a draft on every line: {r}");
        assert!(!draft.contains("###"), "{draft}");
    }

    let fast = demo
        .cmd()
        .args(["batch", "--draft", "--fast", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("fast.jsonl"))
        .output()
        .unwrap();
    assert!(!fast.status.success());
    assert!(String::from_utf8_lossy(&fast.stderr).contains("drafts need the LLM"));
}
