//! Fuzzing the text target parser (`exact::Target::from_json_file`, the `--target` of `diffuse text check`) with
//! property tests: arbitrary text and the repository's example targets with numbers replaced by extreme ones,
//! deep nesting, extra keys, repeated entries and cuts. Every case must return `Ok` with a distribution that sums
//! to 1, or an error naming the file, within 2 s and 256 MiB (support/fuzz_harness.rs).

#[path = "../../support/fuzz_harness.rs"]
mod harness;

use std::path::Path;

use diffuse_discrete::exact::Target;
use harness::{isolated, mutated_json, repo_file, run_cases};

fn seeds() -> Vec<String> {
    ["examples/text/markov.json", "examples/text/table.json"]
        .iter()
        .map(|f| String::from_utf8(repo_file(f)).unwrap())
        .collect()
}

fn check(text: &str, path: &Path) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| e.to_string())?;
    match Target::from_json_file(path) {
        Ok(t) => {
            let total: f64 = t.as_map().values().sum();
            if (total - 1.0).abs() > 1e-5 {
                return Err(format!("accepted a target whose probabilities sum to {total}"));
            }
            Ok(())
        }
        Err(e) if e.to_string().contains("case.json") => Ok(()),
        Err(e) => Err(format!("error does not name the file: {e}")),
    }
}

#[test]
fn target_arbitrary_text() {
    isolated("target_arbitrary_text", || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case.json");
        run_cases("target_arbitrary_text", 400, ".{0,300}", |t: String| check(&t, &path));
    });
}

#[test]
fn target_mutated_json() {
    isolated("target_mutated_json", || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case.json");
        run_cases("target_mutated_json", 600, mutated_json(seeds()), |t| check(&t, &path));
    });
}

#[test]
fn seeds_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.json");
    for s in seeds() {
        std::fs::write(&path, &s).unwrap();
        Target::from_json_file(&path).unwrap();
    }
}

/// Found by `target_mutated_json`: `"length": 5871405391841987951` made the size check multiply vocab^length one
/// step at a time (saturating, without stopping), a loop of 5.9·10^18 iterations; it now stops past the limit.
#[test]
fn huge_length_is_refused_at_once() {
    isolated("huge_length_is_refused_at_once", || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.json");
        let text = r#"{"table": {"vocab": 3, "length": 5871405391841987951, "entries": []}}"#;
        std::fs::write(&path, text).unwrap();
        let t = std::time::Instant::now();
        let e = Target::from_json_file(&path).unwrap_err().to_string();
        assert!(e.contains("long.json") && e.contains("exceeds"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_millis(100), "{:?}", t.elapsed());
    });
}
