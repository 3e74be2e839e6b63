//! Open311 GeoReport v2 (https://wiki.open311.org/GeoReport_v2) so existing 311 tools can talk to
//! the service. Services are the taxonomy's top-level categories; a new request is triaged and
//! stored as a case. Extension fields (documented in the README) carry the triage detail:
//! `x_triage_categories`, `x_triage_abstain`, `x_triage_units`, `x_triage_duplicate_of`.
//! Errors use the GeoReport form `[{"code": …, "description": …}]`.

use super::audit::Context;
use super::error::ApiError;
use super::{AppState, Caller, RequestId};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use triage_core::pipeline::{Complaint, Pipeline};
use triage_core::{pii, text, Case, CaseFilter};

const SOURCE: &str = "open311";
/// Most requests a list query returns (the spec's default window is 90 days / 1000 requests).
const LIST_LIMIT: usize = 1000;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/open311/v2/services.json", get(services))
        .route(
            "/open311/v2/requests.json",
            post(create_request).get(list_requests),
        )
        .route("/open311/v2/requests/{id}", get(get_request))
}

/// An error in GeoReport's shape.
pub(super) struct GeoError(pub(super) ApiError);

impl From<ApiError> for GeoError {
    fn from(e: ApiError) -> Self {
        GeoError(e)
    }
}

impl IntoResponse for GeoError {
    fn into_response(self) -> Response {
        let body = json!([{"code": self.0.status.as_u16(), "description": self.0.message}]);
        (self.0.status, Json(body)).into_response()
    }
}

async fn services(State(state): State<Arc<AppState>>) -> Result<Json<Value>, GeoError> {
    let pipeline = state.pipeline()?;
    let services: Vec<Value> = pipeline
        .taxonomy()
        .categories
        .iter()
        .map(|c| {
            let keywords: Vec<&str> = c.children.iter().map(|k| k.name.as_str()).collect();
            json!({
                "service_code": c.id,
                "service_name": c.name,
                "description": c.description.clone().unwrap_or_else(|| c.profile()),
                "metadata": false,
                "type": "realtime",
                "keywords": keywords.join(","),
                "group": c.name_en.clone().unwrap_or_else(|| c.name.clone()),
            })
        })
        .collect();
    Ok(Json(Value::Array(services)))
}

/// The spec's POST fields (form-encoded). `service_code` may be omitted or `auto`: triage picks it.
#[derive(Debug, Deserialize)]
struct NewRequest {
    #[serde(default)]
    service_code: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    address_string: Option<String>,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    long: Option<f64>,
    #[serde(default)]
    media_url: Option<String>,
    // Personal fields are accepted as the spec requires, and never stored or returned.
    #[serde(default)]
    #[allow(dead_code)]
    email: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    phone: Option<String>,
}

/// The suggestion is recorded in the audit trail once the request is stored (its
/// `service_request_id` is the record's case id, `x_triage_request_id` its request id).
async fn create_request(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    Form(req): Form<NewRequest>,
) -> Result<Response, GeoError> {
    let pipeline = state.pipeline()?;
    let description = req.description.clone().unwrap_or_default();
    if description.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "description is required",
        )
        .into());
    }
    state.limits.check_text("description", &[&description])?;
    state.admit_audited()?;
    let requested = match req
        .service_code
        .as_deref()
        .filter(|c| !c.is_empty() && *c != "auto")
    {
        Some(code) => Some(
            pipeline
                .taxonomy()
                .resolve(code)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("unknown service_code {code:?}"),
                    )
                })?
                .id
                .clone(),
        ),
        None => None,
    };
    let text = match &req.address_string {
        Some(address) => format!("{address} {description}"),
        None => description.clone(),
    };
    let received = text.clone();
    let worker = pipeline.clone();
    let (suggestion, case) = state
        .run_model(move || {
            let complaint = Complaint {
                text: text.clone(),
                ..Default::default()
            };
            // The analysis's vector is the complaint's: the case is stored with it.
            let analysis = worker.analyze(&complaint)?;
            let suggestion = &analysis.suggestion;
            let now = chrono::Utc::now().timestamp();
            let service_code = requested
                .clone()
                .or_else(|| suggestion.categories.first().map(|c| c.id.clone()));
            let mut extra = serde_json::Map::new();
            extra.insert("source".into(), json!(SOURCE));
            extra.insert("status".into(), json!("open"));
            extra.insert("service_code".into(), json!(service_code));
            extra.insert(
                "agency_responsible".into(),
                json!(suggestion.units.first().map(|u| u.name.clone())),
            );
            extra.insert("address".into(), json!(req.address_string));
            extra.insert("lat".into(), json!(req.lat));
            extra.insert("long".into(), json!(req.long));
            extra.insert("media_url".into(), json!(req.media_url));
            let case = Case {
                id: format!("311-{}", &text::random_id()[..16]),
                text: triage_core::text::normalize(&text),
                // A code the client chose is a human label; one triage chose is only a prediction.
                label: requested.clone(),
                district: suggestion.district.clone(),
                time: Some(now),
                extra,
                ..Default::default()
            };
            worker.store_embedded(vec![(case.clone(), analysis.vector().to_vec())])?;
            Ok((analysis.suggestion, case))
        })
        .await?;
    let context = Context::new(&request_id, &caller, triage_core::audit::Route::Open311);
    state.audit_suggestion(&context, &pipeline, &suggestion, &received, Some(&case.id))?;
    let body = json!([{
        "service_request_id": case.id,
        "service_notice": if suggestion.abstain { "分类待人工确认 / category pending review" } else { "" },
        "account_id": null,
        "service_code": case.extra["service_code"],
        "agency_responsible": case.extra["agency_responsible"],
        "x_triage_categories": suggestion.categories,
        "x_triage_abstain": suggestion.abstain,
        "x_triage_units": suggestion.units,
        "x_triage_duplicate_of": suggestion.duplicate.map(|d| d.case_id),
        "x_triage_request_id": request_id.0,
    }]);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    service_request_id: Option<String>,
    #[serde(default)]
    service_code: Option<String>,
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default)]
    end_date: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

async fn list_requests(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, GeoError> {
    let pipeline = state.pipeline()?;
    let parse = |d: &Option<String>| -> Result<Option<i64>, ApiError> {
        d.as_deref()
            .map(|t| {
                triage_core::ingest::parse_time(t).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("unreadable date {t:?}"),
                    )
                })
            })
            .transpose()
    };
    let filter = CaseFilter {
        time_from: parse(&q.start_date)?,
        time_to: parse(&q.end_date)?,
        ..Default::default()
    };
    let ids: Option<Vec<String>> = q
        .service_request_id
        .as_ref()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let worker = pipeline.clone();
    let cases = state
        .run_model(move || {
            let mut found = Vec::new();
            match ids {
                Some(ids) => {
                    for id in ids {
                        found.extend(worker.case(&id)?);
                    }
                }
                None => {
                    for page in worker.cases(&filter, None, 500) {
                        found.extend(
                            page?
                                .cases
                                .into_iter()
                                .map(|(c, _)| c)
                                .filter(|c| c.extra.get("source") == Some(&json!(SOURCE))),
                        );
                        if found.len() >= LIST_LIMIT {
                            break;
                        }
                    }
                }
            }
            Ok(found)
        })
        .await?;
    let requests: Vec<Value> = cases
        .iter()
        .filter(|c| c.extra.get("source") == Some(&json!(SOURCE)))
        .filter(|c| {
            q.service_code
                .as_deref()
                .is_none_or(|code| c.extra.get("service_code") == Some(&json!(code)))
        })
        .filter(|c| {
            q.status
                .as_deref()
                .is_none_or(|s| c.extra.get("status") == Some(&json!(s)))
        })
        .take(LIST_LIMIT)
        .map(|c| request_json(&pipeline, c))
        .collect();
    Ok(Json(Value::Array(requests)))
}

async fn get_request(
    State(state): State<Arc<AppState>>,
    Path(file): Path<String>,
) -> Result<Json<Value>, GeoError> {
    let pipeline = state.pipeline()?;
    let Some(id) = file.strip_suffix(".json").map(str::to_string) else {
        return Err(ApiError::not_found("use /open311/v2/requests/{id}.json").into());
    };
    let worker = pipeline.clone();
    let lookup = id.clone();
    let case = state.run_model(move || Ok(worker.case(&lookup)?)).await?;
    match case.filter(|c| c.extra.get("source") == Some(&json!(SOURCE))) {
        Some(case) => Ok(Json(json!([request_json(&pipeline, &case)]))),
        None => Err(ApiError::not_found(format!("no service request {id:?}")).into()),
    }
}

/// A stored request in the spec's fields; the description is masked (no phone or ID numbers).
fn request_json(pipeline: &Pipeline, case: &Case) -> Value {
    let code = case
        .extra
        .get("service_code")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = pipeline
        .taxonomy()
        .resolve(code)
        .map_or(code, |c| c.name.as_str());
    let time = case
        .time
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| t.to_rfc3339());
    json!({
        "service_request_id": case.id,
        "status": case.extra.get("status").cloned().unwrap_or(json!("open")),
        "status_notes": null,
        "service_name": name,
        "service_code": code,
        "description": pii::mask(&case.text),
        "agency_responsible": case.extra.get("agency_responsible").cloned().unwrap_or(Value::Null),
        "service_notice": null,
        "requested_datetime": time,
        "updated_datetime": time,
        "expected_datetime": null,
        "address": case.extra.get("address").cloned().unwrap_or(Value::Null),
        "address_id": null,
        "zipcode": null,
        "lat": case.extra.get("lat").cloned().unwrap_or(Value::Null),
        "long": case.extra.get("long").cloned().unwrap_or(Value::Null),
        "media_url": case.extra.get("media_url").cloned().unwrap_or(Value::Null),
    })
}
