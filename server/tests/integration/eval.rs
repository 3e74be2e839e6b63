//! `triage eval` with the real models on the shipped sample: a train/test run and a
//! cross-validation, checked through the `report.json` contract and the files beside it.

use super::{repo, run_ok, triage};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Lines `from..to` of the shipped sample, written to `path`.
fn sample_lines(path: &Path, from: usize, to: usize) {
    let sample = std::fs::read_to_string(repo().join("data/sample/cases.jsonl")).unwrap();
    let lines: Vec<&str> = sample.lines().skip(from).take(to - from).collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// `triage eval --train TRAIN --test TEST --out OUT`, with a data directory of its own in `dir`.
fn eval_train_test(dir: &Path, train: &Path, test: &Path, out: &Path) -> Command {
    let mut command = triage();
    command
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["eval", "--train"])
        .arg(train)
        .arg("--test")
        .arg(test)
        .arg("--out")
        .arg(out);
    command
}

fn report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn train_test_run_scores_every_labeled_line_and_names_the_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("test.jsonl"),
    );
    sample_lines(&train, 200, 700);
    sample_lines(&test, 0, 120);
    let mut with_bad = std::fs::read(&test).unwrap();
    with_bad.extend_from_slice(b"{not json\n");
    std::fs::write(&test, with_bad).unwrap();
    let out = dir.path().join("report");
    run_ok(&mut eval_train_test(dir.path(), &train, &test, &out));
    let r = report(&out);
    assert_eq!(r["n"], 120, "{r}");
    let accuracy = r["accuracy"].as_f64().unwrap();
    assert!(
        accuracy > 0.7,
        "ensemble accuracy {accuracy} on 120 sample cases"
    );
    assert_eq!(r["skipped"].as_array().unwrap().len(), 1);
    assert_eq!(r["skipped"][0]["line"], 121);
    for method in ["ensemble", "lexical", "knn", "embedding"] {
        assert!(
            r["methods"][method]["accuracy"].is_number(),
            "{method}: {r}"
        );
    }
    assert!(out.join("report.md").exists());
    assert!(std::fs::read_dir(&out).unwrap().any(|e| e
        .unwrap()
        .path()
        .extension()
        .is_some_and(|x| x == "svg")));
}

#[test]
fn titles_train_the_lexical_model_and_a_test_case_own_title_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test, titles) = (
        dir.path().join("train.jsonl"),
        dir.path().join("test.jsonl"),
        dir.path().join("titles.jsonl"),
    );
    sample_lines(&train, 200, 500);
    sample_lines(&test, 0, 60);
    // Short labeled texts: the heads of unseen cases (kept), the heads of the test cases (their
    // own "titles": left out), and a line without a label (skipped and said).
    let sample = std::fs::read_to_string(repo().join("data/sample/cases.jsonl")).unwrap();
    let head = |line: &str| {
        let v: Value = serde_json::from_str(line).unwrap();
        let text: String = v["text"].as_str().unwrap().chars().take(24).collect();
        serde_json::json!({"title": text, "label": v["label"]}).to_string()
    };
    let lines: Vec<&str> = sample.lines().collect();
    let mut rows: Vec<String> = lines[600..700].iter().map(|l| head(l)).collect();
    rows.extend(lines[..10].iter().map(|l| head(l)));
    rows.push(r#"{"title": "没有类别的标题"}"#.into());
    std::fs::write(&titles, rows.join("\n") + "\n").unwrap();
    let out = dir.path().join("report");
    let output = run_ok(
        eval_train_test(dir.path(), &train, &test, &out)
            .arg("--titles")
            .arg(&titles),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("1 lines skipped"), "{stderr}");
    let r = report(&out);
    assert_eq!(r["n"], 60, "{r}");
    let extra = &r["meta"]["extra_texts"];
    assert_eq!(extra["given"], 110, "{r}");
    let left_out = extra["left_out_as_test"].as_u64().unwrap();
    assert!((10..30).contains(&left_out), "{extra}");
    let training = &r["meta"]["classifier"]["training"];
    assert_eq!(training["extra_texts"].as_u64().unwrap(), 110 - left_out);
    assert!(training["coverage_99"].is_number(), "{training}");
    assert!(r["accuracy"].as_f64().unwrap() > 0.7, "{r}");
}

#[test]
fn cross_validation_pools_every_fold_held_out_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let test = dir.path().join("labeled.jsonl");
    sample_lines(&test, 0, 300);
    let out = dir.path().join("report");
    run_ok(
        triage()
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["eval", "--cv", "3", "--test"])
            .arg(&test)
            .arg("--out")
            .arg(&out),
    );
    let r = report(&out);
    // Every case is predicted once, by the fold that held it out.
    assert_eq!(r["n"], 300, "{r}");
    let support: u64 = r["per_class"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["support"].as_u64().unwrap())
        .sum();
    assert_eq!(support, 300);
    let cv = &r["cv"];
    assert_eq!(cv["k"], 3);
    let folds: Vec<f64> = cv["accuracy"]["folds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(folds.len(), 3);
    let mean = cv["accuracy"]["mean"].as_f64().unwrap();
    assert!((mean - folds.iter().sum::<f64>() / 3.0).abs() < 1e-9);
    // Folds differ by at most one case per class, so the pooled accuracy is close to their mean.
    let pooled = r["accuracy"].as_f64().unwrap();
    assert!((pooled - mean).abs() < 0.02, "pooled {pooled}, mean {mean}");
    assert!(pooled > 0.6, "{pooled}");
}

#[test]
fn eval_workorder_scores_titles_and_locations_and_checks_the_gold_indexes_the_test_file() {
    let dir = tempfile::tempdir().unwrap();
    let replies = std::fs::read_to_string(repo().join("data/sample/replies.jsonl")).unwrap();
    let lines: Vec<&str> = replies.lines().collect();
    let (test, past, gold) = (
        dir.path().join("test.jsonl"),
        dir.path().join("past.jsonl"),
        dir.path().join("gold.jsonl"),
    );
    std::fs::write(&test, lines[..20].join("\n") + "\n").unwrap();
    std::fs::write(&past, lines[20..].join("\n") + "\n").unwrap();
    let id = |i: usize| serde_json::from_str::<Value>(lines[i]).unwrap()["id"].clone();
    let record = |i: usize| serde_json::json!({"id": id(i), "line": i, "most_specific": []});
    std::fs::write(&gold, format!("{}\n{}\n", record(3), record(7))).unwrap();
    let out = dir.path().join("workorder.json");
    let output = run_ok(
        triage()
            .args(["eval-workorder", "--test"])
            .arg(&test)
            .arg("--past")
            .arg(&past)
            .arg("--locations")
            .arg(&gold)
            .arg("--out")
            .arg(&out),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ROUGE-L"), "{stdout}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let titles = r["titles"].as_object().unwrap();
    assert_eq!(titles.len(), 4, "{r}");
    for scores in titles.values() {
        assert_eq!(scores["n"], 20);
        assert!((0.0..=1.0).contains(&scores["rouge_l"].as_f64().unwrap()));
    }
    assert_eq!(r["locations"]["n"], 2);
    // A gold whose ids do not match the test file's lines is refused.
    std::fs::write(
        &gold,
        format!(
            "{}\n",
            serde_json::json!({"id": id(4), "line": 3, "most_specific": []})
        ),
    )
    .unwrap();
    let output = triage()
        .args(["eval-workorder", "--test"])
        .arg(&test)
        .arg("--past")
        .arg(&past)
        .arg("--locations")
        .arg(&gold)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("ids differ"));
}

#[test]
fn eval_drafts_measures_held_out_replies_and_says_a_bad_line_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(repo().join("data/sample/replies.jsonl")).unwrap();
    let mut lines: Vec<&str> = sample.lines().collect();
    lines.insert(2, "{\"id\": \"broken\", \"text\": ");
    let replies = dir.path().join("replies.jsonl");
    std::fs::write(&replies, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("report");
    let output = run_ok(
        triage()
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("eval-drafts")
            .arg("--replies")
            .arg(&replies)
            .arg("--train")
            .arg(repo().join("data/sample/cases.jsonl"))
            .args(["--train-limit", "150", "--holdout", "12"])
            .args(["--methods", "retrieval,template", "--out"])
            .arg(&out),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1 lines skipped (first: line 3"),
        "the bad line is said: {stderr}"
    );
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["held_out"], 12, "{r}");
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        4,
        "two methods, before and after the guard: {r}"
    );
    for row in rows {
        assert_eq!(row["drafts"], 12, "{row}");
        if row["stage"] == "after_guard" {
            assert_eq!(row["unsupported_facts_per_draft"], 0.0, "{row}");
            assert_eq!(row["investigative_per_draft"], 0.0, "{row}");
        }
    }
    assert!(std::fs::read_to_string(out.join("report.md"))
        .unwrap()
        .contains("| template | after guard | 12 |"));
}
