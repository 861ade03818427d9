//! The error type of diffuse-pose: every variant names the input at fault (a file, "object", "scene") and what
//! is wrong with it, so the CLI can show it as is.

use std::path::PathBuf;

/// Errors returned by diffuse-pose.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A point cloud has no points.
    #[error("{what} is empty: it has no points")]
    EmptyCloud {
        /// Which cloud ("object", "scene", a file name).
        what: String,
    },
    /// A point cloud has fewer points than the operation needs.
    #[error("{what} has {have} point(s) but at least {need} are needed{context}")]
    TooFewPoints {
        /// Which cloud.
        what: String,
        /// Points it has.
        have: usize,
        /// Points needed.
        need: usize,
        /// Where the requirement comes from (", after voxel downsampling", ...), possibly empty.
        context: String,
    },
    /// A coordinate or normal is NaN or infinite.
    #[error("{what}: point {index} has a non-finite {field} ({value})")]
    NonFinite {
        /// Which cloud.
        what: String,
        /// Index of the point.
        index: usize,
        /// "coordinate" or "normal".
        field: &'static str,
        /// The offending value as text.
        value: String,
    },
    /// The points do not span enough dimensions for the operation (all identical, collinear).
    #[error("{what} is degenerate: {reason}")]
    Degenerate {
        /// Which cloud.
        what: String,
        /// What is degenerate about it.
        reason: String,
    },
    /// A file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A PLY file is malformed or uses something this reader does not support.
    #[error("{}: {reason}", path.display())]
    Ply {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the element and property where known.
        reason: String,
    },
    /// A parameter is out of its valid range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The parameter at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A numerical failure (a singular system, a non-finite result).
    #[error("numerical failure in {op}: {reason}")]
    Numerical {
        /// The operation that failed.
        op: &'static str,
        /// What happened.
        reason: String,
    },
    /// A model file (weights or sidecar) is missing, malformed or of another kind.
    #[error("{}: {reason}", path.display())]
    Model {
        /// The file (or `builtin:…`).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A libtorch failure.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// An error from diffuse-core.
    #[error(transparent)]
    Core(#[from] diffuse_core::Error),
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid { field: field.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::Ply`].
    pub fn ply(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Ply { path: path.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::Model`].
    pub fn model(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Model { path: path.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// Result with diffuse-pose's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
