//! `diffuse audio diagnose`: the Fokker–Planck residual and the Jacobian's asymmetry of a speech model's score
//! against diffusion time, and how far apart its samplers land on the same crops.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use diffuse_audio::diagnose::{DiagnoseOptions, DiagnoseReport, diagnose};

use super::super::Context;
use super::load_model;
use crate::plot::{Plot, Series};

/// Arguments of `diffuse audio diagnose`.
#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// Folder of clean references.
    #[arg(long, value_name = "DIR")]
    pub clean: PathBuf,
    /// Folder of noisy inputs with the same relative paths.
    #[arg(long, value_name = "DIR")]
    pub noisy: PathBuf,
    /// Model (default: the built-in model).
    #[arg(long, value_name = "PATH|NAME")]
    pub model: Option<String>,
    /// Use at most this many pairs (the first in sorted order).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub limit: usize,
    /// Seconds cut from the middle of each pair (rounded to whole network blocks of frames).
    #[arg(long, default_value_t = 2.0, value_name = "S")]
    pub crop: f64,
    /// Diffusion times, spread evenly over the path's range.
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub times: usize,
    /// Hutchinson probes per crop and time (their spread is the residual's noise floor).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub probes: usize,
    /// Samplers to compare, comma-separated, each with its default steps; the first is the reference of the
    /// agreement column (`auto` is the model's own).
    #[arg(long, default_value = "ode,pc,auto", value_name = "LIST")]
    pub samplers: String,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the residual and the asymmetry against t as an SVG plot.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Overwrite existing outputs.
    #[arg(long)]
    pub force: bool,
}

pub(super) fn run(ctx: &Context, args: &DiagnoseArgs) -> anyhow::Result<ExitCode> {
    for out in args.json.iter().chain(&args.plot) {
        diffuse_core::io::check_output(out, args.force)?;
        diffuse_core::io::check_writable_folder(out)?;
    }
    anyhow::ensure!(args.crop > 0.0 && args.crop <= 30.0, "--crop: from 0 to 30 seconds, got {}", args.crop);
    anyhow::ensure!((1..=100).contains(&args.times), "--times: from 1 to 100, got {}", args.times);
    anyhow::ensure!((2..=64).contains(&args.probes), "--probes: from 2 to 64, got {}", args.probes);
    anyhow::ensure!(args.limit >= 1, "--limit: at least 1");
    let samplers: Vec<String> = args.samplers.split(',').map(|s| s.trim().to_string()).collect();
    anyhow::ensure!(samplers.iter().all(|s| !s.is_empty()), "--samplers: an empty name in '{}'", args.samplers);

    let (model, model_name) = load_model(args.model.as_deref(), ctx.device()?)?;
    let rate = model.config().sample_rate;
    let pairs = diffuse_audio::eval::read_pairs(&args.clean, &args.noisy, rate, Some(args.limit))?;
    let data: Vec<(Vec<f32>, Vec<f32>)> = pairs.into_iter().map(|(_, c, y)| (c, y)).collect();
    anyhow::ensure!(!data.is_empty(), "{}: no WAV files", args.noisy.display());
    ctx.printer.info(format!("model {model_name}, {} pairs, crops of {} s", data.len(), args.crop));
    let opts = DiagnoseOptions {
        crop_seconds: args.crop,
        times: args.times,
        probes: args.probes,
        samplers,
        seed: ctx.global.seed,
    };
    let bar = ctx.printer.progress(0, "diagnose");
    let report = diagnose(&model, &data, &opts, &mut |stage, done, total| {
        bar.set_length(total as u64);
        bar.set_message(stage.to_string());
        bar.set_position(done as u64);
    })
    .with_context(|| format!("diagnosing {model_name} on {}", args.noisy.display()))?;
    bar.finish_and_clear();

    print!("{}", table(&report, &model_name));
    if let Some(path) = &args.json {
        let j = serde_json::json!({ "model": model_name, "report": report });
        diffuse_core::io::write_bytes_atomic(path, args.force, serde_json::to_string_pretty(&j)?.as_bytes())?;
        ctx.printer.info(format!("report written to {}", path.display()));
    }
    if let Some(path) = &args.plot {
        let line = |name: &str, f: &dyn Fn(&diffuse_audio::diagnose::TimeRow) -> f64| Series {
            name: name.into(),
            points: report.times.iter().map(|r| (r.t, f(r))).collect(),
        };
        let plot = Plot {
            title: format!("score diagnostics of {model_name}"),
            x_label: "diffusion time t".into(),
            y_label: "relative size".into(),
            x_log: false,
            y_log: true,
            series: vec![
                line("Fokker–Planck residual", &|r| r.fp_residual),
                line("its noise floor", &|r| r.fp_noise_floor),
                line("score Jacobian asymmetry", &|r| r.score_asymmetry),
                line("denoiser Jacobian asymmetry", &|r| r.denoiser_asymmetry),
            ],
        };
        diffuse_core::io::write_bytes_atomic(path, args.force, plot.to_svg().as_bytes())?;
        ctx.printer.info(format!("plot written to {}", path.display()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The report as two plain-text tables.
fn table(report: &DiagnoseReport, model_name: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{model_name}: {} crops of {:.2} s (noisy input {:.2} dB SI-SDR)",
        report.crops, report.crop_seconds, report.input_si_sdr_db
    );
    let _ = writeln!(
        s,
        "{:>6} {:>8} {:>12} {:>12} {:>12} {:>12}",
        "t", "sigma", "FP resid.", "noise floor", "asym. J", "asym. dx0/dx"
    );
    for r in &report.times {
        let _ = writeln!(
            s,
            "{:>6.3} {:>8.4} {:>12.3e} {:>12.3e} {:>12.3e} {:>12.3e}",
            r.t, r.sigma, r.fp_residual, r.fp_noise_floor, r.score_asymmetry, r.denoiser_asymmetry
        );
    }
    let _ = writeln!(s, "{:<34} {:>6} {:>14} {:>16}", "sampler", "NFE", "SI-SDR (dB)", "vs first (dB)");
    for r in &report.samplers {
        let agreement = r.agreement_db.map_or_else(|| "–".to_string(), |v| format!("{v:.2}"));
        let _ = writeln!(s, "{:<34} {:>6} {:>14.2} {:>16}", r.name, r.nfe, r.si_sdr_db, agreement);
    }
    s
}
