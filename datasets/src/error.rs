//! Data errors: each names the file and what is wrong with it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The OS error is part of the message, not a `source`, so a `{:#}` chain names it once.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file exists but its contents are not what its format requires.
    #[error("{}: {why}", path.display())]
    Format { path: PathBuf, why: String },
    /// The dataset's files were not found in any of the searched places.
    #[error("{what} not found; looked in: {tried}")]
    NotFound { what: String, tried: String },
    /// An index past the end of the dataset.
    #[error("index {index} out of range for a dataset of {len} images")]
    Index { index: usize, len: usize },
}

impl DataError {
    pub(crate) fn format(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        DataError::Format {
            path: path.into(),
            why: why.into(),
        }
    }
}
