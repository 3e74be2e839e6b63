//! The HTTP service: `app(state)` builds the router that `triage serve` and the tests share.

pub mod audit;
pub mod error;
mod insights;
pub mod jobs;
pub mod json;
pub mod metrics;
mod open311;
mod openapi;
mod routes;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use error::ApiError;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use triage_core::pipeline::Pipeline;

/// Who a key belongs to. Call-takers triage and give feedback; admins may also delete and run jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    CallTaker,
    Admin,
}

/// A configured API key: its role, and the name the audit trail records (never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub role: Role,
    pub name: String,
}

/// API key → its role and name.
pub type Keys = HashMap<String, ApiKey>;

/// The id of one request: in the `x-request-id` header of every answer, in the body of every
/// suggestion, and in its audit record.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Who sent a request: the name of its API key (none without keys).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub key_name: Option<String>,
}

/// Limits of the service; see `triage serve --help`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_text_chars: usize,
    /// Model jobs running at once (threads doing embedding/generation).
    pub workers: usize,
    /// Model jobs admitted at once, running or waiting; beyond it requests get 429.
    pub queue_depth: usize,
    pub request_timeout: Duration,
    /// Batch jobs running at once (more wait in line).
    pub max_jobs: usize,
    /// Largest JSONL upload to `POST /v1/jobs`.
    pub max_upload_bytes: usize,
}

impl Limits {
    /// A complaint's text (its parts together, e.g. title and body) must be 1 to
    /// `max_text_chars` characters: 422 naming the limit otherwise.
    pub fn check_text(&self, field: &str, parts: &[&str]) -> Result<(), ApiError> {
        let chars: usize = parts.iter().map(|p| p.chars().count()).sum();
        if chars > self.max_text_chars {
            return Err(ApiError::unprocessable(format!(
                "{field} is {chars} characters; the limit is {}",
                self.max_text_chars
            )));
        }
        if parts.iter().all(|p| p.trim().is_empty()) {
            return Err(ApiError::unprocessable(format!("{field} is empty")));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            max_text_chars: 5_000,
            workers: 8,
            queue_depth: 32,
            request_timeout: Duration::from_secs(60),
            max_jobs: 1,
            max_upload_bytes: 64 << 20,
        }
    }
}

pub struct AppState {
    /// Set once models, store and classifier are loaded; `/health` is 503 until then.
    pub pipeline: OnceLock<Arc<Pipeline>>,
    /// Why loading failed, for `/health` and `/info`.
    pub load_error: std::sync::Mutex<Option<String>>,
    /// API key → role and name. Empty: no authentication (loopback only).
    pub keys: Keys,
    pub limits: Limits,
    pub metrics: metrics::Metrics,
    pub info: serde_json::Value,
    pub jobs: jobs::Jobs,
    /// Set on shutdown: batch jobs stop at their next chunk boundary (and resume on restart).
    pub stopping: std::sync::atomic::AtomicBool,
    /// The audit trail of suggestions and decisions; None with `--no-audit`.
    pub audit: Option<triage_core::audit::AuditLog>,
    admitted: Semaphore,
    workers: Semaphore,
}

impl AppState {
    /// `jobs_dir` holds the batch jobs (`DATA_DIR/jobs`). No audit trail (the handler tests').
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn new(
        keys: Keys,
        limits: Limits,
        info: serde_json::Value,
        jobs_dir: std::path::PathBuf,
    ) -> Arc<Self> {
        Self::with_audit(keys, limits, info, jobs_dir, None)
    }

    /// `new`, with the audit trail every suggestion and decision is recorded in.
    pub fn with_audit(
        keys: Keys,
        limits: Limits,
        info: serde_json::Value,
        jobs_dir: std::path::PathBuf,
        audit: Option<triage_core::audit::AuditLog>,
    ) -> Arc<Self> {
        Arc::new(Self {
            audit,
            jobs: jobs::Jobs::new(jobs_dir, limits.max_jobs),
            stopping: std::sync::atomic::AtomicBool::new(false),
            pipeline: OnceLock::new(),
            load_error: std::sync::Mutex::new(None),
            keys,
            admitted: Semaphore::new(limits.queue_depth.max(1)),
            workers: Semaphore::new(limits.workers.max(1)),
            limits,
            metrics: metrics::Metrics::default(),
            info,
        })
    }

    pub fn pipeline(&self) -> Result<Arc<Pipeline>, ApiError> {
        self.pipeline.get().cloned().ok_or_else(|| {
            match self.load_error.lock().expect("load error").as_deref() {
                Some(e) => ApiError::not_ready(format!("models or store failed to load: {e}")),
                None => ApiError::not_ready("models and store are still loading"),
            }
        })
    }

    /// Runs model work on a blocking thread, at most `workers` at once and `queue_depth` admitted;
    /// when the queue is full the request is shed with 429 instead of waiting forever.
    pub async fn run_model<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        let Ok(_admitted) = self.admitted.try_acquire() else {
            self.metrics.shed.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::overloaded());
        };
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        let worker = self.workers.acquire().await;
        self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        let _worker = worker.map_err(ApiError::internal)?;
        self.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = tokio::task::spawn_blocking(work).await;
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        result.map_err(ApiError::internal)?
    }
}

pub fn app(state: Arc<AppState>) -> Router {
    use axum::extract::DefaultBodyLimit;
    use tower_http::limit::RequestBodyLimitLayer;
    let upload = state.limits.max_upload_bytes;
    // Job uploads are files; everything else is one complaint or a page of cases.
    let jobs = jobs::router()
        .layer(DefaultBodyLimit::max(upload))
        .layer(RequestBodyLimitLayer::new(upload));
    routes::router()
        .merge(open311::router())
        .merge(audit::router())
        .merge(openapi::router())
        .merge(insights::router())
        .layer(RequestBodyLimitLayer::new(state.limits.max_body_bytes))
        .merge(jobs)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(error_shape))
        .with_state(state)
}

/// Every error in the service's one shape, whatever produced it: axum's and tower's own
/// rejections (a body over the limit, a wrong content type, an unknown route or method) answer
/// in plain text, and are rewritten here: `{"error", "error_type"}`, or GeoReport's form on the
/// Open311 routes. Headers such as `Allow` and `Retry-After` are kept.
async fn error_shape(req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    let open311 = req.uri().path().starts_with("/open311/");
    let response = next.run(req).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || (json && !open311) {
        return response;
    }
    let (parts, body) = response.into_parts();
    if json {
        // An Open311 answer in the service's own shape (from the key check, which knows no
        // routes): GeoReport's instead.
        let bytes = axum::body::to_bytes(body, 64 * 1024)
            .await
            .unwrap_or_default();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let Some(message) = value.get("error").and_then(|m| m.as_str()) else {
            return Response::from_parts(parts, axum::body::Body::from(bytes));
        };
        let mut shaped = open311::GeoError(ApiError::from_status(status, message)).into_response();
        for (name, value) in &parts.headers {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                shaped.headers_mut().insert(name.clone(), value.clone());
            }
        }
        return shaped;
    }
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match text.as_str() {
        "" => status.canonical_reason().unwrap_or("error").to_string(),
        _ => text,
    };
    let error = ApiError::from_status(status, message);
    let mut shaped = if open311 {
        open311::GeoError(error).into_response()
    } else {
        error.into_response()
    };
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    shaped
}

/// Counts and times every request by its route pattern (never by its path: ids are unbounded).
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let started = Instant::now();
    let timeout = state.limits.request_timeout;
    let mut req = req;
    let request_id = format!("req-{}", &triage_core::text::random_id()[..20]);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let mut response = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::timeout()),
    };
    if let Ok(value) = header::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status().as_u16();
    state
        .metrics
        .record_request(&route, status, started.elapsed().as_secs_f64());
    tracing::info!(
        route,
        status,
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// Bearer-key check when keys are configured; admin-only operations need the admin role.
async fn authorize(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = req.uri().path();
    let public = matches!(path, "/health" | "/" | "/openapi.json") || path.starts_with("/assets/");
    if state.keys.is_empty() || public {
        req.extensions_mut().insert(Caller::default());
        return Ok(next.run(req).await);
    }
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|key| state.keys.get(key.trim()))
        .ok_or_else(ApiError::unauthorized)?;
    let admin_only = (req.method() == Method::DELETE && path.starts_with("/v1/cases/"))
        || (req.method() == Method::POST && path == "/v1/jobs")
        || path.starts_with("/v1/audit/");
    if admin_only && key.role != Role::Admin {
        return Err(ApiError::forbidden());
    }
    let caller = Caller {
        key_name: Some(key.name.clone()),
    };
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// Reads `ROLE:NAME:KEY` or `ROLE:KEY` entries (one per line in a file, or comma-separated in an
/// env variable). The name is what the audit trail records for the key's requests (a person or
/// a desk: letters, digits, `.`, `_`, `-`, `@`); a key without one is named by its role and the
/// first 8 hex digits of its SHA-256 (`admin-3f2a…`), which names it without revealing it. With
/// three fields the middle one is the name, so a key containing `:` needs a name.
pub fn parse_keys(text: &str) -> anyhow::Result<Keys> {
    let mut keys = HashMap::new();
    for entry in text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.starts_with('#'))
    {
        let (role, rest) = entry.split_once(':').ok_or_else(|| {
            anyhow::anyhow!(
                "API key entry must be ROLE:NAME:KEY or ROLE:KEY (role admin or call-taker)"
            )
        })?;
        let role = match role.trim() {
            "admin" => Role::Admin,
            "call-taker" | "calltaker" => Role::CallTaker,
            other => anyhow::bail!("unknown role {other:?} (admin or call-taker)"),
        };
        let (name, key) = match rest.split_once(':') {
            Some((name, key)) => {
                let name = name.trim();
                anyhow::ensure!(
                    !name.is_empty()
                        && name.len() <= 64
                        && name
                            .chars()
                            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')),
                    "API key name {name:?}: 1 to 64 letters, digits, '.', '_', '-' or '@'"
                );
                (Some(name.to_string()), key.trim())
            }
            None => (None, rest.trim()),
        };
        anyhow::ensure!(key.len() >= 16, "API keys must be at least 16 characters");
        let name = name.unwrap_or_else(|| {
            let role = match role {
                Role::Admin => "admin",
                Role::CallTaker => "call-taker",
            };
            format!(
                "{role}-{}",
                &triage_core::audit::sha256_hex(key.as_bytes())[..8]
            )
        });
        anyhow::ensure!(
            !keys.contains_key(key),
            "the API key named {name} is listed twice"
        );
        keys.insert(key.to_string(), ApiKey { role, name });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
