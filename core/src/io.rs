//! Safe output files, one rule for every command: an output is written to a temporary file in the same folder
//! and moved into place, so a crash or a full disk never leaves a half-written file under the final name;
//! an existing file is never replaced unless forced, not even by a concurrent run; an input of this run is
//! never replaced, even when forced; and temporary files are removed on failure, on SIGINT/SIGTERM (the binary
//! calls [`remove_temp_files`] from its signal handler) and, when left by a process that died, by the next
//! write of the same output.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::{Error, Result};

/// Temporary files being written now, for [`remove_temp_files`].
static IN_FLIGHT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Files this process reads as inputs ([`protect_input`]), by identity and by canonical path.
static INPUTS: Mutex<Option<HashSet<FileKey>>> = Mutex::new(None);

/// What makes two names the same file: the device and inode on Unix (hard links and symlinks included), with
/// the size and modification time so that an inode freed and reused by a new file is not taken for the old one;
/// the canonical path elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FileKey {
    #[cfg(unix)]
    Inode(u64, u64, u64, i64, i64),
    #[cfg_attr(unix, allow(dead_code))]
    Canonical(PathBuf),
}

fn file_key(path: &Path) -> Option<FileKey> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| FileKey::Inode(m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    }
    #[cfg(not(unix))]
    {
        path.canonicalize().ok().map(FileKey::Canonical)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data inconsistent (plain inserts).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Marks `path` as an input of this run: [`write_atomic`] refuses to replace it, even when forced. Commands call
/// it for every file the user names as input (a scene, a problem file, the WAVs of a batch). Readers do not, since
/// some files are legitimately read and rewritten (a training checkpoint).
pub fn protect_input(path: &Path) {
    if let Some(key) = file_key(path) {
        lock(&INPUTS).get_or_insert_with(HashSet::new).insert(key);
    }
}

/// Whether `path` names (through any link) a file marked by [`protect_input`].
pub fn is_protected_input(path: &Path) -> bool {
    file_key(path).is_some_and(|k| lock(&INPUTS).as_ref().is_some_and(|s| s.contains(&k)))
}

/// Checks that `path` may be written: not an input of this run, not an existing file unless `force`, and not a
/// file with other hard links (replacing it would silently split the link). Call it before long work, so a
/// refusal comes first; [`write_atomic`] checks again.
pub fn check_output(path: &Path, force: bool) -> Result<()> {
    if is_protected_input(path) {
        return Err(Error::file(path, "is an input of this run; refusing to overwrite it (even with --force)"));
    }
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !force {
        return Err(Error::file(path, "already exists (use --force to overwrite)"));
    }
    if meta.is_dir() {
        return Err(Error::file(path, "is a folder, not a file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.is_file() && meta.nlink() > 1 {
            return Err(Error::file(
                path,
                format!(
                    "has {} hard links; replacing it would leave the other names with the old content — remove it \
                     first if that is what you want",
                    meta.nlink()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks that files can be created in the folder of `path` (creating the folder if needed), so a run whose
/// output cannot be written fails before its work rather than after.
pub fn check_writable_folder(path: &Path) -> Result<()> {
    let dir = folder_of(path);
    create_folder(&dir)?;
    let probe = dir.join(format!(".diffuse-write-test-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::file(&dir, format!("cannot write in this folder: {e}"))),
    }
}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn create_folder(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create the output folder: {e}")))?;
    }
    Ok(())
}

/// Writes `path` atomically with `write`. Refused when `path` is an input of this run ([`protect_input`]), and,
/// unless `force`, when it exists — also when another process creates it while this one writes (the final name
/// is created exclusively). The temporary file is removed when `write` fails, so a failed or interrupted write
/// leaves any previous file intact.
pub fn write_atomic(path: &Path, force: bool, write: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<()> {
    check_output(path, force)?;
    let dir = folder_of(path);
    create_folder(&dir)?;
    let name = path.file_name().ok_or_else(|| Error::file(path, "is not a file name"))?.to_string_lossy();
    sweep_stale_temp_files(&dir, &name);
    let (tmp, mut f) = create_temp(&dir, &name, path)?;
    let result = (|| -> std::io::Result<()> {
        write(&mut f)?;
        f.flush()?;
        f.sync_all()?;
        Ok(())
    })();
    drop(f);
    let placed = result.map_err(|e| Error::file(path, format!("cannot write: {e}"))).and_then(|()| {
        // Check again: an input may have been named (and protected) while this file was being written.
        if is_protected_input(path) {
            return Err(Error::file(path, "is an input of this run; refusing to overwrite it (even with --force)"));
        }
        place(&tmp, path, force)
    });
    let _ = std::fs::remove_file(&tmp);
    forget_temp(&tmp);
    placed
}

/// Creates a fresh temporary file (exclusively) beside the output and records it for [`remove_temp_files`].
fn create_temp(dir: &Path, name: &str, path: &Path) -> Result<(PathBuf, File)> {
    for attempt in 0..1000u32 {
        let candidate = dir.join(format!(".{name}.tmp-{}-{attempt}", std::process::id()));
        // Record before creating, so a signal between the two cannot leave an unrecorded file.
        lock(&IN_FLIGHT).push(candidate.clone());
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&candidate) {
            Ok(f) => return Ok((candidate, f)),
            Err(e) => {
                forget_temp(&candidate);
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(Error::file(&candidate, format!("cannot create a temporary file: {e}")));
                }
            }
        }
    }
    Err(Error::file(path, "cannot create a temporary file beside it (1000 names taken)"))
}

fn forget_temp(tmp: &Path) {
    lock(&IN_FLIGHT).retain(|p| p != tmp);
}

/// Moves the finished temporary file to `path`: replacing it when `force`, otherwise through a hard link, which
/// fails if the name exists (no window in which a concurrent writer's file could be replaced).
fn place(tmp: &Path, path: &Path, force: bool) -> Result<()> {
    if force {
        return std::fs::rename(tmp, path)
            .map_err(|e| Error::file(path, format!("cannot move the finished file into place: {e}")));
    }
    match std::fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::file(
            path,
            "was created by another process while this one was writing; kept it (use --force to overwrite)",
        )),
        // File systems without hard links: check and rename (a narrow race remains there).
        Err(_) if !path.exists() => std::fs::rename(tmp, path)
            .map_err(|e| Error::file(path, format!("cannot move the finished file into place: {e}"))),
        Err(_) => Err(Error::file(path, "already exists (use --force to overwrite)")),
    }
}

/// Removes every temporary file this process is writing now. Safe to call from a signal-handling thread; the
/// binary calls it on SIGINT/SIGTERM before exiting.
pub fn remove_temp_files() -> usize {
    let files = std::mem::take(&mut *lock(&IN_FLIGHT));
    files.iter().filter(|p| std::fs::remove_file(p).is_ok()).count()
}

/// Removes `.NAME.tmp-PID-K` files in `dir` whose process no longer runs (a killed earlier run). Only on
/// systems with `/proc`; elsewhere stale files stay (they never block a write: each write takes a fresh name).
fn sweep_stale_temp_files(dir: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|f| f.strip_prefix(&prefix)) else { continue };
        let Some(pid) = rest.split_once('-').and_then(|(pid, k)| {
            k.parse::<u32>().ok()?;
            pid.parse::<u32>().ok()
        }) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// [`write_atomic`] for a byte buffer.
pub fn write_bytes_atomic(path: &Path, force: bool, bytes: &[u8]) -> Result<()> {
    write_atomic(path, force, |f| f.write_all(bytes))
}

/// Whether `path` is a regular file (after following links). FIFOs, sockets and devices are not: opening a FIFO
/// blocks until a writer appears, so folder walks and readers check this first.
pub fn is_regular_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Opens an input file for reading after checking it is a regular file (a FIFO named `x.wav` would block
/// forever).
pub fn open_input(path: &Path) -> Result<File> {
    let meta = std::fs::metadata(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    if meta.is_dir() {
        return Err(Error::file(path, "is a folder, not a file"));
    }
    if !meta.is_file() {
        return Err(Error::file(path, "is not a regular file (a FIFO, socket or device); refusing to read it"));
    }
    File::open(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))
}

/// Reads a whole input file through [`open_input`], refusing files over `max_bytes` before reading them.
pub fn read_input(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = open_input(path)?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > max_bytes {
        return Err(Error::file(path, format!("is {len} bytes, over the limit of {max_bytes} for this kind of file")));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(max_bytes + 1).read_to_end(&mut bytes).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Error::file(path, format!("is over the limit of {max_bytes} bytes for this kind of file")));
    }
    Ok(bytes)
}

/// Every regular file under `dir` (recursively, sorted by path) accepted by `keep`, each real file once: a
/// symlink cycle or a second link to a folder already walked is not followed again, and FIFOs, sockets and
/// devices are skipped.
pub fn walk_files(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut seen_dirs = HashSet::new();
    let mut seen_files = HashSet::new();
    let mut out = Vec::new();
    walk(dir, keep, &mut seen_dirs, &mut seen_files, &mut out)?;
    Ok(out)
}

fn walk(
    dir: &Path,
    keep: &dyn Fn(&Path) -> bool,
    seen_dirs: &mut HashSet<FileKey>,
    seen_files: &mut HashSet<FileKey>,
    out: &mut Vec<PathBuf>,
) -> Result<()> {
    if let Some(key) = file_key(dir)
        && !seen_dirs.insert(key)
    {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, format!("cannot list the folder: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        let Ok(meta) = std::fs::metadata(&p) else { continue }; // dangling link
        if meta.is_dir() {
            walk(&p, keep, seen_dirs, seen_files, out)?;
        } else if meta.is_file() && keep(&p) && file_key(&p).is_none_or(|k| seen_files.insert(k)) {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
