//! The error type of diffuse-audio: every variant that concerns a file names it.

use std::path::PathBuf;

/// Errors returned by diffuse-audio.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An audio file that cannot be used as input (not a WAV, corrupt, truncated, empty, NaN, ...).
    #[error("{}: {reason}", path.display())]
    BadAudio {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An audio file whose samples are all zero: there is nothing to enhance (and nothing to normalise by).
    #[error("{}: every sample is zero (silent file), nothing to enhance", path.display())]
    Silent {
        /// The file.
        path: PathBuf,
    },
    /// A model file (TorchScript module or its JSON sidecar) that cannot be used.
    #[error("model {}: {reason}", path.display())]
    Model {
        /// The module or sidecar file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read or written (permissions, disk full, missing folder).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file that could not be written or used, with the reason (disk full, not a folder, ...).
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Training data that cannot be used (empty or unreadable folders, no usable clip).
    #[error("{}: {reason}", path.display())]
    Data {
        /// The folder or file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Training stopped (non-finite loss, ...); the last good checkpoint is kept.
    #[error("training stopped at step {step}: {reason}")]
    Training {
        /// The step at which it stopped.
        step: u64,
        /// Why, and what was kept.
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
    /// Tensors or buffers whose shapes do not fit together.
    #[error("shape mismatch in {op}: expected {expected}, got {got}")]
    Shape {
        /// The operation that checked the shapes.
        op: &'static str,
        /// The shape it expected.
        expected: String,
        /// The shape it got.
        got: String,
    },
    /// A numerical failure (non-finite network output or sampler result).
    #[error("numerical failure in {op}: {reason}")]
    Numerical {
        /// The operation that failed.
        op: &'static str,
        /// What happened.
        reason: String,
    },
    /// A sampler that this build cannot run (yet).
    #[error("sampler '{name}' is not available: {reason}")]
    SamplerUnavailable {
        /// The sampler asked for.
        name: String,
        /// Why it cannot run.
        reason: String,
    },
    /// An error from diffuse-core.
    #[error(transparent)]
    Core(#[from] diffuse_core::Error),
    /// An error raised by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl Error {
    /// Shorthand for [`Error::BadAudio`].
    pub fn bad_audio(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::BadAudio { path: path.into(), reason: reason.to_string() }
    }

    /// Shorthand for [`Error::Model`].
    pub fn model(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::Model { path: path.into(), reason: reason.to_string() }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Shorthand for [`Error::File`].
    pub fn bad_file(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::File { path: path.into(), reason: reason.to_string() }
    }

    /// Shorthand for [`Error::Data`].
    pub fn data(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::Data { path: path.into(), reason: reason.to_string() }
    }

    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid { field: field.into(), reason: reason.into() }
    }
}

/// Result with diffuse-audio's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
