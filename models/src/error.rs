//! Errors of the model layer. Each names the file involved and, where one exists, the command
//! that fixes it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model file is missing.
    #[error(
        "missing model file {path}: run scripts/setup.sh (or pass --models-dir / a model path)"
    )]
    Missing { path: PathBuf },
    /// A file exists but is not what was expected.
    #[error("bad model file {path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("the input has {tokens} tokens; the context holds {limit}")]
    TooLong { tokens: usize, limit: usize },
    #[error("the prompt has {prompt} tokens and max_tokens is {max_tokens}: {} in all, but the model's context holds {limit} (shorten the prompt or lower max_tokens)", prompt + max_tokens)]
    PromptTooLong {
        prompt: usize,
        max_tokens: usize,
        limit: usize,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::Missing { path }
        } else {
            Error::Io { path, source }
        }
    }

    pub fn bad(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::BadFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl From<Error> for triage_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::TooLong { .. } | Error::PromptTooLong { .. } => {
                triage_core::Error::InvalidInput(e.to_string())
            }
            other => triage_core::Error::Model(other.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
