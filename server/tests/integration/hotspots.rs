//! `triage hotspots` and `triage alerts` with the real model on 300 real messages holding two
//! hand-checked gold hotspots (data/eval/hotspots-sample.jsonl), from the file and from the store.

use super::{repo, run_ok, triage};
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The gold cluster's ids.
fn gold(cluster: &str) -> HashSet<String> {
    let text = std::fs::read_to_string(repo().join("data/eval/hotspots-gold.jsonl")).unwrap();
    let line = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|c| c["cluster"] == cluster)
        .unwrap();
    line["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Asserts that one of the hotspots is mostly `cluster` (purity ≥ 0.8) and holds at least
/// `min_ids` of its ids; returns its rank.
fn found(hotspots: &Value, cluster: &str, min_ids: usize) -> u64 {
    let gold = gold(cluster);
    let list = hotspots["hotspots"].as_array().unwrap();
    let best = list
        .iter()
        .map(|h| {
            let ids: Vec<&str> = h["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let hit = ids.iter().filter(|id| gold.contains(**id)).count();
            (h, hit, hit as f64 / ids.len() as f64)
        })
        .max_by_key(|(_, hit, _)| *hit)
        .unwrap();
    assert!(
        best.1 >= min_ids && best.2 >= 0.8,
        "{cluster}: best hotspot {} holds {} of its ids, purity {:.2}",
        best.0,
        best.1,
        best.2
    );
    best.0["rank"].as_u64().unwrap()
}

#[test]
fn gold_hotspots_come_out_of_a_file_and_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sample = repo().join("data/eval/hotspots-sample.jsonl");
    let out = dir.path().join("from-file");
    let stdout = run_ok(
        triage()
            .arg("--data-dir")
            .arg(&data)
            .args(["hotspots", "--input"])
            .arg(&sample)
            .arg("--out")
            .arg(&out)
            .arg("--gold")
            .arg(repo().join("data/eval/hotspots-gold.jsonl")),
    )
    .stdout;
    let from_file = json(&out.join("hotspots.json"));
    // H20: a 110 kV line along 月亮岛路 (9 messages, 6 distinct); H13: the stalled renewal of
    // 凉塘路 in 星沙四区 (9 messages, 7 distinct). Both are whole in the sample.
    assert!(found(&from_file, "H20", 6) <= 3);
    assert!(found(&from_file, "H13", 5) <= 3);
    let first = &from_file["hotspots"][0];
    for field in [
        "rank",
        "title",
        "place",
        "category",
        "heat",
        "n",
        "time_from",
        "time_to",
        "ids",
        "example_ids",
    ] {
        assert!(
            first.get(field).is_some(),
            "hotspots.json lacks {field}: {first}"
        );
    }
    assert!(from_file["params"]["link_cosine"].is_number());
    for file in [
        "hotspots.md",
        "heat_over_time.svg",
        "district_category.svg",
        "eval.json",
        "eval.md",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let eval = json(&out.join("eval.json"));
    assert!(
        eval["reports"].as_array().unwrap().len() >= 2,
        "this method and a baseline: {eval}"
    );
    assert!(String::from_utf8_lossy(&stdout).contains("baseline"));

    // A monthly digest of the file: April 2019 against March, with that month's hotspots (the
    // 月亮岛路 line drew its messages from late March to mid-April).
    let out = dir.path().join("digest");
    run_ok(
        triage()
            .arg("--data-dir")
            .arg(&data)
            .args(["digest", "--month", "2019-04-10", "--input"])
            .arg(&sample)
            .arg("--out")
            .arg(&out),
    );
    let digest = json(&out.join("digest.json"))["digest"].clone();
    let (now, before) = (
        digest["total"]["current"].as_u64().unwrap(),
        digest["total"]["previous"].as_u64().unwrap(),
    );
    assert!(now > 0 && before > 0, "{digest}");
    let by_district: u64 = digest["by_district"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["current"].as_u64().unwrap())
        .sum();
    assert_eq!(by_district, now);
    assert!(out.join("digest.md").exists() && out.join("by_category.svg").exists());

    // The same cases from the store, page by page.
    run_ok(
        triage()
            .arg("--data-dir")
            .arg(&data)
            .arg("import")
            .arg(&sample),
    );
    let out = dir.path().join("from-store");
    run_ok(
        triage()
            .arg("--data-dir")
            .arg(&data)
            .args([
                "hotspots",
                "--from",
                "2019-01-01",
                "--to",
                "2019-12-31",
                "--out",
            ])
            .arg(&out),
    );
    let from_store = json(&out.join("hotspots.json"));
    found(&from_store, "H20", 6);
    found(&from_store, "H13", 5);
    assert_eq!(
        from_store["input"]["analysed"].as_u64(),
        from_store["input"]["read"].as_u64()
    );

    // Early warning: the replay flags the top hotspots, by the rule and the counts it used.
    let out = dir.path().join("alerts");
    run_ok(
        triage()
            .arg("--data-dir")
            .arg(&data)
            .args(["alerts", "--replay", "--top", "2", "--out"])
            .arg(&out),
    );
    let replay = json(&out.join("replay.json"));
    for flagged in replay["flagged"].as_array().unwrap() {
        assert!(flagged["alert_time"].is_string(), "not flagged: {flagged}");
        assert!(
            flagged["at_distinct_message"].as_u64().unwrap() <= 4,
            "{flagged}"
        );
    }
    assert!(json(&out.join("alerts.json"))["alerts"].is_array());

    // The same use cases over HTTP, on a real socket, behind an API key. The service needs a
    // trained classifier: the shared demo's (trained on the shipped sample) is copied in.
    {
        let demo = super::demo();
        let _guard = demo.lock();
        let (from, to) = (demo.dir.path().join("classifier"), data.join("classifier"));
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    let key = "call-taker:hhhhhhhhhhhhhhhhhhhh";
    let server = super::service::start(&data, &["--api-keys", key]);
    let get = |path: &str, key: Option<&str>| -> (u16, Value) {
        let (status, body) = get_with_key(&server.addr, path, key);
        let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        (status, value)
    };
    let key = Some("hhhhhhhhhhhhhhhhhhhh");
    let (status, body) = get("/v1/hotspots?from=2019-01-01&to=2019-12-31", None);
    assert_eq!(
        (status, body["error_type"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, over_http) = get("/v1/hotspots?from=2019-01-01&to=2019-12-31&top=20", key);
    assert_eq!(status, 200, "{over_http}");
    found(&over_http, "H20", 6);
    found(&over_http, "H13", 5);
    assert_eq!(
        over_http["hotspots"][0]["ids"],
        from_store["hotspots"][0]["ids"]
    );
    let (status, body) = get("/v1/alerts?limit=5", key);
    assert_eq!(status, 200, "{body}");
    assert!(body["alerts"].as_array().unwrap().len() <= 5 && body["as_of"].is_string());
    let (status, body) = get("/v1/digest?period=month&date=2019-04-10", key);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["digest"]["total"]["current"].as_u64(),
        Some(now),
        "{body}"
    );
    assert_eq!(body["digest"]["total"]["previous"].as_u64(), Some(before));
    let (status, body) = get("/v1/digest?period=fortnight", key);
    assert_eq!(
        (status, body["error_type"].as_str()),
        (422, Some("validation")),
        "{body}"
    );
}

/// `GET path` with an optional bearer key over a plain socket (HTTP/1.0: the body is not
/// chunked and ends when the server closes): status and body.
fn get_with_key(addr: &str, path: &str, key: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}
