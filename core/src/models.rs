//! Where named models are looked up: `$DIFFUSE_MODEL_PATH` (colon separated), then the user's data folder.
//! Models shipped inside the binary are resolved by the domain crates before these folders.

use std::path::PathBuf;

/// Environment variable holding extra model folders, searched first.
pub const MODEL_PATH_VAR: &str = "DIFFUSE_MODEL_PATH";

/// The folders searched for a model given by name, in order.
pub fn model_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os(MODEL_PATH_VAR)
        .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    if let Some(data) = data_home {
        dirs.push(data.join("diffuse/models"));
    }
    dirs
}
