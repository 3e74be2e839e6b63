//! Batch jobs over HTTP: `POST /v1/jobs` (admin) starts `triage_core::batch` on an uploaded JSONL
//! body or on the store; `GET /v1/jobs/{id}` reports state and progress; `GET /v1/jobs/{id}/output`
//! returns the results.
//!
//! Each job lives in `DATA_DIR/jobs/ID/` (`job.json`, `input.jsonl`, `output.jsonl` and the batch
//! checkpoint), so a restarted server finds unfinished jobs and resumes them from their checkpoint.
//! Replicas sharing `DATA_DIR` share the jobs: every replica reports every job from its folder, and
//! a lock file makes sure one replica at a time runs a job (another resumes it only once the
//! runner's lock is gone, when that replica starts again).
//! At most `max_jobs` run at once, and a running job waits between chunks while call-takers'
//! requests are queued or running: interactive triage comes first.

use super::audit::Context;
use super::error::ApiError;
use super::json::Json;
use super::{AppState, Caller, RequestId};
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use triage_core::batch::{self, BatchSpec, Shard, Source, Summary, WriteBack};
use triage_core::{fsutil, CaseFilter};

/// Complaints per chunk in server jobs: small, so a call-taker never waits long for a chunk.
const SERVER_CHUNK: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

/// What `GET /v1/jobs/{id}` answers, and what `job.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub id: String,
    pub state: JobState,
    pub created: String,
    /// Input (`source`), `output`, `fast`, `draft`, `write_back`, `shard`, `chunk`.
    #[schema(value_type = Object)]
    pub spec: BatchSpec,
    /// Counts (consumed, classified, errors, abstained, duplicates, written_back, changes,
    /// stage_seconds, analysis_cpu_seconds), total, seconds, rate, done.
    #[schema(value_type = Option<Object>)]
    pub progress: Option<Summary>,
    pub error: Option<String>,
    /// Times the server restarted while it ran (it then resumed from its checkpoint).
    pub resumed: u32,
    /// The name of the API key that started the job (its audit records carry it).
    #[serde(default)]
    pub created_by: Option<String>,
}

/// The jobs of this server: their folder (the statuses on disk are the truth, so replicas sharing
/// it agree) and the slots they run in.
pub struct Jobs {
    dir: PathBuf,
    slots: tokio::sync::Semaphore,
}

impl Jobs {
    pub fn new(dir: PathBuf, max_jobs: usize) -> Self {
        Self {
            dir,
            slots: tokio::sync::Semaphore::new(max_jobs.max(1)),
        }
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Records a status on disk (atomically: a crash leaves the old or the new).
    fn save(&self, status: &JobStatus) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec_pretty(status).map_err(ApiError::internal)?;
        fsutil::write_atomic(&self.job_dir(&status.id).join("job.json"), &bytes)
            .map_err(ApiError::internal)
    }

    fn get(&self, id: &str) -> Option<JobStatus> {
        // Ids are ours (letters, digits, '-'): anything else names no job, and no other folder.
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return None;
        }
        read_status(&self.job_dir(id))
    }

    /// Every job in the folder, oldest first.
    fn all(&self) -> Vec<JobStatus> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<JobStatus> = entries
            .flatten()
            .filter_map(|e| read_status(&e.path()))
            .collect();
        found.sort_by(|a, b| a.created.cmp(&b.created));
        found
    }

    /// Unfinished jobs left by an earlier run of a server, marked as resumed.
    fn unfinished_on_disk(&self) -> Vec<JobStatus> {
        self.all()
            .into_iter()
            .filter(|s| matches!(s.state, JobState::Queued | JobState::Running))
            .map(|mut s| {
                s.state = JobState::Queued;
                s.resumed += 1;
                s
            })
            .collect()
    }

    /// The job's lock, held while this process runs it; None when another process holds it.
    fn claim(&self, id: &str) -> Option<std::fs::File> {
        use fs2::FileExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.job_dir(id).join("lock"))
            .ok()?;
        file.try_lock_exclusive().ok()?;
        Some(file)
    }
}

fn read_status(job_dir: &std::path::Path) -> Option<JobStatus> {
    let path = job_dir.join("job.json");
    let bytes = std::fs::read(&path).ok()?;
    serde_json::from_slice(&bytes)
        .inspect_err(|e| tracing::warn!("skipping unreadable {}: {e}", path.display()))
        .ok()
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/jobs", post(create).get(list))
        .route("/v1/jobs/{id}", get(status))
        .route("/v1/jobs/{id}/output", get(output))
}

/// Options of a job, from the query string (with an uploaded body) or the JSON body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(super) struct JobRequest {
    /// Reclassify the stored cases matching this filter (JSON body only).
    from_store: Option<CaseFilter>,
    fast: bool,
    draft: bool,
    write_back: bool,
    dry_run: bool,
}

/// `POST /v1/jobs`: a JSONL body (`Content-Type: application/x-ndjson`, options in the query
/// string) is the input; a JSON body `{"from_store": {filter}, …}` reclassifies stored cases.
async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<JobStatus>), ApiError> {
    let pipeline = state.pipeline()?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let upload = !content_type.starts_with("application/json");
    let request: JobRequest = if upload {
        let pairs = serde_json::to_value(&query).map_err(ApiError::internal)?;
        let flags = pairs
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let on = matches!(v.as_str(), Some("true" | "1" | "yes"));
                (k.clone(), serde_json::Value::Bool(on))
            })
            .collect::<serde_json::Map<_, _>>();
        serde_json::from_value(flags.into())
            .map_err(|e| ApiError::bad_request(format!("query string: {e}")))?
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    if request.draft && !pipeline.can_draft() {
        return Err(ApiError::unprocessable(
            "drafts need the LLM, and this server runs with --no-draft",
        ));
    }
    let id = format!(
        "job-{}-{:04x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        rand::random::<u16>()
    );
    let dir = state.jobs.job_dir(&id);
    let source = match (upload, request.from_store) {
        (true, _) => {
            if body.is_empty() {
                return Err(ApiError::unprocessable(
                    "send the complaints as JSONL in the body (Content-Type: application/x-ndjson), or a JSON body with from_store",
                ));
            }
            let input = dir.join("input.jsonl");
            fsutil::write_atomic(&input, &body).map_err(ApiError::internal)?;
            Source::File(input)
        }
        (false, Some(filter)) => Source::Store(filter),
        (false, None) => {
            return Err(ApiError::unprocessable(
                "a JSON body must name from_store (a filter, {} for all cases); upload JSONL as application/x-ndjson",
            ))
        }
    };
    let spec = BatchSpec {
        source,
        output: dir.join("output.jsonl"),
        fast: request.fast,
        draft: request.draft,
        write_back: WriteBack::from_flags(request.write_back, request.dry_run),
        shard: Shard::default(),
        chunk: SERVER_CHUNK,
    };
    let status = JobStatus {
        id,
        state: JobState::Queued,
        created: chrono::Utc::now().to_rfc3339(),
        spec,
        progress: None,
        error: None,
        resumed: 0,
        created_by: caller.key_name.clone(),
    };
    state.jobs.save(&status)?;
    start(state.clone(), status.clone());
    Ok((StatusCode::ACCEPTED, Json(status)))
}

async fn list(State(state): State<Arc<AppState>>) -> Json<Vec<JobStatus>> {
    Json(state.jobs.all())
}

async fn status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<JobStatus>, ApiError> {
    state
        .jobs
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no job {id:?}")))
}

/// The output so far (one JSON line per input line), complete once the job is done.
async fn output(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let status = state
        .jobs
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no job {id:?}")))?;
    let bytes = tokio::fs::read(&status.spec.output)
        .await
        .unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], bytes))
}

/// Resumes the jobs an earlier run of the server left unfinished (called once models are loaded).
pub fn resume_unfinished(state: &Arc<AppState>) {
    for status in state.jobs.unfinished_on_disk() {
        tracing::info!(job = status.id, "resuming a job left by the previous run");
        start(state.clone(), status);
    }
}

/// Runs a job when a slot is free, on a blocking thread.
fn start(state: Arc<AppState>, mut status: JobStatus) {
    tokio::spawn(async move {
        let Ok(_slot) = state.jobs.slots.acquire().await else {
            return;
        };
        let Ok(pipeline) = state.pipeline() else {
            return;
        };
        let Some(_running_here) = state.jobs.claim(&status.id) else {
            tracing::info!(job = status.id, "another replica runs this job");
            return;
        };
        status.state = JobState::Running;
        let _ = state.jobs.save(&status);
        let runner = state.clone();
        let recorder = state.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut report = status.clone();
            let caller = Caller {
                key_name: status.created_by.clone(),
            };
            let outcome = batch::run_observed(
                &pipeline,
                &status.spec,
                &mut |progress| {
                    report.progress = Some(progress.clone());
                    let _ = runner.jobs.save(&report);
                    yield_to_interactive(&runner);
                    // On shutdown a job stops between chunks; the next start resumes it.
                    !runner.stopping.load(Ordering::Relaxed)
                },
                &mut |served| audit_chunk(&recorder, &pipeline, &status.id, &caller, served),
            );
            (report, outcome)
        })
        .await;
        let (mut status, outcome) = match result {
            Ok(done) => done,
            Err(e) => {
                tracing::error!("a batch job panicked: {e}");
                return;
            }
        };
        match outcome {
            Ok(summary) => {
                status.state = if summary.done {
                    JobState::Done
                } else {
                    JobState::Queued
                };
                status.progress = Some(summary);
            }
            Err(e) => {
                tracing::warn!(job = status.id, "batch job failed: {e}");
                status.state = JobState::Failed;
                status.error = Some(e.to_string());
            }
        }
        let _ = state.jobs.save(&status);
    });
}

/// Records a chunk's suggestions (request id `JOB:LINE`) before the chunk is written, and waits
/// until they are durable: a job's output never holds a line the audit trail could lose. With
/// `--audit-refuse-unaudited` a trail that cannot take them stops the job (it resumes from the
/// chunk once started again).
fn audit_chunk(
    state: &AppState,
    pipeline: &triage_core::pipeline::Pipeline,
    job: &str,
    caller: &Caller,
    served: &[batch::Served],
) -> triage_core::Result<()> {
    let Some(log) = &state.audit else {
        return Ok(());
    };
    let refuse = |e: ApiError| triage_core::Error::NotReady(e.message);
    state.admit_audited().map_err(refuse)?;
    for item in served {
        let request_id = RequestId(format!("{job}:{}", item.line));
        let context = Context::new(&request_id, caller, triage_core::audit::Route::Jobs);
        let mut suggestion = item.suggestion.clone();
        if let Some(draft) = item.draft {
            suggestion.draft = Some(draft.text.clone());
            suggestion.draft_checks = draft.checks.clone();
        }
        state
            .audit_suggestion(
                &context,
                pipeline,
                &suggestion,
                &item.case.full_text(),
                Some(&item.case.id),
            )
            .map_err(refuse)?;
    }
    match log.flush(AUDIT_FLUSH) {
        Ok(_) => Ok(()),
        Err(e) if log.settings().refuse_unaudited => Err(e),
        Err(e) => {
            tracing::warn!(job, "a batch job's audit records are not durable yet: {e}");
            Ok(())
        }
    }
}

/// How long a job waits for its chunk's audit records to be synced.
const AUDIT_FLUSH: Duration = Duration::from_secs(30);

/// Blocks the job while call-takers' requests wait for or hold a model worker.
fn yield_to_interactive(state: &AppState) {
    let busy = || {
        state.metrics.queue_depth.load(Ordering::Relaxed)
            + state.metrics.in_flight.load(Ordering::Relaxed)
            > 0
    };
    while busy() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_at_a_time_runs_a_job() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = Jobs::new(dir.path().to_path_buf(), 1);
        std::fs::create_dir_all(jobs.job_dir("job-1")).unwrap();
        let held = jobs.claim("job-1").expect("a free job is claimed");
        // A second claim opens the lock file anew, as another replica's would.
        assert!(jobs.claim("job-1").is_none());
        drop(held);
        assert!(
            jobs.claim("job-1").is_some(),
            "free again once the runner is gone"
        );
    }

    #[test]
    fn ids_that_leave_the_jobs_folder_name_no_job() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = Jobs::new(dir.path().join("jobs"), 1);
        std::fs::write(dir.path().join("job.json"), b"{}").unwrap();
        for id in ["..", "../jobs", "", "a/b"] {
            assert!(jobs.get(id).is_none(), "{id:?}");
        }
    }
}
