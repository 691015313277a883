//! The core's error type. Every variant names the file or the value at fault.

use std::path::PathBuf;

/// Errors raised by `tweedie-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// A schedule or model hyperparameter is out of its valid range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A backend name that is unknown, or that this binary was built without.
    #[error("backend `{name}` is not available: {why}")]
    Backend { name: String, why: String },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint exists but cannot be used (damaged, truncated or of another model).
    #[error("checkpoint {}: {why}", path.display())]
    Checkpoint { path: PathBuf, why: String },
}

impl CoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn checkpoint(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        CoreError::Checkpoint {
            path: path.into(),
            why: why.into(),
        }
    }
}
