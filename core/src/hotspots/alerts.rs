//! Early warning (未诉先办): counts that rise against their own trailing baseline.
//!
//! Two kinds of series are watched as messages arrive, each against its own past:
//! * **place**: a cluster of the hotspot engine (one problem at one place). Observed = its distinct
//!   messages in the last `recent_days`; expected = its rate over the `baseline_days` before that,
//!   plus `prior_messages` pseudo-messages so that a brand-new cluster expects a little, not zero;
//! * **district × category**: all messages of one district and category, `cell_recent_days`
//!   against the `cell_baseline_days` before.
//!
//! An alert fires when the observed count is at least the minimum and a Poisson test says the
//! count is unlikely at the expected rate (`P(X ≥ observed) ≤ max_p`). A place also alerts on
//! public support: once it has `min_observed` distinct messages, when its recent messages have
//! gathered more likes than `support_quantile` of all messages so far (a post with thousands of
//! likes speaks for people who did not write). A series that alerted stays quiet for its recent
//! window (one alert per rise). The replay is causal: the engine counts
//! document frequencies as messages arrive and never looks ahead.

use super::engine::{time_order, Engine};
use super::{category, rfc3339, Deadline, HotspotParams, TimedOut};
use crate::Case;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Options of the early warning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertParams {
    /// Window of the observed count of a place (cluster).
    pub recent_days: f64,
    /// Trailing window before it that sets the expected rate.
    pub baseline_days: f64,
    /// Pseudo-messages added to the baseline (what a new cluster is expected to have had).
    pub prior_messages: f64,
    /// Largest Poisson tail probability that fires an alert.
    pub max_p: f64,
    /// Fewest distinct messages in the recent window for a rate alert (and in the cluster for a
    /// support alert).
    pub min_observed: usize,
    /// A place whose recent messages have more likes than this quantile of all messages' likes
    /// (seen so far) alerts on public support.
    pub support_quantile: f64,
    pub cell_recent_days: f64,
    pub cell_baseline_days: f64,
    /// Fewest messages in the recent window for a district × category alert.
    pub cell_min_observed: usize,
}

impl Default for AlertParams {
    fn default() -> Self {
        Self {
            recent_days: 30.0,
            baseline_days: 180.0,
            prior_messages: 0.5,
            max_p: 0.001,
            min_observed: 3,
            support_quantile: 0.995,
            cell_recent_days: 7.0,
            cell_baseline_days: 56.0,
            cell_min_observed: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// One cluster: a problem at a place.
    Place,
    /// All messages of a district and category.
    DistrictCategory,
}

/// Why a place alerted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertRule {
    /// More distinct messages than its own trailing rate makes likely (Poisson).
    Rate,
    /// Its recent messages gathered more likes than `support_quantile` of all messages do.
    Support,
}

/// An alert as it fired during the replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub rule: AlertRule,
    /// RFC 3339 time of the message that fired it.
    pub time: Option<String>,
    pub unix: Option<i64>,
    /// 1-based position of that message in time order.
    pub message: usize,
    pub trigger_id: String,
    pub title: String,
    pub place: String,
    pub district: Option<String>,
    pub category: Option<String>,
    /// Distinct messages (rate) or likes (support) in the recent window.
    pub observed: f64,
    /// What the series' own past predicts (rate), or the usual likes of a message (support).
    pub expected: f64,
    /// Poisson tail of the observed count (rate); share of messages with at least as many likes
    /// (support).
    pub p_value: f64,
    /// The messages counted as observed (distinct ones, for a place).
    pub ids: Vec<String>,
}

/// `P(X ≥ k)` for `X ~ Poisson(lambda)`.
pub fn poisson_tail(k: usize, lambda: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if lambda <= 0.0 {
        return 0.0;
    }
    let mut term = (-lambda).exp();
    let mut below = term;
    for i in 1..k {
        term *= lambda / i as f64;
        below += term;
    }
    (1.0 - below).max(0.0)
}

/// The `q` quantile of a histogram of `total` values.
fn quantile(histogram: &BTreeMap<u64, usize>, total: usize, q: f64) -> u64 {
    let rank = ((total as f64) * q).ceil() as usize;
    let mut seen = 0;
    for (&value, &n) in histogram {
        seen += n;
        if seen >= rank {
            return value;
        }
    }
    histogram.keys().next_back().copied().unwrap_or(0)
}

/// Share of the `total` values that are at least `value`.
fn tail_share(histogram: &BTreeMap<u64, usize>, total: usize, value: u64) -> f64 {
    histogram.range(value..).map(|(_, n)| n).sum::<usize>() as f64 / total.max(1) as f64
}

/// Replays `cases` in time order and returns every alert in the order it fired.
pub fn alerts(
    cases: &[(Case, Vec<f32>)],
    params: &HotspotParams,
    alert: &AlertParams,
) -> Vec<Alert> {
    match alerts_within(cases, params, alert, &Deadline::none()) {
        Ok(alerts) => alerts,
        Err(TimedOut) => unreachable!("no deadline"),
    }
}

/// `alerts`, giving up once `deadline` has passed.
pub fn alerts_within(
    cases: &[(Case, Vec<f32>)],
    params: &HotspotParams,
    alert: &AlertParams,
    deadline: &Deadline,
) -> Result<Vec<Alert>, TimedOut> {
    let day = 86_400.0;
    let mut engine = Engine::streaming(cases, params);
    let mut out = Vec::new();
    let mut last_place_alert: HashMap<u32, i64> = HashMap::new();
    let mut cells: BTreeMap<(String, String), VecDeque<(i64, usize)>> = BTreeMap::new();
    let mut last_cell_alert: BTreeMap<(String, String), i64> = BTreeMap::new();
    // Likes per message seen so far (value → messages), for the support rule's "usual".
    let mut support: BTreeMap<u64, usize> = BTreeMap::new();
    let mut seen_messages = 0usize;
    for (position, i) in time_order(cases).into_iter().enumerate() {
        if position % 512 == 0 {
            deadline.check()?;
        }
        let case = &cases[i].0;
        let placed = engine.push(i);
        let Some(now) = case.time else { continue };
        let likes_now = super::likes(case);
        *support.entry(likes_now).or_insert(0) += 1;
        seen_messages += 1;
        // Every message is a chance: a copy does not add a distinct message, but the push may
        // have merged fragments into a cluster that now has enough.
        let recent_from = now - (alert.recent_days * day) as i64;
        let quiet = last_place_alert
            .get(&placed.cluster)
            .is_some_and(|&t| t > recent_from);
        if !quiet {
            let base_from = recent_from - (alert.baseline_days * day) as i64;
            let groups = engine.cluster_distinct_cases(placed.cluster);
            let in_window =
                |g: usize, from: i64, to: i64| cases[g].0.time.is_some_and(|t| t > from && t <= to);
            let recent: Vec<usize> = groups
                .iter()
                .copied()
                .filter(|&g| in_window(g, recent_from, now))
                .collect();
            let baseline = groups
                .iter()
                .filter(|&&g| in_window(g, base_from, recent_from))
                .count();
            let expected =
                (baseline as f64 + alert.prior_messages) * alert.recent_days / alert.baseline_days;
            let p = poisson_tail(recent.len(), expected);
            let recent_likes: u64 = recent.iter().map(|&g| super::likes(&cases[g].0)).sum();
            let usual = quantile(&support, seen_messages, alert.support_quantile);
            let fired = if recent.len() >= alert.min_observed && p <= alert.max_p {
                Some((AlertRule::Rate, recent.len() as f64, expected, p))
            } else if groups.len() >= alert.min_observed && recent_likes > usual.max(1) {
                let share = tail_share(&support, seen_messages, recent_likes);
                Some((AlertRule::Support, recent_likes as f64, usual as f64, share))
            } else {
                None
            };
            // A cluster without a place (a broad theme) does not alert as one.
            if let Some((rule, observed, expected, p)) = fired {
                if let Some(h) = engine.hotspot(placed.cluster) {
                    last_place_alert.insert(placed.cluster, now);
                    let ids = match rule {
                        AlertRule::Rate => &recent,
                        AlertRule::Support => &groups,
                    };
                    out.push(Alert {
                        kind: AlertKind::Place,
                        rule,
                        time: rfc3339(now),
                        unix: Some(now),
                        message: position + 1,
                        trigger_id: case.id.clone(),
                        title: h.title,
                        place: h.place,
                        district: h.district,
                        category: h.category,
                        observed,
                        expected,
                        p_value: p,
                        ids: ids.iter().map(|&g| cases[g].0.id.clone()).collect(),
                    });
                }
            }
        }
        let (Some(district), Some(cat)) = (case.district.as_deref(), category(case)) else {
            continue;
        };
        let key = (district.to_string(), cat.to_string());
        let series = cells.entry(key.clone()).or_default();
        series.push_back((now, i));
        let recent_from = now - (alert.cell_recent_days * day) as i64;
        let base_from = recent_from - (alert.cell_baseline_days * day) as i64;
        while series.front().is_some_and(|&(t, _)| t <= base_from) {
            series.pop_front();
        }
        let recent: Vec<usize> = series
            .iter()
            .filter(|&&(t, _)| t > recent_from)
            .map(|&(_, c)| c)
            .collect();
        let baseline = series.len() - recent.len();
        let expected = (baseline as f64 + alert.prior_messages) * alert.cell_recent_days
            / alert.cell_baseline_days;
        let p = poisson_tail(recent.len(), expected);
        let quiet = last_cell_alert.get(&key).is_some_and(|&t| t > recent_from);
        if recent.len() >= alert.cell_min_observed && p <= alert.max_p && !quiet {
            last_cell_alert.insert(key.clone(), now);
            out.push(Alert {
                kind: AlertKind::DistrictCategory,
                rule: AlertRule::Rate,
                time: rfc3339(now),
                unix: Some(now),
                message: position + 1,
                trigger_id: case.id.clone(),
                title: format!("{} · {}", key.0, key.1),
                place: key.0.clone(),
                district: Some(key.0),
                category: Some(key.1),
                observed: recent.len() as f64,
                expected,
                p_value: p,
                ids: recent.iter().map(|&c| cases[c].0.id.clone()).collect(),
            });
        }
    }
    Ok(out)
}

/// How early the replay flagged one of the top hotspots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flagged {
    pub rank: usize,
    pub title: String,
    pub n: usize,
    pub first_time: Option<String>,
    pub alert_time: Option<String>,
    pub hours_after_first: Option<f64>,
    /// How many of the hotspot's messages (copies included) had arrived when it was flagged.
    pub at_message_of_hotspot: Option<usize>,
    /// Distinct messages of the hotspot by then.
    pub at_distinct_message: Option<usize>,
    /// Position of the flagging message in the whole replay.
    pub at_replay_message: Option<usize>,
    pub rule: Option<AlertRule>,
    pub observed: Option<f64>,
    pub expected: Option<f64>,
}

/// The replay against the hotspots mined afterwards over the same cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyWarning {
    /// The first `top` hotspots and when each was first flagged.
    pub flagged: Vec<Flagged>,
    pub place_alerts: usize,
    /// Place alerts whose messages are mostly in no final hotspot.
    pub place_alerts_not_in_a_final_hotspot: usize,
    pub place_alerts_not_in_final_top10: usize,
    pub district_category_alerts: usize,
    pub hotspots_final: usize,
}

/// When each of the first `top` of `ranked` (hotspots mined over `cases`) was first flagged by a
/// place alert of the replay `alerts`, and how many alerts belong to no final hotspot. An alert
/// belongs to the hotspot holding most of the messages it counted.
pub fn early_warning(
    cases: &[(Case, Vec<f32>)],
    ranked: &[super::Hotspot],
    alerts: &[Alert],
    top: usize,
) -> EarlyWarning {
    let time_of: HashMap<&str, Option<i64>> =
        cases.iter().map(|(c, _)| (c.id.as_str(), c.time)).collect();
    let place: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::Place)
        .collect();
    let owner = |a: &Alert, pool: &[super::Hotspot]| -> Option<usize> {
        pool.iter()
            .enumerate()
            .map(|(i, h)| (i, a.ids.iter().filter(|id| h.ids.contains(id)).count()))
            .filter(|&(_, n)| n * 2 > a.ids.len())
            .max_by_key(|&(_, n)| n)
            .map(|(i, _)| i)
    };
    let mut flagged = Vec::new();
    for (i, h) in ranked.iter().take(top).enumerate() {
        let first = h
            .ids
            .first()
            .and_then(|id| time_of.get(id.as_str()).copied().flatten());
        let alert = place.iter().find(|a| owner(a, ranked) == Some(i));
        let at = alert.and_then(|a| a.unix);
        let arrived = |t: i64| {
            h.ids
                .iter()
                .filter(|id| {
                    time_of
                        .get(id.as_str())
                        .copied()
                        .flatten()
                        .is_some_and(|x| x <= t)
                })
                .count()
        };
        flagged.push(Flagged {
            rank: h.rank,
            title: h.title.clone(),
            n: h.n,
            first_time: h.time_from.clone(),
            alert_time: alert.and_then(|a| a.time.clone()),
            hours_after_first: match (first, at) {
                (Some(f), Some(t)) => Some((t - f) as f64 / 3600.0),
                _ => None,
            },
            at_message_of_hotspot: at.map(arrived),
            at_distinct_message: at.map(|t| h.timeline.iter().filter(|(x, _)| *x <= t).count()),
            at_replay_message: alert.map(|a| a.message),
            rule: alert.map(|a| a.rule),
            observed: alert.map(|a| a.observed),
            expected: alert.map(|a| a.expected),
        });
    }
    let top10 = &ranked[..ranked.len().min(10)];
    EarlyWarning {
        flagged,
        place_alerts: place.len(),
        place_alerts_not_in_a_final_hotspot: place
            .iter()
            .filter(|a| owner(a, ranked).is_none())
            .count(),
        place_alerts_not_in_final_top10: place.iter().filter(|a| owner(a, top10).is_none()).count(),
        district_category_alerts: alerts.len() - place.len(),
        hotspots_final: ranked.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_tail_matches_hand_values() {
        assert!((poisson_tail(1, 1.0) - (1.0 - (-1f64).exp())).abs() < 1e-12);
        // P(X >= 3 | 0.5) = 1 - e^-0.5 (1 + 0.5 + 0.125)
        let want = 1.0 - (-0.5f64).exp() * 1.625;
        assert!((poisson_tail(3, 0.5) - want).abs() < 1e-12);
        assert_eq!(poisson_tail(0, 2.0), 1.0);
    }
}
