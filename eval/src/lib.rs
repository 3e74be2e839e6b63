//! The evaluation harness: metrics computed from per-case records, the report (`report.json`,
//! `report.md`) and its charts (SVG).

pub mod charts;
pub mod drafts;
pub mod hotspot_charts;
pub mod hotspots;
pub mod metrics;
pub mod report;
pub mod run;
pub mod textsim;
pub mod workorder;

pub use report::{build_report, EvalRecord, Report, Skipped};

use std::fmt::Write as _;
use std::path::Path;
use triage_core::text::markdown_cell;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Core(#[from] triage_core::Error),
}

/// Writes `report.json`, `report.md`, `units.jsonl` (cases with a gold unit) and the charts into
/// `dir`.
pub fn write_report(dir: &Path, report: &Report) -> Result<(), Error> {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
    };
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    write(
        "report.json",
        &serde_json::to_string_pretty(report).expect("report serialises"),
    )?;
    write("report.md", &markdown(report))?;
    if !report.unit_records.is_empty() {
        let lines: String = report
            .unit_records
            .iter()
            .map(|r| {
                let line = serde_json::json!({
                    "id": r.id,
                    "gold": r.gold,
                    "gold_units": r.gold_units,
                    "predicted_units": r.predicted_units,
                    "unit_probability": r.unit_probability,
                    "baseline_units": r.baseline_units,
                });
                format!("{line}\n")
            })
            .collect();
        write("units.jsonl", &lines)?;
    }
    write("confusion.svg", &charts::confusion_heatmap(report))?;
    write("reliability.svg", &charts::reliability_diagram(report))?;
    write("coverage.svg", &charts::coverage_curve(report))?;
    write("f1.svg", &charts::f1_bars(report))?;
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The table printed at the end of a run: one line per method.
pub fn summary_table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:>6} {:>9} {:>9} {:>8} {:>7} {:>12}",
        "method", "n", "accuracy", "macro-F1", "top-3", "ECE", "cov@95%acc"
    );
    for (name, m) in &report.methods {
        let cov = m
            .coverage_at_accuracy
            .get("0.95")
            .cloned()
            .flatten()
            .map_or("-".into(), |c| pct(c.coverage));
        let _ = writeln!(
            out,
            "{name:<12} {:>6} {:>9.4} {:>9.4} {:>8.4} {:>7.4} {cov:>12}",
            m.n, m.accuracy, m.macro_f1, m.top3_accuracy, m.ece
        );
    }
    if let Some(b) = &report.baseline {
        let _ = writeln!(
            out,
            "{:<12} {:>6} {:>9.4} {:>9.4}",
            "baseline",
            b["n"].as_u64().unwrap_or(0),
            b["accuracy"].as_f64().unwrap_or(0.0),
            b["macro_f1"].as_f64().unwrap_or(0.0)
        );
    }
    if let (Some(top1), Some(top3)) = (report.unit_top1, report.unit_top3) {
        let _ = writeln!(
            out,
            "{:<12} {:>6} {:>9.4} {:>9} {:>8.4}   (units: top-1, top-3)",
            "units", report.unit_n, top1, "", top3
        );
        for (name, m) in &report.unit_baselines {
            let _ = writeln!(
                out,
                "{:<12} {:>6} {:>9.4} {:>9} {:>8.4}",
                format!("  {name}"),
                report.unit_n,
                m.top1,
                "",
                m.top3
            );
        }
    }
    let _ = writeln!(
        out,
        "throughput {:.1} cases/s; skipped {} lines; unknown labels {:?}",
        report.throughput_per_s,
        report.skipped.len(),
        report.unknown_labels
    );
    out
}

fn markdown(r: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Evaluation report\n");
    let _ = writeln!(md, "{} test cases, headline method `{}`.\n", r.n, r.method);
    let _ = writeln!(md, "| metric | value | meaning |\n|---|---|---|");
    let _ = writeln!(
        md,
        "| accuracy | {:.4} | share of cases whose top category is right |",
        r.accuracy
    );
    let _ = writeln!(
        md,
        "| macro-F1 | {:.4} | F1 averaged over categories, each counting equally |",
        r.macro_f1
    );
    let _ = writeln!(
        md,
        "| weighted-F1 | {:.4} | F1 averaged over categories, weighted by their size |",
        r.weighted_f1
    );
    let _ = writeln!(
        md,
        "| top-3 accuracy | {:.4} | share whose right category is among the first three shown |",
        r.top3_accuracy
    );
    let _ = writeln!(md, "| ECE | {:.4} | expected calibration error (15 bins): how far confidence is from accuracy |", r.ece);
    for (target, c) in &r.coverage_at_accuracy {
        let value = c.as_ref().map_or("not reachable".to_string(), |c| {
            format!("{} (threshold {:.3})", pct(c.coverage), c.threshold)
        });
        let _ = writeln!(md, "| coverage at {target} accuracy | {value} | share that can be routed without review at that accuracy |");
    }
    if let Some(t) = &r.at_threshold {
        let _ = writeln!(md, "| at the classifier's threshold {:.3} | coverage {}, accuracy {} | what the service does today |", t.threshold, pct(t.coverage), pct(t.accuracy));
    }
    if let (Some(top1), Some(top3)) = (r.unit_top1, r.unit_top3) {
        let _ = writeln!(
            md,
            "| unit top-1 | {top1:.4} | share of the {} cases with a gold unit whose first suggested unit handled them |",
            r.unit_n
        );
        let _ = writeln!(
            md,
            "| unit top-3 | {top3:.4} | share whose unit is among the first three suggested |"
        );
        if let Some(e) = r.unit_ece {
            let _ = writeln!(
                md,
                "| unit ECE | {e:.4} | calibration of the first unit's score (15 bins) |"
            );
        }
        for (name, m) in &r.unit_baselines {
            let _ = writeln!(
                md,
                "| unit baseline `{name}` | top-1 {:.4}, top-3 {:.4} | {} |",
                m.top1,
                m.top3,
                match name.as_str() {
                    "directory_rule" => "the directory's rule from the predicted category and extracted district alone",
                    "nearest_case" => "the unit of the most similar past case with one",
                    _ => "a simpler router, same cases",
                }
            );
        }
    }
    if let Some(d) = r.duplicate_precision {
        let _ = writeln!(
            md,
            "| duplicate precision | {d:.4} | share of flagged duplicates that are duplicates |"
        );
    }
    let _ = writeln!(
        md,
        "| throughput | {:.1}/s | cases classified per second (whole pipeline, this machine) |",
        r.throughput_per_s
    );
    if let Some(b) = &r.baseline {
        let _ = writeln!(
            md,
            "\n**Baseline** ({}): accuracy {:.4}, macro-F1 {:.4}.",
            b["name"].as_str().unwrap_or("baseline"),
            b["accuracy"].as_f64().unwrap_or(0.0),
            b["macro_f1"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(cv) = &r.cv {
        let _ = writeln!(
            md,
            "\n## Cross-validation ({} folds)\n\nMean ± standard deviation over the folds; the tables below pool every fold's held-out predictions.\n\n| metric | mean | std |\n|---|---|---|",
            cv["k"]
        );
        for key in [
            "accuracy",
            "macro_f1",
            "weighted_f1",
            "top3_accuracy",
            "ece",
        ] {
            if let (Some(mean), Some(std)) = (cv[key]["mean"].as_f64(), cv[key]["std"].as_f64()) {
                let _ = writeln!(md, "| {key} | {mean:.4} | {std:.4} |");
            }
        }
    }
    let _ = writeln!(md, "\n## Methods\n\n```\n{}```\n", summary_table(r));
    let _ = writeln!(md, "## Per class ({})\n\n| category | precision | recall | F1 | support |\n|---|---|---|---|---|", r.method);
    for (label, c) in &r.per_class {
        let _ = writeln!(
            md,
            "| {} | {:.3} | {:.3} | {:.3} | {} |",
            markdown_cell(label),
            c.precision,
            c.recall,
            c.f1,
            c.support
        );
    }
    let c = &r.confusion;
    if !c.labels.is_empty() {
        let _ = writeln!(
            md,
            "\n## Confusion matrix ({})\n\nRows are the right category, columns the predicted one.\n\n| gold / predicted | {} |\n|---|{}",
            r.method,
            c.labels.iter().map(|l| markdown_cell(l)).collect::<Vec<_>>().join(" | "),
            "---|".repeat(c.labels.len())
        );
        for (label, row) in c.labels.iter().zip(&c.matrix) {
            let counts: Vec<String> = row.iter().map(|n| n.to_string()).collect();
            let _ = writeln!(md, "| {} | {} |", markdown_cell(label), counts.join(" | "));
        }
    }
    let _ = writeln!(
        md,
        "\n## Latency (ms per case)\n\nNearest-rank percentiles of each stage's time per case: p95 is the time 95% of cases stay within.\n\n| stage | p50 | p95 | p99 |\n|---|---|---|---|"
    );
    for (stage, l) in &r.latency_ms {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} |",
            markdown_cell(stage),
            l.p50,
            l.p95,
            l.p99
        );
    }
    let _ = writeln!(md, "\nCharts: [confusion](confusion.svg) · [reliability](reliability.svg) · [coverage](coverage.svg) · [F1](f1.svg)");
    if !r.skipped.is_empty() {
        let _ = writeln!(md, "\n## Skipped lines\n");
        for s in r.skipped.iter().take(50) {
            let _ = writeln!(md, "- line {}: {}", s.line, s.reason);
        }
    }
    md
}
