//! End-to-end tests of `diffuse restore degrade` and `diffuse restore eval`: a folder with a non-image and a
//! truncated PNG is degraded (bad files reported, the rest done, exit 1), the pair is scored, outputs are never
//! overwritten without --force and the inputs are never modified.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use diffuse_tests::{repo_root, run_in, text};

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

/// `in/` with three RGB images, a grey one in `in/sub/`, a text file and a truncated PNG.
fn make_inputs(root: &Path) -> PathBuf {
    let fixtures = repo_root().join("tests/fixtures/restoration");
    let input = root.join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    for name in ["rgb_noise_clean.png", "rgb_blur_clean.png", "rgb_mixed_clean.png"] {
        std::fs::copy(fixtures.join(name), input.join(name)).unwrap();
    }
    std::fs::copy(fixtures.join("grey_noise_clean.png"), input.join("sub/grey.png")).unwrap();
    std::fs::write(input.join("notes.txt"), "not an image\n").unwrap();
    let png = std::fs::read(fixtures.join("rgb_mixed_clean.png")).unwrap();
    std::fs::write(input.join("cut.png"), &png[..png.len() / 3]).unwrap();
    input
}

const GOOD: [&str; 4] = ["rgb_noise_clean.png", "rgb_blur_clean.png", "rgb_mixed_clean.png", "sub/grey.png"];

#[test]
fn degrade_a_folder_reports_bad_files_and_eval_scores_the_pair() {
    let t = tempfile::tempdir().unwrap();
    let input = make_inputs(t.path());
    let before = snapshot(&input);
    let args = ["restore", "degrade", "--task", "denoise", "in", "-o", "out", "--sigma", "25", "--seed", "3"];
    let out = run_in(t.path(), &[&args[..], &["--record", "params.json"]].concat());
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("degraded 4 images"), "{stdout}");
    assert!(stderr.contains("2 images failed"), "{stderr}");
    assert!(stderr.contains("cut.png") && stderr.contains("truncated PNG"), "{stderr}");
    assert!(stderr.contains("notes.txt") && stderr.contains("not a PNG or JPEG"), "{stderr}");
    for name in GOOD {
        assert!(t.path().join("out").join(name).is_file(), "{name} missing");
    }
    assert!(!t.path().join("out/notes.txt").exists() && !t.path().join("out/cut.png").exists());
    let params: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("params.json")).unwrap()).unwrap();
    assert_eq!(params["images"].as_object().unwrap().len(), 4);
    assert!((params["images"]["sub/grey.png"]["sigma"].as_f64().unwrap() - 25.0 / 255.0).abs() < 1e-12);

    // Scores: AWGN σ = 25 on 8-bit images gives about 20–21 dB; cut.png has no degraded copy.
    let out = run_in(t.path(), &["restore", "eval", "--clean", "in", "--restored", "out", "--json"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cut.png"), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["count"], 4);
    for row in json["files"].as_array().unwrap() {
        let (psnr, ssim) = (row["psnr"].as_f64().unwrap(), row["ssim"].as_f64().unwrap());
        assert!((19.5..22.0).contains(&psnr) && ssim > 0.5 && ssim < 0.99, "{row}");
    }
    assert_eq!(json["failures"][0]["file"], "cut.png");
    let mean = json["mean"]["psnr"].as_f64().unwrap();
    let out = run_in(t.path(), &["restore", "eval", "--clean", "in", "--restored", "out"]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains(&format!("mean of 4 files: PSNR {mean:.2} dB")), "{stdout}");

    // A folder scored against itself: PSNR is infinite (null in JSON), SSIM 1, exit 0.
    let out = run_in(t.path(), &["restore", "eval", "--clean", "out", "--restored", "out", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    assert!(json["files"][0]["psnr"].is_null() && json["files"][0]["ssim"].as_f64().unwrap() == 1.0);

    assert_eq!(snapshot(&input), before, "the inputs were modified");
}

#[test]
fn outputs_are_kept_without_force_and_the_same_seed_gives_the_same_images() {
    let t = tempfile::tempdir().unwrap();
    let input = make_inputs(t.path());
    let before = snapshot(&input);
    let args = ["restore", "degrade", "--task", "deblur", "in", "-o", "out", "--seed", "7"];
    assert_eq!(run_in(t.path(), &args).status.code(), Some(1));
    let first = snapshot(&t.path().join("out"));
    assert_eq!(first.len(), 4);

    // Again without --force: every output exists, none is replaced.
    let out = run_in(t.path(), &["restore", "degrade", "--task", "lowlight", "in", "-o", "out"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.matches("already exists (use --force to overwrite)").count(), 4, "{stderr}");
    assert_eq!(snapshot(&t.path().join("out")), first);

    // With --force and the same seed: identical files; another seed: different ones.
    assert_eq!(run_in(t.path(), &[&args[..], &["--force"]].concat()).status.code(), Some(1));
    assert_eq!(snapshot(&t.path().join("out")), first);
    let other = ["restore", "degrade", "--task", "deblur", "in", "-o", "out", "--seed", "8", "--force"];
    assert_eq!(run_in(t.path(), &other).status.code(), Some(1));
    assert_ne!(snapshot(&t.path().join("out")), first);

    // Writing into the input folder is refused even with --force: the inputs are never replaced.
    let out = run_in(t.path(), &["restore", "degrade", "--task", "denoise", "in", "-o", "in", "--force"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("is an input of this run"), "{stderr}");
    assert_eq!(snapshot(&input), before, "the inputs were modified");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    make_inputs(t.path());
    let out = run_in(t.path(), &["restore", "degrade", "--task", "lowlight", "in", "-o", "o", "--sigma", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("--sigma"), "{}", text(&out).1);
    let out = run_in(t.path(), &["restore", "degrade", "--task", "denoise", "missing", "-o", "o"]);
    assert!(text(&out).1.contains("missing: no such file or folder"));
    let out = run_in(t.path(), &["restore", "eval", "--clean", "nowhere", "--restored", "in"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("nowhere: is not a folder"), "{}", text(&out).1);
}
