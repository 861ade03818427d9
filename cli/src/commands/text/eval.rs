//! `diffuse text eval`: bits per byte of text files under a model (the NELBO with its standard error for
//! diffusion models, the exact NLL for the autoregressive baseline).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use diffuse_discrete::text::corpus::read_text_file;
use diffuse_discrete::text::eval::score;

use super::super::Context;
use super::load_model;

/// Largest file scored (64 MiB).
const MAX_EVAL_BYTES: u64 = 64 << 20;

/// Arguments of `diffuse text eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Text files to score.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The model (default: the built-in masked model).
    #[arg(long, value_name = "M.safetensors")]
    pub model: Option<PathBuf>,
    /// t draws per context window (diffusion models; more draws, smaller standard error).
    #[arg(long, default_value_t = 16)]
    pub draws: usize,
    /// Rows per model call.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Print JSON (key `bits_per_byte`).
    #[arg(long)]
    pub json: bool,
}

/// Runs `diffuse text eval`.
pub fn run(ctx: &Context, a: &EvalArgs) -> anyhow::Result<ExitCode> {
    diffuse_core::limits::between_one_and("--batch", a.batch, 4096)?;
    let (model, name) = load_model(a.model.as_deref(), ctx.device()?)?;
    let mut rows = Vec::new();
    let (mut bits, mut bytes, mut var) = (0.0, 0usize, 0.0);
    let mut failed = Vec::new();
    for file in &a.files {
        let text = match read_text_file(file, MAX_EVAL_BYTES) {
            Ok(t) => t,
            Err(e) => {
                ctx.printer.warn(e.to_string());
                failed.push(file);
                continue;
            }
        };
        let bar = ctx.printer.progress(1, "scoring");
        let s = score(&model, &text, a.draws, a.batch, ctx.global.seed, &mut |k, n| {
            bar.set_length(n as u64);
            bar.set_position(k as u64);
        })?;
        bar.finish_and_clear();
        bits += s.bits_per_byte * s.bytes as f64;
        var += (s.std_error * s.bytes as f64).powi(2);
        bytes += s.bytes;
        if !a.json {
            let what = if s.exact { "NLL (exact)" } else { "NELBO" };
            println!(
                "{}: {what} {:.4} ± {:.4} bits/byte ({} bytes, {} draws per window)",
                file.display(),
                s.bits_per_byte,
                s.std_error,
                s.bytes,
                s.draws
            );
        }
        rows.push(serde_json::json!({"file": file.display().to_string(), "score": s}));
    }
    let overall = (bytes > 0).then(|| bits / bytes as f64);
    let se = (bytes > 0).then(|| var.sqrt() / bytes as f64);
    if a.json {
        let json = serde_json::json!({
            "model": name, "kind": model.config().kind, "files": rows, "bytes": bytes,
            "bits_per_byte": overall, "std_error": se,
            "failed": failed.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else if let (Some(b), Some(se), true) = (overall, se, a.files.len() > 1) {
        println!("all {bytes} bytes: {b:.4} ± {se:.4} bits/byte");
    }
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
