//! `CaseStore` backends. The default is qdrant-edge: an embedded, on-disk vector store inside the
//! process (no server); `QdrantStore` talks to a Qdrant server or cluster. Everything
//! backend-specific stays in this crate.

mod edge;
mod qdrant;
pub mod testsuite;

pub use edge::EdgeStore;
pub use qdrant::{QdrantConfig, QdrantStore};

/// Namespace of point ids: a case's point id is the UUIDv5 of its id in it, on every backend
/// (fixed forever: changing it orphans every stored case).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6b1f_3c2e_9a47_4d55_8e0b_1c2d_3e4f_5a6b);

/// The point id of a case: stable, so re-importing a case replaces it on any backend.
pub fn point_uuid(case_id: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(&ID_NAMESPACE, case_id.as_bytes())
}

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
