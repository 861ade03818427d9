//! Issue 21, item 3 for the audio model: `diffuse audio search` writes a schedule searched on (clean, noisy)
//! pairs; `audio bench --schedule` scores it; `audio enhance --schedule` runs it, and bad choices name the file.

use std::path::Path;

use diffuse_tests::{run_in, text};

fn write_wav(path: &Path, samples: &[f32]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let data: Vec<u8> =
        samples.iter().flat_map(|&s| ((s * 32768.0).round().clamp(-32768.0, 32767.0) as i16).to_le_bytes()).collect();
    std::fs::write(path, diffuse_tests::wav_bytes(1, 1, 16000, 16, &data)).unwrap();
}

/// A voiced, amplitude-modulated harmonic tone in white noise.
fn pair(n: usize, f0: f32, seed: u32) -> (Vec<f32>, Vec<f32>) {
    let mut s = seed;
    let clean: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f32 / 16000.0;
            let env = (std::f32::consts::PI * 2.5 * t).sin().abs();
            0.3 * env * (1..5).map(|k| (2.0 * std::f32::consts::PI * f0 * k as f32 * t).sin() / k as f32).sum::<f32>()
        })
        .collect();
    let noisy = clean
        .iter()
        .map(|c| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            c + 0.1 * ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        })
        .collect();
    (clean, noisy)
}

#[test]
fn a_searched_schedule_is_scored_by_bench_and_run_by_enhance() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, f0) in [150.0, 210.0].into_iter().enumerate() {
        let (c, y) = pair(12000, f0, 7 + i as u32);
        write_wav(&d.join(format!("c/p{i}.wav")), &c);
        write_wav(&d.join(format!("y/p{i}.wav")), &y);
    }
    let search = |extra: &[&str]| {
        let mut args =
            vec!["audio", "search", "--clean", "c", "--noisy", "y", "--crop", "0.5", "--evals", "2", "--nfe", "2"];
        args.extend_from_slice(extra);
        run_in(d, &args)
    };
    let out = search(&["--solvers", "ddim", "-o", "s.json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("s.json")).unwrap()).unwrap();
    assert_eq!(file["format"], "diffuse-solver-schedules");
    assert_eq!(file["path"]["kind"], "ouve");
    assert!(file["fitted_to"].as_str().unwrap().contains("clean references of 2 crops"));
    let s = &file["schedules"][0];
    assert_eq!(
        (s["nfe"].as_u64(), s["solver"].as_str(), s["objective"].as_str()),
        (Some(2), Some("ddim"), Some("-si_sdr_db"))
    );
    let times: Vec<f64> = s["times"].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect();
    assert_eq!(times.len(), 2);
    assert_eq!(times[0], 1.0);
    assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");
    assert!(s["search_error"].as_f64().unwrap() <= s["baseline_error"].as_f64().unwrap());
    // The search never overwrites its output without --force.
    let again = search(&["--solvers", "ddim", "-o", "s.json"]);
    assert!(!again.status.success() && text(&again).1.contains("s.json"));

    let out = run_in(
        d,
        &[
            "audio",
            "bench",
            "--clean",
            "c",
            "--noisy",
            "y",
            "--samplers",
            "ddim",
            "--steps",
            "2",
            "--schedule",
            "s.json",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("| ddim | 2 |") && stdout.contains("| schedule:ddim | 2 |"), "{stdout}");

    let out = run_in(d, &["audio", "enhance", "y/p0.wav", "-o", "e.wav", "--schedule", "s.json", "-v"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("ddim (schedule) (2 NFE per chunk)"), "{stderr}");
    assert!(d.join("e.wav").is_file());
    let out =
        run_in(d, &["audio", "enhance", "y/p0.wav", "-o", "f.wav", "--schedule", "s.json", "--schedule-nfe", "7"]);
    let err = text(&out).1;
    assert!(!out.status.success() && err.contains("s.json") && err.contains("no schedule of 7 NFE"), "{err}");
    let out = run_in(d, &["audio", "enhance", "y/p0.wav", "-o", "f.wav", "--schedule", "s.json", "--steps", "4"]);
    assert!(!out.status.success() && text(&out).1.contains("--steps"));
    // The shipped schedule of the built-in model runs as documented in examples/audio/README.md.
    let shipped = diffuse_tests::repo_root().join("examples/audio/schedule-5nfe.json");
    let out =
        run_in(d, &["audio", "enhance", "y/p1.wav", "-o", "g.wav", "--schedule", shipped.to_str().unwrap(), "-v"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success() && stderr.contains("(5 NFE per chunk)"), "{stdout}{stderr}");
    let out = search(&["--fit", "teacher", "-o", "t.json"]);
    assert!(!out.status.success() && text(&out).1.contains("SAMPLER:STEPS"));
}

/// Issue 21, item 4 for the audio model: `audio ems` writes DPM-Solver-v3's statistics of the model, `audio bench`
/// runs v3 with its own parameters inside a sampler list, and an existing statistics file is kept without --force.
#[test]
fn speech_model_statistics_run_dpm_solver_v3_in_bench() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, f0) in [150.0, 210.0].into_iter().enumerate() {
        let (c, y) = pair(8000, f0, 3 + i as u32);
        write_wav(&d.join(format!("c/p{i}.wav")), &c);
        write_wav(&d.join(format!("y/p{i}.wav")), &y);
    }
    let ems = ["audio", "ems", "--noisy", "y", "--crop", "0.25", "--intervals", "3", "--probes", "1", "-o", "e.st"];
    let out = run_in(d, &ems);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("pooled over frames") && stdout.contains("dpm-solver-v3:stats=e.st"), "{stdout}");
    let before = std::fs::read(d.join("e.st")).unwrap();
    let out = run_in(d, &ems);
    assert!(!out.status.success() && text(&out).1.contains("--force"), "{}", text(&out).1);
    assert_eq!(std::fs::read(d.join("e.st")).unwrap(), before);

    let samplers = "ddim,dpm-solver-v3:stats=e.st,order=1";
    let bench = ["audio", "bench", "--clean", "c", "--noisy", "y", "--samplers", samplers, "--steps", "2"];
    let out = run_in(d, &[&bench[..], &["--json", "b.json"]].concat());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("b.json")).unwrap()).unwrap();
    let names: Vec<String> = rows.to_string().matches("dpm-solver-v3:stats=e.st,order=1").map(String::from).collect();
    assert!(!names.is_empty(), "{rows}");
}
