//! Issue 23: what a hostile or careless user found. Each test is a defect that took down a batch or a machine:
//! unbounded sizes from small inputs, panics, hangs, links followed forever, clobbered outputs, ignored
//! devices and unclear messages.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use diffuse_tests::{diffuse_bin, repo_root, run_in, text, tone_wav, wav_bytes};

fn ok(out: &Output) -> bool {
    out.status.success()
}

/// stderr of a run that must fail with exit code `code`.
fn failure(out: &Output, code: i32) -> String {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(code), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Runs with a wall-clock limit: a hang fails the test instead of blocking the suite.
fn run_limited(dir: &Path, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(diffuse_bin())
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("diffuse starts");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("diffuse {} still running after {limit:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

const QUICK: Duration = Duration::from_secs(20);

#[test]
fn huge_counts_are_refused_by_name_before_any_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ex = repo_root().join("examples");
    let scene = ex.join("pose/bunny-scene.ply");
    let object = ex.join("bunny.ply");
    let (scene, object) = (scene.to_str().unwrap(), object.to_str().unwrap());
    for (flag, value) in [("--hypotheses", "1000000000"), ("--steps", "4000000000")] {
        let out = run_limited(d, &["pose", "estimate", scene, "--object", object, flag, value], QUICK);
        let err = failure(&out, 2);
        assert!(err.contains(&flag[2..]) && err.contains("over the limit"), "{err}");
    }
    let target = ex.join("text/markov.json");
    let target = target.to_str().unwrap();
    let check = ["text", "check", "--target", target, "--process", "masked", "--sampler", "ancestral"];
    for extra in [["--steps", "1000000000000", "--samples", "10"], ["--steps", "8", "--samples", "1000000000000"]] {
        let args: Vec<&str> = check.iter().chain(extra.iter()).copied().collect();
        let err = failure(&run_limited(d, &args, QUICK), 2);
        assert!(err.contains("over the limit"), "{err}");
    }
    let problem = |samples: &str, nfe: &str| {
        format!(
            r#"{{"dim": 2, "mixture": {{"weights": [1], "means": [[0, 0]], "stds": [0.5]}},
                "path": {{"kind": "vp_linear"}}, "solvers": ["ddim"], "nfe": {nfe}, "samples": {samples}}}"#
        )
    };
    for (name, text, field) in [
        ("samples.json", problem("1000000000000", "[4]"), "samples"),
        ("nfe.json", problem("8", "[1000000000000]"), "nfe"),
        ("empty.json", problem("8", "[]"), "nfe"),
    ] {
        std::fs::write(d.join(name), text).unwrap();
        let err = failure(&run_limited(d, &["solvers", "bench", "--problem", name], QUICK), 2);
        assert!(err.contains(name) && err.contains(field), "{err}");
    }
    let err = failure(&run_limited(d, &["--threads", "100000", "solvers", "list"], QUICK), 2);
    assert!(err.contains("--threads") && err.contains("limit"), "{err}");
}

#[test]
fn a_text_target_of_absurd_length_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let t = r#"{"markov": {"vocab": 2, "length": 10000000000000000000, "initial": [0.5, 0.5],
                "transition": [[0.5, 0.5], [0.5, 0.5]]}}"#;
    std::fs::write(dir.path().join("long.json"), t).unwrap();
    let args = ["text", "check", "--target", "long.json", "--process", "masked", "--sampler", "ancestral"];
    let err = failure(&run_limited(dir.path(), &[&args[..], &["--steps", "4"]].concat(), QUICK), 2);
    assert!(err.contains("exceeds"), "{err}");
    // A stray key is named, not reported as a syntax error at some column.
    let extra = r#"{"markov": {"vocab": 2, "length": 2, "initial": [0.5, 0.5],
                    "transition": [[0.5, 0.5], [0.5, 0.5]], "temperature": 2}}"#;
    std::fs::write(dir.path().join("extra.json"), extra).unwrap();
    let args = ["text", "check", "--target", "extra.json", "--process", "masked", "--sampler", "ancestral"];
    let err = failure(&run_limited(dir.path(), &[&args[..], &["--steps", "4"]].concat(), QUICK), 2);
    assert!(err.contains("unknown field `temperature`"), "{err}");
    std::fs::write(dir.path().join("top.json"), r#"{"markov": {}, "note": 1}"#).unwrap();
    let args = ["text", "check", "--target", "top.json", "--process", "masked", "--sampler", "ancestral"];
    let err = failure(&run_limited(dir.path(), &[&args[..], &["--steps", "4"]].concat(), QUICK), 2);
    assert!(err.contains("exactly one key") && err.contains("note"), "{err}");
}

#[test]
fn bad_wav_headers_fail_alone_and_the_batch_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("a-good.wav"), tone_wav(16000, 0.5)).unwrap();
    // Sample rate 0 panicked (division by zero) and took the good file down with it.
    std::fs::write(input.join("b-zero-rate.wav"), wav_bytes(1, 1, 0, 16, &[0u8; 2000])).unwrap();
    // A 133 KB file claiming 1 Hz asked for 8.7 GB of resampled signal.
    std::fs::write(input.join("c-one-hertz.wav"), wav_bytes(1, 1, 1, 16, &vec![1u8; 133_000])).unwrap();
    // 64-bit float: supported formats are named.
    std::fs::write(input.join("d-float64.wav"), wav_bytes(3, 1, 16000, 64, &[0u8; 8000])).unwrap();
    // A header claiming 2^31 samples in a tiny file.
    let mut lying = wav_bytes(1, 1, 16000, 16, &[0u8; 400]);
    lying[40..44].copy_from_slice(&0x7FFF_FFFEu32.to_le_bytes());
    std::fs::write(input.join("e-lying-length.wav"), lying).unwrap();
    let out = run_limited(d, &["audio", "enhance", "in", "-o", "out", "--sampler", "passthrough"], QUICK);
    let err = failure(&out, 1);
    assert!(d.join("out/a-good.wav").is_file(), "{err}");
    assert!(err.contains("b-zero-rate.wav") && err.contains("0 Hz"), "{err}");
    assert!(err.contains("c-one-hertz.wav") && err.contains("1 Hz"), "{err}");
    assert!(err.contains("d-float64.wav") && err.contains("64-bit float"), "{err}");
    assert!(err.contains("e-lying-length.wav") && err.contains("truncated"), "{err}");
    assert!(err.contains("4 files failed"), "{err}");
}

#[cfg(unix)]
#[test]
fn fifos_and_symlink_cycles_in_input_folders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::write(input.join("x-real.wav"), tone_wav(16000, 0.3)).unwrap();
    std::os::unix::fs::symlink(&input, input.join("sub/loop")).unwrap();
    let fifo_made = Command::new("mkfifo").arg(input.join("pipe.wav")).status().is_ok_and(|s| s.success());
    let out = run_limited(d, &["audio", "enhance", "in", "-o", "out", "--sampler", "passthrough"], QUICK);
    assert!(ok(&out), "{}", text(&out).1);
    let mut outputs = Vec::new();
    for entry in walk(&d.join("out")) {
        outputs.push(entry.strip_prefix(d.join("out")).unwrap().display().to_string());
    }
    assert_eq!(outputs, ["x-real.wav"], "fifo made: {fifo_made}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out.sort();
    out
}

#[test]
fn force_never_overwrites_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ex = repo_root().join("examples");
    std::fs::copy(ex.join("pose/bunny-scene.ply"), d.join("scene.ply")).unwrap();
    std::fs::copy(ex.join("bunny.ply"), d.join("bunny.ply")).unwrap();
    let before = std::fs::read(d.join("scene.ply")).unwrap();
    let args = ["pose", "estimate", "scene.ply", "--object", "bunny.ply", "-o", "scene.ply", "--force"];
    let err = failure(&run_limited(d, &[&args[..], &["--hypotheses", "2", "--steps", "2"]].concat(), QUICK), 2);
    assert!(err.contains("scene.ply") && err.contains("input"), "{err}");
    assert_eq!(std::fs::read(d.join("scene.ply")).unwrap(), before);
    let problem = std::fs::read_to_string(ex.join("problem.json")).unwrap();
    std::fs::write(d.join("problem.json"), &problem).unwrap();
    let out =
        run_limited(d, &["solvers", "bench", "--problem", "problem.json", "--json", "problem.json", "--force"], QUICK);
    let err = failure(&out, 2);
    assert!(err.contains("input"), "{err}");
    assert_eq!(std::fs::read_to_string(d.join("problem.json")).unwrap(), problem);
}

#[test]
fn outputs_that_cannot_be_written_fail_before_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(repo_root().join("examples/problem.json"), d.join("problem.json")).unwrap();
    std::fs::write(d.join("not-a-folder"), b"x").unwrap();
    let start = Instant::now();
    let out = run_limited(d, &["solvers", "bench", "--problem", "problem.json", "--plot", "not-a-folder/e.svg"], QUICK);
    let err = failure(&out, 2);
    assert!(err.contains("not-a-folder"), "{err}");
    // The benchmark itself takes seconds; the refusal comes before it.
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}

#[test]
fn absent_cuda_devices_are_refused_by_every_command() {
    if diffuse_tests::text(&run_in(Path::new("."), &["doctor", "--json"])).0.contains("\"cuda_devices\": 8") {
        return; // a machine with eight GPUs has cuda:7
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ex = repo_root().join("examples");
    let (scene, object, target, problem) =
        (ex.join("pose/bunny-scene.ply"), ex.join("bunny.ply"), ex.join("text/markov.json"), ex.join("problem.json"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    for args in [
        vec!["pose".into(), "estimate".into(), s(&scene), "--object".into(), s(&object)],
        vec![
            "text".into(),
            "check".into(),
            "--target".into(),
            s(&target),
            "--process".into(),
            "masked".into(),
            "--sampler".into(),
            "ancestral".into(),
            "--steps".into(),
            "4".into(),
        ],
        vec!["solvers".into(), "bench".into(), "--problem".into(), s(&problem)],
    ] {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(["--device", "cuda:7"]);
        let err = failure(&run_limited(d, &args, QUICK), 2);
        assert!(err.contains("--device") && err.contains("CUDA"), "{err}");
    }
}

#[test]
fn an_object_far_larger_than_the_scene_is_a_scale_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let grid = |scale: f64| -> String {
        let mut s = "ply\nformat ascii 1.0\nelement vertex 72\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
            .to_string();
        for i in 0..72 {
            let (x, y, z) = ((i % 6) as f64, ((i / 6) % 6) as f64, (i / 36) as f64);
            s.push_str(&format!("{} {} {}\n", x * scale, y * scale, z * scale));
        }
        s
    };
    std::fs::write(d.join("scene.ply"), grid(1.0)).unwrap();
    std::fs::write(d.join("big.ply"), grid(10.0)).unwrap();
    std::fs::write(d.join("huge.ply"), grid(1000.0)).unwrap();
    let quick = ["--hypotheses", "2", "--steps", "2"];
    let out = run_limited(d, &[&["pose", "estimate", "scene.ply", "--object", "big.ply"][..], &quick].concat(), QUICK);
    let (_, stderr) = text(&out);
    assert!(stderr.contains("larger than the whole scene") && stderr.contains("same units"), "{stderr}");
    let out = run_limited(d, &[&["pose", "estimate", "scene.ply", "--object", "huge.ply"][..], &quick].concat(), QUICK);
    let err = failure(&out, 2);
    assert!(err.contains("same units") && err.contains("cannot be in the scan"), "{err}");
}

#[test]
fn a_broken_torchscript_file_is_named_without_a_cpp_stack() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fixtures = repo_root().join("tests/fixtures/audio");
    std::fs::copy(fixtures.join("tiny_ncsnpp.json"), d.join("broken.json")).unwrap();
    std::fs::write(d.join("broken.pt"), b"PK\x03\x04 this is not a zip archive").unwrap();
    std::fs::write(d.join("in.wav"), tone_wav(16000, 0.3)).unwrap();
    let err = failure(&run_limited(d, &["audio", "enhance", "in.wav", "--model", "broken.pt"], QUICK), 2);
    assert!(err.contains("broken.pt") && err.contains("not a loadable TorchScript module"), "{err}");
    assert!(!err.contains("frame #") && err.lines().count() <= 3, "{err}");
}

#[test]
fn a_failed_training_run_leaves_no_empty_output_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("empty-clean")).unwrap();
    std::fs::create_dir_all(d.join("empty-noise")).unwrap();
    let out = run_limited(
        d,
        &["audio", "train", "--clean", "empty-clean", "--noise", "empty-noise", "--out", "run", "--steps", "1"],
        QUICK,
    );
    failure(&out, 2);
    assert!(!d.join("run").exists());
}
