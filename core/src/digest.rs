//! Period digests (日通报 / 周汇总 / 月分析): what came in during a day, week or month, against the
//! period before, with the period's hotspots. Pure functions over cases; the caller loads them.

use crate::hotspots::{self, Hotspot};
use crate::Case;
use chrono::{Datelike, Duration, FixedOffset, NaiveDate, TimeZone};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The length of a digest's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    /// Monday to Sunday.
    Week,
    Month,
}

impl Period {
    /// The period holding `date` and the one before it, as unix-second ranges `[from, to)` at the
    /// given UTC offset (a hotline's local day).
    pub fn bounds(self, date: NaiveDate, utc_offset_hours: i32) -> ((i64, i64), (i64, i64)) {
        let start = match self {
            Period::Day => date,
            Period::Week => date - Duration::days(date.weekday().num_days_from_monday() as i64),
            Period::Month => date.with_day(1).unwrap_or(date),
        };
        let next = |d: NaiveDate| match self {
            Period::Day => d + Duration::days(1),
            Period::Week => d + Duration::days(7),
            Period::Month => d
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(d + Duration::days(31)),
        };
        let previous = match self {
            Period::Day => start - Duration::days(1),
            Period::Week => start - Duration::days(7),
            Period::Month => start
                .checked_sub_months(chrono::Months::new(1))
                .unwrap_or(start - Duration::days(30)),
        };
        let offset = FixedOffset::east_opt(utc_offset_hours * 3600)
            .unwrap_or(FixedOffset::east_opt(0).expect("zero offset"));
        let at = |d: NaiveDate| {
            offset
                .from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
                .single()
                .map_or(0, |t| t.timestamp())
        };
        ((at(start), at(next(start))), (at(previous), at(start)))
    }
}

/// A count now, before, and the change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub current: usize,
    pub previous: usize,
    /// `current / previous - 1`; `None` when there was nothing before.
    pub change: Option<f64>,
}

/// What the digest reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    pub period: Period,
    pub from: Option<String>,
    pub to: Option<String>,
    pub total: Change,
    pub by_category: BTreeMap<String, Change>,
    pub by_district: BTreeMap<String, Change>,
    pub by_unit: BTreeMap<String, Change>,
    /// Share of the period's machine predictions below the abstain threshold (sent to a person).
    pub abstain_rate: Option<f64>,
    /// Share of the period's cases with both a human label and a machine prediction where they
    /// differ (the call-taker corrected the suggestion).
    pub correction_rate: Option<f64>,
    /// The period's hotspots (mined over the period alone), ranked by heat.
    pub hotspots: Vec<Hotspot>,
}

fn district(c: &Case) -> Option<&str> {
    c.district.as_deref()
}

/// The unit that handled it, else the one suggested.
fn unit(c: &Case) -> Option<&str> {
    c.unit
        .as_deref()
        .or(c.predicted.as_ref().and_then(|p| p.unit.as_deref()))
}

fn change(current: usize, previous: usize) -> Change {
    Change {
        current,
        previous,
        change: (previous > 0).then(|| current as f64 / previous as f64 - 1.0),
    }
}

fn counts<'a>(
    cases: impl Iterator<Item = &'a Case>,
    key: fn(&Case) -> Option<&str>,
) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for c in cases {
        *out.entry(key(c).unwrap_or("(none)").to_string())
            .or_insert(0) += 1;
    }
    out
}

fn compare(
    now: BTreeMap<String, usize>,
    before: BTreeMap<String, usize>,
) -> BTreeMap<String, Change> {
    let keys: Vec<String> = now.keys().chain(before.keys()).cloned().collect();
    keys.into_iter()
        .map(|k| {
            let c = change(
                now.get(&k).copied().unwrap_or(0),
                before.get(&k).copied().unwrap_or(0),
            );
            (k, c)
        })
        .collect()
}

/// Abstain and correction rates of the machine predictions stored on `cases` (as written by
/// `triage batch --write-back` and feedback): the share below the abstain `threshold`, and among
/// those a person also labeled, the share where the label differs.
pub fn review_rates(cases: &[&Case], threshold: Option<f32>) -> (Option<f64>, Option<f64>) {
    let predicted: Vec<&&Case> = cases.iter().filter(|c| c.predicted.is_some()).collect();
    let abstain_rate = threshold.filter(|_| !predicted.is_empty()).map(|t| {
        predicted
            .iter()
            .filter(|c| c.predicted.as_ref().is_some_and(|p| p.confidence < t))
            .count() as f64
            / predicted.len() as f64
    });
    let reviewed: Vec<&&&Case> = predicted.iter().filter(|c| c.label.is_some()).collect();
    let correction_rate = (!reviewed.is_empty()).then(|| {
        reviewed
            .iter()
            .filter(|c| c.predicted.as_ref().map(|p| &p.category) != c.label.as_ref())
            .count() as f64
            / reviewed.len() as f64
    });
    (abstain_rate, correction_rate)
}

/// The digest of `current` (the period's cases) against `previous` (the period before); `rates`
/// from `review_rates` on the cases as stored (before any category was filled in for counting);
/// `hotspots` mined over the period's cases (`hotspots::mine`), ranked.
pub fn digest(
    period: Period,
    bounds: (i64, i64),
    current: &[(Case, Vec<f32>)],
    previous: &[Case],
    rates: (Option<f64>, Option<f64>),
    mut hotspots: Vec<Hotspot>,
    top: usize,
) -> Digest {
    let now = || current.iter().map(|(c, _)| c);
    let by_category = compare(
        counts(now(), hotspots::category),
        counts(previous.iter(), hotspots::category),
    );
    let by_district = compare(counts(now(), district), counts(previous.iter(), district));
    let by_unit = compare(counts(now(), unit), counts(previous.iter(), unit));
    let (abstain_rate, correction_rate) = rates;
    hotspots.truncate(top);
    Digest {
        period,
        from: hotspots::rfc3339(bounds.0),
        to: hotspots::rfc3339(bounds.1),
        total: change(current.len(), previous.len()),
        by_category,
        by_district,
        by_unit,
        abstain_rate,
        correction_rate,
        hotspots,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hotspots::HotspotParams;

    #[test]
    fn periods_start_where_they_should() {
        let d = NaiveDate::from_ymd_opt(2019, 11, 13).unwrap(); // a Wednesday
        let ((from, to), (pfrom, pto)) = Period::Week.bounds(d, 8);
        assert_eq!(to - from, 7 * 86_400);
        assert_eq!(pto, from);
        assert_eq!(from - pfrom, 7 * 86_400);
        // Monday 2019-11-11 00:00 at UTC+8 is 2019-11-10 16:00 UTC.
        assert_eq!(hotspots::rfc3339(from).unwrap(), "2019-11-10T16:00:00Z");
        let ((from, to), (pfrom, _)) = Period::Month.bounds(d, 0);
        assert_eq!(hotspots::rfc3339(from).unwrap(), "2019-11-01T00:00:00Z");
        assert_eq!(hotspots::rfc3339(to).unwrap(), "2019-12-01T00:00:00Z");
        assert_eq!(hotspots::rfc3339(pfrom).unwrap(), "2019-10-01T00:00:00Z");
    }

    #[test]
    fn counts_compare_with_the_previous_period() {
        let case = |cat: &str, district: &str, label: Option<&str>, confidence: f32| Case {
            id: format!("{cat}{district}{confidence}"),
            text: "x".into(),
            district: Some(district.into()),
            label: label.map(str::to_string),
            predicted: Some(crate::Prediction {
                category: cat.into(),
                confidence,
                unit: None,
                classifier_version: "v".into(),
            }),
            ..Default::default()
        };
        let now = vec![
            (case("交通运输", "A1区", None, 0.9), vec![1.0]),
            (case("交通运输", "A2区", Some("城乡建设"), 0.4), vec![1.0]),
            (case("城乡建设", "A1区", Some("城乡建设"), 0.8), vec![1.0]),
        ];
        let before = vec![case("交通运输", "A1区", None, 0.9)];
        let refs: Vec<&Case> = now.iter().map(|(c, _)| c).collect();
        let rates = review_rates(&refs, Some(0.5));
        let d = digest(
            Period::Day,
            (0, 86_400),
            &now,
            &before,
            rates,
            hotspots::mine(&now, &HotspotParams::default()),
            5,
        );
        assert_eq!(
            d.total,
            Change {
                current: 3,
                previous: 1,
                change: Some(2.0)
            }
        );
        // Labels count as the category where there is one.
        assert_eq!(d.by_category["城乡建设"].current, 2);
        assert_eq!(
            d.by_category["交通运输"],
            Change {
                current: 1,
                previous: 1,
                change: Some(0.0)
            }
        );
        assert_eq!(d.by_district["A2区"].previous, 0);
        assert!((d.abstain_rate.unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert!((d.correction_rate.unwrap() - 0.5).abs() < 1e-9);
    }
}
