//! The error type of diffuse-discrete.

/// Errors returned by diffuse-discrete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter, input field or option is out of range or inconsistent; `field` names it.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The parameter or input field at fault (for example `table.entries[3].p`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A sampler or option that does not apply to the chosen process or denoiser.
    #[error("{what} does not apply here: {reason}")]
    NotApplicable {
        /// The sampler or option.
        what: String,
        /// Why it does not apply.
        reason: String,
    },
    /// Tensors whose shapes do not fit together.
    #[error("shape mismatch in {op}: expected {expected}, got {got}")]
    Shape {
        /// The operation that checked the shapes.
        op: &'static str,
        /// The shape it expected.
        expected: String,
        /// The shape it got.
        got: String,
    },
    /// An exact computation would be too large (enumeration limits).
    #[error("too large for exact enumeration: {0}")]
    TooLarge(String),
    /// A file (corpus, model, sidecar, checkpoint) that cannot be used, and why.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Training stopped (non-finite loss, ...); the last checkpoint is kept.
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
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid { field: field.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::File`].
    pub fn file(path: impl Into<std::path::PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::File { path: path.into(), reason: reason.to_string() }
    }

    /// Shorthand for [`Error::NotApplicable`].
    pub fn not_applicable(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::NotApplicable { what: what.into(), reason: reason.into() }
    }
}

/// Result with diffuse-discrete's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
