//! Fuzzing core's parsers of user files with property tests: solver problem files (`bench::Problem::load`, the
//! `--problem` of `diffuse solvers bench`) and TorchScript model sidecars (`denoiser::ScriptSidecar::parse`, and
//! `TorchScriptDenoiser::load` with the fixture module). Inputs are arbitrary text and the repository's examples and
//! fixtures with numbers replaced by extreme ones, deep nesting, extra keys and cuts. Every case must return `Ok` or
//! an error naming the file, within 2 s and 256 MiB (support/fuzz_harness.rs).

#[path = "../../support/fuzz_harness.rs"]
mod harness;

use std::path::Path;

use diffuse_core::bench::Problem;
use diffuse_core::denoiser::{ScriptSidecar, TorchScriptDenoiser};
use harness::{isolated, mutated_json, repo_file, run_cases};

fn text(rel: &str) -> String {
    String::from_utf8(repo_file(rel)).unwrap()
}

fn problem_seeds() -> Vec<String> {
    let mut seeds: Vec<String> =
        ["examples/problem.json", "examples/problem_ouve.json", "examples/problem_stochastic.json"]
            .iter()
            .map(|f| text(f))
            .collect();
    // The first example on a table path too (its step count sizes the tables).
    let mut v: serde_json::Value = serde_json::from_str(&seeds[0]).unwrap();
    v["path"] = serde_json::json!({"kind": "vp_table", "schedule": {"kind": "linear"}, "steps": 1000});
    seeds.push(v.to_string());
    seeds
}

fn sidecar_seeds() -> Vec<String> {
    let seed = text("core/tests/fixtures/tiny_gaussian_eps.json");
    let mut v: serde_json::Value = serde_json::from_str(&seed).unwrap();
    let mut seeds = vec![seed];
    // The same sidecar on the table paths, whose step counts size their tables.
    for path in [
        serde_json::json!({"kind": "vp_table", "steps": 1000}),
        serde_json::json!({"kind": "ir_sde", "steps": 100}),
        serde_json::json!({"kind": "rddm", "steps": 1000}),
        serde_json::json!({"kind": "resfusion", "schedule": "linear_pro", "steps": 1000}),
    ] {
        v["path"] = path;
        seeds.push(v.to_string());
    }
    seeds
}

fn named(what: &str, e: impl std::fmt::Display, name: &str) -> Result<(), String> {
    let s = e.to_string();
    if s.contains(name) { Ok(()) } else { Err(format!("{what} error does not name the file: {s}")) }
}

/// Loads a problem file as `diffuse solvers bench --problem` does (and builds its grid spec).
fn check_problem(text: &str, path: &Path) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| e.to_string())?;
    match Problem::load(path) {
        Ok(p) => {
            let _ = p.grid();
            Ok(())
        }
        Err(e) => named("Problem::load", e, "case.json"),
    }
}

fn check_sidecar(text: &str) -> Result<(), String> {
    match ScriptSidecar::parse(text, Path::new("case.json")) {
        Ok(_) => Ok(()),
        Err(e) => named("ScriptSidecar::parse", e, "case.json"),
    }
}

#[test]
fn problem_arbitrary_text() {
    isolated("problem_arbitrary_text", || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case.json");
        run_cases("problem_arbitrary_text", 300, ".{0,300}", |t: String| check_problem(&t, &path));
    });
}

#[test]
fn problem_mutated_json() {
    isolated("problem_mutated_json", || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case.json");
        run_cases("problem_mutated_json", 400, mutated_json(problem_seeds()), |t| check_problem(&t, &path));
    });
}

#[test]
fn script_sidecar_arbitrary_text() {
    isolated("script_sidecar_arbitrary_text", || {
        run_cases("script_sidecar_arbitrary_text", 300, ".{0,300}", |t: String| check_sidecar(&t));
    });
}

#[test]
fn script_sidecar_mutated_json() {
    isolated("script_sidecar_mutated_json", || {
        run_cases("script_sidecar_mutated_json", 500, mutated_json(sidecar_seeds()), |t| check_sidecar(&t));
    });
}

/// The whole load (module, sidecar, probe call) with mutated sidecars beside the fixture module.
#[test]
fn script_sidecar_mutated_with_module() {
    isolated("script_sidecar_mutated_with_module", || {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("case.pt");
        std::fs::write(&module, repo_file("core/tests/fixtures/tiny_gaussian_eps.pt")).unwrap();
        let json = dir.path().join("case.json");
        run_cases("script_sidecar_mutated_with_module", 60, mutated_json(sidecar_seeds()), |t| {
            std::fs::write(&json, &t).map_err(|e| e.to_string())?;
            match TorchScriptDenoiser::load(&module, tch::Device::Cpu) {
                Ok(_) => Ok(()),
                Err(e) => named("TorchScriptDenoiser::load", e, "case."),
            }
        });
    });
}

/// Found by `script_sidecar_mutated_json`: a table path's step count was used as is, so `"steps": 10^9` in a
/// sidecar or problem file built tables of 10^9 values (gigabytes) before anything else was checked.
#[test]
fn table_paths_bound_their_steps() {
    isolated("table_paths_bound_their_steps", || {
        for kind in ["vp_table", "ir_sde", "rddm", "resfusion"] {
            let text = format!(
                r#"{{"version": 1, "parameterization": "eps", "path": {{"kind": "{kind}", "steps": 1000000000000}}, "time_input": {{"kind": "t"}}}}"#
            );
            let e = ScriptSidecar::parse(&text, Path::new("steps.json")).unwrap_err().to_string();
            assert!(e.contains("steps.json") && e.contains("at most 1000000 (the path's tables"), "{kind}: {e}");
        }
    });
}

/// Found by `script_sidecar_mutated_with_module`: `"sample_shape": [4294967295]` made the load-time probe ask
/// libtorch for 16 GiB of zeros (the test process was killed by the kernel's OOM killer). A shape over
/// `MAX_PROBE_ELEMENTS` values, or with a dimension < 1, is now a sidecar error before any tensor is made.
#[test]
fn sidecar_sample_shape_is_bounded() {
    isolated("sidecar_sample_shape_is_bounded", || {
        let mut v: serde_json::Value =
            serde_json::from_str(&text("core/tests/fixtures/tiny_gaussian_eps.json")).unwrap();
        for shape in [
            serde_json::json!([100000, 100000]),
            serde_json::json!([0]),
            serde_json::json!([-3]),
            serde_json::json!([i64::MAX, 2]),
        ] {
            v["sample_shape"] = shape.clone();
            let e = ScriptSidecar::parse(&v.to_string(), Path::new("shape.json")).unwrap_err().to_string();
            assert!(e.contains("shape.json") && e.contains("sample_shape"), "{shape}: {e}");
        }
    });
}

/// Deep nesting is refused by serde_json's recursion limit, not by the stack.
#[test]
fn deep_nesting_is_an_error() {
    isolated("deep_nesting_is_an_error", || {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(check_sidecar(&deep).is_ok());
        let dir = tempfile::tempdir().unwrap();
        assert!(check_problem(&deep, &dir.path().join("case.json")).is_ok());
    });
}

/// The seeds themselves are valid (so the mutations start from files the parsers accept).
#[test]
fn seeds_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    for (i, s) in problem_seeds().iter().enumerate() {
        let path = dir.path().join(format!("p{i}.json"));
        std::fs::write(&path, s).unwrap();
        Problem::load(&path).unwrap();
    }
    for s in sidecar_seeds() {
        ScriptSidecar::parse(&s, Path::new("s.json")).unwrap();
    }
}

/// Found by `script_sidecar_mutated_with_module`: `"time_input": {"kind": "scaled", "factor": 1e308}` made the
/// probe's time tensor overflow float32, and tch panicked (inside `Scalar`'s drop) instead of returning the error.
#[test]
fn time_input_that_overflows_the_dtype_is_an_error() {
    isolated("time_input_that_overflows_the_dtype_is_an_error", || {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("m.pt");
        std::fs::write(&module, repo_file("core/tests/fixtures/tiny_gaussian_eps.pt")).unwrap();
        let mut v: serde_json::Value =
            serde_json::from_str(&text("core/tests/fixtures/tiny_gaussian_eps.json")).unwrap();
        for factor in [1e308, -1e39] {
            v["time_input"] = serde_json::json!({"kind": "scaled", "factor": factor});
            std::fs::write(dir.path().join("m.json"), v.to_string()).unwrap();
            let e = TorchScriptDenoiser::load(&module, tch::Device::Cpu).err().expect("an error").to_string();
            assert!(e.contains("m.pt") && e.contains("time input") && e.contains("float32"), "{e}");
        }
    });
}
