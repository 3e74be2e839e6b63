//! `GET /openapi.json`: the OpenAPI 3.1 document of `/v1/*`, so integrators need not read Rust.
//!
//! The schemas are derived (utoipa) from the types the handlers really read and write: the
//! request structs of `routes`, `jobs` and `audit`, and core's `Suggestion`, `Case`, `Feedback`,
//! `CaseFilter`, … (their derive sits behind core's `openapi` feature). The operations are
//! listed here, one stub per route, rather than on the handlers, so the route files stay as
//! they are; `openapi_matches_the_router` in the tests checks this list against the routes the
//! router really has, both ways.

use super::audit::ReportQuery;
use super::insights::{AlertQuery, DigestQuery, HotspotQuery};
use super::jobs::{JobRequest, JobState, JobStatus};
use super::routes::{SearchRequest, TriageRequest, Triaged};
use super::AppState;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use std::sync::Arc;
use triage_core::pipeline::{CategoryScore, Duplicate, Feedback, SimilarCase, Suggestion};
use triage_core::units::UnitSuggestion;
use triage_core::{Case, CaseFilter, Prediction};
use utoipa::{OpenApi, ToSchema};

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/openapi.json", get(document))
}

async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// The body of every error on `/v1/*` (Open311 keeps GeoReport's `[{code, description}]`).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    error: String,
    /// For a program: bad_request, validation, unauthorized, forbidden, not_found,
    /// method_not_allowed, conflict, too_large, unsupported_media_type, overloaded (429, with
    /// Retry-After), not_ready, store_unavailable, timeout, internal.
    error_type: String,
}

#[derive(Serialize, ToSchema)]
struct Ids {
    ids: Vec<String>,
}

#[derive(Serialize, ToSchema)]
struct SearchResults {
    results: Vec<SimilarCase>,
}

#[derive(Serialize, ToSchema)]
struct FeedbackStored {
    /// The case the decision was stored as.
    id: String,
    /// This request's id (its audit record's).
    request_id: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hotline Triage",
        description = "Routing suggestions for city complaint hotlines. Every answer carries an \
                       x-request-id header; with API keys configured, send Authorization: \
                       Bearer KEY. Open311 GeoReport v2 lives under /open311/v2 (its own spec)."
    ),
    paths(
        triage,
        triage_stream,
        create_cases,
        get_case,
        delete_case,
        search,
        feedback,
        taxonomy,
        units,
        create_job,
        list_jobs,
        job_status,
        job_output,
        audit_report,
        hotspots,
        alerts,
        digest
    ),
    components(schemas(
        ErrorBody,
        TriageRequest,
        Triaged,
        Suggestion,
        CategoryScore,
        SimilarCase,
        Duplicate,
        UnitSuggestion,
        Case,
        Prediction,
        CaseFilter,
        SearchRequest,
        SearchResults,
        Feedback,
        FeedbackStored,
        Ids,
        JobRequest,
        JobStatus,
        JobState
    ))
)]
pub struct ApiDoc;

/// One complaint: categories, units, similar cases, duplicate flag, and a reply draft unless
/// `draft` is false.
#[utoipa::path(post, path = "/v1/triage", tag = "triage", request_body = TriageRequest,
    responses(
        (status = 200, description = "The suggestion and its request_id", body = Triaged),
        (status = 422, description = "Text empty or over the limit", body = ErrorBody),
        (status = 429, description = "At capacity: retry after Retry-After", body = ErrorBody),
        (status = 503, description = "Loading, store down, or (with --audit-refuse-unaudited) the audit trail cannot record", body = ErrorBody),
    ))]
#[allow(dead_code)]
fn triage() {}

/// The same as server-sent events: `suggestion` (with request_id) at once, `token` events as
/// the draft is written, then `done` (`{draft, draft_ms}`) or `error`.
#[utoipa::path(post, path = "/v1/triage/stream", tag = "triage", request_body = TriageRequest,
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
#[allow(dead_code)]
fn triage_stream() {}

/// Stores past cases (one object or an array of up to 1000), embedded at once.
#[utoipa::path(post, path = "/v1/cases", tag = "cases", request_body = Vec<Case>,
    responses((status = 201, body = Ids), (status = 422, body = ErrorBody)))]
#[allow(dead_code)]
fn create_cases() {}

#[utoipa::path(get, path = "/v1/cases/{id}", tag = "cases",
    params(("id" = String, Path, description = "Case id")),
    responses((status = 200, body = Case), (status = 404, body = ErrorBody)))]
#[allow(dead_code)]
fn get_case() {}

/// Admin only.
#[utoipa::path(delete, path = "/v1/cases/{id}", tag = "cases",
    params(("id" = String, Path, description = "Case id")),
    responses((status = 204, description = "Deleted"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[allow(dead_code)]
fn delete_case() {}

/// Similar stored cases for a free text, with filters.
#[utoipa::path(post, path = "/v1/search", tag = "cases", request_body = SearchRequest,
    responses((status = 200, body = SearchResults), (status = 422, body = ErrorBody)))]
#[allow(dead_code)]
fn search() {}

/// A call-taker's decision: stored as a labeled case and recorded in the audit trail beside the
/// suggestion named by `suggestion_request_id`.
#[utoipa::path(post, path = "/v1/feedback", tag = "triage", request_body = Feedback,
    responses((status = 201, body = FeedbackStored), (status = 422, description = "Unknown category or unit", body = ErrorBody)))]
#[allow(dead_code)]
fn feedback() {}

/// The configured categories (ids, names, levels).
#[utoipa::path(get, path = "/v1/taxonomy", tag = "directory",
    responses((status = 200, body = Object)))]
#[allow(dead_code)]
fn taxonomy() {}

/// The configured units and districts.
#[utoipa::path(get, path = "/v1/units", tag = "directory",
    responses((status = 200, body = Object)))]
#[allow(dead_code)]
fn units() {}

/// Admin only. A JSONL upload (`Content-Type: application/x-ndjson`, options as query flags
/// `fast`, `draft`, `write_back`, `dry_run`) or a JSON body naming `from_store`.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body(content(
        (JobRequest = "application/json"),
        (String = "application/x-ndjson"),
    )),
    responses((status = 202, body = JobStatus), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
#[allow(dead_code)]
fn create_job() {}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    responses((status = 200, body = Vec<JobStatus>)))]
#[allow(dead_code)]
fn list_jobs() {}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobStatus), (status = 404, body = ErrorBody)))]
#[allow(dead_code)]
fn job_status() {}

/// One JSON line per input line, complete once the job is done.
#[utoipa::path(get, path = "/v1/jobs/{id}/output", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, content_type = "application/x-ndjson", body = String), (status = 404, body = ErrorBody)))]
#[allow(dead_code)]
fn job_output() {}

/// Admin only. Acceptance and correction rates per category, unit, district and model version
/// from the audit trail (`triage audit report` gives the same).
#[utoipa::path(get, path = "/v1/audit/report", tag = "audit", params(ReportQuery),
    responses(
        (status = 200, description = "JSON, or Markdown with format=markdown", body = Object),
        (status = 403, body = ErrorBody),
        (status = 404, description = "The server keeps no audit trail", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
#[allow(dead_code)]
fn audit_report() {}

/// The hotspots (每月一题) of the stored cases in a scope, ranked by heat.
#[utoipa::path(get, path = "/v1/hotspots", tag = "insights", params(HotspotQuery),
    responses(
        (status = 200, description = "hotspots.json's fields", body = Object),
        (status = 422, body = ErrorBody),
        (status = 504, description = "Mining passed the request's time limit", body = ErrorBody),
    ))]
#[allow(dead_code)]
fn hotspots() {}

/// Early-warning alerts (未诉先办) of the stored cases in a scope, newest first.
#[utoipa::path(get, path = "/v1/alerts", tag = "insights", params(AlertQuery),
    responses(
        (status = 200, description = "The alerts, each with observed and expected counts, and their total", body = Object),
        (status = 422, body = ErrorBody),
        (status = 504, body = ErrorBody),
    ))]
#[allow(dead_code)]
fn alerts() {}

/// The digest of a day, week or month against the period before (日通报、周汇总、月分析).
#[utoipa::path(get, path = "/v1/digest", tag = "insights", params(DigestQuery),
    responses(
        (status = 200, description = "digest.json's fields", body = Object),
        (status = 422, body = ErrorBody),
        (status = 504, body = ErrorBody),
    ))]
#[allow(dead_code)]
fn digest() {}
