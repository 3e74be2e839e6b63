//! `CaseStore` backends. The default is qdrant-edge: an embedded, on-disk vector store inside the
//! process (no server). Everything backend-specific stays in this crate.

mod edge;
pub mod testsuite;

pub use edge::EdgeStore;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the store in {path} is in use by another process (lock file {lock}); stop it or use another --data-dir")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("the store in {path} was built for {found}-dimensional vectors, the embedder makes {expected}; use a new --data-dir or the embedder it was built with")]
    Dimension {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
    #[error("store {path}: {message}")]
    Backend { path: PathBuf, message: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<Error> for triage_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Locked { .. } | Error::Dimension { .. } => {
                triage_core::Error::Conflict(e.to_string())
            }
            other => triage_core::Error::Store(other.to_string()),
        }
    }
}
