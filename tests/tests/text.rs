//! End-to-end tests of `diffuse text check`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use diffuse_tests::{diffuse_bin, repo_root};

fn examples() -> PathBuf {
    repo_root().join("examples/text")
}

fn run(args: &[&str]) -> Output {
    Command::new(diffuse_bin()).args(args).output().expect("run diffuse")
}

fn check(target: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["-q", "text", "check", "--target", target.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn check_passes_with_the_exact_denoiser_and_reports_json() {
    let out = check(
        &examples().join("markov.json"),
        &["--process", "masked", "--sampler", "ancestral", "--steps", "32", "--samples", "4000", "--json"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v["report"];
    assert_eq!(r["pass"], true);
    let (tv, bound, disc) =
        (r["tv"].as_f64().unwrap(), r["bound"].as_f64().unwrap(), r["discretisation"].as_f64().unwrap());
    assert!(tv <= bound && disc < 2.0 / 32.0, "{r}");
    assert_eq!(v["sampler"], "ancestral");
}

#[test]
fn far_too_few_steps_show_in_the_discretisation_error() {
    // One step draws tokens independently: far from the correlated chain. The samples still follow the
    // sampler's exact law, so the check passes, and the report shows where the error comes from.
    let out = check(
        &examples().join("markov.json"),
        &["--process", "uniform", "--sampler", "ancestral", "--steps", "1", "--samples", "2000", "--json"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v["report"];
    assert!(r["discretisation"].as_f64().unwrap() > 0.3 && r["tv"].as_f64().unwrap() > 0.3, "{r}");
    assert!(r["sampling_noise"].as_f64().unwrap() <= r["sampling_bound"].as_f64().unwrap(), "{r}");
}

#[test]
fn same_seed_same_result_any_batch() {
    let args = ["--process", "uniform", "--sampler", "pc", "--steps", "8", "--samples", "300", "--json"];
    let a = check(&examples().join("table.json"), &[&args[..], &["--batch", "7"]].concat());
    let b = check(&examples().join("table.json"), &[&args[..], &["--batch", "300"]].concat());
    let (a, b): (serde_json::Value, serde_json::Value) =
        (serde_json::from_slice(&a.stdout).unwrap(), serde_json::from_slice(&b.stdout).unwrap());
    // Same samples; the sums may differ in the last bit (hash-map order).
    for field in ["tv", "sample_entropy"] {
        let (x, y) = (a["report"][field].as_f64().unwrap(), b["report"][field].as_f64().unwrap());
        assert!((x - y).abs() < 1e-12, "{field}: {x} vs {y}");
    }
    // A larger batch holds more sequences with identical rows, each evaluated once: never more evaluations.
    let (ea, eb) = (a["report"]["evaluations"].as_u64().unwrap(), b["report"]["evaluations"].as_u64().unwrap());
    assert!(eb <= ea && eb > 0, "{eb} vs {ea}");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn error_of(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "expected an error exit; stdout {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["--process", "masked", "--sampler", "ancestral", "--steps", "4", "--samples", "10"];
    let cases = [
        (
            r#"{"table": {"vocab": 3, "length": 2, "entries": [{"tokens": [0, 0], "p": 0.5}, {"tokens": [1, 1], "p": 0.4}]}}"#,
            "table.entries: probabilities sum to 0.9",
        ),
        (
            r#"{"table": {"vocab": 3, "length": 2, "entries": [{"tokens": [0, 0], "p": 1.5}, {"tokens": [1, 1], "p": -0.5}]}}"#,
            "table.entries[1].p",
        ),
        (
            r#"{"table": {"vocab": 3, "length": 2, "entries": [{"tokens": [0, 7], "p": 1.0}]}}"#,
            "table.entries[0].tokens[1]: token 7 is outside the vocabulary of 3",
        ),
        (
            r#"{"markov": {"vocab": 2, "length": 2, "initial": [0.5, 0.5], "transition": [[0.5, 0.5], [0.2, 0.7]]}}"#,
            "markov.transition[1]",
        ),
        (
            r#"{"markov": {"vocab": 3, "length": 2, "initial": [0.5, 0.5], "transition": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}}"#,
            "markov.initial: 2 entries, but vocab is 3",
        ),
    ];
    for (n, (text, expected)) in cases.iter().enumerate() {
        let p = write(dir.path(), &format!("bad{n}.json"), text);
        let err = error_of(&check(&p, &base));
        assert!(err.contains(expected) && err.contains(&format!("bad{n}.json")), "case {n}: {err}");
    }
    let good = examples().join("table.json");
    let err = error_of(&check(&good, &["--process", "masked", "--sampler", "ancestral", "--steps", "0"]));
    assert!(err.contains("steps") && err.contains("at least 1"), "{err}");
    let err = error_of(&check(&good, &["--process", "uniform", "--sampler", "remdm", "--steps", "4"]));
    assert!(err.contains("remdm") && err.contains("masked process only"), "{err}");
    let err = error_of(&check(&good, &["--process", "masked", "--sampler", "audm", "--steps", "4"]));
    assert!(err.contains("audm") && err.contains("uniform process only"), "{err}");
    let err =
        error_of(&check(&good, &["--process", "uniform", "--sampler", "audm", "--output", "clean", "--steps", "4"]));
    assert!(err.contains("audm") && err.contains("AUDM denoiser"), "{err}");
    let err = error_of(&check(
        &good,
        &["--process", "masked", "--sampler", "ancestral", "--temperature", "0", "--steps", "4"],
    ));
    assert!(err.contains("temperature"), "{err}");
    let err = error_of(&check(&good, &["--process", "uniform", "--sampler", "ancestral", "--cache", "--steps", "4"]));
    assert!(err.contains("cache"), "{err}");
    let err = error_of(&check(&dir.path().join("missing.json"), &base));
    assert!(err.contains("missing.json"), "{err}");
}
