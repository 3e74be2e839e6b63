//! Route handlers. Model work goes through `AppState::run_model`; nothing here blocks the executor.

use super::audit::Context;
use super::error::ApiError;
use super::json::Json;
use super::{AppState, Caller, RequestId};
use axum::extract::{Extension, Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use triage_core::audit::{Choice, DecisionRecord, Route};
use triage_core::pipeline::{Complaint, Feedback};
use triage_core::{ingest, Case, CaseFilter};

type AppResult<T> = Result<T, ApiError>;
type Shared = State<Arc<AppState>>;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/v1/triage", post(triage))
        .route("/v1/triage/stream", post(triage_stream))
        .route("/v1/cases", post(create_cases))
        .route("/v1/cases/{id}", get(get_case).delete(delete_case))
        .route("/v1/search", post(search))
        .route("/v1/feedback", post(feedback))
        .route("/v1/taxonomy", get(taxonomy))
        .route("/v1/units", get(units))
}

async fn page() -> Html<&'static str> {
    Html(include_str!("../../assets/index.html"))
}

/// 200 once models, store and classifier are loaded and the store answers; 503 otherwise (a
/// Qdrant cluster that cannot be reached turns the service unhealthy, it does not crash it).
/// The audit trail's state is shown as `audit`; with `--audit-refuse-unaudited` a trail that
/// cannot take records makes the service unhealthy (it refuses suggestions), otherwise
/// `status` says `degraded`.
async fn health(State(state): Shared) -> Response {
    let pipeline = match state.pipeline() {
        Ok(pipeline) => pipeline,
        Err(e) => return e.into_response(),
    };
    match tokio::task::spawn_blocking(move || pipeline.health()).await {
        Ok(Ok(())) => match state.audit_health() {
            None => Json(json!({"status": "ok", "audit": null})).into_response(),
            Some(audit) if audit.healthy => {
                Json(json!({"status": "ok", "audit": audit})).into_response()
            }
            Some(audit) => match state.admit_audited() {
                Err(e) => e.into_response(),
                Ok(()) => Json(json!({"status": "degraded", "audit": audit})).into_response(),
            },
        },
        Ok(Err(e)) => {
            ApiError::not_ready(format!("the case store does not answer: {e}")).into_response()
        }
        Err(e) => ApiError::internal(e).into_response(),
    }
}

async fn info(State(state): Shared) -> AppResult<Json<Value>> {
    let mut info = state.info.clone();
    if let Ok(p) = state.pipeline() {
        let i = p.info();
        info["store"] = json!({"backend": i.store});
        info["embedder"] = json!({"model": i.embedder, "dim": i.dim});
        info["generator"] = json!(i.generator);
        info["classifier"] = json!(i.classifier);
    }
    info["ready"] = json!(state.pipeline.get().is_some());
    Ok(Json(info))
}

async fn metrics(State(state): Shared) -> impl IntoResponse {
    let mut text = state.metrics.render();
    super::metrics::render_audit(&mut text, state.audit_health().as_ref());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriageRequest {
    text: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    district: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD HH:MM:SS`; defaults to now.
    #[serde(default)]
    time: Option<String>,
    /// Write a reply draft (default true).
    #[serde(default = "yes")]
    draft: bool,
}

fn yes() -> bool {
    true
}

impl TriageRequest {
    fn complaint(self, state: &AppState) -> AppResult<(Complaint, bool)> {
        state.limits.check_text(
            "text",
            &[&self.text, self.title.as_deref().unwrap_or_default()],
        )?;
        let time = match self.time.as_deref() {
            None => None,
            Some(t) => Some(
                ingest::parse_time(t)
                    .ok_or_else(|| ApiError::unprocessable(format!("unreadable time {t:?}")))?,
            ),
        };
        Ok((
            Complaint {
                id: None,
                text: self.text,
                title: self.title,
                district: self.district,
                time,
            },
            self.draft,
        ))
    }
}

/// The suggestion, with the `request_id` that `/v1/feedback` takes back as
/// `suggestion_request_id` (and that its audit record carries).
async fn triage(
    State(state): Shared,
    Extension(request_id): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<TriageRequest>,
) -> AppResult<Json<Triaged>> {
    let pipeline = state.pipeline()?;
    let (complaint, with_draft) = req.complaint(&state)?;
    state.admit_audited()?;
    let worker = pipeline.clone();
    let (suggestion, complaint) = state
        .run_model(move || {
            let suggestion = worker
                .triage(&complaint, with_draft)
                .map_err(ApiError::from)?;
            Ok((suggestion, complaint))
        })
        .await?;
    state.metrics.record_stages(&suggestion.timings_ms);
    let context = Context::new(&request_id, &caller, Route::Triage);
    state.audit_suggestion(
        &context,
        &pipeline,
        &suggestion,
        &complaint_text(&complaint),
        None,
    )?;
    Ok(Json(Triaged {
        request_id: request_id.0,
        suggestion,
    }))
}

/// A suggestion as `/v1/triage` answers it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Triaged {
    /// This request's id: send it back as `suggestion_request_id` with the call-taker's
    /// decision (`/v1/feedback`), so the audit trail joins the two.
    request_id: String,
    #[serde(flatten)]
    suggestion: triage_core::pipeline::Suggestion,
}

/// The complaint as received (title and text), for its audit record.
fn complaint_text(complaint: &Complaint) -> String {
    match &complaint.title {
        Some(title) => format!("{title}\n{}", complaint.text),
        None => complaint.text.clone(),
    }
}

/// Server-sent events: `suggestion` (routing and the work order, at once), then `token` events
/// with the checked draft as it becomes final, then `done` with the final draft and what the
/// faithfulness guard changed in it (`draft_checks`), or `error`.
///
/// The audit record is written once the draft is done (so it carries the draft's hash), or at
/// once when no draft is written. With `--audit-refuse-unaudited`, a record the trail refuses
/// at that point turns `done` into an `error` event: the draft is not to be used.
async fn triage_stream(
    State(state): Shared,
    Extension(request_id): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<TriageRequest>,
) -> AppResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let started = Instant::now();
    let pipeline = state.pipeline()?;
    let (complaint, with_draft) = req.complaint(&state)?;
    state.admit_audited()?;
    let text = complaint_text(&complaint);
    let analyzer = pipeline.clone();
    let analysis = state
        .run_model(move || analyzer.analyze(&complaint).map_err(ApiError::from))
        .await?;
    state.metrics.record_stages(&analysis.suggestion.timings_ms);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(256);
    let event = |name: &str, data: Value| Event::default().event(name).data(data.to_string());
    let mut first = json!(analysis.suggestion);
    first["request_id"] = json!(request_id.0);
    if !(with_draft && pipeline.can_draft()) {
        // Nothing more will be served: recorded (or refused) before anything is sent.
        let context = Context::new(&request_id, &caller, Route::TriageStream);
        state.audit_suggestion(&context, &pipeline, &analysis.suggestion, &text, None)?;
    }
    let _ = tx.send(event("suggestion", first)).await;
    if with_draft && pipeline.can_draft() {
        let state = state.clone();
        let mut served = analysis.suggestion.clone();
        let recorder = pipeline.clone();
        tokio::spawn(async move {
            let sender = tx.clone();
            let metrics_state = state.clone();
            let result = state
                .run_model(move || {
                    let drafted = Instant::now();
                    let mut first = true;
                    let draft = pipeline.draft(&analysis, &mut |piece| {
                        if first {
                            metrics_state
                                .metrics
                                .record_first_token(started.elapsed().as_secs_f64());
                            first = false;
                        }
                        // A closed channel means the client left: stop generating.
                        sender
                            .blocking_send(event("token", json!({"text": piece})))
                            .is_ok()
                    })?;
                    let ms = drafted.elapsed().as_secs_f64() * 1e3;
                    Ok((draft, ms))
                })
                .await;
            // The suggestion was served with the first event: it is recorded whether or not the
            // draft could be written.
            let (mut last, draft) = match result {
                Ok((draft, ms)) => (
                    event(
                        "done",
                        json!({"draft": draft.text, "draft_checks": draft.checks, "draft_ms": ms}),
                    ),
                    Some(draft),
                ),
                Err(e) => (
                    event(
                        "error",
                        json!({"error": e.message, "error_type": e.error_type}),
                    ),
                    None,
                ),
            };
            if let Some(draft) = draft {
                served.draft = Some(draft.text);
                served.draft_checks = draft.checks;
            }
            let context = Context::new(&request_id, &caller, Route::TriageStream);
            if let Err(e) = state.audit_suggestion(&context, &recorder, &served, &text, None) {
                last = event(
                    "error",
                    json!({"error": e.message, "error_type": e.error_type}),
                );
            }
            let _ = tx.send(last).await;
        });
    } else {
        let _ = tx.send(event("done", json!({"draft": null}))).await;
    }
    Ok(Sse::new(ReceiverStream::new(rx).map(Ok)).keep_alive(KeepAlive::default()))
}

/// One case object or an array of them (the JSONL fields); embedded and stored.
async fn create_cases(
    State(state): Shared,
    Json(body): Json<Value>,
) -> AppResult<(StatusCode, Json<Value>)> {
    let pipeline = state.pipeline()?;
    let items = match body {
        Value::Array(items) => items,
        one => vec![one],
    };
    if items.is_empty() || items.len() > 1000 {
        return Err(ApiError::unprocessable("send 1 to 1000 cases"));
    }
    let mut cases = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(ApiError::unprocessable(format!(
                "item {i}: expected a JSON object"
            )));
        };
        cases.push(
            ingest::case_from_map(map)
                .map_err(|e| ApiError::unprocessable(format!("item {i}: {e}")))?,
        );
    }
    let ids: Vec<String> = cases.iter().map(|c| c.id.clone()).collect();
    state
        .run_model(move || Ok(pipeline.store_cases(cases)?))
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"ids": ids}))))
}

async fn get_case(State(state): Shared, Path(id): Path<String>) -> AppResult<Json<Case>> {
    let pipeline = state.pipeline()?;
    let found = state
        .run_model(move || Ok((pipeline.case(&id)?, id)))
        .await?;
    match found {
        (Some(case), _) => Ok(Json(case)),
        (None, id) => Err(ApiError::not_found(format!("no case with id {id:?}"))),
    }
}

async fn delete_case(State(state): Shared, Path(id): Path<String>) -> AppResult<StatusCode> {
    let pipeline = state.pipeline()?;
    let (deleted, id) = state
        .run_model(move || Ok((pipeline.delete_case(&id)?, id)))
        .await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no case with id {id:?}")))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchRequest {
    text: String,
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default)]
    filter: CaseFilter,
}

fn default_k() -> usize {
    10
}

async fn search(State(state): Shared, Json(req): Json<SearchRequest>) -> AppResult<Json<Value>> {
    let pipeline = state.pipeline()?;
    state.limits.check_text("text", &[&req.text])?;
    if req.k == 0 || req.k > 100 {
        return Err(ApiError::unprocessable("k must be 1 to 100"));
    }
    let hits = state
        .run_model(move || Ok(pipeline.search(&req.text, req.k, &req.filter)?))
        .await?;
    Ok(Json(json!({"results": hits})))
}

/// Stores the call-taker's decision as a labeled case (`Pipeline::record_feedback`): it is found
/// by the next similar-case search at once and used by the next `triage train`.
///
/// The decision goes into the audit trail beside the suggestion it names
/// (`suggestion_request_id`, the `request_id` of a triage answer): accepted or corrected, for
/// the category and, when both are given, the unit.
async fn feedback(
    State(state): Shared,
    Extension(request_id): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    Json(feedback): Json<Feedback>,
) -> AppResult<(StatusCode, Json<Value>)> {
    let pipeline = state.pipeline()?;
    state.limits.check_text("text", &[&feedback.text])?;
    state.admit_audited()?;
    let worker = pipeline.clone();
    let received = feedback.clone();
    let id = state
        .run_model(move || Ok(worker.record_feedback(feedback)?))
        .await?;
    // Ids, not names: a category or unit renamed later keeps its figures.
    let category = |label: &str| pipeline.category_id(label).unwrap_or_else(|| label.into());
    let unit = |u: &str| {
        pipeline
            .units()
            .resolve(u)
            .map_or_else(|| u.into(), |u| u.id.clone())
    };
    let decision = DecisionRecord {
        suggestion_request_id: received.suggestion_request_id.clone(),
        category: Choice::new(
            category(&received.category),
            received.suggested_category.as_deref().map(category),
        ),
        unit: received
            .unit
            .as_deref()
            .map(|u| Choice::new(unit(u), received.suggested_unit.as_deref().map(unit))),
    };
    let text = match &received.title {
        Some(title) => format!("{title}\n{}", received.text),
        None => received.text.clone(),
    };
    let context = Context::new(&request_id, &caller, Route::Feedback);
    state.audit_decision(
        &context,
        &pipeline,
        decision,
        &text,
        &id,
        received.district.as_deref(),
    )?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "request_id": request_id.0})),
    ))
}

async fn taxonomy(State(state): Shared) -> AppResult<Json<Value>> {
    Ok(Json(json!(state.pipeline()?.taxonomy())))
}

/// Configured and learned units, each with its `source` and the history it has (`cases`,
/// `case_categories`, `case_districts`), and the districts of the directory.
async fn units(State(state): Shared) -> AppResult<Json<Value>> {
    let p = state.pipeline()?;
    let router = p.router();
    Ok(Json(json!({
        "districts": p.units().districts,
        "units": router.units(),
        "routing": router.fit(),
    })))
}
