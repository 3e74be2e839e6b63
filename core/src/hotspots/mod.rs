//! Hotspots (每月一题) and early warning (未诉先办): which specific problems at which places many
//! people write about, and which are rising now. Pure functions over cases with their vectors.
//!
//! # What a hotspot is
//! One specific problem at one place (a compound, a road, a school, a company, a project) or for
//! one group of people (the victims of one platform). Two consequences shape the method:
//! * the same wording about two different places is two problems, so the embedding alone cannot
//!   decide (copies of one complaint with the place name swapped are nearly identical vectors);
//! * a broad theme (the subway, kindergartens, restaurant fumes everywhere) is many problems at
//!   many places, however many messages it has.
//!
//! # Method: windowed, incremental clustering with term agreement
//! Messages are taken in time order (see `engine`). Each one is compared only with the messages
//! of clusters still *open* (a cluster closes after `window_days` without a message), and only
//! with those that share distinctive terms with it, found through an inverted index: no
//! all-pairs pass over the history, so time and memory grow with the window, not the history.
//! A message joins a cluster when
//! 1. it shares distinctive terms with a member: character 3/4-grams, each weighted by its inverse
//!    document frequency, at least `min_shared_idf` in all (a term in more than `max_df_share` of
//!    messages is not distinctive);
//! 2. its embedding is close to that member's (cosine ≥ `link_cosine`);
//! 3. it agrees with the cluster's place: its district (from the gazetteer) does not contradict
//!    the cluster's, and, once the cluster has `key_from` distinct messages, it contains one of
//!    the cluster's *signature terms*: distinctive terms that at least `key_coverage` of the
//!    cluster's distinct messages contain and that are found mostly inside the cluster (at least
//!    `key_specificity` of the messages containing them are members, counted over the cluster's
//!    own span: from `window_days` before its first message up to now, and when it closes up to
//!    `window_days` after its last). Not over the whole history: a place that complains in
//!    separate episodes is named in all of them, and no one episode would hold most of its
//!    mentions. In practice these are the place's or group's name and the problem's own words.
//!    Shared template wording does not qualify: near-copies count once toward coverage, so a
//!    copy of a member with the place swapped shares only the member's wording, which no other
//!    distinct member has.
//!
//! A cluster of `key_from` distinct messages or more without any signature term has no one place
//! holding it together: it takes no newcomers and is not reported (a broad theme).
//!
//! A message that joins as a near-copy of a member (shingle Jaccard ≥ `near_copy_jaccard`)
//! counts once: `n` is the number of distinct messages.
//!
//! # Heat
//! `heat = (n + like_weight · ln(1 + likes)) · (1 + c) / 2`, where `n` is the number of distinct
//! messages, `likes` the public support (per group of near-copies, the largest like count; 0 where
//! the data has none) and `c ∈ (0, 1]` the concentration in time: the largest share of the distinct
//! messages that fall within `burst_days` of each other. A problem reported 20 times in a month
//! outranks the same 20 reports spread over two years (×1 against ×≈0.55); likes count on a log
//! scale because their distribution is heavy-tailed (one post can collect thousands).
//!
//! A hotspot needs `min_distinct` distinct messages; its place is its most widely shared key term,
//! extended while the longer string is still shared, with the district in front.

pub mod alerts;
mod engine;
pub mod terms;

use crate::Case;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use alerts::{
    alerts, alerts_within, early_warning, Alert, AlertKind, AlertParams, AlertRule, EarlyWarning,
    Flagged,
};
pub use engine::{time_order, Engine};

/// Options of hotspot mining. Defaults were chosen on data as the README's hotspot section
/// describes (none of them on the gold clusters' names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HotspotParams {
    /// Shortest character n-gram used as a term.
    pub ngram_min: usize,
    /// Longest character n-gram used as a term.
    pub ngram_max: usize,
    /// Characters of title + body that terms are taken from (places are named early).
    pub head_chars: usize,
    /// A term in more than this share of messages is not distinctive...
    pub max_df_share: f32,
    /// ... unless it is in at most this many (so small sets still have distinctive terms).
    pub max_df_floor: u32,
    /// Sum of the IDF of the distinctive terms two messages share before they are compared.
    pub min_shared_idf: f32,
    /// Cosine similarity of two messages' embeddings for them to be linked.
    pub link_cosine: f32,
    /// Mean cosine of a newcomer to a cluster's distinct messages (and between two clusters that
    /// merge): average linkage, so a cluster cannot grow by a chain of single links.
    pub mean_cosine: f32,
    /// Shingle (n-gram) Jaccard similarity above which a message is a near-copy of another.
    pub near_copy_jaccard: f32,
    /// Share of a cluster's distinct messages a signature term is in.
    pub key_coverage: f32,
    /// Share of the messages containing a signature term (over the cluster's span, `window_days`
    /// before its first message on) that are in the cluster.
    pub key_specificity: f32,
    /// Distinct messages a cluster needs before newcomers must contain a signature term (and
    /// before a cluster without one is a broad theme rather than a hotspot).
    pub key_from: usize,
    /// A cluster without a new message for this many days is closed.
    pub window_days: f64,
    /// Distinct messages a hotspot needs.
    pub min_distinct: usize,
    /// Ids listed as examples per hotspot.
    pub examples: usize,
    pub heat: HeatParams,
    /// District → the district that contains it, to tell a county from its city (filled from the
    /// unit directory by the caller; a district and its parent do not contradict each other).
    #[serde(skip)]
    pub district_parents: BTreeMap<String, String>,
}

impl Default for HotspotParams {
    fn default() -> Self {
        Self {
            ngram_min: 3,
            ngram_max: 4,
            head_chars: 300,
            max_df_share: 0.05,
            max_df_floor: 30,
            min_shared_idf: 12.0,
            link_cosine: 0.92,
            mean_cosine: 0.92,
            near_copy_jaccard: 0.7,
            key_coverage: 0.5,
            key_specificity: 0.5,
            key_from: 3,
            window_days: 90.0,
            min_distinct: 3,
            examples: 3,
            heat: HeatParams::default(),
            district_parents: BTreeMap::new(),
        }
    }
}

/// Options of the heat index (see the module docs for the formula).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeatParams {
    /// Width of the window in which concentration in time is measured.
    pub burst_days: f64,
    /// Heat of one e-fold of likes, in distinct messages.
    pub like_weight: f64,
}

impl Default for HeatParams {
    fn default() -> Self {
        Self {
            burst_days: 30.0,
            like_weight: 3.7,
        }
    }
}

/// One hotspot, as `hotspots.json` lists it (ranked by heat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hotspot {
    pub rank: usize,
    /// The title of the message closest to the cluster's centre.
    pub title: String,
    /// District and the most widely shared distinctive term, e.g. "A2区 丽发新城".
    pub place: String,
    /// The most frequent category of the members (label, else prediction), if any has one.
    pub category: Option<String>,
    pub heat: f64,
    /// Distinct messages (near-copies count once).
    pub n: usize,
    /// RFC 3339 time of the first and the last member.
    pub time_from: Option<String>,
    pub time_to: Option<String>,
    /// All members, near-copies included, in time order.
    pub ids: Vec<String>,
    /// The members closest to the centre, one per group of near-copies.
    pub example_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// Messages including near-copies.
    pub messages: usize,
    /// Public support: per group of near-copies the largest like count, summed.
    pub likes: u64,
    /// Largest share of the distinct messages within `burst_days` (see the heat formula).
    pub concentration: f64,
    /// Each distinct message's (unix time, likes), in time order: for charts of heat over time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<(i64, u64)>,
}

/// Public support of a case: its `likes` field where the data has one (number or numeric string).
pub fn likes(case: &Case) -> u64 {
    match case.extra.get("likes") {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// The category a case counts under: the human label, else the machine's prediction.
pub fn category(case: &Case) -> Option<&str> {
    case.label
        .as_deref()
        .or(case.predicted.as_ref().map(|p| p.category.as_str()))
}

/// Heat of a group of distinct messages, given each one's time (unix seconds, if known) and
/// likes. Returns (heat, concentration).
pub fn heat(distinct: &[(Option<i64>, u64)], params: &HeatParams) -> (f64, f64) {
    let n = distinct.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let likes: u64 = distinct.iter().map(|d| d.1).sum();
    let mut times: Vec<i64> = distinct.iter().filter_map(|d| d.0).collect();
    times.sort_unstable();
    let concentration = if times.is_empty() {
        1.0
    } else {
        let width = (params.burst_days * 86_400.0) as i64;
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..times.len() {
            while times[hi] - times[lo] > width {
                lo += 1;
            }
            best = best.max(hi + 1 - lo);
        }
        // Messages without a time are neither concentrated nor spread: they count as in the window.
        (best + (n - times.len())) as f64 / n as f64
    };
    let heat =
        (n as f64 + params.like_weight * (1.0 + likes as f64).ln()) * (1.0 + concentration) / 2.0;
    (heat, concentration)
}

/// Mines hotspots from `cases` (any order; taken in time order): ranked by heat, those with at
/// least `min_distinct` distinct messages. Document frequencies are those of the whole input.
pub fn mine(cases: &[(Case, Vec<f32>)], params: &HotspotParams) -> Vec<Hotspot> {
    match mine_within(cases, params, &Deadline::none()) {
        Ok(hotspots) => hotspots,
        Err(TimedOut) => unreachable!("no deadline"),
    }
}

/// `mine`, giving up once `deadline` has passed (checked every few hundred messages).
pub fn mine_within(
    cases: &[(Case, Vec<f32>)],
    params: &HotspotParams,
    deadline: &Deadline,
) -> Result<Vec<Hotspot>, TimedOut> {
    let mut engine = Engine::batch(cases, params);
    for (k, i) in engine::time_order(cases).into_iter().enumerate() {
        if k % CHECK_EVERY == 0 {
            deadline.check()?;
        }
        engine.push(i);
    }
    Ok(rank(engine.finish(), params))
}

/// Messages between two looks at the clock.
const CHECK_EVERY: usize = 512;

/// When work on a request must stop (`None`: never).
#[derive(Debug, Clone, Copy, Default)]
pub struct Deadline(Option<std::time::Instant>);

/// The deadline passed before the work was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

impl Deadline {
    pub fn none() -> Self {
        Self(None)
    }

    pub fn at(instant: std::time::Instant) -> Self {
        Self(Some(instant))
    }

    pub fn after(duration: std::time::Duration) -> Self {
        Self(std::time::Instant::now().checked_add(duration))
    }

    pub fn check(&self) -> Result<(), TimedOut> {
        match self.0 {
            Some(at) if std::time::Instant::now() >= at => Err(TimedOut),
            _ => Ok(()),
        }
    }
}

/// Sorts by heat (ties: more distinct messages, then earlier), and numbers the ranks from 1.
pub fn rank(mut hotspots: Vec<Hotspot>, params: &HotspotParams) -> Vec<Hotspot> {
    hotspots.retain(|h| h.n >= params.min_distinct.max(1));
    hotspots.sort_by(|a, b| {
        b.heat
            .total_cmp(&a.heat)
            .then(b.n.cmp(&a.n))
            .then(a.time_from.cmp(&b.time_from))
    });
    for (i, h) in hotspots.iter_mut().enumerate() {
        h.rank = i + 1;
    }
    hotspots
}

/// RFC 3339 (UTC) of unix seconds.
pub fn rfc3339(t: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

#[cfg(test)]
mod tests;
