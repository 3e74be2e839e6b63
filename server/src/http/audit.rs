//! The service's side of the audit trail (`triage_core::audit`): one record per suggestion served
//! and per decision received, and `GET /v1/audit/report` (admin).
//!
//! Handlers call [`AppState::admit_audited`] before model work (with `--audit-refuse-unaudited`
//! a log that cannot take records turns a suggestion into a 503 before anything is computed),
//! and [`AppState::audit`] once the answer is known. An append only queues the record (the
//! writer thread masks, chains, writes and syncs it), so a request never waits for the disk.

use super::error::ApiError;
use super::json::Json;
use super::{AppState, Caller, RequestId};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::sync::Arc;
use triage_core::audit::{
    AuditHealth, DecisionRecord, Event, Models, Record, Route, SuggestionRecord,
};
use triage_core::pipeline::{Pipeline, Suggestion};

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/audit/report", get(report))
}

/// What a record says about the request it came from.
pub struct Context<'a> {
    pub request_id: &'a str,
    pub caller: &'a Caller,
    pub route: Route,
}

impl<'a> Context<'a> {
    pub fn new(request_id: &'a RequestId, caller: &'a Caller, route: Route) -> Self {
        Self {
            request_id: &request_id.0,
            caller,
            route,
        }
    }
}

/// The models behind a suggestion: the generator only when a draft was written.
pub fn models(pipeline: &Pipeline, classifier_version: &str, drafted: bool) -> Models {
    let info = pipeline.info();
    Models {
        embedder: info.embedder,
        generator: info.generator.filter(|_| drafted),
        classifier_version: classifier_version.to_string(),
    }
}

impl AppState {
    /// Whether a suggestion may be served now: always, unless `--audit-refuse-unaudited` is set
    /// and the audit trail cannot take records (503 naming why).
    pub fn admit_audited(&self) -> Result<(), ApiError> {
        match &self.audit {
            Some(log) => log.admit().map_err(|e| {
                ApiError::not_ready(format!(
                    "refusing to serve unaudited suggestions: {}",
                    core_message(e)
                ))
            }),
            None => Ok(()),
        }
    }

    /// Queues one audit record. An append the log refuses (its queue full, its disk failing) is
    /// counted by the log and shown on `/health` and `/metrics`; with
    /// `--audit-refuse-unaudited` it is a 503, so the answer it belonged to is not served.
    pub fn audit(&self, record: Record) -> Result<(), ApiError> {
        let Some(log) = &self.audit else {
            return Ok(());
        };
        match log.append(record) {
            Ok(()) => Ok(()),
            Err(e) if log.settings().refuse_unaudited => Err(ApiError::not_ready(format!(
                "refusing to serve an unaudited suggestion: {}",
                core_message(e)
            ))),
            Err(e) => {
                tracing::warn!("served without an audit record: {e}");
                Ok(())
            }
        }
    }

    /// The record of a suggestion served: `text` is the complaint as received (masked or
    /// hashed by the log, never written as is).
    pub fn audit_suggestion(
        &self,
        context: &Context,
        pipeline: &Pipeline,
        suggestion: &Suggestion,
        text: &str,
        case_id: Option<&str>,
    ) -> Result<(), ApiError> {
        if self.audit.is_none() {
            return Ok(());
        }
        let drafted = suggestion.draft.is_some();
        let record = Record::new(
            context.request_id,
            context.route,
            models(pipeline, &suggestion.classifier_version, drafted),
            Event::Suggestion(SuggestionRecord::from_suggestion(suggestion, None)),
        )
        .with_key_name(context.caller.key_name.as_deref())
        .with_case_id(case_id)
        .with_district(suggestion.district.as_deref())
        .with_text(text);
        self.audit(record)
    }

    /// The record of a call-taker's decision.
    pub fn audit_decision(
        &self,
        context: &Context,
        pipeline: &Pipeline,
        decision: DecisionRecord,
        text: &str,
        case_id: &str,
        district: Option<&str>,
    ) -> Result<(), ApiError> {
        if self.audit.is_none() {
            return Ok(());
        }
        let version = pipeline
            .classifier()
            .map(|c| c.version.clone())
            .unwrap_or_default();
        let record = Record::new(
            context.request_id,
            context.route,
            models(pipeline, &version, false),
            Event::Decision(decision),
        )
        .with_key_name(context.caller.key_name.as_deref())
        .with_case_id(Some(case_id))
        .with_district(district)
        .with_text(text);
        self.audit(record)
    }

    /// The audit trail's state for `/health` and `/metrics` (None with `--no-audit`).
    pub fn audit_health(&self) -> Option<AuditHealth> {
        self.audit.as_ref().map(|log| log.health())
    }
}

/// A core error's message without its kind's prefix ("not ready: …").
fn core_message(e: triage_core::Error) -> String {
    match e {
        triage_core::Error::NotReady(m) | triage_core::Error::InvalidInput(m) => m,
        other => other.to_string(),
    }
}

/// `from` and `to`: a day (`YYYY-MM-DD`, UTC; `to` includes its day) or an RFC 3339 instant.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    from: String,
    to: String,
    /// `json` (default) or `markdown`.
    #[serde(default)]
    format: Option<String>,
}

/// `GET /v1/audit/report?from=2025-03-01&to=2025-03-31[&format=markdown]` (admin): acceptance
/// and correction rates per category, unit, district and model version, as `triage audit
/// report` gives them.
async fn report(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let Some(log) = &state.audit else {
        return Err(ApiError::not_found(
            "this server keeps no audit trail (it runs with --no-audit)",
        ));
    };
    let when = |field: &str, value: &str| {
        value
            .parse::<crate::commands::audit::When>()
            .map_err(|e| ApiError::unprocessable(format!("{field}: {e}")))
    };
    let (from, to) = (
        when("from", &query.from)?.start(),
        when("to", &query.to)?.end(),
    );
    if to <= from {
        return Err(ApiError::unprocessable(format!(
            "to ({to}) must be after from ({from})"
        )));
    }
    let markdown = match query.format.as_deref() {
        None | Some("json") => false,
        Some("markdown" | "md") => true,
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "format {other:?}: json or markdown"
            )))
        }
    };
    let dir = log
        .dir()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| log.dir().to_path_buf());
    let report = tokio::task::spawn_blocking(move || triage_core::audit::report(&dir, from, to))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)?;
    if markdown {
        Ok((
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            report.to_markdown(),
        )
            .into_response())
    } else {
        Ok(Json(report).into_response())
    }
}
