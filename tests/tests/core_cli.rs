//! End-to-end tests of `diffuse doctor` and `diffuse solvers` (issues 2 and 3).

use std::process::Command;

use diffuse_tests::{diffuse_bin, repo_root, run_in, text};

/// The release-style promise: the binary starts from any folder with a clean environment (rpath, no
/// LD_LIBRARY_PATH) and reports libtorch 2.11.
#[test]
fn doctor_runs_from_anywhere_with_a_clean_environment() {
    let out = Command::new("env")
        .args(["-i", "PATH=/usr/bin:/bin"])
        .arg(diffuse_bin())
        .arg("doctor")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("libtorch     2.11.0"), "{stdout}");
    assert!(stdout.contains("threads") && stdout.contains("models"), "{stdout}");
}

#[test]
fn doctor_json_and_missing_cuda() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["doctor", "--json"]);
    let (stdout, _) = text(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["runtime"]["libtorch_version"].as_str().unwrap().starts_with("2.11.0"));
    if v["runtime"]["cuda_devices"].as_u64() == Some(0) {
        let out = run_in(dir.path(), &["doctor", "--device", "cuda"]);
        let (_, stderr) = text(&out);
        assert!(!out.status.success());
        assert!(stderr.contains("no CUDA device was found"), "{stderr}");
        let out = run_in(dir.path(), &["--device", "cuda:1", "solvers", "list"]);
        assert!(out.status.success(), "listing needs no device");
    }
    let out = run_in(dir.path(), &["doctor", "--device", "tpu"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("expected auto, cpu, cuda or cuda:N"));
}

#[test]
fn solvers_list_names_every_solver() {
    let out = run_in(&repo_root(), &["solvers", "list"]);
    let (stdout, _) = text(&out);
    for name in ["ddim", "dpm++2m", "dpm++3m", "unipc-bh2", "deis-3", "dpm-solver-3", "heun", "dopri5", "dpm-solver-23"]
    {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("{name} "))), "{name} missing:\n{stdout}");
    }
}

fn small_problem(solvers: &str) -> String {
    format!(
        r#"{{"dim": 2, "mixture": {{"weights": [0.5, 0.5], "means": [[1, 0], [-1, 0.5]], "stds": [0.2, 0.3]}},
            "path": {{"kind": "vp_linear"}}, "spacing": {{"kind": "uniform_lambda"}}, "end": "zero",
            "solvers": {solvers}, "nfe": [5, 10, 20], "samples": 32, "seed": 1, "tolerances": [1e-3]}}"#
    )
}

#[test]
fn solvers_bench_writes_results_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.json"), small_problem(r#"["ddim", "dpm++2m", "dopri5"]"#)).unwrap();
    let out = run_in(dir.path(), &["solvers", "bench", "--problem", "p.json", "--json", "r.json", "--plot", "r.svg"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("dpm++2m") && stdout.contains("rms error"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 7);
    let dpm: Vec<f64> =
        rows.iter().filter(|r| r["solver"] == "dpm++2m").map(|r| r["rms_error"].as_f64().unwrap()).collect();
    assert!(dpm[2] < dpm[0], "{dpm:?}");
    // Robust statistics beside the rms (issue 21): median ≤ p90, and the share of draws that changed component.
    assert!(stdout.contains("median") && stdout.contains("switched"), "{stdout}");
    for r in rows.iter().filter(|r| r["rms_error"].is_f64()) {
        let (median, p90, switched) =
            (r["median_error"].as_f64().unwrap(), r["p90_error"].as_f64().unwrap(), r["switched"].as_f64().unwrap());
        assert!(median <= p90 && (0.0..=1.0).contains(&switched), "{r}");
    }
    assert!(std::fs::read_to_string(dir.path().join("r.svg")).unwrap().contains("<svg"));
    let again = run_in(dir.path(), &["solvers", "bench", "--problem", "p.json", "--plot", "r.svg"]);
    assert!(!again.status.success());
    assert!(text(&again).1.contains("--force"));
    let forced = run_in(dir.path(), &["solvers", "bench", "--problem", "p.json", "--plot", "r.svg", "--force", "-q"]);
    assert!(forced.status.success());
}

#[test]
fn bad_problem_files_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (small_problem(r#"["ddim", "dpm+2m"]"#), "dpm+2m"),
        (small_problem(r#"["ddim"]"#).replace(r#""dim": 2"#, r#""dim": 3"#), "mixture.means"),
        (small_problem(r#"["ddim"]"#).replace("vp_linear", "vp_linaer"), "vp_linear"),
        (small_problem(r#"["ddim"]"#).replace("\"seed\"", "\"sede\""), "sede"),
        (small_problem(r#"["ddim"]"#).replace("[0.5, 0.5]", "[0.5, 0.6]"), "sum to 1"),
        ("{not json".to_string(), "p.json"),
    ];
    for (text_in, needle) in cases {
        std::fs::write(dir.path().join("p.json"), &text_in).unwrap();
        let out = run_in(dir.path(), &["solvers", "bench", "--problem", "p.json"]);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{needle}");
        assert!(stderr.contains("p.json") && stderr.contains(needle), "expected '{needle}' in: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = run_in(dir.path(), &["solvers", "bench", "--problem", "missing.json"]);
    assert!(text(&out).1.contains("missing.json"));
}

/// `--save-start` writes the draws, `--start` runs from given draws (issue 21, item 7): the same draws give the
/// same errors, other draws other errors, and a file of the wrong dimension is refused naming the file.
#[test]
fn solvers_bench_runs_from_saved_or_given_starting_points() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.json"), small_problem(r#"["dpm++2m"]"#)).unwrap();
    let bench = |json: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["solvers", "bench", "--problem", "p.json", "-q", "--json", json];
        args.extend(extra);
        let out = run_in(dir.path(), &args);
        assert!(out.status.success(), "{:?}", text(&out));
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(json)).unwrap()).unwrap()
    };
    let own = bench("own.json", &["--save-start", "s.json"]);
    let starts: Vec<Vec<f64>> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("s.json")).unwrap()).unwrap();
    assert_eq!((starts.len(), starts[0].len()), (own["samples"].as_u64().unwrap() as usize, 2));
    let again = bench("again.json", &["--start", "s.json"]);
    assert_eq!(own["rows"][0]["rms_error"], again["rows"][0]["rms_error"]);
    let shifted: Vec<Vec<f64>> = starts.iter().map(|r| r.iter().map(|v| v * 0.5).collect()).collect();
    std::fs::write(dir.path().join("half.json"), serde_json::to_string(&shifted).unwrap()).unwrap();
    let other = bench("other.json", &["--start", "half.json"]);
    assert_ne!(own["rows"][0]["rms_error"], other["rows"][0]["rms_error"]);
    std::fs::write(dir.path().join("bad.json"), "[[1.0, 2.0, 3.0]]").unwrap();
    let out = run_in(dir.path(), &["solvers", "bench", "--problem", "p.json", "--start", "bad.json"]);
    assert!(!out.status.success());
    let stderr = text(&out).1;
    assert!(stderr.contains("bad.json") && stderr.contains("3 coordinates"), "{stderr}");
}

/// `solvers search` (issue 21, item 3): schedules searched on draws the bench never scores beat the problem's own
/// grid there, and `solvers bench --schedule` runs the best one per NFE as `s3:SOLVER` rows on the bench's draws;
/// a schedule file for another path is refused.
#[test]
fn solvers_search_writes_schedules_that_the_bench_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.json"), small_problem(r#"["ddim"]"#)).unwrap();
    let args = ["solvers", "search", "--problem", "p.json", "--nfe", "4..5", "--solvers", "ddim,dpm++2m"];
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--draws", "64", "--evals", "150", "-o", "s.json"]);
    let out = run_in(dir.path(), &a);
    assert!(out.status.success(), "{:?}", text(&out));
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("s.json")).unwrap()).unwrap();
    let schedules = file["schedules"].as_array().unwrap();
    assert_eq!(schedules.len(), 4);
    for s in schedules {
        let (search, own) = (s["search_error"].as_f64().unwrap(), s["baseline_error"].as_f64().unwrap());
        assert!(search <= own && s["evaluations"].as_u64().unwrap() > 10, "{s}");
        let times: Vec<f64> = s["times"].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");
    }
    // A count of evaluations, not a time, bounds the search: the same command gives the same schedules.
    a.pop();
    a.push("s2.json");
    assert!(run_in(dir.path(), &a).status.success());
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("s2.json")).unwrap()).unwrap();
    assert_eq!(file["schedules"], again["schedules"]);
    let out =
        run_in(dir.path(), &["solvers", "bench", "--problem", "p.json", "--schedule", "s.json", "--json", "r.json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    let s3: Vec<&serde_json::Value> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["solver"].as_str().unwrap().starts_with("s3:"))
        .collect();
    assert_eq!(s3.len(), 2, "one best schedule per NFE");
    assert!(s3.iter().all(|r| r["rms_error"].is_f64() && r["nfe"].as_f64().unwrap() <= r["budget"].as_f64().unwrap()));
    std::fs::write(dir.path().join("q.json"), small_problem(r#"["ddim"]"#).replace("vp_linear", "vp_cosine")).unwrap();
    let out = run_in(dir.path(), &["solvers", "bench", "--problem", "q.json", "--schedule", "s.json"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("another path"), "{}", text(&out).1);
    // Another statistic of the search draws' errors: recorded in the file, and an unknown one is refused.
    let m = ["solvers", "search", "--problem", "p.json", "--nfe", "5", "--solvers", "ddim", "--draws", "64"];
    let mut m: Vec<&str> = m.to_vec();
    m.extend(["--evals", "60", "--objective", "rms+median", "-o", "m.json"]);
    let out = run_in(dir.path(), &m);
    assert!(out.status.success() && text(&out).0.contains("search rms+median"), "{:?}", text(&out));
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m.json")).unwrap()).unwrap();
    let s = &file["schedules"][0];
    assert_eq!(s["objective"], "rms+median");
    assert!(s["search_error"].as_f64().unwrap() <= s["baseline_error"].as_f64().unwrap(), "{s}");
    let at = m.len() - 3;
    m[at] = "mean";
    let out = run_in(dir.path(), &m);
    assert!(!out.status.success() && text(&out).1.contains("rms, median or rms+median"), "{}", text(&out).1);
}

/// `solvers bench --recipe` (issue 21, item 5) adds the 5-, 6- and 8-step schedules of "Hyperparameters are all
/// you need" as rows `hyper-N` spending N evaluations; a problem that does not end at the data is refused.
#[test]
fn solvers_bench_runs_the_five_and_eight_step_recipe() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.json"), small_problem(r#"["ddim"]"#)).unwrap();
    let out = run_in(dir.path(), &["solvers", "bench", "--problem", "p.json", "--recipe", "--json", "r.json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    for n in [5, 6, 8] {
        let row = report["rows"].as_array().unwrap().iter().find(|r| r["solver"] == format!("hyper-{n}")).unwrap();
        assert_eq!(row["nfe"], n, "{row}");
        assert!(row["rms_error"].as_f64().unwrap() < 1.0, "{row}");
    }
    std::fs::write(
        dir.path().join("q.json"),
        small_problem(r#"["ddim"]"#).replace(r#""end": "zero""#, r#""end": 0.1"#),
    )
    .unwrap();
    let out = run_in(dir.path(), &["solvers", "bench", "--problem", "q.json", "--recipe"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("end"), "{}", text(&out).1);
}

/// `solvers dlg` (issue 21, item 6) prints, per solver step count, DLG's evaluations per sample and MMD² beside the
/// plain solver at the same NFE; an anchored problem is refused.
#[test]
fn solvers_dlg_prints_the_nfe_quality_curve() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.json"), small_problem(r#"["ddim"]"#)).unwrap();
    let args = ["solvers", "dlg", "--problem", "p.json", "--levels", "8", "--steps", "2,4", "--emissions", "4"];
    let out = run_in(dir.path(), &args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with('2') || l.starts_with('4')).collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    // Two Langevin steps per sample, then the solver: 2 + 2 and 2 + 4 evaluations (fewer from the last time).
    assert!(rows[0].split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() <= 4.0, "{stdout}");
    let anchored = small_problem(r#"["ddim"]"#).replace(r#""end": "zero""#, r#""end": "zero", "anchor": [0.1, 0.2]"#);
    std::fs::write(dir.path().join("a.json"), anchored).unwrap();
    let out = run_in(dir.path(), &["solvers", "dlg", "--problem", "a.json"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("anchor"), "{}", text(&out).1);
}

/// `solvers search --teacher SOLVER:NFE` fits schedules to a high-NFE solver instead of the exact solutions (how a
/// trained model is searched): on the exact problem its schedules score as well as the exact-fitted ones.
#[test]
fn schedules_fitted_to_a_teacher_match_those_fitted_to_the_exact_solution() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.json"), small_problem(r#"["ddim"]"#)).unwrap();
    let rms = |extra: &[&str], name: &str| -> f64 {
        let mut a = vec!["solvers", "search", "--problem", "p.json", "--nfe", "5", "--solvers", "dpm++2m"];
        a.extend(["--evals", "200", "-o", name]);
        a.extend(extra);
        let out = run_in(dir.path(), &a);
        assert!(out.status.success(), "{:?}", text(&out));
        let json = format!("{name}.bench.json");
        let out = run_in(dir.path(), &["solvers", "bench", "--problem", "p.json", "--schedule", name, "--json", &json]);
        assert!(out.status.success(), "{:?}", text(&out));
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(&json)).unwrap()).unwrap();
        r["rows"].as_array().unwrap().iter().find(|r| r["solver"] == "s3:dpm++2m").unwrap()["rms_error"]
            .as_f64()
            .unwrap()
    };
    let exact = rms(&[], "exact.json");
    let teacher = rms(&["--teacher", "dpm++3m+unic:100"], "teacher.json");
    assert!(teacher < 1.5 * exact, "teacher-fitted {teacher} vs exact-fitted {exact}");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("teacher.json")).unwrap()).unwrap();
    assert_eq!(file["fitted_to"], "teacher dpm++3m+unic at 100 NFE");
    let out = run_in(dir.path(), &["solvers", "search", "--problem", "p.json", "--teacher", "dpm++2m", "-o", "x.json"]);
    assert!(!out.status.success() && text(&out).1.contains("SOLVER:NFE"), "{}", text(&out).1);
}

/// `solvers ems` (issue 21, item 4) writes DPM-Solver-v3's statistics of a problem's model, which the bench then
/// runs as `dpm-solver-v3:stats=FILE`, beating DPM-Solver++(2M) at 5 NFE; an existing file is kept without
/// `--force`, and a problem on a longer λ range than the statistics' is refused naming the file.
#[test]
fn solvers_ems_feeds_dpm_solver_v3() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.json"), small_problem(r#"["ddim"]"#)).unwrap();
    let ems = ["solvers", "ems", "--problem", "p.json", "--samples", "128", "--intervals", "100", "-o", "ems.st"];
    let out = run_in(dir.path(), &ems);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("dpm-solver-v3:stats=ems.st"), "{}", text(&out).0);
    let out = run_in(dir.path(), &ems);
    assert!(!out.status.success() && text(&out).1.contains("ems.st"), "{}", text(&out).1);
    std::fs::write(dir.path().join("b.json"), small_problem(r#"["dpm++2m", "dpm-solver-v3:stats=ems.st"]"#)).unwrap();
    let out = run_in(dir.path(), &["solvers", "bench", "--problem", "b.json", "--json", "r.json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    let err = |solver: &str, nfe: f64| {
        report["rows"].as_array().unwrap().iter().find(|r| r["solver"] == solver && r["budget"] == nfe).unwrap()
            ["rms_error"]
            .as_f64()
            .unwrap()
    };
    let (v3, dpm) = (err("dpm-solver-v3:stats=ems.st", 5.0), err("dpm++2m", 5.0));
    assert!(v3 < dpm, "v3 {v3} against dpm++2m {dpm}");
    let wider = small_problem(r#"["dpm-solver-v3:stats=ems.st"]"#).replace("vp_linear", "vp_cosine");
    std::fs::write(dir.path().join("w.json"), wider).unwrap();
    let out = run_in(dir.path(), &["solvers", "bench", "--problem", "w.json"]);
    assert!(!out.status.success() && text(&out).0.contains("ems.st"), "{:?}", text(&out));
}
