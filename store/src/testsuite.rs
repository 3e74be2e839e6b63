//! The store's behaviour, written once against `&dyn CaseStore` so every backend runs the same
//! suite (the embedded one in this crate's tests; a server backend where one is configured).

use triage_core::{Case, CaseFilter, CaseStore};

/// A pseudo-random unit vector, the same for the same `seed` (components uniform in [-1, 1) from
/// splitmix64, then normalised): independent seeds are nearly orthogonal, like unrelated texts.
/// (A sine of `seed * i` lies on a one-dimensional curve: near-duplicates everywhere, which makes
/// nearest-neighbour results and recall meaningless.)
pub fn vector(dim: usize, seed: u32) -> Vec<f32> {
    let mut state = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut v: Vec<f32> = (0..dim)
        .map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect();
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
    let mut c = case(
        "a/1 中文 id",
        Some("交通运输"),
        Some("A2区"),
        Some(1_600_000_000),
    );
    c.extra.insert("likes".into(), serde_json::json!(3));
    store.upsert(&[(c.clone(), vector(dim, 1))]).unwrap();
    assert_eq!(
        store.get("a/1 中文 id").unwrap().as_ref(),
        Some(&c),
        "round trip keeps every field"
    );
    assert_eq!(store.count(&CaseFilter::default()).unwrap(), 1);
    store.upsert(&[(c.clone(), vector(dim, 1))]).unwrap();
    assert_eq!(
        store.count(&CaseFilter::default()).unwrap(),
        1,
        "re-upsert does not duplicate"
    );
    let mut changed = c.clone();
    changed.label = Some("教育文体".into());
    store.upsert(&[(changed.clone(), vector(dim, 1))]).unwrap();
    assert_eq!(
        store.get(&c.id).unwrap().unwrap().label.as_deref(),
        Some("教育文体")
    );
    assert!(store.delete(&c.id).unwrap());
    assert!(
        !store.delete(&c.id).unwrap(),
        "deleting twice reports nothing deleted"
    );
    assert_eq!(store.get(&c.id).unwrap(), None);
    assert_eq!(store.count(&CaseFilter::default()).unwrap(), 0);
}

/// A case moved to another district (a corrected address) exists once, under the new district
/// only: the Qdrant backend sharded by district keeps it under one shard key.
pub fn district_change(store: &dyn CaseStore, dim: usize) {
    let in_district = |d: &str| CaseFilter {
        district: Some(d.into()),
        ..Default::default()
    };
    let before = case("moved", Some("城乡建设"), Some("A2区"), None);
    let mut after = before.clone();
    after.district = Some("A3区".into());
    let nowhere = case("nowhere", Some("城乡建设"), None, None);
    store
        .upsert(&[(before, vector(dim, 7)), (nowhere.clone(), vector(dim, 8))])
        .unwrap();
    assert_eq!(store.count(&in_district("A2区")).unwrap(), 1);
    store.upsert(&[(after.clone(), vector(dim, 7))]).unwrap();
    assert_eq!(store.count(&CaseFilter::default()).unwrap(), 2);
    assert_eq!(store.count(&in_district("A2区")).unwrap(), 0);
    let hits = store
        .search(&vector(dim, 7), 5, &in_district("A3区"))
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].case, after);
    let all = store
        .search(&vector(dim, 7), 5, &CaseFilter::default())
        .unwrap();
    assert_eq!(all.iter().filter(|h| h.case.id == "moved").count(), 1);
    // And back to no district at all.
    let mut none = after;
    none.district = None;
    store.upsert(&[(none.clone(), vector(dim, 7))]).unwrap();
    assert_eq!(store.count(&CaseFilter::default()).unwrap(), 2);
    assert_eq!(store.get("moved").unwrap(), Some(none));
    assert!(store.delete("moved").unwrap());
    assert!(store.delete("nowhere").unwrap());
    assert_eq!(store.count(&CaseFilter::default()).unwrap(), 0);
}

/// Nearest first, filters on every field, count and scroll agree.
pub fn search_and_filters(store: &dyn CaseStore, dim: usize) {
    let mut rows = Vec::new();
    for i in 0..60u32 {
        let label = ["交通运输", "教育文体", "环境保护"][(i % 3) as usize];
        let district = ["A2区", "A7县"][(i % 2) as usize];
        let mut c = case(
            &format!("c{i}"),
            (i % 10 != 0).then_some(label),
            Some(district),
            Some(1_000 + i as i64),
        );
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

    let hits = store
        .search(&vector(dim, 7), 5, &CaseFilter::default())
        .unwrap();
    assert_eq!(hits[0].case.id, "c7");
    assert!((hits[0].score - 1.0).abs() < 1e-4);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

    let only = |f: CaseFilter| store.search(&vector(dim, 7), 100, &f).unwrap();
    assert!(only(CaseFilter {
        category: Some("教育文体".into()),
        ..Default::default()
    })
    .iter()
    .all(|h| h.case.label.as_deref() == Some("教育文体")));
    assert_eq!(
        only(CaseFilter {
            district: Some("A7县".into()),
            ..Default::default()
        })
        .len(),
        30
    );
    assert_eq!(
        only(CaseFilter {
            unit: Some("unit-x".into()),
            ..Default::default()
        })
        .len(),
        12
    );
    assert_eq!(
        only(CaseFilter {
            labeled_only: true,
            ..Default::default()
        })
        .len(),
        54
    );
    assert_eq!(
        only(CaseFilter {
            with_reply: true,
            ..Default::default()
        })
        .len(),
        15
    );
    let with_unit = only(CaseFilter {
        with_unit: true,
        ..Default::default()
    });
    assert_eq!(with_unit.len(), 12);
    assert!(with_unit.iter().all(|h| h.case.unit.is_some()));
    let window = CaseFilter {
        time_from: Some(1_010),
        time_to: Some(1_019),
        ..Default::default()
    };
    assert_eq!(only(window.clone()).len(), 10);
    assert_eq!(store.count(&window).unwrap(), 10);

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .scroll(
                &CaseFilter {
                    labeled_only: true,
                    ..Default::default()
                },
                after.as_deref(),
                16,
            )
            .unwrap();
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

/// Edge cases of the API: empty batches, unknown ids, `k` beyond the store, wrong dimensions.
pub fn edge_cases(store: &dyn CaseStore, dim: usize) {
    store.upsert(&[]).unwrap();
    assert_eq!(store.get("nobody").unwrap(), None);
    assert!(!store.delete("nobody").unwrap());
    assert!(store
        .search(&vector(dim, 1), 5, &CaseFilter::default())
        .unwrap()
        .is_empty());
    let page = store.scroll(&CaseFilter::default(), None, 10).unwrap();
    assert!(page.cases.is_empty() && page.next.is_none());

    let rows: Vec<_> = (0..3u32)
        .map(|i| (case(&format!("e{i}"), None, None, None), vector(dim, i)))
        .collect();
    store.upsert(&rows).unwrap();
    assert_eq!(
        store
            .search(&vector(dim, 1), 50, &CaseFilter::default())
            .unwrap()
            .len(),
        3
    );
    assert!(store
        .search(&vector(dim, 1), 0, &CaseFilter::default())
        .unwrap()
        .is_empty());

    // A wrong length is the caller's mistake (422), and a batch with one is not written at all.
    let short = vec![(case("e-short", None, None, None), vector(dim - 1, 9))];
    let bad_batch = [
        (case("e-ok", None, None, None), vector(dim, 9)),
        short[0].clone(),
    ];
    for err in [
        store.upsert(&short).unwrap_err(),
        store.upsert(&bad_batch).unwrap_err(),
    ] {
        assert!(matches!(err, triage_core::Error::InvalidInput(_)), "{err}");
    }
    let err = store
        .search(&vector(dim + 1, 1), 3, &CaseFilter::default())
        .unwrap_err();
    assert!(matches!(err, triage_core::Error::InvalidInput(_)), "{err}");
    assert_eq!(store.get("e-ok").unwrap(), None);
    assert_eq!(store.count(&CaseFilter::default()).unwrap(), 3);
}

/// Scrolling twice gives the same pages in the same order, each case once, with the vectors it
/// was stored with; filters combine (every set field must match).
pub fn scroll_order_and_combined_filters(store: &dyn CaseStore, dim: usize) {
    let rows: Vec<_> = (0..45u32)
        .map(|i| {
            let mut c = case(
                &format!("s{i}"),
                Some(["交通运输", "教育文体"][(i % 2) as usize]),
                None,
                Some(i as i64),
            );
            c.reply = (i % 3 == 0).then(|| "已回复".to_string());
            (c, vector(dim, 100 + i))
        })
        .collect();
    store.upsert(&rows).unwrap();

    let scan = |after: Option<String>| {
        let mut pages = Vec::new();
        for page in store.pages(&CaseFilter::default(), after, 10) {
            let page = page.unwrap();
            assert!(page.cases.len() <= 10);
            pages.push(
                page.cases
                    .iter()
                    .map(|(c, v)| (c.id.clone(), v.clone()))
                    .collect::<Vec<_>>(),
            );
        }
        pages
    };
    let first = scan(None);
    let second = scan(None);
    let ids = |pages: &[Vec<(String, Vec<f32>)>]| {
        pages
            .iter()
            .flatten()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ids(&second), "scroll order is stable");
    let mut all = ids(&first);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 45, "every case exactly once");
    // A scan resumed from the cursor after its first two pages reads exactly the rest.
    let mut pages = store.pages(&CaseFilter::default(), None, 10);
    pages.next().unwrap().unwrap();
    pages.next().unwrap().unwrap();
    let rest = scan(pages.cursor().map(String::from));
    assert_eq!(
        ids(&rest),
        ids(&first)[20..].to_vec(),
        "resuming from a cursor"
    );
    assert_eq!(
        store.all(&CaseFilter::default()).unwrap().len(),
        45,
        "all() reads every page"
    );
    for (id, v) in first.iter().flatten() {
        let seed = 100 + id[1..].parse::<u32>().unwrap();
        let expected = vector(dim, seed);
        assert!(
            v.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-5),
            "vector of {id} round-trips"
        );
    }

    let filter = CaseFilter {
        category: Some("教育文体".into()),
        time_from: Some(10),
        time_to: Some(30),
        with_reply: true,
        ..Default::default()
    };
    // Odd i (教育文体) in 10..=30 divisible by 3: 15, 21, 27.
    let expected = ["s15", "s21", "s27"];
    assert_eq!(store.count(&filter).unwrap(), expected.len());
    let mut found: Vec<_> = store
        .search(&vector(dim, 0), 45, &filter)
        .unwrap()
        .into_iter()
        .map(|h| h.case.id)
        .collect();
    found.sort();
    assert_eq!(found, expected);
    assert_eq!(
        store
            .count(&CaseFilter {
                time_from: Some(40),
                ..Default::default()
            })
            .unwrap(),
        5
    );
    assert_eq!(
        store
            .count(&CaseFilter {
                time_to: Some(4),
                ..Default::default()
            })
            .unwrap(),
        5
    );
}

/// The store behind one reference from many threads: writers, readers and racing deletes.
pub fn concurrent_use(store: &dyn CaseStore, dim: usize) {
    const WRITERS: u32 = 3;
    const BATCHES: u32 = 20;
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            scope.spawn(move || {
                for b in 0..BATCHES {
                    let rows: Vec<_> = (0..8u32)
                        .map(|i| {
                            let n = (w * BATCHES + b) * 8 + i;
                            (
                                case(&format!("w{n}"), Some("环境保护"), None, Some(n as i64)),
                                vector(dim, n),
                            )
                        })
                        .collect();
                    store.upsert(&rows).unwrap();
                }
            });
        }
        for r in 0..3u32 {
            scope.spawn(move || {
                for q in 0..40u32 {
                    let hits = store
                        .search(&vector(dim, q * 7 + r), 5, &CaseFilter::default())
                        .unwrap();
                    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
                    store
                        .count(&CaseFilter {
                            category: Some("环境保护".into()),
                            ..Default::default()
                        })
                        .unwrap();
                    store.scroll(&CaseFilter::default(), None, 20).unwrap();
                }
            });
        }
    });
    let total = (WRITERS * BATCHES * 8) as usize;
    assert_eq!(store.count(&CaseFilter::default()).unwrap(), total);

    // Eight threads delete the same case: exactly one of them deletes it.
    let deleted = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| store.delete("w7").unwrap()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|d| *d)
            .count()
    });
    assert_eq!(deleted, 1);
    assert_eq!(store.count(&CaseFilter::default()).unwrap(), total - 1);
}
