//! The use cases over time: hotspots (每月一题), early warning (未诉先办) and period digests
//! (日通报 / 周汇总 / 月分析). The CLI (`triage hotspots|alerts|digest`) and the HTTP routes
//! (`GET /v1/hotspots|alerts|digest`) call these; the methods themselves are pure functions in
//! `crate::hotspots` and `crate::digest`.
//!
//! Every use case reads its cases the one way (`Scope` over the store through the paging loop,
//! or cases a caller gives, e.g. a JSONL file), fills in a category where a case has neither a
//! label nor a prediction (the current classifier's lexical model, cheap enough for 100k cases),
//! and stops with `Error::Timeout` once its `Deadline` has passed.

use super::Pipeline;
use crate::digest::{self, Digest, Period};
use crate::hotspots::{self, Alert, AlertParams, Deadline, EarlyWarning, Hotspot, HotspotParams};
use crate::{ingest, Case, CaseFilter, Error, Prediction, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// Cases per page when reading the store.
const PAGE: usize = 2048;
/// Texts per call to the embedder for given cases without vectors.
const EMBED_CHUNK: usize = 64;

/// Which cases: a time range (unix seconds, inclusive), a district, a category (id or name;
/// matched against the label, else the prediction).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scope {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub district: Option<String>,
    pub category: Option<String>,
}

impl Scope {
    /// A scope from text bounds, as the CLI and the HTTP routes take them: each a bare date
    /// (`YYYY-MM-DD`, the hotline's day) or a time (RFC 3339); as an end, a bare date includes
    /// its whole day. An unreadable bound or a range that ends before it starts is refused.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        district: Option<String>,
        category: Option<String>,
    ) -> Result<Scope> {
        let scope = Scope {
            from: from.map(|t| time_bound(t, false)).transpose()?,
            to: to.map(|t| time_bound(t, true)).transpose()?,
            district: district.filter(|d| !d.trim().is_empty()),
            category: category.filter(|c| !c.trim().is_empty()),
        };
        if let (Some(from), Some(to)) = (scope.from, scope.to) {
            if from > to {
                return Err(Error::InvalidInput(
                    "the time range ends before it starts".into(),
                ));
            }
        }
        Ok(scope)
    }
}

/// A bare date (`YYYY-MM-DD`) or a time, in unix seconds; as an end (`end`), a bare date
/// includes its whole day.
pub fn time_bound(text: &str, end: bool) -> Result<i64> {
    let t = ingest::parse_time(text).ok_or_else(|| {
        Error::InvalidInput(format!(
            "not a date (YYYY-MM-DD) or time (RFC 3339): {text:?}"
        ))
    })?;
    let bare_date = !text.contains(':') && !text.contains('T');
    Ok(if end && bare_date { t + 86_399 } else { t })
}

/// Cases with their vectors.
type Embedded = Vec<(Case, Vec<f32>)>;

/// Where the cases come from.
pub enum CaseSource {
    /// The stored cases, read page by page.
    Stored,
    /// Cases the caller read (a JSONL file), with their vectors; an empty vector is embedded
    /// here. Districts and units are filled in from the unit directory as on import.
    Given {
        name: String,
        cases: Vec<(Case, Vec<f32>)>,
    },
}

/// What was read, for the output's `input` section.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Loaded {
    pub source: String,
    pub read: usize,
    pub filtered_out: usize,
    pub analysed: usize,
    pub embedded: usize,
    /// Cases given a category by the current classifier (they had neither label nor prediction).
    pub classified: usize,
    pub seconds: f64,
}

/// The answer of `Pipeline::hotspots`.
#[derive(Debug, Clone, Serialize)]
pub struct HotspotReport {
    /// Ranked by heat; at most the `top` asked for.
    pub hotspots: Vec<Hotspot>,
    /// How many hotspots were found in all.
    pub found: usize,
    pub params: HotspotParams,
    pub scope: Scope,
    pub input: Loaded,
    pub mining_seconds: f64,
    /// With `HotspotRequest::keep_cases`: the cases mined (for an evaluation against a gold and
    /// its baseline, which must see the same cases); not serialised.
    #[serde(skip)]
    pub cases: Option<Vec<(Case, Vec<f32>)>>,
}

/// What `Pipeline::hotspots` computes.
#[derive(Debug, Clone)]
pub struct HotspotRequest {
    pub params: HotspotParams,
    /// Hotspots listed (ranked by heat).
    pub top: usize,
    pub keep_cases: bool,
}

impl Default for HotspotRequest {
    fn default() -> Self {
        Self {
            params: HotspotParams::default(),
            top: 50,
            keep_cases: false,
        }
    }
}

/// The answer of `Pipeline::alerts`.
#[derive(Debug, Clone, Serialize)]
pub struct AlertReport {
    /// The alerts that fired within the last `recent_days` before `as_of`, newest first.
    pub alerts: Vec<Alert>,
    /// The time of the newest case replayed (RFC 3339).
    pub as_of: Option<String>,
    pub params: AlertParams,
    pub hotspot_params: HotspotParams,
    pub scope: Scope,
    pub input: Loaded,
    pub replay_seconds: f64,
    /// Every alert of the replay, in the order it fired (for `--replay` reports; not serialised).
    #[serde(skip)]
    pub replay: Vec<Alert>,
    /// With `AlertRequest::early_warning_top`: the replay against the hotspots mined over the
    /// same cases afterwards (how early each was flagged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_warning: Option<EarlyWarning>,
}

/// What `Pipeline::alerts` computes.
#[derive(Debug, Clone, Default)]
pub struct AlertRequest {
    pub params: HotspotParams,
    pub alert: AlertParams,
    /// Also mine the hotspots afterwards and report how early the first this many were flagged.
    pub early_warning_top: Option<usize>,
}

/// What a digest covers.
#[derive(Debug, Clone)]
pub struct DigestRequest {
    pub period: Period,
    pub date: chrono::NaiveDate,
    /// The hotline's UTC offset in hours: where its days begin.
    pub utc_offset_hours: i32,
    /// Hotspots listed.
    pub top: usize,
}

/// The answer of `Pipeline::digest`.
#[derive(Debug, Clone, Serialize)]
pub struct DigestReport {
    pub digest: Digest,
    pub params: HotspotParams,
    pub input: Loaded,
}

fn timed_out(what: &str) -> Error {
    Error::Timeout(format!("{what} did not finish in the time allowed"))
}

impl Pipeline {
    /// Hotspot parameters with this deployment's district hierarchy (a county and its city do
    /// not contradict each other).
    pub fn hotspot_params(&self, mut params: HotspotParams) -> HotspotParams {
        params.district_parents = self
            .units
            .districts
            .iter()
            .filter_map(|d| Some((d.name.clone(), d.parent.clone()?)))
            .collect();
        params
    }

    /// The hotspots of the cases in `scope`, ranked by heat, the first `top`.
    pub fn hotspots(
        &self,
        source: CaseSource,
        scope: &Scope,
        request: &HotspotRequest,
        deadline: &Deadline,
    ) -> Result<HotspotReport> {
        let params = self.hotspot_params(request.params.clone());
        let top = request.top;
        let (mut cases, mut input) = self.scoped_cases(source, scope, false, deadline)?;
        let started = Instant::now();
        let mut ranked = hotspots::mine_within(&cases, &params, deadline)
            .map_err(|_| timed_out("hotspot mining"))?;
        let mining_seconds = started.elapsed().as_secs_f64();
        let found = ranked.len();
        ranked.truncate(top);
        // Categories of the hotspots listed, where their members have none yet.
        if ranked.iter().any(|h| h.category.is_none()) {
            let members: HashSet<&str> = ranked
                .iter()
                .flat_map(|h| h.ids.iter().map(String::as_str))
                .collect();
            let only: HashSet<String> = members.into_iter().map(str::to_string).collect();
            input.classified += self.fill_categories(&mut cases, Some(&only));
            let by_id: BTreeMap<&str, &Case> =
                cases.iter().map(|(c, _)| (c.id.as_str(), c)).collect();
            for h in ranked.iter_mut().filter(|h| h.category.is_none()) {
                h.category =
                    majority_category(h.ids.iter().filter_map(|id| by_id.get(id.as_str())));
            }
        }
        Ok(HotspotReport {
            hotspots: ranked,
            found,
            params,
            scope: scope.clone(),
            input,
            mining_seconds,
            cases: request.keep_cases.then_some(cases),
        })
    }

    /// Replays the cases in `scope` in time order (causally: nothing looks ahead) and returns
    /// the alerts of the last `recent_days`, with every alert of the replay in `replay`.
    pub fn alerts(
        &self,
        source: CaseSource,
        scope: &Scope,
        request: &AlertRequest,
        deadline: &Deadline,
    ) -> Result<AlertReport> {
        let params = self.hotspot_params(request.params.clone());
        let alert_params = request.alert.clone();
        // District × category cells need a category on every case.
        let (cases, input) = self.scoped_cases(source, scope, true, deadline)?;
        let started = Instant::now();
        let replay = hotspots::alerts_within(&cases, &params, &alert_params, deadline)
            .map_err(|_| timed_out("the alert replay"))?;
        let replay_seconds = started.elapsed().as_secs_f64();
        let end = cases.iter().filter_map(|(c, _)| c.time).max();
        let since = end.map(|e| e - (alert_params.recent_days * 86_400.0) as i64);
        let mut alerts: Vec<Alert> = replay
            .iter()
            .filter(|a| match (a.unix, since) {
                (Some(t), Some(s)) => t > s,
                _ => false,
            })
            .cloned()
            .collect();
        alerts.reverse();
        let early_warning = match request.early_warning_top {
            Some(top) => {
                let ranked = hotspots::mine_within(&cases, &params, deadline)
                    .map_err(|_| timed_out("hotspot mining"))?;
                Some(hotspots::early_warning(&cases, &ranked, &replay, top))
            }
            None => None,
        };
        Ok(AlertReport {
            alerts,
            as_of: end.and_then(hotspots::rfc3339),
            params: alert_params,
            hotspot_params: params,
            scope: scope.clone(),
            input,
            replay_seconds,
            replay,
            early_warning,
        })
    }

    /// The digest of one day, week or month against the period before: counts by category,
    /// district and unit, the abstain and correction rates of the stored predictions, and the
    /// period's hotspots.
    pub fn digest(
        &self,
        source: CaseSource,
        request: &DigestRequest,
        params: HotspotParams,
        deadline: &Deadline,
    ) -> Result<DigestReport> {
        let params = self.hotspot_params(params);
        let ((from, to), (previous_from, _)) = request
            .period
            .bounds(request.date, request.utc_offset_hours);
        let scope = Scope {
            from: Some(previous_from),
            to: Some(to - 1),
            ..Default::default()
        };
        let (mut cases, mut input) = self.scoped_cases(source, &scope, false, deadline)?;
        let in_period = |c: &Case| c.time.is_some_and(|t| t >= from && t < to);
        // Rates from the predictions as stored, before categories are filled in for counting.
        let rates = {
            let current: Vec<&Case> = cases
                .iter()
                .map(|(c, _)| c)
                .filter(|c| in_period(c))
                .collect();
            digest::review_rates(&current, self.classifier().map(|c| c.threshold))
        };
        input.classified += self.fill_categories(&mut cases, None);
        let (current, previous): (Vec<_>, Vec<_>) =
            cases.into_iter().partition(|(c, _)| in_period(c));
        // The period before, by its own bounds (a store that cannot filter by time, or given
        // cases without a time, must not count toward it).
        let previous: Vec<Case> = previous
            .into_iter()
            .map(|(c, _)| c)
            .filter(|c| c.time.is_some_and(|t| t >= previous_from && t < from))
            .collect();
        let hotspots = hotspots::mine_within(&current, &params, deadline)
            .map_err(|_| timed_out("the digest's hotspot mining"))?;
        let digest = digest::digest(
            request.period,
            (from, to),
            &current,
            &previous,
            rates,
            hotspots,
            request.top,
        );
        Ok(DigestReport {
            digest,
            params,
            input,
        })
    }

    /// The cases of `scope` with their vectors: from the store through the paging loop, or
    /// those given (enriched from the unit directory as on import, embedded where they have no
    /// vector). With `classify_all` (or a category in the scope) every case gets a category.
    fn scoped_cases(
        &self,
        source: CaseSource,
        scope: &Scope,
        classify_all: bool,
        deadline: &Deadline,
    ) -> Result<(Embedded, Loaded)> {
        let started = Instant::now();
        let mut input = Loaded::default();
        if let (Some(from), Some(to)) = (scope.from, scope.to) {
            if from > to {
                return Err(Error::InvalidInput(format!(
                    "the time range ends before it starts ({from} > {to})"
                )));
            }
        }
        let want_category = match scope.category.as_deref() {
            Some(label) => Some(
                self.category_id(label)
                    .ok_or_else(|| Error::InvalidInput(format!("unknown category {label:?}")))?,
            ),
            None => None,
        };
        let mut cases = match source {
            CaseSource::Stored => {
                input.source = format!("store ({})", self.store.backend());
                let filter = CaseFilter {
                    district: scope.district.clone(),
                    time_from: scope.from,
                    time_to: scope.to,
                    ..Default::default()
                };
                let mut out = Vec::new();
                for page in self.cases(&filter, None, PAGE) {
                    deadline
                        .check()
                        .map_err(|_| timed_out("reading the stored cases"))?;
                    out.extend(page?.cases);
                }
                input.read = out.len();
                out
            }
            CaseSource::Given { name, cases } => {
                input.source = name;
                input.read = cases.len();
                let mut kept: Vec<(Case, Vec<f32>)> = Vec::with_capacity(cases.len());
                for (mut case, vector) in cases {
                    ingest::enrich(&mut case, &self.units, &self.aliases);
                    // Labels count by category id, as stored cases' do.
                    if let Some(id) = case.label.as_deref().and_then(|l| self.category_id(l)) {
                        case.label = Some(id);
                    }
                    if in_scope(&case, scope) {
                        kept.push((case, vector));
                    }
                }
                input.embedded = self.embed_missing(&mut kept, deadline)?;
                kept
            }
        };
        if want_category.is_some() || classify_all {
            input.classified = self.fill_categories(&mut cases, None);
        }
        if let Some(want) = &want_category {
            cases.retain(|(c, _)| hotspots::category(c) == Some(want.as_str()));
        }
        input.filtered_out = input.read - cases.len();
        input.analysed = cases.len();
        input.seconds = started.elapsed().as_secs_f64();
        Ok((cases, input))
    }

    /// Embeds the given cases that have no vector, as stored cases are embedded.
    fn embed_missing(&self, cases: &mut [(Case, Vec<f32>)], deadline: &Deadline) -> Result<usize> {
        let missing: Vec<usize> = (0..cases.len())
            .filter(|&i| cases[i].1.is_empty())
            .collect();
        for chunk in missing.chunks(EMBED_CHUNK) {
            deadline
                .check()
                .map_err(|_| timed_out("embedding the cases"))?;
            let texts: Vec<String> = chunk.iter().map(|&i| cases[i].0.full_text()).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            for (&i, embedded) in chunk.iter().zip(self.embed_complaints(&refs)?) {
                cases[i].1 = embedded.vector;
            }
        }
        Ok(missing.len())
    }

    /// Gives a category (the current classifier's lexical prediction) to the cases that have
    /// neither a label nor a prediction (all of them, or those in `only`). Without a classifier,
    /// or one without a lexical model, none. Returns how many were given one.
    fn fill_categories(
        &self,
        cases: &mut [(Case, Vec<f32>)],
        only: Option<&HashSet<String>>,
    ) -> usize {
        let Some(classifier) = self.classifier() else {
            return 0;
        };
        let mut n = 0;
        for (case, _) in cases.iter_mut() {
            if hotspots::category(case).is_some() || only.is_some_and(|o| !o.contains(&case.id)) {
                continue;
            }
            let Some(scores) = classifier.predict_lexical(&case.full_text()) else {
                return n; // a cold-start classifier has no lexical model
            };
            let best = crate::classify::argmax(&scores.ensemble);
            case.predicted = Some(Prediction {
                category: classifier.labels[best].clone(),
                confidence: scores.ensemble[best],
                unit: None,
                classifier_version: classifier.version.clone(),
            });
            n += 1;
        }
        n
    }
}

/// Whether a case is in the scope's time range and district (the category is checked after
/// categories are filled in). A case without a time is in scope only when no range is asked.
fn in_scope(case: &Case, scope: &Scope) -> bool {
    let in_time = match case.time {
        Some(t) => scope.from.is_none_or(|f| t >= f) && scope.to.is_none_or(|e| t <= e),
        None => scope.from.is_none() && scope.to.is_none(),
    };
    in_time
        && scope
            .district
            .as_deref()
            .is_none_or(|d| case.district.as_deref() == Some(d))
}

fn majority_category<'a>(members: impl Iterator<Item = &'a &'a Case>) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in members {
        if let Some(cat) = hotspots::category(c) {
            *counts.entry(cat).or_insert(0) += 1;
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(c, _)| c.to_string())
}
