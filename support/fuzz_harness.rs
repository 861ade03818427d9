//! Shared harness of the `fuzz_parsers` property tests (included by each crate's `tests/fuzz_parsers.rs` with
//! `#[path]`): a capped global allocator, one child process per test, a time bound per case, and byte-level
//! mutation strategies over seed files.
//!
//! - Bounded memory: the test binary's heap is counted ([`cap::Cap`]); inside a test the cap is
//!   [`MEM_LIMIT`] above what the harness itself holds, so an allocation a header asks for beyond it is refused
//!   and the process aborts ("memory allocation of N bytes failed"). Each test runs in its own child process of
//!   the test binary, so such an abort fails that test, by name, and no other.
//! - Bounded time: every case must finish within [`CASE_LIMIT`].
//! - Case count: each test has a fixed default that keeps CI quick; `PROPTEST_CASES` raises it (`make fuzz`).

#![allow(dead_code)]

use std::alloc::System;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cap::Cap;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Heap a single test may hold on top of the harness: far above any valid small input, far below what a header
/// field can ask for.
pub const MEM_LIMIT: usize = 256 << 20;
/// Time one case may take (debug build; a parser that loops on a header count blows through it).
pub const CASE_LIMIT: Duration = Duration::from_secs(2);
/// A case still running this long is stopped by a watchdog (it may never return), failing the test.
pub const HANG_LIMIT: Duration = Duration::from_secs(20);

/// Milliseconds since [`EPOCH`] at which the running case started (0: none running).
static CASE_STARTED_MS: AtomicU64 = AtomicU64::new(0);
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// In the child: a thread that ends the process when a case runs past [`HANG_LIMIT`].
fn start_watchdog() {
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let started = CASE_STARTED_MS.load(Ordering::SeqCst);
            if started != 0 && now_ms() - started > HANG_LIMIT.as_millis() as u64 {
                eprintln!("a case has run for more than {HANG_LIMIT:?}: stopped (it may never end)");
                std::process::exit(3);
            }
        }
    });
}

const CHILD_ENV: &str = "DIFFUSE_FUZZ_CHILD";
/// File where the child writes each case before running it, so an abort can be traced to its input.
const LAST_CASE_ENV: &str = "DIFFUSE_FUZZ_LAST_CASE";

/// Runs `body` in a child process of this test binary (the test named `name`, at the crate root) under the
/// memory cap; panics with the child's output if the child fails, aborts or is killed.
pub fn isolated(name: &str, body: impl FnOnce()) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        start_watchdog();
        ALLOC.set_limit(ALLOC.allocated() + MEM_LIMIT).expect("set the heap cap");
        body();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = tempfile::tempdir().expect("a temp dir for the last case");
    let last = dir.path().join("last-case.txt");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env(LAST_CASE_ENV, &last)
        .output()
        .expect("start the test binary as a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last_case = std::fs::read_to_string(&last).unwrap_or_default();
    for line in stdout.lines().filter(|l| l.contains("cases/s")) {
        println!("{}", line.trim_start_matches("test ").trim_start_matches(name).trim_start_matches(" ... "));
    }
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed in its child process ({}){}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- the case running \
         when it stopped ---\n{}",
        out.status,
        if out.status.code().is_none() {
            format!(
                "; an abort after 'memory allocation of N bytes failed' means an input asked for more than {} MiB",
                MEM_LIMIT >> 20
            )
        } else {
            String::new()
        },
        tail(&stdout),
        tail(&stderr),
        tail(&last_case),
    );
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(6000);
    let start = (start..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
    &s[start..]
}

/// Cases per property: `PROPTEST_CASES` when set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The seed of the case generator: `FUZZ_SEED` when set (`make fuzz` draws a new one per run), else 0, so CI
/// runs the same cases every time.
pub fn seed() -> u64 {
    std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Runs `check` on `cases(default)` inputs drawn from `strategy`, each within [`CASE_LIMIT`]; prints the rate.
/// A panic in `check` fails the case (proptest shrinks it and prints the smallest input).
pub fn run_cases<S: Strategy>(name: &str, default: u32, strategy: S, check: impl Fn(S::Value) -> Result<(), String>)
where
    S::Value: std::fmt::Debug,
{
    let n = cases(default);
    let config = Config {
        cases: n,
        failure_persistence: None,
        max_shrink_iters: 2000,
        rng_seed: RngSeed::Fixed(seed()),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let last = std::env::var_os(LAST_CASE_ENV);
    let start = Instant::now();
    let result = runner.run(&strategy, |input| {
        if let Some(last) = &last {
            let _ = std::fs::write(last, format!("{name}: {input:?}"));
        }
        let t = Instant::now();
        CASE_STARTED_MS.store(now_ms(), Ordering::SeqCst);
        let result = check(input);
        CASE_STARTED_MS.store(0, Ordering::SeqCst);
        result.map_err(TestCaseError::fail)?;
        let took = t.elapsed();
        prop_assert!(took < CASE_LIMIT, "one case took {took:?} (limit {CASE_LIMIT:?})");
        Ok(())
    });
    let secs = start.elapsed().as_secs_f64();
    println!("{name}: {n} cases in {secs:.2} s ({:.0} cases/s), FUZZ_SEED={}", f64::from(n) / secs, seed());
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Flip one bit.
    Flip(Index, u8),
    /// Set one byte.
    Set(Index, u8),
    /// Overwrite 4 bytes (little-endian) with a boundary value.
    Word(Index, u32),
    /// Overwrite 8 bytes (little-endian) with a boundary value.
    Long(Index, u64),
    /// Insert bytes.
    Insert(Index, Vec<u8>),
    /// Delete up to `n` bytes.
    Delete(Index, usize),
    /// Cut the input here.
    Truncate(Index),
    /// Repeat a slice of the input in place.
    Repeat(Index, usize, usize),
}

/// Boundary values for 16/32-bit header fields.
pub fn word() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(7),
        Just(64),
        Just(0x7fff),
        Just(0xffff),
        Just(0x7fff_ffff),
        Just(0x8000_0000),
        Just(u32::MAX),
        any::<u32>(),
    ]
}

fn long() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(1 << 40), Just(1_000_000_000_000), any::<u64>()]
}

/// A single edit.
pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        2 => (any::<Index>(), word()).prop_map(|(i, w)| Edit::Word(i, w)),
        1 => (any::<Index>(), long()).prop_map(|(i, w)| Edit::Long(i, w)),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => (any::<Index>(), 1usize..64, 1usize..8).prop_map(|(i, n, k)| Edit::Repeat(i, n, k)),
    ]
}

/// Applies `edits` to a copy of `seed`.
pub fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        if b.is_empty() {
            if let Edit::Insert(_, bytes) = e {
                b.extend_from_slice(bytes);
            }
            continue;
        }
        let len = b.len();
        match e {
            Edit::Flip(i, bit) => b[i.index(len)] ^= 1 << bit,
            Edit::Set(i, v) => b[i.index(len)] = *v,
            Edit::Word(i, w) => overwrite(&mut b, i.index(len), &w.to_le_bytes()),
            Edit::Long(i, w) => overwrite(&mut b, i.index(len), &w.to_le_bytes()),
            Edit::Insert(i, bytes) => {
                let at = i.index(len + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Edit::Delete(i, n) => {
                let at = i.index(len);
                b.drain(at..(at + n).min(len));
            }
            Edit::Truncate(i) => b.truncate(i.index(len + 1)),
            Edit::Repeat(i, n, k) => {
                let at = i.index(len);
                let piece = b[at..(at + n).min(len)].to_vec();
                for _ in 0..*k {
                    b.splice(at..at, piece.iter().copied());
                }
            }
        }
    }
    b
}

fn overwrite(b: &mut [u8], at: usize, v: &[u8]) {
    let end = (at + v.len()).min(b.len());
    b[at..end].copy_from_slice(&v[..end - at]);
}

/// One of `seeds` with 1 to 8 random edits.
pub fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!seeds.is_empty());
    (any::<Index>(), proptest::collection::vec(edit(), 1..8)).prop_map(move |(s, edits)| {
        let seed = &seeds[s.index(seeds.len())];
        apply(seed, &edits)
    })
}

/// Arbitrary bytes, up to `max` long.
pub fn arbitrary_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// Text-level mutations of a JSON seed: numbers swapped for extreme ones, deep nesting, extra keys, cuts.
pub fn mutated_json(seeds: Vec<String>) -> impl Strategy<Value = String> {
    let numbers = prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("1e308".to_string()),
        Just("-1e308".to_string()),
        Just("1e999".to_string()),
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("1000000000000".to_string()),
        Just("1000000000".to_string()),
        Just("4294967295".to_string()),
        Just("65536".to_string()),
        Just("0.0".to_string()),
        Just("-0.0".to_string()),
        Just("1e-320".to_string()),
        Just("null".to_string()),
        Just("\"x\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        (1usize..400).prop_map(|d| format!("{}1{}", "[".repeat(d), "]".repeat(d))),
        (1usize..200).prop_map(|d| format!("{}1{}", "{\"a\":".repeat(d), "}".repeat(d))),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
    ];
    let op = prop_oneof![
        4 => (any::<Index>(), numbers).prop_map(|(i, v)| JsonEdit::Number(i, v)),
        1 => (any::<Index>(), "[a-z_]{1,12}").prop_map(|(i, k)| JsonEdit::ExtraKey(i, k)),
        1 => any::<Index>().prop_map(JsonEdit::Cut),
        1 => (any::<Index>(), 1usize..100).prop_map(|(i, k)| JsonEdit::RepeatArray(i, k)),
    ];
    (any::<Index>(), proptest::collection::vec(op, 1..5)).prop_map(move |(s, ops)| {
        let mut t = seeds[s.index(seeds.len())].clone();
        for op in &ops {
            t = op.apply(&t);
        }
        t
    })
}

/// One edit of JSON text.
#[derive(Debug, Clone)]
pub enum JsonEdit {
    /// Replace the i-th number literal with this text.
    Number(Index, String),
    /// Add `"key": 1` to the i-th object.
    ExtraKey(Index, String),
    /// Cut the text at a byte.
    Cut(Index),
    /// Repeat the first element of the i-th array k more times.
    RepeatArray(Index, usize),
}

impl JsonEdit {
    fn apply(&self, t: &str) -> String {
        match self {
            JsonEdit::Number(i, v) => {
                let spans = number_spans(t);
                if spans.is_empty() {
                    return t.to_string();
                }
                let (a, b) = spans[i.index(spans.len())];
                format!("{}{v}{}", &t[..a], &t[b..])
            }
            JsonEdit::ExtraKey(i, k) => {
                let opens: Vec<usize> = t.match_indices('{').map(|(p, _)| p).collect();
                if opens.is_empty() {
                    return t.to_string();
                }
                let at = opens[i.index(opens.len())] + 1;
                format!("{}\"{k}\": 1, {}", &t[..at], &t[at..])
            }
            JsonEdit::Cut(i) => {
                let at = i.index(t.len() + 1);
                let at = (at..=t.len()).find(|&p| t.is_char_boundary(p)).unwrap_or(t.len());
                t[..at].to_string()
            }
            JsonEdit::RepeatArray(i, k) => {
                let spans = number_spans(t);
                let in_array: Vec<(usize, usize)> =
                    spans.into_iter().filter(|&(a, _)| t[..a].trim_end().ends_with('[')).collect();
                if in_array.is_empty() {
                    return t.to_string();
                }
                let (a, b) = in_array[i.index(in_array.len())];
                let item = &t[a..b];
                format!("{}{}{}", &t[..b], format!(", {item}").repeat(*k), &t[b..])
            }
        }
    }
}

/// Byte spans of the number literals of JSON text (outside strings).
fn number_spans(t: &str) -> Vec<(usize, usize)> {
    let b = t.as_bytes();
    let mut spans = Vec::new();
    let (mut i, mut in_str) = (0, false);
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_str = true;
            i += 1;
            continue;
        }
        if c == b'-' || c.is_ascii_digit() {
            let start = i;
            while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                i += 1;
            }
            spans.push((start, i));
            continue;
        }
        i += 1;
    }
    spans
}

/// The repository root (this file lives in `support/`).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("crate folder in the workspace").to_path_buf()
}

/// Reads a file of the repository (seed corpora are the repository's own examples and fixtures).
pub fn repo_file(rel: &str) -> Vec<u8> {
    std::fs::read(repo_root().join(rel)).unwrap_or_else(|e| panic!("seed {rel}: {e}"))
}
