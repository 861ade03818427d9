//! Helpers for the end-to-end tests in `tests/tests/`, which run the built `diffuse` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `diffuse` binary of the profile these tests were built with (`target/<profile>/diffuse`; cargo builds it
/// with the workspace's tests).
pub fn diffuse_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> → target/<profile>/diffuse
    let profile_dir = exe.parent().and_then(Path::parent).expect("test executables live in target/<profile>/deps");
    let bin = profile_dir.join("diffuse");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p diffuse-cli` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// Runs `diffuse args…` in `dir` and returns its output.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(diffuse_bin()).args(args).current_dir(dir).output().expect("diffuse starts")
}

/// The repository root (for shipped examples).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

/// stdout and stderr of an output as text.
pub fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}
