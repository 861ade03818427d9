//! The error type of diffuse-restoration: every variant that concerns a file names it.

use std::path::{Path, PathBuf};

/// Errors returned by diffuse-restoration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An image file that cannot be used as input (not an image, unsupported format, corrupt, truncated, too
    /// large, zero-sized, CMYK, ...).
    #[error("{}: {reason}", path.display())]
    BadImage {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A model file (weights or JSON sidecar) that cannot be used.
    #[error("model {}: {reason}", path.display())]
    Model {
        /// The weights or sidecar file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file that could not be written or used, with the reason (disk full, unsupported output extension, ...).
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A parameter is out of its valid range or inconsistent with another.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The parameter at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Images or buffers whose shapes do not fit together.
    #[error("shape mismatch in {op}: expected {expected}, got {got}")]
    Shape {
        /// The operation that checked the shapes.
        op: &'static str,
        /// The shape it expected.
        expected: String,
        /// The shape it got.
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
    /// An error from diffuse-core.
    #[error(transparent)]
    Core(#[from] diffuse_core::Error),
    /// An error raised by libtorch.
    #[error("libtorch: {}", diffuse_core::error::torch_message(.0))]
    Torch(#[from] tch::TchError),
}

impl Error {
    /// Shorthand for [`Error::BadImage`].
    pub fn bad_image(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::BadImage { path: path.into(), reason: reason.to_string() }
    }

    /// Shorthand for [`Error::File`].
    pub fn file(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::File { path: path.into(), reason: reason.to_string() }
    }

    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Invalid { field: field.into(), reason: reason.to_string() }
    }

    /// A model file that cannot be used.
    pub fn model(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Error::Model { path: path.as_ref().to_path_buf(), reason: reason.into() }
    }

    /// Shorthand for [`Error::Shape`].
    pub fn shape(op: &'static str, expected: impl std::fmt::Display, got: impl std::fmt::Display) -> Self {
        Error::Shape { op, expected: expected.to_string(), got: got.to_string() }
    }
}

/// Result with diffuse-restoration's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
