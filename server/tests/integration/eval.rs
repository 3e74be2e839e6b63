//! `triage eval` with the real models on the shipped sample: a train/test run and a
//! cross-validation, checked through the `report.json` contract and the files beside it.

use super::{repo, run_ok, triage};
use serde_json::Value;
use std::path::Path;

/// Lines `from..to` of the shipped sample, written to `path`.
fn sample_lines(path: &Path, from: usize, to: usize) {
    let sample = std::fs::read_to_string(repo().join("data/sample/cases.jsonl")).unwrap();
    let lines: Vec<&str> = sample.lines().skip(from).take(to - from).collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
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
    run_ok(
        triage()
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["eval", "--train"])
            .arg(&train)
            .arg("--test")
            .arg(&test)
            .arg("--out")
            .arg(&out),
    );
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
