//! Hotspot mining and alerts on small synthetic cities: texts written like complaints, and
//! vectors built the way a sentence embedder places such texts (same wording → nearly the same
//! vector, whatever place it names).

use super::*;
use rand::{Rng, SeedableRng};

const DIM: usize = 32;
const DAY: i64 = 86_400;
/// 2019-01-01 00:00 UTC.
const T0: i64 = 1_546_300_800;

fn unit(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn random_unit(rng: &mut impl Rng) -> Vec<f32> {
    unit((0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
}

/// `base` plus `weight` of `other`, renormalised.
fn mix(base: &[f32], other: &[f32], weight: f32) -> Vec<f32> {
    unit(
        base.iter()
            .zip(other)
            .map(|(a, b)| a + weight * b)
            .collect(),
    )
}

fn case(id: &str, text: &str, day: f64, likes: u64, district: Option<&str>) -> Case {
    let mut extra = serde_json::Map::new();
    extra.insert("likes".into(), likes.into());
    Case {
        id: id.into(),
        text: text.into(),
        time: Some(T0 + (day * DAY as f64) as i64),
        district: district.map(str::to_string),
        extra,
        ..Default::default()
    }
}

/// Unrelated messages (random characters, random topics), so that document frequencies mean
/// something in a small set.
fn fillers(rng: &mut impl Rng, n: usize, days: f64) -> Vec<(Case, Vec<f32>)> {
    const POOL: &str = "的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会家可下而过天去能对小多然于心学么之都好看起发当没成只如事把还用第样道想作种开美总从无情己面最女但现前些所同日手又行意动方期它头经长儿回位分爱老因很给名法间斯知世什两次使身者被高已亲其进此话常与活正感";
    let pool: Vec<char> = POOL.chars().collect();
    (0..n)
        .map(|k| {
            let text: String = (0..40)
                .map(|_| pool[rng.gen_range(0..pool.len())])
                .collect();
            let c = case(&format!("f{k}"), &text, days * k as f64 / n as f64, 0, None);
            (c, random_unit(rng))
        })
        .collect()
}

const FUMES: [&str; 4] = [
    "{}小区楼下的烧烤店每天油烟直排，熏得住户不敢开窗。",
    "投诉{}小区临街餐馆深夜营业，炒菜声音吵得睡不着。",
    "{}小区底商饭店没有专用烟道，排烟管直接对着居民楼。",
    "{}小区一楼夜宵摊占道经营，噪音和异味严重扰民。",
];

fn ids(h: &Hotspot) -> Vec<&str> {
    let mut v: Vec<&str> = h.ids.iter().map(String::as_str).collect();
    v.sort();
    v
}

#[test]
fn same_wording_about_two_places_is_two_hotspots() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut cases = fillers(&mut rng, 80, 60.0);
    let topic = random_unit(&mut rng);
    // The embedder barely sees the place: each wording has one vector, near-copies of it nearby.
    let wording: Vec<Vec<f32>> = (0..4)
        .map(|_| mix(&topic, &random_unit(&mut rng), 0.15))
        .collect();
    for (k, w) in FUMES.iter().enumerate() {
        let v = mix(&wording[k], &random_unit(&mut rng), 0.02);
        cases.push((
            case(
                &format!("a{k}"),
                &w.replace("{}", "青松苑"),
                1.0 + k as f64,
                0,
                None,
            ),
            v,
        ));
    }
    for (k, w) in FUMES.iter().enumerate() {
        let v = mix(&wording[k], &random_unit(&mut rng), 0.02);
        cases.push((
            case(
                &format!("b{k}"),
                &w.replace("{}", "明湖湾"),
                10.0 + k as f64,
                0,
                None,
            ),
            v,
        ));
    }
    let found = mine(&cases, &HotspotParams::default());
    assert_eq!(found.len(), 2, "{found:#?}");
    let mut got: Vec<Vec<&str>> = found.iter().map(ids).collect();
    got.sort();
    assert_eq!(
        got,
        vec![vec!["a0", "a1", "a2", "a3"], vec!["b0", "b1", "b2", "b3"]]
    );
    for h in &found {
        assert!(
            h.place.contains("青松苑") || h.place.contains("明湖湾"),
            "{}",
            h.place
        );
        assert_eq!(h.n, 4);
    }
}

#[test]
fn near_copies_count_once() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut cases = fillers(&mut rng, 80, 60.0);
    let topic = random_unit(&mut rng);
    let first = "金桂园小区门口的垃圾站三个月没人清理，臭味熏天，蚊蝇滋生，居民出入都要捂着鼻子。";
    let texts = [
        ("c0", first.to_string(), 5),
        ("c0-copy", first.to_string(), 0),
        ("c0-edit", first.replace("三个月", "四个月"), 2),
        (
            "c1",
            "反映金桂园小区垃圾站长期不清运，夏天气味难闻，请环卫部门处理。".to_string(),
            1,
        ),
        (
            "c2",
            "金桂园小区垃圾站满溢，垃圾堆到路边，希望尽快清理并增加清运次数。".to_string(),
            0,
        ),
    ];
    for (k, (id, text, likes)) in texts.iter().enumerate() {
        let v = mix(&topic, &random_unit(&mut rng), 0.1);
        cases.push((case(id, text, 2.0 + k as f64, *likes, None), v));
    }
    let found = mine(&cases, &HotspotParams::default());
    assert_eq!(found.len(), 1, "{found:#?}");
    let h = &found[0];
    assert_eq!((h.n, h.messages), (3, 5));
    // Support: per group of copies the largest like count (5 + 1 + 0), not the sum.
    assert_eq!(h.likes, 6);
    assert!(h.place.contains("金桂园"), "{}", h.place);
}

#[test]
fn a_broad_theme_over_many_places_does_not_rank() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut cases = fillers(&mut rng, 80, 60.0);
    let topic = random_unit(&mut rng);
    // Mahjong parlours all over the city: one complaint each, ten places in five districts; the
    // embedder puts them close (mean cosine about 0.91), as it does for such messages.
    let places = [
        "翠竹苑",
        "金色家园",
        "望江楼",
        "枫林小区",
        "东塘新村",
        "南湖花园",
        "桃园村",
        "锦绣华庭",
        "北辰小区",
        "滨江苑",
    ];
    for (k, place) in places.iter().enumerate() {
        let district = format!("A{}区", k / 2 + 1);
        let text = format!("{district}{place}有人在居民楼里开麻将馆，每天打到凌晨，麻将声吵得人无法休息，请相关部门取缔。");
        let v = mix(&topic, &random_unit(&mut rng), 0.32);
        cases.push((
            case(
                &format!("m{k}"),
                &text,
                1.0 + 3.0 * k as f64,
                2,
                Some(&district),
            ),
            v,
        ));
    }
    // And one real hotspot in the same weeks.
    let problem = random_unit(&mut rng);
    for k in 0..4 {
        let text = [
            "翠湖苑小区旁的搅拌站昼夜施工，粉尘噪音严重。",
            "投诉翠湖苑小区附近违建搅拌站，噪音扰民。",
            "翠湖苑小区居民要求搬走搅拌站，灰尘太大。",
            "翠湖苑小区外搅拌站半夜还在作业，吵得睡不着。",
        ][k];
        let v = mix(&problem, &random_unit(&mut rng), 0.1);
        cases.push((
            case(
                &format!("h{k}"),
                text,
                2.0 + 2.0 * k as f64,
                0,
                Some("A2区"),
            ),
            v,
        ));
    }
    let found = mine(&cases, &HotspotParams::default());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(ids(&found[0]), vec!["h0", "h1", "h2", "h3"]);
}

#[test]
fn heat_rewards_concentration_and_support() {
    let p = HeatParams::default();
    let month: Vec<(Option<i64>, u64)> = (0..10).map(|k| (Some(T0 + k * DAY), 0)).collect();
    let spread: Vec<(Option<i64>, u64)> = (0..10).map(|k| (Some(T0 + k * 60 * DAY), 0)).collect();
    let (hot, c) = heat(&month, &p);
    let (cold, c_spread) = heat(&spread, &p);
    assert_eq!(c, 1.0);
    assert!((c_spread - 0.1).abs() < 1e-9);
    assert!((hot - 10.0).abs() < 1e-9 && cold < 0.6 * hot);
    let mut liked = month.clone();
    liked[0].1 = 1000;
    let (supported, _) = heat(&liked, &p);
    assert!((supported - (10.0 + p.like_weight * 1001f64.ln())).abs() < 1e-9);
}

#[test]
fn a_new_place_alerts_and_a_steady_one_does_not() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut cases = fillers(&mut rng, 80, 400.0);
    // A steady trickle: one message every three weeks for a year, same place and problem.
    let steady = random_unit(&mut rng);
    let steady_texts = [
        "银杏路口红绿灯时间太短，老人过马路来不及。",
        "银杏路口信号灯绿灯太短，行人过街危险。",
        "建议延长银杏路口人行绿灯时间。",
        "银杏路口过街绿灯只有十几秒，请调整。",
    ];
    for k in 0..18 {
        let v = mix(&steady, &random_unit(&mut rng), 0.1);
        let text = steady_texts[k % 4];
        cases.push((case(&format!("s{k}"), text, 21.0 * k as f64, 0, None), v));
    }
    // A new problem: four messages in five days.
    let burst = random_unit(&mut rng);
    let burst_texts = [
        "翠湖苑小区旁的搅拌站昼夜施工，粉尘噪音严重。",
        "投诉翠湖苑小区附近违建搅拌站，噪音扰民。",
        "翠湖苑小区居民要求搬走搅拌站，灰尘太大。",
        "翠湖苑小区外搅拌站半夜还在作业，吵得睡不着。",
    ];
    for (k, text) in burst_texts.iter().enumerate() {
        let v = mix(&burst, &random_unit(&mut rng), 0.1);
        cases.push((
            case(&format!("h{k}"), text, 300.0 + 1.5 * k as f64, 0, None),
            v,
        ));
    }
    let fired = alerts(&cases, &HotspotParams::default(), &AlertParams::default());
    let place: Vec<&Alert> = fired
        .iter()
        .filter(|a| a.kind == AlertKind::Place)
        .collect();
    assert_eq!(place.len(), 1, "{place:#?}");
    let a = place[0];
    assert_eq!((a.trigger_id.as_str(), a.rule), ("h2", AlertRule::Rate));
    assert!(
        a.observed == 3.0 && a.expected < 0.1 && a.p_value < 1e-3,
        "{a:?}"
    );
}

#[test]
fn mining_and_the_replay_stop_at_a_passed_deadline() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let cases = fillers(&mut rng, 50, 30.0);
    let passed = Deadline::at(std::time::Instant::now());
    let params = HotspotParams::default();
    assert_eq!(mine_within(&cases, &params, &passed).err(), Some(TimedOut));
    assert!(alerts_within(&cases, &params, &AlertParams::default(), &passed).is_err());
    // No deadline: the same work finishes.
    assert!(mine_within(&cases, &params, &Deadline::none()).is_ok());
}

#[test]
fn a_place_that_recurs_in_separate_episodes_is_a_hotspot_each_time() {
    // The same complaint about one compound in six separate years (as in a long history, or a
    // history of recycled texts): each episode is a hotspot of its own. Counted over the whole
    // history, no one episode holds most of the messages naming the place.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let years = 6;
    let mut cases = fillers(&mut rng, 80 * years, 365.0 * years as f64);
    let topic = random_unit(&mut rng);
    let wording: Vec<Vec<f32>> = (0..4)
        .map(|_| mix(&topic, &random_unit(&mut rng), 0.15))
        .collect();
    for year in 0..years {
        for (k, w) in FUMES.iter().enumerate() {
            let v = mix(&wording[k], &random_unit(&mut rng), 0.02);
            cases.push((
                case(
                    &format!("y{year}-{k}"),
                    &w.replace("{}", "青松苑"),
                    365.0 * year as f64 + 100.0 + 2.0 * k as f64,
                    0,
                    None,
                ),
                v,
            ));
        }
    }
    let found = mine(&cases, &HotspotParams::default());
    assert_eq!(found.len(), years, "{found:#?}");
    for h in &found {
        assert_eq!(h.n, 4, "{h:#?}");
        assert!(h.place.contains("青松苑"), "{}", h.place);
        let year = &h.ids[0][..2];
        assert!(h.ids.iter().all(|id| id.starts_with(year)), "{:?}", h.ids);
    }
}
