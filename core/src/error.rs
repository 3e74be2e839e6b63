//! The one error type of the domain. Each library crate has its own thiserror enum and converts
//! into this at the seam; `server` maps `kind()` to an HTTP status in one place.

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is malformed or out of bounds (HTTP 422).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A case, category or unit that does not exist (HTTP 404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The store is held by another process, or a conflicting write (HTTP 409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A model failed to load or run.
    #[error("model error: {0}")]
    Model(String),
    /// The case store failed.
    #[error("store error: {0}")]
    Store(String),
    /// Something is missing that a command would create (e.g. no trained classifier yet).
    #[error("not ready: {0}")]
    NotReady(String),
    /// The work did not finish within the time it was given (HTTP 504).
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with the path it happened on, so the message names the file.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
