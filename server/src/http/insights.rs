//! `GET /v1/hotspots`, `/v1/alerts` and `/v1/digest`: the pipeline's use cases over time
//! (`Pipeline::hotspots`, `alerts`, `digest`) over the stored cases, as JSON. Each answer is
//! bounded: a capped number of hotspots or alerts, at most `MAX_IDS` message ids per hotspot or
//! alert (`messages` keeps the total), and the work stops at the request's time limit (504 in the
//! shared error shape, and the worker is freed). Any API key may read them.

use super::error::ApiError;
use super::json::Json;
use super::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use triage_core::digest::Period;
use triage_core::hotspots::{AlertParams, Deadline, Hotspot, HotspotParams};
use triage_core::pipeline::{AlertRequest, CaseSource, DigestRequest, HotspotRequest, Scope};

type AppResult<T> = Result<T, ApiError>;
type Shared = State<Arc<AppState>>;

/// Message ids listed per hotspot or alert.
pub const MAX_IDS: usize = 200;
/// Most hotspots one answer lists.
pub const MAX_TOP: usize = 100;
/// Most alerts one answer lists.
pub const MAX_ALERTS: usize = 500;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/hotspots", get(hotspots))
        .route("/v1/alerts", get(alerts))
        .route("/v1/digest", get(digest))
}

/// The query string, with unknown or malformed parameters refused in the shared error shape.
fn query<T: DeserializeOwned>(q: Result<Query<T>, QueryRejection>) -> AppResult<T> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::unprocessable(e.body_text()))
}

fn in_range<T: PartialOrd + std::fmt::Display>(name: &str, v: T, lo: T, hi: T) -> AppResult<T> {
    if v < lo || v > hi {
        return Err(ApiError::unprocessable(format!(
            "{name} must be {lo} to {hi}"
        )));
    }
    Ok(v)
}

/// Work stops here: the request's own time limit from now.
fn deadline(state: &AppState) -> Deadline {
    Deadline::at(Instant::now() + state.limits.request_timeout)
}

fn cap_ids(hotspots: &mut [Hotspot]) {
    for h in hotspots {
        h.ids.truncate(MAX_IDS);
    }
}

/// Which stored cases (`from`, `to`: a date or an RFC 3339 time; a district; a category). Each
/// query below lists these fields itself: serde's `flatten` reads numbers from a query string as
/// text and cannot refuse unknown fields.
fn scope(
    from: Option<String>,
    to: Option<String>,
    district: Option<String>,
    category: Option<String>,
) -> AppResult<Scope> {
    Ok(Scope::parse(
        from.as_deref(),
        to.as_deref(),
        district,
        category,
    )?)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct HotspotQuery {
    from: Option<String>,
    to: Option<String>,
    district: Option<String>,
    category: Option<String>,
    /// Hotspots listed, ranked by heat (1 to `MAX_TOP`, default 10).
    top: Option<usize>,
}

/// The hotspots of the stored cases in a scope (`?from=&to=&district=&category=&top=`).
async fn hotspots(
    State(state): Shared,
    q: Result<Query<HotspotQuery>, QueryRejection>,
) -> AppResult<Json<Value>> {
    let q = query(q)?;
    let top = in_range("top", q.top.unwrap_or(10), 1, MAX_TOP)?;
    let scope = scope(q.from, q.to, q.district, q.category)?;
    let pipeline = state.pipeline()?;
    let deadline = deadline(&state);
    let mut report = state
        .run_model(move || {
            let request = HotspotRequest {
                top,
                ..Default::default()
            };
            Ok(pipeline.hotspots(CaseSource::Stored, &scope, &request, &deadline)?)
        })
        .await?;
    cap_ids(&mut report.hotspots);
    Ok(Json(json!(report)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertQuery {
    from: Option<String>,
    to: Option<String>,
    district: Option<String>,
    category: Option<String>,
    /// Alerts of the last this many days before the newest case (default 30, at most 365).
    recent_days: Option<f64>,
    /// Alerts listed, newest first (1 to `MAX_ALERTS`, default 50).
    limit: Option<usize>,
}

/// The early-warning alerts of the stored cases in a scope, replayed in time order: those that
/// fired in the last `recent_days`, newest first, each with its observed and expected counts.
async fn alerts(
    State(state): Shared,
    q: Result<Query<AlertQuery>, QueryRejection>,
) -> AppResult<Json<Value>> {
    let q = query(q)?;
    let limit = in_range("limit", q.limit.unwrap_or(50), 1, MAX_ALERTS)?;
    let mut alert = AlertParams::default();
    if let Some(days) = q.recent_days {
        alert.recent_days = in_range("recent_days", days, 1.0, 365.0)?;
    }
    let scope = scope(q.from, q.to, q.district, q.category)?;
    let pipeline = state.pipeline()?;
    let deadline = deadline(&state);
    let mut report = state
        .run_model(move || {
            let request = AlertRequest {
                alert,
                ..Default::default()
            };
            Ok(pipeline.alerts(CaseSource::Stored, &scope, &request, &deadline)?)
        })
        .await?;
    let total = report.alerts.len();
    report.alerts.truncate(limit);
    for a in &mut report.alerts {
        a.ids.truncate(MAX_IDS);
    }
    let mut body = json!(report);
    body["total"] = json!(total);
    Ok(Json(body))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DigestQuery {
    /// `day`, `week` or `month`.
    #[param(value_type = String)]
    period: Period,
    /// A date in the period (YYYY-MM-DD; default: today at the hotline's offset).
    date: Option<String>,
    /// The hotline's UTC offset in hours (default 8).
    utc_offset: Option<i32>,
    /// Hotspots listed (1 to `MAX_TOP`, default 10).
    top: Option<usize>,
}

/// The digest of a day, week or month of the stored cases against the period before
/// (`?period=day|week|month&date=YYYY-MM-DD`).
async fn digest(
    State(state): Shared,
    q: Result<Query<DigestQuery>, QueryRejection>,
) -> AppResult<Json<Value>> {
    let q = query(q)?;
    let utc_offset_hours = in_range("utc_offset", q.utc_offset.unwrap_or(8), -12, 14)?;
    let top = in_range("top", q.top.unwrap_or(10), 1, MAX_TOP)?;
    let date = match q.date.as_deref() {
        Some(d) => chrono::NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d")
            .map_err(|_| ApiError::unprocessable(format!("date must be YYYY-MM-DD, not {d:?}")))?,
        None => {
            let offset = chrono::FixedOffset::east_opt(utc_offset_hours * 3600)
                .ok_or_else(|| ApiError::unprocessable("utc_offset is out of range"))?;
            chrono::Utc::now().with_timezone(&offset).date_naive()
        }
    };
    let pipeline = state.pipeline()?;
    let deadline = deadline(&state);
    let request = DigestRequest {
        period: q.period,
        date,
        utc_offset_hours,
        top,
    };
    let mut report = state
        .run_model(move || {
            Ok(pipeline.digest(
                CaseSource::Stored,
                &request,
                HotspotParams::default(),
                &deadline,
            )?)
        })
        .await?;
    cap_ids(&mut report.digest.hotspots);
    Ok(Json(json!(report)))
}
