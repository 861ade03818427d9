//! End-to-end tests of sharded, resumable batches (issue 23, scale-out): shards run as parallel processes give
//! the same bytes as one run, a killed shard resumes without redoing finished items, and `manifest merge` accepts
//! the complete set and names what is missing otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use diffuse_tests::{diffuse_bin, repo_root, run_in, text};

/// Enhancement settings shared by every run: the built-in model with a 2-step solver on one CPU thread.
const ENHANCE: [&str; 8] = ["--sampler", "dpm++2m", "--steps", "2", "--device", "cpu", "--threads", "1"];

/// Writes `count` different cuts (1.0 to 1.8 s) of the shipped noisy example into `dir` as `cK.wav`, and a list
/// file naming them; returns the list's path.
fn make_inputs(dir: &Path, count: usize) -> PathBuf {
    let wav = std::fs::read(repo_root().join("examples/audio/noisy/speech.wav")).unwrap();
    // 16-bit mono 16 kHz with a 44-byte header (checked, so a changed example fails here, not later).
    assert_eq!(&wav[36..40], b"data");
    assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 1);
    let samples = &wav[44..];
    std::fs::create_dir_all(dir).unwrap();
    let mut list = String::from("# the batch\n");
    for k in 0..count {
        let start = 2 * 3200 * k;
        let len = 2 * (16_000 + 3200 * (k % 5));
        let data = &samples[start..start + len];
        let mut b = wav[..44].to_vec();
        b[4..8].copy_from_slice(&(36 + data.len() as u32).to_le_bytes());
        b[40..44].copy_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(data);
        std::fs::write(dir.join(format!("c{k}.wav")), b).unwrap();
        list.push_str(&format!("c{k}.wav\n"));
    }
    let path = dir.join("list.txt");
    std::fs::write(&path, list).unwrap();
    path
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let out = run_in(dir, args);
    let (stdout, stderr) = text(&out);
    eprintln!("$ diffuse {}\n{stdout}{stderr}", args.join(" "));
    out
}

fn enhance_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["audio", "enhance"];
    v.extend_from_slice(extra);
    v.extend_from_slice(&ENHANCE);
    v
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn shards_in_parallel_match_one_run_resume_after_a_kill_and_merge() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_inputs(&d.join("in"), 5);
    let names: Vec<String> = (0..5).map(|k| format!("c{k}.wav")).collect();

    // One unsharded run of the folder is the reference.
    let reference = run(d, &enhance_args(&["in", "-o", "ref"]));
    assert!(reference.status.success());

    // Three shards of the list, as parallel processes.
    let children: Vec<_> = (0..3)
        .map(|i| {
            let shard = format!("{i}/3");
            Command::new(diffuse_bin())
                .current_dir(d)
                .args(enhance_args(&["--list", "in/list.txt", "-o", "sh", "--shard", &shard, "-q"]))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("diffuse starts")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for name in &names {
        assert_eq!(std::fs::read(d.join("sh").join(name)).unwrap(), std::fs::read(d.join("ref").join(name)).unwrap());
    }
    // Round-robin over the sorted list: shard 0 has c0 and c3, shard 1 c1 and c4, shard 2 c2.
    let manifests: Vec<PathBuf> = (0..3).map(|i| d.join(format!("sh/manifest-{i}-of-3.jsonl"))).collect();
    let m0 = lines(&manifests[0]);
    let inputs: Vec<&str> = m0.iter().map(|r| r["input"].as_str().unwrap()).collect();
    assert_eq!(inputs, ["in/c0.wav", "in/c3.wav"]);
    assert!(
        m0.iter().all(|r| r["status"] == "ok" && r["shard"] == "0/3" && r["checksum"].as_str().unwrap().len() == 64)
    );

    let ms: Vec<&str> = manifests.iter().map(|m| m.to_str().unwrap()).collect();
    let merged = run(d, &["manifest", "merge", ms[0], ms[1], ms[2], "--inputs", "in/list.txt", "-o", "merged.jsonl"]);
    let (stdout, _) = text(&merged);
    assert!(merged.status.success() && stdout.contains("5 ok, 0 failed"), "{stdout}");
    assert_eq!(lines(&d.join("merged.jsonl")).len(), 5);
    // Leaving shard 2 out: non-zero, and the missing input is named.
    let partial = run(d, &["manifest", "merge", ms[0], ms[1], "--inputs", "in/list.txt"]);
    let (stdout, stderr) = text(&partial);
    assert_eq!(partial.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("1 missing") && stderr.contains("in/c2.wav"), "{stdout}{stderr}");
    let counted = run(d, &["manifest", "merge", ms[0], ms[1], "--expect-count", "5"]);
    assert_eq!(counted.status.code(), Some(1));

    // A shard killed while writing c3: its output is gone and its manifest line torn.
    let kept = d.join("sh/c0.wav");
    let kept_time = std::fs::metadata(&kept).unwrap().modified().unwrap();
    std::fs::remove_file(d.join("sh/c3.wav")).unwrap();
    let bytes = std::fs::read(&manifests[0]).unwrap();
    std::fs::write(&manifests[0], &bytes[..bytes.len() - 30]).unwrap();
    // Rerunning without --resume refuses to forget the manifest.
    let again = run(d, &enhance_args(&["--list", "in/list.txt", "-o", "sh", "--shard", "0/3"]));
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again).1.contains("--resume"));

    let resumed = run(d, &enhance_args(&["--list", "in/list.txt", "-o", "sh", "--shard", "0/3", "--resume"]));
    let (stdout, stderr) = text(&resumed);
    assert!(resumed.status.success(), "{stderr}");
    assert!(stdout.contains("enhanced 1 file") && stderr.contains("1 input was already done"), "{stdout}{stderr}");
    assert_eq!(std::fs::read(d.join("sh/c3.wav")).unwrap(), std::fs::read(d.join("ref/c3.wav")).unwrap());
    assert_eq!(std::fs::metadata(&kept).unwrap().modified().unwrap(), kept_time, "c0 was not redone");
    let inputs: Vec<String> = lines(&manifests[0]).iter().map(|r| r["input"].as_str().unwrap().to_string()).collect();
    assert_eq!(inputs, ["in/c0.wav", "in/c3.wav"]);
    assert!(run(d, &["manifest", "merge", ms[0], ms[1], ms[2], "--inputs", "in/list.txt"]).status.success());

    // An output changed after it was recorded is not trusted: resume will not overwrite it without --force
    // (recorded as skipped, so the merge fails), and redoes it with --force.
    let mut changed = std::fs::read(&kept).unwrap();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    std::fs::write(&kept, changed).unwrap();
    let refused = run(d, &enhance_args(&["--list", "in/list.txt", "-o", "sh", "--shard", "0/3", "--resume"]));
    assert!(refused.status.success());
    let merge = run(d, &["manifest", "merge", ms[0], ms[1], ms[2], "--inputs", "in/list.txt"]);
    let (stdout, stderr) = text(&merge);
    assert_eq!(merge.status.code(), Some(1));
    assert!(stdout.contains("1 skipped") && stderr.contains("in/c0.wav"), "{stdout}{stderr}");
    let forced = run(d, &enhance_args(&["--list", "in/list.txt", "-o", "sh", "--shard", "0/3", "--resume", "--force"]));
    assert!(forced.status.success());
    assert_eq!(std::fs::read(&kept).unwrap(), std::fs::read(d.join("ref/c0.wav")).unwrap());
    assert!(run(d, &["manifest", "merge", ms[0], ms[1], ms[2], "--inputs", "in/list.txt"]).status.success());
}

#[test]
fn pose_scenes_in_two_shards_cover_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let saved = run(
        d,
        &["pose", "bench", "--objects", "l-shape", "--cases", "3", "--no-baseline", "--save-cases", "cases", "-q"],
    );
    assert!(saved.status.success());
    let list = "case-000-l-shape.ply\ncase-001-l-shape.ply\ncase-002-l-shape.ply\n";
    std::fs::write(d.join("cases/list.txt"), list).unwrap();
    let tiny = ["--hypotheses", "2", "--steps", "5", "--object", "cases/object-l-shape.ply", "--threads", "1"];
    for i in 0..2 {
        let shard = format!("{i}/2");
        let mut args = vec!["pose", "estimate", "--list", "cases/list.txt", "-o", "poses", "--shard", &shard];
        args.extend_from_slice(&tiny);
        let out = run(d, &args);
        assert!(out.status.success(), "{}", text(&out).1);
    }
    for k in 0..3 {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join(format!("poses/case-00{k}-l-shape.json"))).unwrap())
                .unwrap();
        assert_eq!(json["pose"].as_array().unwrap().len(), 4);
        assert!(d.join(format!("poses/case-00{k}-l-shape_aligned.ply")).is_file());
    }
    let merged = run(
        d,
        &[
            "manifest",
            "merge",
            "poses/manifest-0-of-2.jsonl",
            "poses/manifest-1-of-2.jsonl",
            "--inputs",
            "cases/list.txt",
        ],
    );
    assert!(merged.status.success(), "{}", text(&merged).0);
    // Resuming a finished shard does nothing.
    let mut args = vec!["pose", "estimate", "--list", "cases/list.txt", "-o", "poses", "--shard", "1/2", "--resume"];
    args.extend_from_slice(&tiny);
    let out = run(d, &args);
    let (stdout, _) = text(&out);
    assert!(
        out.status.success() && stdout.contains("estimated 0 poses") && stdout.contains("1 already done"),
        "{stdout}"
    );
    // A folder batch without -o is refused with a clear message.
    let out = run(d, &["pose", "estimate", "cases", "--object", "cases/object-l-shape.ply"]);
    assert!(!out.status.success() && text(&out).1.contains("-o OUTDIR"));
}

/// Really killed, not simulated: a shard stopped by SIGKILL (nothing can clean up) and one stopped by SIGTERM
/// (its watcher removes the output being written, then the process dies of SIGTERM) both resume to the bytes of
/// an uninterrupted run, and no temporary file is left behind.
#[cfg(unix)]
#[test]
fn a_shard_killed_mid_run_resumes_to_the_same_bytes() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_inputs(&d.join("in"), 6);
    assert!(run(d, &enhance_args(&["--list", "in/list.txt", "-o", "ref"])).status.success());
    for signal in ["KILL", "TERM"] {
        let out = format!("out-{signal}");
        let args = enhance_args(&["--list", "in/list.txt", "-o", &out, "--shard", "0/1"]);
        let mut child = Command::new(diffuse_bin())
            .args(&args)
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let manifest = d.join(&out).join("manifest-0-of-1.jsonl");
        let start = Instant::now();
        // Stop it once two items are recorded (mid-batch); if it finishes first, the resume has nothing to do.
        while child.try_wait().unwrap().is_none()
            && std::fs::read_to_string(&manifest).map_or(0, |m| m.lines().count()) < 2
            && start.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let was_running = child.try_wait().unwrap().is_none();
        Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
        let status = child.wait().unwrap();
        if was_running {
            use std::os::unix::process::ExitStatusExt;
            // Died of the signal itself (not of a crash on the way out).
            assert_eq!(status.signal(), Some(if signal == "KILL" { 9 } else { 15 }), "{status:?}");
        }
        let resumed = run(d, &[&args[..], &["--resume"]].concat());
        assert!(resumed.status.success(), "{}", text(&resumed).1);
        for k in 0..6 {
            let name = format!("c{k}.wav");
            assert_eq!(
                std::fs::read(d.join(&out).join(&name)).unwrap(),
                std::fs::read(d.join("ref").join(&name)).unwrap()
            );
        }
        let leftovers: Vec<String> = std::fs::read_dir(d.join(&out))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "after SIG{signal}: {leftovers:?}");
    }
}

/// `restore degrade` takes the same batch flags: two shards give the bytes of one run, and their manifests merge.
#[test]
fn degraded_image_pairs_in_two_shards_match_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("in")).unwrap();
    let fixtures = repo_root().join("tests/fixtures/restoration");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&fixtures).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "png") {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::copy(&p, d.join("in").join(&name)).unwrap();
            names.push(name);
        }
    }
    assert!(names.len() >= 4);
    let degrade = |extra: &[&str]| {
        let args = [&["restore", "degrade", "--task", "deblur", "in"][..], extra].concat();
        let out = run(d, &args);
        assert!(out.status.success(), "{}", text(&out).1);
    };
    degrade(&["-o", "one"]);
    degrade(&["-o", "sh", "--shard", "0/2"]);
    degrade(&["-o", "sh", "--shard", "1/2"]);
    for name in &names {
        assert_eq!(std::fs::read(d.join("sh").join(name)).unwrap(), std::fs::read(d.join("one").join(name)).unwrap());
    }
    let count = names.len().to_string();
    let merged = run(
        d,
        &["manifest", "merge", "sh/manifest-0-of-2.jsonl", "sh/manifest-1-of-2.jsonl", "--expect-count", &count],
    );
    assert!(merged.status.success(), "{}", text(&merged).0);
}
