//! End-to-end tests of the text-model commands: `diffuse text train` trains a tiny masked model and the
//! autoregressive baseline in seconds, `text sample` fills a template and writes -o (never clobbering without
//! --force), `text eval --json` reports bits per byte, and bad input (empty or binary corpora, a template longer
//! than the context, --length 0, a model of another kind) gets a clear error naming the file or flag.

use std::path::Path;

use diffuse_tests::{run_in, text};

fn corpus(dir: &Path) {
    std::fs::create_dir_all(dir.join("corpus")).unwrap();
    let line = "the quick brown fox jumps over the lazy dog. a stitch in time saves nine.\n";
    std::fs::write(dir.join("corpus/a.txt"), line.repeat(300)).unwrap();
    std::fs::write(dir.join("corpus/b.bin"), b"\x00\x01\x02binary").unwrap();
    std::fs::write(dir.join("held_out.txt"), line.repeat(4)).unwrap();
}

fn train(dir: &Path, out: &str, objective: &str) -> std::process::Output {
    let args = [
        "text",
        "train",
        "--corpus",
        "corpus",
        "--out",
        out,
        "--objective",
        objective,
        "--width",
        "32",
        "--depth",
        "1",
        "--heads",
        "2",
        "--context",
        "32",
        "--steps",
        "80",
        "--batch",
        "16",
        "--lr",
        "3e-3",
        "--warmup",
        "10",
        "--validate-every",
        "40",
        "-q",
    ];
    run_in(dir, &args)
}

fn bits(dir: &Path, model: &str) -> f64 {
    let out = run_in(dir, &["text", "eval", "held_out.txt", "--model", model, "--draws", "8", "--json", "-q"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let v: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    v["bits_per_byte"].as_f64().unwrap()
}

#[test]
fn train_sample_and_score_a_tiny_masked_model_and_its_ar_baseline() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    corpus(root);
    for (out, objective) in [("masked", "mdlm"), ("ar", "ar")] {
        let o = train(root, out, objective);
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("trained to step 80") && stdout.contains("validation"), "{stdout}");
        assert!(stderr.contains("b.bin") && stderr.contains("binary"), "the binary file is named: {stderr}");
        let sidecar: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join(out).join("model.json")).unwrap()).unwrap();
        assert!(sidecar["training"]["command"].as_str().unwrap().contains("text train"));
        assert_eq!(sidecar["training"]["corpus"]["files"], 1);
    }
    // Both learned the repetitive corpus: far below the 8 bits of a uniform byte.
    let (masked, ar) = (bits(root, "masked/model.safetensors"), bits(root, "ar/model.safetensors"));
    assert!(masked < 5.0 && ar < 5.0, "masked {masked:.3}, ar {ar:.3} bits/byte");

    // Infilling: the fixed bytes of the template are kept, the blanks filled; JSON to -o, no clobbering.
    let sample = [
        "text",
        "sample",
        "--model",
        "masked/model.safetensors",
        "--template",
        "the [MASK:5] brown",
        "--num",
        "2",
        "--steps",
        "8",
        "--json",
        "-o",
        "s.json",
        "-q",
    ];
    let o = run_in(root, &sample);
    assert!(o.status.success(), "{}", text(&o).1);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("s.json")).unwrap()).unwrap();
    let samples = v["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    for s in samples {
        let s = s.as_str().unwrap();
        assert!(s.starts_with("the ") && s.ends_with(" brown"), "{s:?}");
    }
    let o = run_in(root, &sample);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("exists"), "{}", text(&o).1);
    // Confident-first unmasking keeps the fixed bytes too; an unknown order is a clear error.
    let o = run_in(root, &[&sample[..], &["--unmask", "confident:0.5", "--force"]].concat());
    assert!(o.status.success(), "{}", text(&o).1);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("s.json")).unwrap()).unwrap();
    assert_eq!(v["unmask"], "confident:0.5");
    for s in v["samples"].as_array().unwrap() {
        let s = s.as_str().unwrap();
        assert!(s.starts_with("the ") && s.ends_with(" brown"), "{s:?}");
    }
    let o = run_in(root, &[&sample[..], &["--unmask", "sure", "--force"]].concat());
    assert!(!o.status.success() && text(&o).1.contains("--unmask"), "{}", text(&o).1);

    // CDLM fine-tuning of the masked model; an AR model cannot start it.
    let cdlm = ["text", "train", "--corpus", "corpus", "--out", "cdlm", "--objective", "cdlm", "--steps", "20", "-q"];
    let o = run_in(root, &[&cdlm[..], &["--init", "masked/model.safetensors", "--batch", "8"]].concat());
    assert!(o.status.success(), "{}", text(&o).1);
    let o = run_in(root, &[&cdlm[..], &["--init", "ar/model.safetensors", "--force"]].concat());
    assert!(text(&o).1.contains("cannot start"), "{}", text(&o).1);

    // Quality vs steps under the AR judge: a table, JSON and an SVG plot.
    let bench = [
        "text",
        "bench",
        "--model",
        "masked/model.safetensors",
        "--judge",
        "ar/model.safetensors",
        "--steps",
        "4,16",
        "--num",
        "4",
        "--length",
        "32",
        "--reference",
        "held_out.txt",
        "--json",
        "b.json",
        "--plot",
        "b.svg",
        "-q",
    ];
    let o = run_in(root, &bench);
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(text(&o).0.contains("| real text |"), "{}", text(&o).0);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("b.json")).unwrap()).unwrap();
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    for p in points {
        let (bits, h) = (p["judge_bits_per_byte"].as_f64().unwrap(), p["unigram_entropy"].as_f64().unwrap());
        assert!(bits.is_finite() && bits > 0.0 && (0.0..=8.0).contains(&h), "{p}");
    }
    assert!(std::fs::read_to_string(root.join("b.svg")).unwrap().starts_with("<svg"));

    // The AR model cannot be sampled by diffusion: a clear error.
    let o = run_in(root, &["text", "sample", "--model", "ar/model.safetensors", "--length", "4"]);
    assert!(text(&o).1.contains("autoregressive"), "{}", text(&o).1);
}

#[test]
fn bad_text_input_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("empty/x.bin"), b"\x00\x00").unwrap();
    let o = run_in(root, &["text", "train", "--corpus", "empty", "--out", "m", "--steps", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("no usable text in empty"), "{}", text(&o).1);
    let o = run_in(root, &["text", "sample", "--length", "0"]);
    assert!(text(&o).1.contains("--length must be at least 1"), "{}", text(&o).1);
    let o = run_in(root, &["text", "sample", "--template", "a[MASK:100000]"]);
    assert!(text(&o).1.contains("longer than"), "{}", text(&o).1);
    let o = run_in(root, &["text", "sample", "--template", "[MASK:x]"]);
    assert!(text(&o).1.contains("whole number"), "{}", text(&o).1);
    // A restoration model's sidecar is not a text model.
    std::fs::write(root.join("r.safetensors"), b"x").unwrap();
    std::fs::write(root.join("r.json"), br#"{"task": "denoise"}"#).unwrap();
    let o = run_in(root, &["text", "eval", "r.json", "--model", "r.safetensors"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("r.json") && text(&o).1.contains("not a text model"), "{}", text(&o).1);
    let o = run_in(root, &["text", "eval", "missing.txt"]);
    assert!(text(&o).1.contains("missing.txt"), "{}", text(&o).1);
}
