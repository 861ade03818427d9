//! End-to-end test of the restoration model commands: `diffuse restore train` trains a tiny model in seconds,
//! `diffuse restore denoise` restores a folder with it (a bad file reported, the rest written under the same
//! names, exit 1; no clobbering without --force; inputs untouched; a task mismatch is a clear error), and
//! `diffuse restore bench` writes JSON and an SVG plot. The built-in models, run without --model, restore the
//! fixed test degradation of each task to a higher PSNR than its input, and the known-parameter models do so
//! further when given the blur kernel or the exposure curve.

use std::path::Path;

use diffuse_tests::{repo_root, run_in, text};

const NAMES: [&str; 3] = ["rgb_noise_clean.png", "rgb_blur_clean.png", "rgb_mixed_clean.png"];

fn copy_fixtures(dir: &Path) {
    let fixtures = repo_root().join("tests/fixtures/restoration");
    std::fs::create_dir_all(dir).unwrap();
    for name in NAMES {
        std::fs::copy(fixtures.join(name), dir.join(name)).unwrap();
    }
}

#[test]
fn train_a_tiny_model_then_denoise_a_folder_and_bench_it() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    copy_fixtures(&root.join("clean"));

    // Train (tiny network, 20 steps of 16-pixel crops, validation on the same images).
    let train = [
        "restore",
        "train",
        "--task",
        "denoise",
        "--images",
        "clean",
        "--out",
        "run",
        "--net",
        "tiny",
        "--steps",
        "20",
        "--crop",
        "16",
        "--batch",
        "4",
        "--val-images",
        "clean",
        "--val-every",
        "10",
        "-q",
    ];
    let out = run_in(root, &train);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("trained to step 20") && stdout.contains("validation PSNR"), "{stdout}");
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("run/model.json")).unwrap()).unwrap();
    assert_eq!(sidecar["task"], "denoise");
    assert!(sidecar["training"]["command"].as_str().unwrap().contains("restore train"));
    // An existing run is refused without --resume/--force.
    let out = run_in(root, &train);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("--resume"), "{}", text(&out).1);

    // Denoise a folder with one bad file: the good ones are written under the same names, exit 1.
    let degrade = ["restore", "degrade", "--task", "denoise", "clean", "-o", "noisy", "--fixed", "-q"];
    assert!(run_in(root, &degrade).status.success());
    std::fs::write(root.join("noisy/broken.png"), b"not a png").unwrap();
    let before: Vec<Vec<u8>> = NAMES.iter().map(|n| std::fs::read(root.join("noisy").join(n)).unwrap()).collect();
    let denoise = ["restore", "denoise", "noisy", "-o", "restored", "--model", "run/model.safetensors", "--steps", "2"];
    let out = run_in(root, &denoise);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("restored 3 images") && stdout.contains("per megapixel"), "{stdout}");
    assert!(stderr.contains("broken.png"), "{stderr}");
    for name in NAMES {
        assert!(root.join("restored").join(name).is_file(), "{name} missing");
    }
    assert!(!root.join("restored/broken.png").exists());
    let after: Vec<Vec<u8>> = NAMES.iter().map(|n| std::fs::read(root.join("noisy").join(n)).unwrap()).collect();
    assert_eq!(before, after, "inputs modified");

    // No clobbering without --force; --force rewrites.
    let marker = root.join("restored").join(NAMES[0]);
    std::fs::write(&marker, b"keep me").unwrap();
    let out = run_in(root, &denoise);
    assert!(text(&out).1.contains("exists (use --force"), "{}", text(&out).1);
    assert_eq!(std::fs::read(&marker).unwrap(), b"keep me");
    let out = run_in(root, &[&denoise[..], &["--force"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert_ne!(std::fs::read(&marker).unwrap(), b"keep me");

    // A single file goes beside its input as NAME_restored.EXT.
    let one = ["restore", "denoise", "noisy/rgb_noise_clean.png", "--model", "run/model.safetensors", "--steps", "1"];
    assert!(run_in(root, &one).status.success());
    assert!(root.join("noisy/rgb_noise_clean_restored.png").is_file());

    // The wrong task is a clear error, and nothing is written.
    let out = run_in(root, &["restore", "deblur", "noisy", "-o", "x", "--model", "run/model.safetensors"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("trained for 'denoise', not 'deblur'"), "{}", text(&out).1);
    assert!(!root.join("x").exists());

    // Bench at two step counts, JSON and SVG.
    let bench = [
        "restore",
        "bench",
        "--model",
        "run/model.safetensors",
        "--clean",
        "clean",
        "--samplers",
        "dpm++2m,ddim",
        "--nfe",
        "1,2",
        "--json",
        "bench.json",
        "--plot",
        "bench.svg",
    ];
    let out = run_in(root, &bench);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("| dpm++2m | 2 |") && stdout.contains("degraded input"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("bench.json")).unwrap()).unwrap();
    assert_eq!(json["points"].as_array().unwrap().len(), 4);
    assert!(json["points"][0]["psnr"].as_f64().unwrap().is_finite());
    assert!(std::fs::read_to_string(root.join("bench.svg")).unwrap().starts_with("<svg"));
    // Outputs are checked before the work.
    let out = run_in(root, &bench);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("bench.json"), "{}", text(&out).1);

    // Schedules (issue 21, item 3): searched on crops of the images, never worse than the model's own grid there,
    // then run by the bench (rows s3:SOLVER) and by the restore command.
    let search = ["restore", "search", "--model", "run/model.safetensors", "--clean", "clean", "--crop", "16"];
    let search =
        [&search[..], &["--nfe", "2,3", "--solvers", "dpm++2m", "--evals", "8", "-o", "s.json", "-q"]].concat();
    let out = run_in(root, &search);
    assert!(out.status.success(), "{:?}", text(&out));
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("s.json")).unwrap()).unwrap();
    for s in file["schedules"].as_array().unwrap() {
        assert!(s["search_error"].as_f64().unwrap() <= s["baseline_error"].as_f64().unwrap(), "{s}");
    }
    let bench_s = ["restore", "bench", "--model", "run/model.safetensors", "--clean", "clean", "--samplers"];
    let bench_s = [&bench_s[..], &["dpm++2m", "--nfe", "2", "--schedule", "s.json", "--json", "b2.json"]].concat();
    let out = run_in(root, &bench_s);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("| s3:dpm++2m | 3 |"), "{}", text(&out).0);
    let scheduled = ["restore", "denoise", "noisy/rgb_noise_clean.png", "-o", "s.png", "--model"];
    let scheduled = [&scheduled[..], &["run/model.safetensors", "--schedule", "s.json", "--nfe", "2"]].concat();
    assert!(run_in(root, &scheduled).status.success());
    assert!(root.join("s.png").is_file());
    let out = run_in(root, &[&scheduled[..], &["--steps", "3"]].concat());
    assert_eq!(out.status.code(), Some(2), "--schedule and --steps conflict");
    let other = std::fs::read_to_string(root.join("s.json")).unwrap().replace("\"rddm\"", "\"resfusion\"");
    std::fs::write(root.join("other.json"), other).unwrap();
    let wrong = ["restore", "denoise", "noisy", "-o", "y", "--model", "run/model.safetensors"];
    let out = run_in(root, &[&wrong[..], &["--schedule", "other.json"]].concat());
    assert!(!out.status.success() && text(&out).1.contains("other.json"), "{}", text(&out).1);
}

#[test]
fn the_built_in_models_improve_the_shipped_example_of_their_task() {
    // The demo photo of the README (examples/restore, the fixed test degradation of each task): without --model
    // each task's built-in model with its default sampler; the least gain each must keep (measured: denoise
    // +7.36 dB, deblur +0.63 dB, lowlight +11.64 dB with its searched schedule — +13.22 with rddm on the uniform
    // grid, which the schedule beats by 1.1 dB on the test set but not on this one photo; the first models gave
    // +5.95, +0.10 and +10.40).
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let examples = repo_root().join("examples/restore");
    let mean_psnr = |dir: &Path| -> f64 {
        let clean = examples.join("clean");
        let args =
            ["restore", "eval", "--clean", clean.to_str().unwrap(), "--restored", dir.to_str().unwrap(), "--json"];
        let out = run_in(root, &args);
        assert!(out.status.success(), "{}", text(&out).1);
        let v: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
        v["mean"]["psnr"].as_f64().unwrap()
    };
    for (task, input, gain) in [("denoise", "noisy", 6.0), ("deblur", "blurred", 0.3), ("lowlight", "dark", 10.5)] {
        let degraded = examples.join(input);
        let out = run_in(root, &["restore", task, degraded.to_str().unwrap(), "-o", task, "-q"]);
        assert!(out.status.success(), "{task}: {}", text(&out).1);
        let (before, after) = (mean_psnr(&degraded), mean_psnr(&root.join(task)));
        assert!(after > before + gain, "{task}: {before:.2} dB in, {after:.2} dB out");
    }
    // With the degradation's parameters given, the non-blind built-in models (measured: deblur +3.44 dB with
    // --blur-sigma 2, lowlight +20.48 dB with --exposure 0.1 --gamma 1.8).
    for (task, input, flags, gain) in [
        ("deblur", "blurred", &["--blur-sigma", "2"][..], 3.0),
        ("lowlight", "dark", &["--exposure", "0.1", "--gamma", "1.8"][..], 19.0),
    ] {
        let degraded = examples.join(input);
        let out_dir = format!("{task}-known");
        let mut args = vec!["restore", task, degraded.to_str().unwrap(), "-o", out_dir.as_str(), "-q"];
        args.extend_from_slice(flags);
        let out = run_in(root, &args);
        assert!(out.status.success(), "{task}: {}", text(&out).1);
        let (before, after) = (mean_psnr(&degraded), mean_psnr(&root.join(&out_dir)));
        assert!(after > before + gain, "{task} (known): {before:.2} dB in, {after:.2} dB out");
    }
}

#[test]
fn known_parameters_are_checked_against_the_task_and_the_model() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let dark = repo_root().join("examples/restore/dark");
    let dark = dark.to_str().unwrap();
    let blind = repo_root().join("restoration/models/lowlight.safetensors");
    let fails = |args: &[&str], needle: &str| {
        let out = run_in(root, args);
        let stderr = text(&out).1;
        assert!(!out.status.success() && stderr.contains(needle), "{args:?}: {stderr}");
    };
    fails(&["restore", "lowlight", dark, "-o", "o1", "--exposure", "0.1"], "--gamma");
    fails(&["restore", "denoise", dark, "-o", "o2", "--exposure", "0.1", "--gamma", "1.8"], "restore lowlight");
    fails(&["restore", "lowlight", dark, "-o", "o3", "--blur-sigma", "2"], "restore deblur");
    fails(&["restore", "lowlight", dark, "-o", "o4", "--exposure", "3", "--gamma", "1.8"], "--exposure");
    fails(&["restore", "deblur", dark, "-o", "o5", "--blur-sigma", "0"], "--blur-sigma");
    // A blind model is not silently run without the curve the user gave.
    let blind = blind.to_str().unwrap();
    fails(&["restore", "lowlight", dark, "-o", "o6", "--model", blind, "--exposure", "0.1", "--gamma", "1.8"], "blind");
    // A kernel image must be square with an odd side; the error names the file.
    let kernel = root.join("k.png");
    std::fs::copy(repo_root().join("tests/fixtures/restoration/rgb_blur_clean.png"), &kernel).unwrap();
    fails(&["restore", "deblur", dark, "-o", "o7", "--kernel", kernel.to_str().unwrap()], "k.png");
    for o in ["o1", "o2", "o3", "o4", "o5", "o6", "o7"] {
        assert!(!root.join(o).exists(), "{o}: a refused command wrote its output");
    }
}

#[test]
fn a_known_kernel_model_trains_restores_with_its_kernel_and_benches() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    copy_fixtures(&root.join("clean"));
    let train = [
        "restore", "train", "--task", "deblur", "--known", "--nsr", "0.002", "--images", "clean", "--out", "run",
        "--net", "tiny", "--steps", "4", "--crop", "16", "--batch", "2", "-q",
    ];
    let out = run_in(root, &train);
    assert!(out.status.success(), "{}", text(&out).1);
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("run/model.json")).unwrap()).unwrap();
    assert_eq!(sidecar["input"], serde_json::json!({"kind": "wiener", "nsr": 0.002}));
    // Resuming it as a blind run is refused by the checkpoint's recipe, which records the task and input.
    let blind = [
        "restore", "train", "--task", "deblur", "--images", "clean", "--out", "run", "--net", "tiny", "--steps", "6",
        "--crop", "16", "--batch", "2", "-q", "--resume",
    ];
    let out = run_in(root, &blind);
    let err = text(&out).1;
    assert!(!out.status.success() && err.contains("checkpoint.safetensors") && err.contains("same recipe"), "{err}");
    // Denoise has no known parameters.
    let out = run_in(root, &["restore", "train", "--task", "denoise", "--known", "--images", "clean", "--out", "r2"]);
    assert!(!out.status.success() && text(&out).1.contains("--known"), "{}", text(&out).1);

    let model = root.join("run/model.safetensors");
    let model = model.to_str().unwrap();
    let out =
        run_in(root, &["restore", "deblur", "clean", "-o", "sharp", "--model", model, "--blur-sigma", "1.5", "-q"]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(std::fs::read_dir(root.join("sharp")).unwrap().count(), NAMES.len());
    let out = run_in(root, &["restore", "deblur", "clean", "-o", "s2", "--model", model, "-q"]);
    assert!(!out.status.success() && text(&out).1.contains("blur kernel"), "{}", text(&out).1);
    let out =
        run_in(root, &["restore", "bench", "--model", model, "--clean", "clean", "--samplers", "rddm", "--nfe", "1"]);
    assert!(out.status.success(), "{}", text(&out).1);
}
