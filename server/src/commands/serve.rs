//! `triage serve`: the HTTP service.

use crate::app::GlobalArgs;
use crate::http::{self, AppState, Limits};
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use triage_core::pipeline::Pipeline;

/// How often a replica checks whether a new classifier was trained.
const CLASSIFIER_CHECK: Duration = Duration::from_secs(30);

/// Most texts embedded together when requests arrive at once.
const EMBED_BATCH: usize = 32;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback requires API keys.
    #[arg(long, env = "TRIAGE_BIND", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// File of API keys, one `ROLE:KEY` per line (roles: admin, call-taker)
    #[arg(long, env = "TRIAGE_API_KEYS_FILE")]
    api_keys_file: Option<PathBuf>,
    /// API keys as `ROLE:KEY,ROLE:KEY` (prefer the file: environments leak)
    #[arg(long, env = "TRIAGE_API_KEYS", hide_env_values = true)]
    api_keys: Option<String>,
    /// Largest request body in bytes (413 beyond)
    #[arg(long, env = "TRIAGE_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    max_body_bytes: usize,
    /// Longest complaint in characters (422 beyond)
    #[arg(long, env = "TRIAGE_MAX_TEXT_CHARS", default_value_t = 5000)]
    max_text_chars: usize,
    /// Requests doing model work at once (their embeddings are batched together; drafts take
    /// turns on the LLM)
    #[arg(long, env = "TRIAGE_WORKERS", default_value_t = 8)]
    workers: usize,
    /// Model jobs admitted (running + waiting); more get 429 with Retry-After
    #[arg(long, env = "TRIAGE_QUEUE_DEPTH", default_value_t = 32)]
    queue_depth: usize,
    /// Per-request time limit in seconds
    #[arg(long, env = "TRIAGE_REQUEST_TIMEOUT", default_value_t = 60)]
    request_timeout: u64,
    /// Batch jobs (POST /v1/jobs) running at once; they yield to interactive requests
    #[arg(long, env = "TRIAGE_MAX_JOBS", default_value_t = 1)]
    max_jobs: usize,
    /// Largest JSONL upload to POST /v1/jobs, in bytes
    #[arg(long, env = "TRIAGE_MAX_UPLOAD_BYTES", default_value_t = 64 << 20)]
    max_upload_bytes: usize,
    /// Do not load the LLM (no reply drafts)
    #[arg(long, env = "TRIAGE_NO_DRAFT")]
    no_draft: bool,
    #[command(flatten)]
    audit: crate::commands::audit::AuditOptions,
}

pub fn run(global: &GlobalArgs, args: ServeArgs) -> Result<()> {
    let mut keys = http::parse_keys(args.api_keys.as_deref().unwrap_or_default())?;
    if let Some(path) = &args.api_keys_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        keys.extend(http::parse_keys(&text).with_context(|| format!("in {}", path.display()))?);
    }
    if !args.bind.ip().is_loopback() && keys.is_empty() {
        bail!(
            "refusing to listen on {} without API keys: set --api-keys-file (ROLE:KEY lines) or bind 127.0.0.1",
            args.bind
        );
    }
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        max_text_chars: args.max_text_chars,
        workers: args.workers,
        queue_depth: args.queue_depth,
        request_timeout: Duration::from_secs(args.request_timeout),
        max_jobs: args.max_jobs,
        max_upload_bytes: args.max_upload_bytes,
    };
    let info = serde_json::json!({
        "name": "hotline-triage",
        "version": env!("CARGO_PKG_VERSION"),
        "auth": !keys.is_empty(),
        "limits": {"max_body_bytes": limits.max_body_bytes, "max_text_chars": limits.max_text_chars,
                   "workers": limits.workers, "queue_depth": limits.queue_depth,
                   "request_timeout_s": args.request_timeout},
    });
    let audit = args.audit.open(global)?;
    let mut info = info;
    info["audit"] = match &audit {
        Some(log) => serde_json::json!({
            "stream": log.settings().stream,
            "text": log.settings().text,
            "retention_days": log.settings().retention_days,
            "refuse_unaudited": log.settings().refuse_unaudited,
            "signed_head": log.settings().key.is_some(),
        }),
        None => serde_json::Value::Null,
    };
    let state = AppState::with_audit(keys, limits, info, global.data_dir().join("jobs"), audit);
    let closing = state.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let stopping = state.clone();
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("binding {}", args.bind))?;
        // Printed (not logged) so scripts and tests can find the port when binding port 0.
        println!("listening on http://{}", listener.local_addr()?);
        let loader = state.clone();
        let global = global.clone();
        tokio::task::spawn_blocking(move || {
            // A store server that is not up yet (or a cluster being repaired) is waited for:
            // /health says why it is 503 meanwhile.
            let mut wait = Duration::from_secs(2);
            loop {
                match load(&global, !args.no_draft) {
                    Ok(pipeline) => {
                        let _ = loader.pipeline.set(std::sync::Arc::new(pipeline));
                        tracing::info!("models, store and classifier loaded");
                        http::jobs::resume_unfinished(&loader);
                        eprintln!("ready");
                        // A plain thread: it must not hold up the runtime's shutdown.
                        let (global, state) = (global.clone(), loader.clone());
                        std::thread::spawn(move || follow_classifier(&global, &state));
                        return;
                    }
                    Err(e) => {
                        eprintln!("error: {e:#} (retrying in {wait:?})");
                        *loader.load_error.lock().expect("load error") = Some(format!("{e:#}"));
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(Duration::from_secs(60));
                    }
                }
            }
        });
        axum::serve(listener, http::app(state))
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                stopping
                    .stopping
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            })
            .await
            .context("serving")
    });
    // In-flight requests are done; a batch job stops at its next chunk (resumed on restart), and
    // a loader still waiting for an unreachable store is not waited for.
    runtime.shutdown_timeout(Duration::from_secs(30));
    // Other threads may still hold the state (and so the log): what was served is made durable
    // here rather than left to the last of them.
    if let Some(log) = &closing.audit {
        if let Err(e) = log.flush(Duration::from_secs(10)) {
            eprintln!("error: audit records may be lost: {e}");
        }
    }
    served
}

/// The service's pipeline: the current classifier, and concurrent requests sharing embedding
/// batches (the model dominates a request).
fn load(global: &GlobalArgs, with_generator: bool) -> Result<Pipeline> {
    let builder = global.builder(with_generator)?;
    Ok(builder
        .classifier(Some(global.load_classifier()?))
        .batch_embeddings(EMBED_BATCH)
        .build()?)
}

/// Replicas share the classifier directory (with a Qdrant store; the embedded store admits one
/// process): when `triage train` names a new version, every replica loads it within a minute.
fn follow_classifier(global: &GlobalArgs, state: &std::sync::Arc<AppState>) {
    loop {
        std::thread::sleep(CLASSIFIER_CHECK);
        let Some(pipeline) = state.pipeline.get() else {
            continue;
        };
        let loaded = pipeline.classifier().map(|c| c.version.clone());
        match global.current_classifier_version() {
            Ok(version) if Some(&version) != loaded.as_ref() => match global.load_classifier() {
                Ok(classifier) => match pipeline.set_classifier(classifier) {
                    Ok(()) => tracing::info!(version, "a new classifier was trained: loaded"),
                    Err(e) => tracing::warn!("classifier {version} is not used: {e}"),
                },
                Err(e) => tracing::warn!("classifier {version} does not load: {e:#}"),
            },
            _ => {}
        }
    }
}

/// Ctrl-C or SIGTERM: stop accepting, finish in-flight requests, then exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    eprintln!("shutting down: finishing in-flight requests");
}
