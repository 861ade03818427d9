//! Safe output files: written to a temporary file in the same folder and renamed into place, never replacing an
//! existing file unless asked to.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Writes `path` atomically with `write`; an existing file is an error unless `force`. The temporary file is
/// removed when `write` fails, so a failed or interrupted write leaves any previous file intact.
pub fn write_atomic(path: &Path, force: bool, write: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<()> {
    if path.exists() && !force {
        return Err(Error::file(path, "already exists (use --force to overwrite)"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::file(&dir, format!("cannot create the output folder: {e}")))?;
    }
    let name = path.file_name().ok_or_else(|| Error::file(path, "is not a file name"))?.to_string_lossy();
    // A fresh name (created exclusively) per write, so that concurrent writers of the same output, in this
    // process or another, never share a temporary file.
    let mut created = None;
    for attempt in 0..1000u32 {
        let candidate = dir.join(format!(".{name}.tmp-{}-{attempt}", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&candidate) {
            Ok(f) => {
                created = Some((candidate, f));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::file(&candidate, format!("cannot create a temporary file: {e}"))),
        }
    }
    let (tmp, mut f) =
        created.ok_or_else(|| Error::file(path, "cannot create a temporary file beside it (1000 names taken)"))?;
    let result = (|| -> std::io::Result<()> {
        write(&mut f)?;
        f.flush()?;
        f.sync_all()?;
        Ok(())
    })();
    drop(f);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::file(path, format!("cannot write: {e}")));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::file(path, format!("cannot move the finished file into place: {e}"))
    })
}

/// [`write_atomic`] for a byte buffer.
pub fn write_bytes_atomic(path: &Path, force: bool, bytes: &[u8]) -> Result<()> {
    write_atomic(path, force, |f| f.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_overwrite_and_keeps_old_content_on_failure() {
        let dir = std::env::temp_dir().join(format!("diffuse-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("out.txt");
        let _ = std::fs::remove_file(&p);
        write_bytes_atomic(&p, false, b"one").unwrap();
        assert!(write_bytes_atomic(&p, false, b"two").unwrap_err().to_string().contains("--force"));
        let err = write_atomic(&p, true, |_| Err(std::io::Error::other("disk full")));
        assert!(err.unwrap_err().to_string().contains("disk full"));
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        write_bytes_atomic(&p, true, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let leftovers = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp-"))
            .count();
        assert_eq!(leftovers, 0);
        write_bytes_atomic(&dir.join("new/sub/x.txt"), false, b"x").unwrap();
        // A stale temporary file of this process (e.g. left by a crash) does not block the next write.
        std::fs::write(dir.join(format!(".out.txt.tmp-{}-0", std::process::id())), b"stale").unwrap();
        write_bytes_atomic(&p, true, b"three").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
