//! Byte-level text corpora: files and folders read as raw bytes (no tokenizer vocabulary, no out-of-vocabulary
//! tokens, exact bits per byte), with bounded memory, binary files skipped, invalid UTF-8 counted, and a
//! deterministic held-out validation split.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Most bytes kept from all corpus files together (256 MiB); a larger corpus is read up to this and the rest is
/// reported as left out, so memory stays bounded whatever the input.
pub const MAX_CORPUS_BYTES: usize = 256 << 20;
/// Validation takes one block of (at most) this many bytes in every [`VALIDATION_EVERY`]; small corpora use
/// smaller blocks so that they still hold out 2 %.
pub const VALIDATION_BLOCK: usize = 4096;
/// One block in this many goes to validation (2 %).
pub const VALIDATION_EVERY: usize = 50;

/// The bytes of a corpus, split into training and validation, and what reading it found.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    /// Training bytes (files joined by a blank line).
    pub train: Vec<u8>,
    /// Held-out validation bytes: block k of every file's stream where k mod 50 == 49.
    pub validation: Vec<u8>,
    /// The validation block size used.
    pub block: usize,
    /// Files read.
    pub files: Vec<PathBuf>,
    /// Files skipped, with the reason (binary, unreadable, empty).
    pub skipped: Vec<(PathBuf, String)>,
    /// Invalid UTF-8 sequences seen (kept as bytes: byte-level models need no valid text).
    pub invalid_utf8: usize,
    /// Bytes left out because the corpus exceeded [`MAX_CORPUS_BYTES`].
    pub truncated_bytes: u64,
}

/// Counts invalid UTF-8 sequences in `bytes` (each maximal invalid subpart counts once).
pub fn invalid_utf8_sequences(mut bytes: &[u8]) -> usize {
    let mut n = 0;
    loop {
        match std::str::from_utf8(bytes) {
            Ok(_) => return n,
            Err(e) => {
                // A sequence cut at the end of the buffer counts too: the file ends mid-character.
                n += 1;
                let skip = e.valid_up_to() + e.error_len().unwrap_or(bytes.len() - e.valid_up_to());
                bytes = &bytes[skip..];
            }
        }
    }
}

/// Whether a file's first bytes look binary: a NUL byte, as `grep` and `git` decide.
fn looks_binary(head: &[u8]) -> bool {
    head.contains(&0)
}

/// Every regular file under `inputs` (files as given, folders walked; hidden entries skipped), sorted.
pub fn corpus_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| Error::file(input, format!("cannot read: {e}")))?;
        if meta.is_dir() {
            let hidden = |p: &Path| {
                p.strip_prefix(input)
                    .unwrap_or(p)
                    .components()
                    .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
            };
            files.extend(diffuse_core::io::walk_files(input, &|p| !hidden(p))?);
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

impl Corpus {
    /// Reads the files and folders of `inputs` (streamed in 1 MiB pieces; at most [`MAX_CORPUS_BYTES`] kept).
    /// Errors: an input that does not exist, or no usable text at all.
    pub fn read(inputs: &[PathBuf]) -> Result<Corpus> {
        let mut c = Corpus::default();
        let mut kept = 0usize;
        let files = corpus_files(inputs)?;
        let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
        let per_block = total / (VALIDATION_EVERY as u64 * 4);
        c.block = (per_block.min(VALIDATION_BLOCK as u64) as usize).max(16);
        for file in files {
            if kept >= MAX_CORPUS_BYTES {
                c.truncated_bytes += std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                continue;
            }
            match c.read_file(&file, MAX_CORPUS_BYTES - kept) {
                Ok(0) => c.skipped.push((file, "empty".into())),
                Ok(n) => {
                    kept += n;
                    c.files.push(file);
                }
                Err(why) => c.skipped.push((file, why)),
            }
        }
        if c.train.is_empty() {
            let names = inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
            return Err(Error::invalid("corpus", format!("no usable text in {names} (empty, or only binary files)")));
        }
        if c.train.len() + c.validation.len() < 2 {
            return Err(Error::invalid("corpus", "a corpus needs at least 2 bytes"));
        }
        Ok(c)
    }

    /// Appends one file; returns the bytes kept, or why it was skipped.
    fn read_file(&mut self, path: &Path, budget: usize) -> std::result::Result<usize, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let mut buf = vec![0u8; 1 << 20];
        let (mut kept, mut offset, mut first) = (0usize, 0usize, true);
        let mut carry: Vec<u8> = Vec::new();
        let separator = !self.train.is_empty();
        loop {
            let n = f.read(&mut buf).map_err(|e| format!("read failed: {e}"))?;
            if n == 0 {
                break;
            }
            let piece = &buf[..n];
            if first {
                first = false;
                if looks_binary(&piece[..n.min(8192)]) {
                    return Err("binary file (contains NUL bytes)".into());
                }
                if separator {
                    self.train.extend_from_slice(b"\n\n");
                }
            }
            // Invalid UTF-8 is counted over whole sequences: keep an incomplete tail for the next piece.
            carry.extend_from_slice(piece);
            let cut = carry.len().saturating_sub(3);
            let whole = match std::str::from_utf8(&carry[..cut]) {
                Ok(_) => cut,
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => cut,
            };
            self.invalid_utf8 += invalid_utf8_sequences(&carry[..whole]);
            carry.drain(..whole);
            let take = n.min(budget - kept);
            for (i, &b) in piece[..take].iter().enumerate() {
                let block = (offset + i) / self.block;
                if block % VALIDATION_EVERY == VALIDATION_EVERY - 1 {
                    self.validation.push(b);
                } else {
                    self.train.push(b);
                }
            }
            kept += take;
            offset += n;
            if take < n {
                self.truncated_bytes += (n - take) as u64 + meta.len().saturating_sub(offset as u64);
                break;
            }
        }
        self.invalid_utf8 += invalid_utf8_sequences(&carry);
        Ok(kept)
    }

    /// One line describing the corpus.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} file{}, {} training and {} validation bytes",
            self.files.len(),
            if self.files.len() == 1 { "" } else { "s" },
            self.train.len(),
            self.validation.len()
        );
        if !self.skipped.is_empty() {
            s += &format!(", {} skipped", self.skipped.len());
        }
        if self.invalid_utf8 > 0 {
            s += &format!(", {} invalid UTF-8 sequences (kept as bytes)", self.invalid_utf8);
        }
        if self.truncated_bytes > 0 {
            s += &format!(", {} bytes left out over the {} MiB limit", self.truncated_bytes, MAX_CORPUS_BYTES >> 20);
        }
        s
    }
}

/// Reads one evaluation file as bytes (at most `max` bytes; larger files are an error naming the file).
pub fn read_text_file(path: &Path, max: u64) -> Result<Vec<u8>> {
    let bytes = diffuse_core::io::read_input(path, max)?;
    if bytes.is_empty() {
        return Err(Error::file(path, "empty file"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_counted_per_sequence() {
        assert_eq!(invalid_utf8_sequences("héllo".as_bytes()), 0);
        assert_eq!(invalid_utf8_sequences(b"a\xffb\xfe\xfdc"), 3);
        assert_eq!(invalid_utf8_sequences(b"ab\xe2\x82"), 1);
    }

    #[test]
    fn folders_binary_files_and_the_validation_split() {
        let dir = tempfile::tempdir().unwrap();
        let text: Vec<u8> = (0..VALIDATION_BLOCK * VALIDATION_EVERY * 2).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(dir.path().join("a.txt"), &text).unwrap();
        std::fs::write(dir.path().join("b.bin"), b"\x7fELF\x00\x01").unwrap();
        std::fs::write(dir.path().join("c.txt"), b"bad \xff byte").unwrap();
        std::fs::write(dir.path().join("empty.txt"), b"").unwrap();
        let c = Corpus::read(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(c.files.len(), 2);
        assert_eq!(c.skipped.len(), 2, "{:?}", c.skipped);
        assert!(c.skipped.iter().any(|(f, why)| f.ends_with("b.bin") && why.contains("binary")));
        assert_eq!(c.invalid_utf8, 1);
        // Two validation blocks from a.txt; everything else (plus the separator) is training.
        assert_eq!(c.validation.len(), 2 * VALIDATION_BLOCK);
        assert_eq!(c.train.len() + c.validation.len(), text.len() + 2 + 10);
        assert!(c.summary().contains("invalid UTF-8"));
    }

    #[test]
    fn empty_and_missing_corpora_are_errors_naming_the_input() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.bin"), b"\x00\x00").unwrap();
        let err = Corpus::read(&[dir.path().to_path_buf()]).unwrap_err().to_string();
        assert!(err.contains("no usable text"), "{err}");
        let missing = dir.path().join("nope");
        let err = Corpus::read(std::slice::from_ref(&missing)).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        std::fs::write(dir.path().join("one.txt"), b"a").unwrap();
        let err = Corpus::read(&[dir.path().join("one.txt")]).unwrap_err().to_string();
        assert!(err.contains("at least 2 bytes"), "{err}");
    }
}
