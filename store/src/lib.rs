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

/// What a `CaseFilter` asks of a stored case's payload, in the payload's field names. Each backend
/// translates these into its own filter type, so which filter field means which payload key lives
/// here once.
struct PayloadConditions<'a> {
    /// Keyword fields that must equal a value.
    matches: Vec<(&'static str, &'a str)>,
    /// Inclusive bounds on `time` (Unix seconds), when either is set.
    time: Option<(Option<i64>, Option<i64>)>,
    /// Fields that must be present and not empty.
    present: Vec<&'static str>,
}

impl<'a> PayloadConditions<'a> {
    /// `None` when the filter asks nothing (every case matches).
    fn of(f: &'a CaseFilter) -> Option<Self> {
        let matches: Vec<_> = [
            ("label", &f.category),
            ("unit", &f.unit),
            ("district", &f.district),
        ]
        .into_iter()
        .filter_map(|(field, value)| Some((field, value.as_deref()?)))
        .collect();
        let time =
            (f.time_from.is_some() || f.time_to.is_some()).then_some((f.time_from, f.time_to));
        let present: Vec<_> = [
            ("label", f.labeled_only),
            ("reply", f.with_reply),
            ("unit", f.with_unit),
        ]
        .into_iter()
        .filter_map(|(field, wanted)| wanted.then_some(field))
        .collect();
        let empty = matches.is_empty() && time.is_none() && present.is_empty();
        (!empty).then_some(Self {
            matches,
            time,
            present,
        })
    }
}

/// A vector of the wrong length is the caller's mistake (422), named with the store's location.
fn check_dim(
    dim: usize,
    location: impl std::fmt::Display,
    what: &str,
    vector: &[f32],
) -> triage_core::Result<()> {
    if vector.len() == dim {
        return Ok(());
    }
    Err(triage_core::Error::InvalidInput(format!(
        "{what} has {} dimensions, the store at {location} holds {dim}-dimensional vectors",
        vector.len(),
    )))
}

/// The point id of a case: stable, so re-importing a case replaces it on any backend.
pub fn point_uuid(case_id: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(&ID_NAMESPACE, case_id.as_bytes())
}

use std::path::PathBuf;
use triage_core::CaseFilter;

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
