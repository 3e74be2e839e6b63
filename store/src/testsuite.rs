//! The store's behaviour, written once against `&dyn CaseStore` so every backend runs the same
//! suite (the embedded one in this crate's tests; a server backend where one is configured).

use triage_core::{Case, CaseFilter, CaseStore};

/// Deterministic unit vectors: `seed` picks a direction, nearby seeds are similar.
pub fn vector(dim: usize, seed: u32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim).map(|i| ((i as f32 + 1.0) * (seed as f32 * 0.37 + 0.11)).sin()).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

pub fn case(id: &str, label: Option<&str>, district: Option<&str>, time: Option<i64>) -> Case {
    Case {
        id: id.to_string(),
        text: format!("text of {id}"),
        label: label.map(String::from),
        district: district.map(String::from),
        time,
        ..Default::default()
    }
}

/// Upsert by id, get, re-upsert (idempotent), delete.
pub fn crud(store: &dyn CaseStore, dim: usize) {
    let mut c = case("a/1 中文 id", Some("交通运输"), Some("A2区"), Some(1_600_000_000));
    c.extra.insert("likes".into(), serde_json::json!(3));
    store.upsert(&[(c.clone(), vector(dim, 1))]).unwrap();
    assert_eq!(store.get("a/1 中文 id").unwrap().as_ref(), Some(&c), "round trip keeps every field");
    assert_eq!(store.count(&CaseFilter::default()).unwrap(), 1);
    store.upsert(&[(c.clone(), vector(dim, 1))]).unwrap();
    assert_eq!(store.count(&CaseFilter::default()).unwrap(), 1, "re-upsert does not duplicate");
    let mut changed = c.clone();
    changed.label = Some("教育文体".into());
    store.upsert(&[(changed.clone(), vector(dim, 1))]).unwrap();
    assert_eq!(store.get(&c.id).unwrap().unwrap().label.as_deref(), Some("教育文体"));
    assert!(store.delete(&c.id).unwrap());
    assert!(!store.delete(&c.id).unwrap(), "deleting twice reports nothing deleted");
    assert_eq!(store.get(&c.id).unwrap(), None);
    assert_eq!(store.count(&CaseFilter::default()).unwrap(), 0);
}

/// Nearest first, filters on every field, count and scroll agree.
pub fn search_and_filters(store: &dyn CaseStore, dim: usize) {
    let mut rows = Vec::new();
    for i in 0..60u32 {
        let label = ["交通运输", "教育文体", "环境保护"][(i % 3) as usize];
        let district = ["A2区", "A7县"][(i % 2) as usize];
        let mut c = case(&format!("c{i}"), (i % 10 != 0).then_some(label), Some(district), Some(1_000 + i as i64));
        if i % 4 == 0 {
            c.reply = Some("已处理".into());
        }
        if i % 5 == 0 {
            c.unit = Some("unit-x".into());
        }
        rows.push((c, vector(dim, i)));
    }
    store.upsert(&rows).unwrap();
    store.optimize().unwrap();

    let hits = store.search(&vector(dim, 7), 5, &CaseFilter::default()).unwrap();
    assert_eq!(hits[0].case.id, "c7");
    assert!((hits[0].score - 1.0).abs() < 1e-4);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

    let only = |f: CaseFilter| store.search(&vector(dim, 7), 100, &f).unwrap();
    assert!(only(CaseFilter { category: Some("教育文体".into()), ..Default::default() })
        .iter()
        .all(|h| h.case.label.as_deref() == Some("教育文体")));
    assert_eq!(only(CaseFilter { district: Some("A7县".into()), ..Default::default() }).len(), 30);
    assert_eq!(only(CaseFilter { unit: Some("unit-x".into()), ..Default::default() }).len(), 12);
    assert_eq!(only(CaseFilter { labeled_only: true, ..Default::default() }).len(), 54);
    assert_eq!(only(CaseFilter { with_reply: true, ..Default::default() }).len(), 15);
    let window = CaseFilter { time_from: Some(1_010), time_to: Some(1_019), ..Default::default() };
    assert_eq!(only(window.clone()).len(), 10);
    assert_eq!(store.count(&window).unwrap(), 10);

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.scroll(&CaseFilter { labeled_only: true, ..Default::default() }, after.as_deref(), 16).unwrap();
        for (c, v) in &page.cases {
            assert_eq!(v.len(), dim, "scroll returns vectors");
            seen.push(c.id.clone());
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 54, "scroll visits every matching case once");
}
