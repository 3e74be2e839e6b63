//! `write_report` end to end: the files it writes, the `report.json` contract, and SVG charts that
//! are well-formed XML even when labels hold markup characters, CJK or control characters.

use std::collections::BTreeMap;
use std::path::PathBuf;
use triage_eval::{build_report, write_report, EvalRecord, Skipped};

/// Checks XML 1.0 well-formedness of the subset the charts use: elements, attributes in double quotes,
/// text, the five predefined entities and numeric references; one root; no forbidden characters.
fn check_xml(xml: &str) -> Result<(), String> {
    if let Some(c) = xml
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(format!("control character {c:?}"));
    }
    let entities = |s: &str| -> Result<(), String> {
        let mut rest = s;
        while let Some(i) = rest.find('&') {
            let end = rest[i..].find(';').ok_or("'&' without ';'")? + i;
            let name = &rest[i + 1..end];
            let numeric = name.strip_prefix('#').is_some_and(|n| {
                n.parse::<u32>().is_ok()
                    || n.strip_prefix('x')
                        .is_some_and(|h| u32::from_str_radix(h, 16).is_ok())
            });
            if !numeric && !["amp", "lt", "gt", "quot", "apos"].contains(&name) {
                return Err(format!("unknown entity &{name};"));
            }
            rest = &rest[end + 1..];
        }
        Ok(())
    };
    let mut stack: Vec<&str> = Vec::new();
    let mut roots = 0;
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        if stack.is_empty() && !text.trim().is_empty() {
            return Err(format!("text outside the root: {text:?}"));
        }
        entities(text)?;
        let close = rest[open..].find('>').ok_or("unclosed '<'")? + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') || tag.starts_with("!--") {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(top) if top == name.trim() => continue,
                other => return Err(format!("</{name}> closes {other:?}")),
            }
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
        let name = &body[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':')
        {
            return Err(format!("bad element name in <{tag}>"));
        }
        // Attributes: name="value", value without '<' or '"', entities valid.
        let mut attrs = body[name_end..].trim();
        let mut seen = Vec::new();
        while !attrs.is_empty() {
            let eq = attrs
                .find("=\"")
                .ok_or(format!("attribute without =\"…\" in <{name}>"))?;
            let attr = attrs[..eq].trim();
            if attr.is_empty() || seen.contains(&attr) {
                return Err(format!("empty or repeated attribute {attr:?} in <{name}>"));
            }
            seen.push(attr);
            let value_end = attrs[eq + 2..].find('"').ok_or("unterminated attribute")? + eq + 2;
            let value = &attrs[eq + 2..value_end];
            if value.contains('<') {
                return Err(format!("'<' in attribute {attr}"));
            }
            entities(value)?;
            attrs = attrs[value_end + 1..].trim_start();
        }
        if stack.is_empty() {
            roots += 1;
        }
        if !self_closing {
            stack.push(name);
        }
    }
    if !rest.trim().is_empty() || !stack.is_empty() || roots != 1 {
        return Err(format!(
            "unbalanced: open {stack:?}, {roots} roots, trailing {rest:?}"
        ));
    }
    Ok(())
}

#[test]
fn the_checker_rejects_broken_xml() {
    assert!(check_xml("<svg><text>a &amp; b</text></svg>").is_ok());
    for bad in [
        "<svg><text>a & b</text></svg>",
        "<svg><text>a < b</text></svg>",
        "<svg><text></svg>",
        "<svg x=\"1\" x=\"2\"/>",
        "<svg/><svg/>",
        "<svg><text>\u{1}</text></svg>",
    ] {
        assert!(check_xml(bad).is_err(), "{bad}");
    }
}

fn record(i: usize, gold: &str, ranked: &[(&str, f32)]) -> EvalRecord {
    let mut methods = BTreeMap::new();
    for (k, name) in ["ensemble", "lexical"].iter().enumerate() {
        // The second method sees the ranking reversed: a worse method, predictions given unsorted.
        let mut p: Vec<(String, f32)> = ranked.iter().map(|(l, p)| (l.to_string(), *p)).collect();
        if k == 1 {
            for (j, e) in p.iter_mut().enumerate() {
                e.1 = (j as f32 + 1.0) / 10.0;
            }
        }
        methods.insert(name.to_string(), p);
    }
    EvalRecord {
        id: format!("case-{i}"),
        gold: gold.into(),
        methods,
        gold_units: vec!["u1".into()],
        predicted_units: if i.is_multiple_of(2) {
            vec!["u1".into(), "u2".into()]
        } else {
            vec!["u2".into(), "u3".into(), "u1".into()]
        },
        unit_probability: Some(0.6),
        baseline_units: BTreeMap::from([("nearest_case".to_string(), vec!["u2".to_string()])]),
        duplicate_flag: Some(i.is_multiple_of(3)),
        duplicate_gold: Some(i.is_multiple_of(2)),
        stage_ms: BTreeMap::from([
            ("embed".to_string(), 10.0 + i as f64),
            ("classify".to_string(), 0.1),
        ]),
    }
}

#[test]
fn report_files_are_complete_and_charts_are_well_formed() {
    let odd = "交通<运输>&\"|\u{7}";
    let records = vec![
        record(0, "城乡建设", &[("城乡建设", 0.8), ("教育文体", 0.2)]),
        record(1, "城乡建设", &[("教育文体", 0.6), ("城乡建设", 0.4)]),
        record(2, "教育文体", &[("教育文体", 0.9), (odd, 0.1)]),
        record(3, odd, &[(odd, 0.7), ("城乡建设", 0.3)]),
        record(4, odd, &[("城乡建设", 0.55), (odd, 0.45)]),
    ];
    let mut report = build_report(
        &records,
        "ensemble",
        Some(0.65),
        0.5,
        vec![Skipped {
            line: 7,
            reason: "expected a JSON object".into(),
        }],
        BTreeMap::from([(odd.to_string(), 2)]),
        serde_json::json!({"test": "dev.jsonl"}),
    );
    report.cv = Some(serde_json::json!({"k": 2, "accuracy": {"mean": 0.6, "std": 0.1}}));
    let dir = std::env::temp_dir().join(format!("triage-eval-report-{}", std::process::id()));
    write_report(&dir, &report).unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    for key in [
        "n",
        "accuracy",
        "macro_f1",
        "weighted_f1",
        "top3_accuracy",
        "per_class",
        "confusion",
        "ece",
        "coverage_at_accuracy",
        "at_threshold",
        "latency_ms",
        "throughput_per_s",
        "method",
        "methods",
        "unit_top1",
        "unit_top3",
        "unit_n",
        "unit_baselines",
        "duplicate_precision",
        "skipped",
        "unknown_labels",
        "meta",
        "cv",
    ] {
        assert!(json.get(key).is_some(), "report.json lacks {key}");
    }
    // Ensemble: 3 of 5 right; the duplicate flags on cases 0 and 3 are right once.
    assert_eq!(json["accuracy"], 0.6);
    assert_eq!(json["unit_top1"], 0.6);
    assert_eq!(json["unit_top3"], 1.0);
    assert_eq!(json["unit_n"], 5);
    assert_eq!(json["unit_baselines"]["nearest_case"]["top1"], 0.0);
    assert_eq!(json["duplicate_precision"], 0.5);
    assert_eq!(json["throughput_per_s"], 10.0);
    assert_eq!(json["latency_ms"]["embed"]["p50"], 12.0);
    assert!(json["coverage_at_accuracy"].get("0.95").is_some());
    assert!(json["coverage_at_accuracy"].get("0.99").is_some());

    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for part in [
        "| accuracy | 0.6000 |",
        "## Cross-validation",
        "## Per class",
        "## Confusion matrix",
        "## Latency",
        "| unit top-1 | 0.6000 |",
        "| unit baseline `nearest_case` | top-1 0.0000, top-3 0.0000 |",
        "line 7: expected a JSON object",
    ] {
        assert!(md.contains(part), "report.md lacks {part:?}");
    }
    assert!(
        md.contains("交通<运输>&\"\\|"),
        "a '|' in a label is escaped in tables"
    );

    let files: Vec<PathBuf> = ["confusion.svg", "reliability.svg", "coverage.svg", "f1.svg"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    for path in &files {
        let svg = std::fs::read_to_string(path).unwrap();
        check_xml(&svg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            svg.contains("Noto Sans CJK SC"),
            "{}: CJK font list",
            path.display()
        );
    }
    let confusion = std::fs::read_to_string(&files[0]).unwrap();
    assert!(confusion.contains("交通&lt;运输&gt;&amp;&quot;|"));
    std::fs::remove_dir_all(&dir).unwrap();
}
