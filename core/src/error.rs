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
    /// Reading or writing a file failed. The OS error is part of the message, not a `source`,
    /// so that a chain printed with `{:#}` names it once.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A checkpoint exists but cannot be used (damaged, truncated or of another model).
    #[error("checkpoint {}: {why}", path.display())]
    Checkpoint { path: PathBuf, why: String },
    /// Another live process holds the run directory's lock.
    #[error(
        "{} is in use by another run ({}; lock file {}/.lock)",
        path.display(),
        holder.map_or("pid unknown".to_string(), |p| format!("pid {p}")),
        path.display()
    )]
    Locked { path: PathBuf, holder: Option<u32> },
    /// A node server (`train node`) that could not be reached, or that failed mid-step.
    #[error("node {node}: {why}")]
    Node { node: String, why: String },
    /// A fresh run was asked to start in a directory that already holds one.
    #[error("{} already holds a run", path.display())]
    RunExists { path: PathBuf },
}

impl CoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        CoreError::Io {
            path: path.into(),
            error,
        }
    }
    pub(crate) fn checkpoint(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        CoreError::Checkpoint {
            path: path.into(),
            why: why.into(),
        }
    }
}
