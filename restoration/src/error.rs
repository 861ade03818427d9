//! The error type of diffuse-restoration: every variant that concerns a file names it.

use std::path::{Path, PathBuf};

/// Errors returned by diffuse-restoration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model file (weights or JSON sidecar) that cannot be used.
    #[error("model {}: {reason}", path.display())]
    Model {
        /// The weights or sidecar file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An argument or configuration value out of range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field or argument.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor of the wrong shape.
    #[error("{op}: expected shape {expected}, got {got}")]
    Shape {
        /// Where.
        op: &'static str,
        /// What was expected.
        expected: String,
        /// What was given.
        got: String,
    },
    /// Training stopped (non-finite loss, ...); the last good checkpoint is kept.
    #[error("training stopped at step {step}: {reason}")]
    Training {
        /// The step at which it stopped.
        step: u64,
        /// Why.
        reason: String,
    },
    /// An error from diffuse-core (paths, solvers, output files).
    #[error(transparent)]
    Core(#[from] diffuse_core::Error),
    /// An error from libtorch.
    #[error("libtorch: {}", diffuse_core::error::torch_message(.0))]
    Torch(#[from] tch::TchError),
}

impl Error {
    /// A bad value of `field`.
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Error::Invalid { field: field.to_string(), reason: reason.into() }
    }
    /// A model file that cannot be used.
    pub fn model(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Error::Model { path: path.as_ref().to_path_buf(), reason: reason.into() }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
