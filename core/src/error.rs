//! The error type of diffuse-core.

use std::path::PathBuf;

/// Errors returned by diffuse-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Training stopped (a non-finite loss, ...); the last checkpoint is kept.
    #[error("training stopped at step {step}: {reason}")]
    Training {
        /// The step that failed.
        step: u64,
        /// What happened.
        reason: String,
    },
    /// A device was asked for that this machine does not have.
    #[error("{0}")]
    Device(String),
    /// A named thing (solver, path, spacing, ...) is unknown; `valid` lists the accepted names.
    #[error("unknown {what} '{name}'; valid: {valid}")]
    UnknownName {
        /// What kind of name it was ("solver", "path", ...).
        what: &'static str,
        /// The name given.
        name: String,
        /// The accepted names, comma separated.
        valid: String,
    },
    /// A parameter is out of its valid range or inconsistent with another.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The parameter or field at fault.
        field: String,
        /// What is wrong with it.
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
    /// A numerical failure (NaN, Inf, failed root finding, step size underflow).
    #[error("numerical failure in {op}: {reason}")]
    Numerical {
        /// The operation that failed.
        op: &'static str,
        /// What happened.
        reason: String,
    },
    /// A file could not be read, parsed or written.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
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
    pub fn file(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::File { path: path.into(), reason: reason.to_string() }
    }

    /// Shorthand for [`Error::UnknownName`] from a list of valid names.
    pub fn unknown(what: &'static str, name: &str, valid: &[&str]) -> Self {
        Error::UnknownName { what, name: name.to_string(), valid: valid.join(", ") }
    }
}

/// The line of a libtorch error that says what went wrong, without the C++ stack: TorchScript and loader
/// errors span many lines of frames ("Exception raised from … frame #0: …"), and the line naming the error
/// (`RuntimeError: …`, `PytorchStreamReader failed …`) says the most. At most 300 characters.
pub fn torch_message(e: &tch::TchError) -> String {
    let s = e.to_string();
    let is_frame = |l: &str| {
        l.starts_with("frame #") || l.starts_with("Exception raised from") || l.starts_with("Traceback") || l == "}"
    };
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty() && !is_frame(l)).collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains("Error:") || l.contains("failed"))
        .or(lines.first())
        .copied()
        .unwrap_or("libtorch gave no message");
    let line = line.trim_start_matches("Internal torch error: ");
    match line.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// Result with diffuse-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
