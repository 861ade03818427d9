//! End-to-end tests of `diffuse pose`: a saved benchmark case is registered back to its true pose, and bad input
//! gets clear errors naming the file and what is wrong.

use std::path::Path;

use diffuse_tests::{repo_root, run_in, text};

/// Writes an ascii PLY with the given vertex lines (x y z).
fn write_ply(path: &Path, rows: &[String]) {
    let mut s = format!(
        "ply\nformat ascii 1.0\nelement vertex {}\nproperty float x\nproperty float y\nproperty float z\nend_header\n",
        rows.len()
    );
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// A small valid cloud: a 6×6 grid on two planes (not collinear).
fn grid(scale: f64) -> Vec<String> {
    (0..72)
        .map(|i| format!("{} {} {}", (i % 6) as f64 * scale, ((i / 6) % 6) as f64 * scale, (i / 36) as f64 * scale))
        .collect()
}

fn rows4(json: &serde_json::Value) -> [[f64; 4]; 4] {
    let mut m = [[0.0; 4]; 4];
    for (i, row) in json.as_array().unwrap().iter().enumerate() {
        for (j, v) in row.as_array().unwrap().iter().enumerate() {
            m[i][j] = v.as_f64().unwrap();
        }
    }
    m
}

/// Rotation angle (degrees) between the rotation blocks of two 4×4 poses, and the distance of the translations.
fn pose_error(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4]) -> (f64, f64) {
    // trace(Aᵀ·B) = 1 + 2 cos θ.
    let mut tr = 0.0;
    for i in 0..3 {
        for k in 0..3 {
            tr += a[k][i] * b[k][i];
        }
    }
    let angle = ((tr - 1.0) / 2.0).clamp(-1.0, 1.0).acos().to_degrees();
    let dt = (0..3).map(|i| (a[i][3] - b[i][3]).powi(2)).sum::<f64>().sqrt();
    (angle, dt)
}

#[test]
fn estimate_recovers_a_saved_benchmark_case_and_writes_the_aligned_object() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run_in(
        d,
        &["pose", "bench", "--objects", "l-shape", "--cases", "1", "--no-baseline", "--save-cases", "cases", "-q"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("diffusion") && stdout.contains("l-shape"), "{stdout}");
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("cases/case-000-l-shape.json")).unwrap()).unwrap();
    let truth = rows4(&case["pose"]);
    let scene = format!("cases/{}", case["scene"].as_str().unwrap());

    let out = run_in(
        d,
        &[
            "pose",
            "estimate",
            &scene,
            "--object",
            "cases/object-l-shape.ply",
            "--viewpoint",
            "0,0,0",
            "--json",
            "-o",
            "aligned.ply",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let est: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let (rot, trans) = pose_error(&rows4(&est["pose"]), &truth);
    let diameter = est["object_diameter"].as_f64().unwrap();
    assert!(rot < 5.0 && trans < 0.02 * diameter, "rotation error {rot}°, translation error {trans} (d = {diameter})");
    assert!(est["fitness"].as_f64().unwrap() > 0.8, "{}", est["fitness"]);
    let q = est["rotation"]["quaternion_wxyz"].as_array().unwrap();
    let qn: f64 = q.iter().map(|v| v.as_f64().unwrap().powi(2)).sum();
    assert!((qn - 1.0).abs() < 1e-9);
    assert!(d.join("aligned.ply").exists());

    // The output is not overwritten without --force; the text report names the pose parts.
    let again = run_in(d, &["pose", "estimate", &scene, "--object", "cases/object-l-shape.ply", "-o", "aligned.ply"]);
    let (_, stderr) = text(&again);
    assert!(!again.status.success() && stderr.contains("aligned.ply: already exists (use --force"), "{stderr}");
    let forced = run_in(
        d,
        &["pose", "estimate", &scene, "--object", "cases/object-l-shape.ply", "-o", "aligned.ply", "--force"],
    );
    let (stdout, stderr) = text(&forced);
    assert!(forced.status.success(), "{stderr}");
    for part in ["pose (object → scene)", "rotation", "quaternion", "translation", "fitness", "inlier RMSE", "time"] {
        assert!(stdout.contains(part), "missing '{part}' in\n{stdout}");
    }
}

#[test]
fn the_example_scene_is_registered() {
    let root = repo_root();
    let out = run_in(
        &root,
        &[
            "pose",
            "estimate",
            "examples/pose/bunny-scene.ply",
            "--object",
            "examples/bunny.ply",
            "--viewpoint",
            "0,0,0",
            "--json",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let est: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("examples/pose/bunny-scene.json")).unwrap()).unwrap();
    let (rot, trans) = pose_error(&rows4(&est["pose"]), &rows4(&truth["pose"]));
    let diameter = est["object_diameter"].as_f64().unwrap();
    assert!(rot < 5.0 && trans < 0.02 * diameter, "rotation error {rot}°, translation error {trans}");
}

#[test]
fn without_an_object_model_the_error_says_why() {
    let dir = tempfile::tempdir().unwrap();
    write_ply(&dir.path().join("scene.ply"), &grid(1.0));
    let out = run_in(dir.path(), &["pose", "estimate", "scene.ply"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("needs the object's model (--object MODEL.ply) or its category"), "{stderr}");
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_ply(&d.join("object.ply"), &grid(0.01));
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty.ply", "ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\nend_header\n".into(), "empty.ply is empty"),
        ("few.ply", "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n".into(), "few.ply has 3 point(s) but at least 10"),
        ("same.ply", format!("ply\nformat ascii 1.0\nelement vertex 20\nproperty float x\nproperty float y\nproperty float z\nend_header\n{}", "1 2 3\n".repeat(20)), "all points are identical"),
        ("line.ply", format!("ply\nformat ascii 1.0\nelement vertex 20\nproperty float x\nproperty float y\nproperty float z\nend_header\n{}", (0..20).map(|i| format!("{i} {} 0\n", 2 * i)).collect::<String>()), "all points lie on one line"),
                ("noz.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nend_header\n0 0\n".into(), "noz.ply: element 'vertex' has no property 'z'"),
        ("garbage.ply", "this is not a ply file\n".into(), "garbage.ply: not a readable PLY file"),
    ];
    for (name, content, want) in &cases {
        std::fs::write(d.join(name), content).unwrap();
        let out = run_in(d, &["pose", "estimate", name, "--object", "object.ply"]);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(stderr.contains(want), "{name}: expected '{want}' in\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // NaN in a binary file (ascii parsers reject the text "nan" already).
    let mut bin =
        b"ply\nformat binary_little_endian 1.0\nelement vertex 20\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
            .to_vec();
    for i in 0..20 {
        let x = if i == 1 { f32::NAN } else { i as f32 };
        for v in [x, (i % 3) as f32, 1.0] {
            bin.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::write(d.join("nan.ply"), bin).unwrap();
    let out = run_in(d, &["pose", "estimate", "nan.ply", "--object", "object.ply"]);
    let (_, stderr) = text(&out);
    assert!(stderr.contains("nan.ply: point 1 has a non-finite coordinate (NaN)"), "{stderr}");
    // A bad object model is named as such.
    let out = run_in(d, &["pose", "estimate", "object.ply", "--object", "line.ply"]);
    let (_, stderr) = text(&out);
    assert!(stderr.contains("line.ply is degenerate"), "{stderr}");
    let out = run_in(d, &["pose", "estimate", "missing.ply", "--object", "object.ply"]);
    let (_, stderr) = text(&out);
    assert!(stderr.contains("missing.ply"), "{stderr}");
    let out = run_in(d, &["pose", "estimate", "object.ply", "--object", "object.ply", "--viewpoint", "1,2"]);
    assert!(text(&out).1.contains("three finite numbers"));
}

#[test]
fn wildly_different_scales_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The same shape in metres and in millimetres.
    write_ply(&d.join("object.ply"), &grid(0.01));
    write_ply(&d.join("scene_mm.ply"), &grid(10.0));
    let out = run_in(d, &["pose", "estimate", "scene_mm.ply", "--object", "object.ply", "--hypotheses", "2"]);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("warning: the scene")
            && stderr.contains("larger than the object")
            && stderr.contains("same units"),
        "{stderr}"
    );
}

#[test]
fn bench_json_reports_both_methods() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["pose", "bench", "--objects", "box", "--cases", "1", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let methods: Vec<&str> =
        json["summaries"].as_array().unwrap().iter().map(|s| s["method"].as_str().unwrap()).collect();
    assert!(methods.contains(&"diffusion") && methods.contains(&"icp-from-identity"), "{methods:?}");
    assert_eq!(json["cases"].as_array().unwrap().len(), 2);
    let out = run_in(dir.path(), &["pose", "bench", "--objects", "teapot"]);
    assert!(text(&out).1.contains("unknown built-in object 'teapot'"));
}

#[test]
fn with_dof_7_the_scale_of_a_stretched_model_is_found_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run_in(
        d,
        &[
            "pose",
            "bench",
            "--dof",
            "7",
            "--objects",
            "l-shape",
            "--cases",
            "1",
            "--no-baseline",
            "--save-cases",
            "cases",
            "-q",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("every scale within 3 %"), "{stdout}");
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("cases/case-000-l-shape.json")).unwrap()).unwrap();
    let truth = rows4(&case["pose"]);
    let true_scale = case["scale"][0].as_f64().unwrap();
    assert!((true_scale - 1.0).abs() > 0.05, "the case should be stretched: {true_scale}");
    let scene = format!("cases/{}", case["scene"].as_str().unwrap());
    let args = ["pose", "estimate", &scene, "--object", "cases/object-l-shape.ply", "--viewpoint", "0,0,0"];
    let out = run_in(d, &[&args[..], &["--dof", "7", "--json", "-o", "aligned.ply"]].concat());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let est: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let (rot, trans) = pose_error(&rows4(&est["pose"]), &truth);
    let diameter = est["object_diameter"].as_f64().unwrap() * true_scale;
    assert!(rot < 5.0 && trans < 0.02 * diameter, "rotation error {rot}°, translation error {trans}");
    assert_eq!(est["dof"], 7);
    let scale: Vec<f64> = est["scale"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(scale.iter().all(|s| (s / true_scale - 1.0).abs() < 0.03), "{scale:?} vs {true_scale}");
    assert!(d.join("aligned.ply").exists());
    // Rigid registration of the same scan cannot fit the stretched object as well.
    let rigid = run_in(d, &[&args[..], &["--json"]].concat());
    let rigid: serde_json::Value = serde_json::from_str(&text(&rigid).0).unwrap();
    assert_eq!(rigid["scale"], serde_json::json!([1.0, 1.0, 1.0]));
    assert!(rigid["fitness"].as_f64().unwrap() < est["fitness"].as_f64().unwrap());
    // The text report prints the scale.
    let out = run_in(d, &[&args[..], &["--dof", "9"]].concat());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("scale ") && stdout.contains("(9 DoF)"), "{stdout}");
}

#[test]
fn scale_modes_refuse_what_they_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_ply(&d.join("scene.ply"), &grid(0.01));
    let out = run_in(d, &["pose", "estimate", "scene.ply", "--dof", "9"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("--dof 9 scales a known model"), "{stderr}");
    let out = run_in(d, &["pose", "estimate", "scene.ply", "--object", "scene.ply", "--dof", "5"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("'5'") && stderr.contains("7 (one scale)"), "{stderr}");
}

#[test]
fn the_category_bench_reports_the_nocs_measures_and_names_unknown_categories() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["pose", "bench", "--category", "mug,can", "--cases", "1", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let summaries = json["summaries"].as_array().unwrap();
    // Per method (the baseline, then the learned model): mug, can, all.
    assert_eq!(summaries.len(), 6);
    for (all, method) in [(&summaries[2], "pca-box"), (&summaries[5], "diffusion")] {
        assert_eq!((all["method"].as_str(), all["category"].as_str()), (Some(method), Some("all")));
        for key in ["iou25", "iou50", "deg5_cm2", "deg5_cm5", "deg10_cm2", "deg10_cm5"] {
            let v = all["summary"][key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{key}: {v}");
        }
    }
    assert_eq!(json["cases"].as_array().unwrap().len(), 4);
    assert!(json["cases"].as_array().unwrap().iter().all(|c| c["failure"].is_null()), "{stdout}");
    let out = run_in(dir.path(), &["pose", "bench", "--category", "teapot"]);
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success() && stderr.contains("unknown category 'teapot'") && stderr.contains("laptop"),
        "{stderr}"
    );
    let out = run_in(dir.path(), &["pose", "bench", "--category", "mug", "--dof", "9"]);
    assert!(!out.status.success() && text(&out).1.contains("--dof applies to --objects"));
}

#[test]
fn a_saved_category_scan_is_boxed_by_the_builtin_model_and_bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run_in(d, &["pose", "bench", "--category", "can", "--cases", "1", "--save-cases", "cases", "-q"]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("cases/case-000-can.json")).unwrap()).unwrap();
    assert!(d.join("cases/case-000-can-box.ply").exists());
    let scan = "cases/case-000-can.ply";
    for (extra, estimator) in [(None, "diffusion"), (Some("--pca-box"), "pca-box")] {
        let mut args = vec!["pose", "estimate", scan, "--category", "can", "--json", "-o", "box.ply", "--force"];
        args.extend(extra);
        let out = run_in(d, &args);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        let est: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(est["estimator"], estimator);
        assert_eq!(est["corners"].as_array().unwrap().len(), 8);
        // A can: its axis and its height come from the table, its centre within 2 cm.
        let (e, t) = (rows4(&est["pose"]), rows4(&case["pose"]));
        let cos = (0..3).map(|i| e[i][1] * t[i][1]).sum::<f64>();
        let shift = (0..3).map(|i| (e[i][3] - t[i][3]).powi(2)).sum::<f64>().sqrt();
        let (h, th) = (est["size"][1].as_f64().unwrap(), case["size"][1].as_f64().unwrap());
        assert!(cos > 0.995 && shift < 0.02 && (h - th).abs() < 0.01, "cos {cos}, shift {shift}, height {h} vs {th}");
        assert!(d.join("box.ply").exists());
        if estimator == "diffusion" {
            assert_eq!((est["hypotheses"].as_u64(), est["network_evaluations"].as_u64()), (Some(8), Some(3)));
            assert!((0.0..=1.0).contains(&est["support"].as_f64().unwrap()));
        }
    }
    // The box is not overwritten without --force.
    let out = run_in(d, &["pose", "estimate", scan, "--category", "can", "-o", "box.ply"]);
    assert!(!out.status.success() && text(&out).1.contains("--force"), "{}", text(&out).1);
    // Category and model together make no sense; unknown categories are named; --dof is for templates.
    let out = run_in(d, &["pose", "estimate", scan, "--category", "can", "--object", "x.ply"]);
    assert!(!out.status.success() && text(&out).1.contains("cannot be used with"));
    let out = run_in(d, &["pose", "estimate", scan, "--category", "vase"]);
    assert!(!out.status.success() && text(&out).1.contains("unknown category 'vase'"));
    let out = run_in(d, &["pose", "estimate", scan, "--category", "can", "--dof", "9"]);
    assert!(!out.status.success() && text(&out).1.contains("--dof applies to an --object"));
    // A model file of another kind is refused naming the file.
    std::fs::write(d.join("other.safetensors"), b"not weights").unwrap();
    std::fs::write(d.join("other.json"), br#"{"format": "diffuse-restoration-model", "version": 1}"#).unwrap();
    let out = run_in(d, &["pose", "estimate", scan, "--category", "can", "--model", "other.safetensors"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("other.json") && stderr.contains("category-level"), "{stderr}");
    // A scan with too few points for the network.
    let few = "few.ply";
    std::fs::write(
        d.join(few),
        "ply\nformat ascii 1.0\nelement vertex 40\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
            .to_string()
            + &(0..40).map(|i| format!("{} 0 1\n", i as f64 * 0.01)).collect::<String>(),
    )
    .unwrap();
    let out = run_in(d, &["pose", "estimate", few, "--category", "can"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("few.ply") && stderr.contains("point"), "{stderr}");
}
