//! Large batches on a cluster: which inputs a shard takes ([`Shard`]), the JSON-lines manifest each shard keeps
//! of what it did ([`Record`], [`ManifestWriter`], [`Manifest`]), whether an input is already done
//! ([`progress`]) and the merge that checks the shards covered every input exactly once ([`merge`]).
//!
//! A manifest holds one JSON object per line, appended and fsynced as each item finishes, so a killed run leaves
//! whole lines only (a torn last line is ignored by the reader and cut off before the next append). Within one
//! manifest the last record of an input wins: a resumed run appends the items it redoes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// One of `count` equal parts of a batch (`--shard i/n`, `i` counted from 0).
///
/// The batch is sorted and de-duplicated first; item `k` of the sorted list goes to shard `k mod n`
/// (round-robin rather than contiguous blocks, so that runs of long files that sort together are spread over
/// the shards). Every shard of the same list therefore takes a disjoint part, and together they take all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard's number, `0 ≤ index < count`.
    pub index: usize,
    /// How many shards the batch is split into, at least 1.
    pub count: usize,
}

impl Shard {
    /// The whole batch as one shard (`0/1`).
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`; errors (naming `--shard`) unless `count ≥ 1` and `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 {
            return Err(Error::invalid("--shard", "the number of shards must be at least 1"));
        }
        if index >= count {
            return Err(Error::invalid(
                "--shard",
                format!("shard {index} of {count} does not exist: shards are numbered 0 to {}", count - 1),
            ));
        }
        Ok(Shard { index, count })
    }

    /// This shard's items of `items`: sorted, de-duplicated, then every `count`-th from `index` on.
    pub fn select<T: Ord>(&self, mut items: Vec<T>) -> Vec<T> {
        items.sort();
        items.dedup();
        items.into_iter().enumerate().filter(|(k, _)| k % self.count == self.index).map(|(_, x)| x).collect()
    }
}

impl FromStr for Shard {
    type Err = Error;

    /// Parses `i/n`, e.g. `0/4` … `3/4`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid("--shard", format!("'{s}': {why}; expected i/n such as 0/4 (i from 0)"));
        let (i, n) = s.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let i: usize = i.trim().parse().map_err(|_| bad("the shard number is not a whole number"))?;
        let n: usize = n.trim().parse().map_err(|_| bad("the shard count is not a whole number"))?;
        Shard::new(i, n)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What happened to one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The output was written; its checksum is recorded.
    Ok,
    /// Processing failed; `error` says why.
    Failed,
    /// Not processed (e.g. its output already existed and was not made by this batch); `error` says why.
    Skipped,
}

/// One manifest line: an input, its output and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The input as planned (paths as given on the command line or resolved from a list file).
    pub input: PathBuf,
    /// The output file that marks the input as done.
    pub output: PathBuf,
    /// Ok, failed or skipped.
    pub status: Status,
    /// Why it failed or was skipped; `null` when ok.
    pub error: Option<String>,
    /// Wall-clock seconds spent on this input.
    pub seconds: f64,
    /// SHA-256 of the output file's bytes (lower-case hex) when ok, else `null`.
    pub checksum: Option<String>,
    /// The shard that processed it, `i/n`.
    pub shard: String,
}

/// SHA-256 of a file's bytes as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `p` with `.` components and repeated separators removed, so that `./a//b.wav` and `a/b.wav` name one input.
pub fn normalize(p: &Path) -> PathBuf {
    p.components().filter(|c| !matches!(c, Component::CurDir)).collect()
}

/// Appends records to a manifest, one line each, flushed and fsynced before [`ManifestWriter::append`] returns.
/// One writer per manifest file: shards write their own manifests.
#[derive(Debug)]
pub struct ManifestWriter {
    file: File,
    path: PathBuf,
}

impl ManifestWriter {
    /// Opens `path` for appending (creating it and its folder), after cutting off a torn last line left by a
    /// killed run; `truncate` starts the manifest over.
    pub fn open(path: &Path, truncate: bool) -> Result<Self> {
        let err = |e: std::io::Error| Error::file(path, format!("cannot open the manifest: {e}"));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create the folder: {e}")))?;
        }
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(truncate).open(path).map_err(err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(err)?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |k| k + 1);
        if whole < bytes.len() {
            file.set_len(whole as u64).map_err(err)?;
        }
        file.seek(SeekFrom::Start(whole as u64)).map_err(err)?;
        Ok(ManifestWriter { file, path: path.to_path_buf() })
    }

    /// Writes `record` as one line and waits until it is on disk.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_string(record).map_err(|e| Error::file(&self.path, e))?;
        line.push('\n');
        let err = |e: std::io::Error| Error::file(&self.path, format!("cannot append to the manifest: {e}"));
        self.file.write_all(line.as_bytes()).map_err(err)?;
        self.file.flush().map_err(err)?;
        self.file.sync_data().map_err(err)
    }

    /// The manifest's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether an input needs doing, per a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Recorded ok, and the output is there with the recorded checksum.
    Complete,
    /// Not done (or no longer verifiably done); says why.
    Todo(String),
}

/// The records of one manifest file, in file order.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// Where it was read from.
    pub path: PathBuf,
    /// Every complete line's record.
    pub records: Vec<Record>,
    /// Whether a torn last line (from a killed run) was ignored.
    pub torn_tail: bool,
}

impl Manifest {
    /// Reads a manifest; a missing file is an empty manifest, a torn last line is ignored, any other line that is
    /// not a record is an error naming its line number.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::file(path, format!("cannot read the manifest: {e}"))),
        };
        Self::parse(path, &bytes)
    }

    /// Parses manifest bytes read from `path` (see [`Manifest::read`]).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |k| k + 1);
        let mut records = Vec::new();
        for (k, line) in bytes[..whole].split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let record: Record = serde_json::from_slice(line)
                .map_err(|e| Error::file(path, format!("line {}: not a manifest record: {e}", k + 1)))?;
            records.push(record);
        }
        Ok(Manifest { path: path.to_path_buf(), records, torn_tail: whole < bytes.len() })
    }

    /// The last record of every input (the one that counts), by normalized input path.
    pub fn latest(&self) -> HashMap<PathBuf, &Record> {
        self.records.iter().map(|r| (normalize(&r.input), r)).collect()
    }

    /// Whether `input` → `output` is done according to `latest` (from [`Manifest::latest`]); see [`progress`].
    pub fn check(latest: &HashMap<PathBuf, &Record>, input: &Path, output: &Path) -> Progress {
        progress(latest.get(&normalize(input)).copied(), output)
    }
}

/// Whether an input whose last record is `record` is done with `output`: the record is ok for this output, and
/// the output exists with the recorded checksum. No record, or a changed or missing output, is not done.
pub fn progress(record: Option<&Record>, output: &Path) -> Progress {
    let Some(r) = record else {
        return Progress::Todo("not in the manifest".into());
    };
    if r.status != Status::Ok {
        return Progress::Todo(format!("recorded as {:?}", r.status).to_lowercase());
    }
    if normalize(&r.output) != normalize(output) {
        return Progress::Todo(format!("recorded with another output, {}", r.output.display()));
    }
    if !output.is_file() {
        return Progress::Todo(format!("{} is missing", output.display()));
    }
    match (sha256_file(output), &r.checksum) {
        (Ok(sum), Some(recorded)) if &sum == recorded => Progress::Complete,
        (Ok(_), _) => Progress::Todo(format!("{} changed since it was recorded", output.display())),
        (Err(e), _) => Progress::Todo(e.to_string()),
    }
}

/// One line of a list file: the input and the path the outputs keep (relative to the output folder).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListEntry {
    /// The input: the line resolved against the list file's folder.
    pub path: PathBuf,
    /// The line itself when relative, else the file name.
    pub relative: PathBuf,
}

/// Reads a list file: one input per line, relative to the list file's folder; blank lines and lines starting with
/// `#` are skipped; repeated lines count once.
pub fn read_list(path: &Path) -> Result<Vec<ListEntry>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read the list: {e}")))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let mut entries: Vec<ListEntry> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let line = normalize(Path::new(l));
            if line.is_absolute() {
                ListEntry { relative: PathBuf::from(line.file_name().unwrap_or_default()), path: line }
            } else {
                ListEntry { path: normalize(&base.join(&line)), relative: line }
            }
        })
        .collect();
    entries.sort();
    entries.dedup();
    Ok(entries)
}

/// What a merge expects the manifests to cover.
#[derive(Debug, Clone)]
pub enum Expected {
    /// Exactly these inputs.
    Inputs(Vec<PathBuf>),
    /// This many distinct inputs (names unknown).
    Count(usize),
}

/// The outcome of [`merge`]: every list sorted by input.
#[derive(Debug, Clone, Default)]
pub struct MergeReport {
    /// One record per input (the last one in the first manifest that has it), sorted by input.
    pub records: Vec<Record>,
    /// Inputs recorded ok.
    pub ok: usize,
    /// Inputs whose record is failed, with the error.
    pub failed: Vec<(PathBuf, String)>,
    /// Inputs whose record is skipped, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Expected inputs no manifest has.
    pub missing: Vec<PathBuf>,
    /// How many more inputs `Expected::Count` wanted than the manifests have (names unknown).
    pub missing_count: usize,
    /// Inputs in more than one manifest, with those manifests.
    pub duplicated: Vec<(PathBuf, Vec<PathBuf>)>,
    /// Recorded inputs that were not expected.
    pub unexpected: Vec<PathBuf>,
    /// Manifests whose torn last line was ignored.
    pub torn: Vec<PathBuf>,
}

impl MergeReport {
    /// Every expected input covered exactly once, and ok.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
            && self.skipped.is_empty()
            && self.missing.is_empty()
            && self.missing_count == 0
            && self.duplicated.is_empty()
            && self.unexpected.is_empty()
    }
}

/// Merges shard manifests: one record per input, checked against what was `expected` (missing, duplicated across
/// manifests, failed, skipped, unexpected).
pub fn merge(manifests: &[Manifest], expected: &Expected) -> MergeReport {
    let mut report = MergeReport::default();
    let mut by_input: BTreeMap<PathBuf, (Record, Vec<PathBuf>)> = BTreeMap::new();
    for m in manifests {
        if m.torn_tail {
            report.torn.push(m.path.clone());
        }
        let mut latest: Vec<(PathBuf, &Record)> = m.latest().into_iter().collect();
        latest.sort_by(|a, b| a.0.cmp(&b.0));
        for (input, record) in latest {
            by_input
                .entry(input)
                .and_modify(|(_, files)| files.push(m.path.clone()))
                .or_insert_with(|| (record.clone(), vec![m.path.clone()]));
        }
    }
    match expected {
        Expected::Inputs(inputs) => {
            let mut want: Vec<PathBuf> = inputs.iter().map(|p| normalize(p)).collect();
            want.sort();
            want.dedup();
            report.missing = want.iter().filter(|p| !by_input.contains_key(*p)).cloned().collect();
            report.unexpected = by_input.keys().filter(|p| want.binary_search(p).is_err()).cloned().collect();
        }
        Expected::Count(n) => report.missing_count = n.saturating_sub(by_input.len()),
    }
    for (input, (record, files)) in by_input {
        if files.len() > 1 {
            report.duplicated.push((input.clone(), files));
        }
        let why = || record.error.clone().unwrap_or_default();
        match record.status {
            Status::Ok => report.ok += 1,
            Status::Failed => report.failed.push((input.clone(), why())),
            Status::Skipped => report.skipped.push((input.clone(), why())),
        }
        report.records.push(record);
    }
    report
}

/// Writes `records` as a manifest at `path` atomically (refusing an existing file unless `force`).
pub fn write_manifest(path: &Path, records: &[Record], force: bool) -> Result<()> {
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r).map_err(|e| Error::file(path, e))?);
        text.push('\n');
    }
    crate::io::write_bytes_atomic(path, force, text.as_bytes())
}

#[cfg(test)]
mod tests;
