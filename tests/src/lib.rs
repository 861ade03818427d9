//! Helpers for the end-to-end tests in `tests/tests/`, which run the built `diffuse` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `diffuse` binary of the profile these tests were built with (`target/<profile>/diffuse`; cargo builds it
/// with the workspace's tests), or `$DIFFUSE_BIN` when set.
pub fn diffuse_bin() -> PathBuf {
    // DIFFUSE_BIN tests another build (a release binary, or a copy taken while other builds share the target).
    if let Some(bin) = std::env::var_os("DIFFUSE_BIN") {
        return PathBuf::from(bin);
    }
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

/// A WAV file's bytes with a canonical 16-byte `fmt ` chunk: `format_tag` 1 (integer PCM) or 3 (IEEE float),
/// and `data` as the raw sample bytes (the header fields are whatever is passed, so tests can lie in them).
pub fn wav_bytes(format_tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    let block = channels * bits.div_ceil(8);
    let mut b = Vec::with_capacity(44 + data.len());
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&format_tag.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&rate.wrapping_mul(u32::from(block)).to_le_bytes());
    b.extend_from_slice(&block.to_le_bytes());
    b.extend_from_slice(&bits.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(data);
    b
}

/// 16-bit mono PCM of a 440 Hz tone, `seconds` long at `rate`.
pub fn tone_wav(rate: u32, seconds: f64) -> Vec<u8> {
    let n = (f64::from(rate) * seconds) as usize;
    let data: Vec<u8> = (0..n)
        .flat_map(|i| {
            let s = 0.3 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / f64::from(rate)).sin();
            ((s * 32767.0) as i16).to_le_bytes()
        })
        .collect();
    wav_bytes(1, 1, rate, 16, &data)
}
