//! Route handlers. Model work goes through `AppState::run_model`; nothing here blocks the executor.

use super::error::ApiError;
use super::json::Json;
use super::AppState;
use axum::extract::{Path, State};
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
async fn health(State(state): Shared) -> Response {
    let pipeline = match state.pipeline() {
        Ok(pipeline) => pipeline,
        Err(e) => return e.into_response(),
    };
    match tokio::task::spawn_blocking(move || pipeline.health()).await {
        Ok(Ok(())) => Json(json!({"status": "ok"})).into_response(),
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
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[derive(Debug, Deserialize)]
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

async fn triage(State(state): Shared, Json(req): Json<TriageRequest>) -> AppResult<Json<Value>> {
    let pipeline = state.pipeline()?;
    let (complaint, with_draft) = req.complaint(&state)?;
    let suggestion = state
        .run_model(move || {
            pipeline
                .triage(&complaint, with_draft)
                .map_err(ApiError::from)
        })
        .await?;
    state.metrics.record_stages(&suggestion.timings_ms);
    Ok(Json(
        serde_json::to_value(suggestion).map_err(ApiError::internal)?,
    ))
}

/// Server-sent events: `suggestion` (routing, at once), then `token` events with the draft as it
/// is written, then `done` with the final draft (or `error`).
async fn triage_stream(
    State(state): Shared,
    Json(req): Json<TriageRequest>,
) -> AppResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let started = Instant::now();
    let pipeline = state.pipeline()?;
    let (complaint, with_draft) = req.complaint(&state)?;
    let analyzer = pipeline.clone();
    let analysis = state
        .run_model(move || analyzer.analyze(&complaint).map_err(ApiError::from))
        .await?;
    state.metrics.record_stages(&analysis.suggestion.timings_ms);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(256);
    let event = |name: &str, data: Value| Event::default().event(name).data(data.to_string());
    let _ = tx
        .send(event("suggestion", json!(analysis.suggestion)))
        .await;
    if with_draft && pipeline.can_draft() {
        let state = state.clone();
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
                    Ok((draft, drafted.elapsed().as_secs_f64() * 1e3))
                })
                .await;
            let last = match result {
                Ok((draft, ms)) => event("done", json!({"draft": draft, "draft_ms": ms})),
                Err(e) => event(
                    "error",
                    json!({"error": e.message, "error_type": e.error_type}),
                ),
            };
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
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
async fn feedback(
    State(state): Shared,
    Json(feedback): Json<Feedback>,
) -> AppResult<(StatusCode, Json<Value>)> {
    let pipeline = state.pipeline()?;
    state.limits.check_text("text", &[&feedback.text])?;
    let id = state
        .run_model(move || Ok(pipeline.record_feedback(feedback)?))
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))))
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
