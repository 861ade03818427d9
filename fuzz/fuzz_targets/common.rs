//! Shared by the fuzz targets: a per-process scratch file for the parsers that read from a path.

#![allow(dead_code)]

use std::path::PathBuf;

/// Writes `data` to this process's scratch file with extension `ext` and returns its path.
pub fn scratch(ext: &str, data: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("diffuse-fuzz-{}.{ext}", std::process::id()));
    std::fs::write(&path, data).expect("write the scratch file");
    path
}
