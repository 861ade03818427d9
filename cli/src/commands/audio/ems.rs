//! `diffuse audio ems`: DPM-Solver-v3's empirical model statistics of a speech model, for
//! `audio enhance --sampler dpm-solver-v3:stats=FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use diffuse_audio::ems::{EmsOptions, statistics};

use super::super::Context;
use super::load_model;

/// Arguments of `diffuse audio ems`.
#[derive(Debug, Args)]
pub struct EmsArgs {
    /// Folder of noisy inputs (validation files: never the files results are reported on).
    #[arg(long, value_name = "DIR")]
    pub noisy: PathBuf,
    /// Model (default: the built-in model).
    #[arg(long, value_name = "PATH|NAME")]
    pub model: Option<String>,
    /// Use at most this many files (the first in sorted order).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub limit: usize,
    /// Seconds cut from the middle of each file (every file must be at least this long).
    #[arg(long, default_value_t = 2.0, value_name = "S")]
    pub crop: f64,
    /// Intervals of the uniform λ grid the statistics live on.
    #[arg(long, default_value_t = 60)]
    pub intervals: usize,
    /// Rademacher probes per node for the Jacobian diagonal.
    #[arg(long, default_value_t = 2)]
    pub probes: usize,
    /// Output statistics file (safetensors).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

pub(super) fn ems(ctx: &Context, args: &EmsArgs) -> anyhow::Result<ExitCode> {
    diffuse_core::io::check_output(&args.output, args.force)?;
    diffuse_core::io::check_writable_folder(&args.output)?;
    anyhow::ensure!(args.crop > 0.0 && args.crop <= 60.0, "--crop: from 0 to 60 seconds, got {}", args.crop);
    anyhow::ensure!((2..=100_000).contains(&args.intervals), "--intervals: from 2 to 100000, got {}", args.intervals);
    anyhow::ensure!((1..=64).contains(&args.probes), "--probes: from 1 to 64, got {}", args.probes);
    let (model, model_name) = load_model(args.model.as_deref(), ctx.device()?)?;
    let rate = model.config().sample_rate;
    let mut noisy = Vec::new();
    for rel in diffuse_audio::eval::relative_wavs(&args.noisy)?.into_iter().take(args.limit) {
        let file = args.noisy.join(&rel);
        let audio = diffuse_audio::wav::read_wav(&file)?;
        let y = diffuse_audio::resample::resample(&audio.channels[0], audio.sample_rate, rate)
            .with_context(|| format!("resampling {}", file.display()))?;
        noisy.push(y);
    }
    let opts =
        EmsOptions { crop_seconds: args.crop, intervals: args.intervals, probes: args.probes, seed: ctx.global.seed };
    ctx.printer.info(format!("model {model_name}, {} files, crops of {} s", noisy.len(), args.crop));
    let bar = ctx.printer.progress(args.intervals as u64 + 1, "statistics");
    let stats = statistics(&model, &noisy, &opts, &mut |done, _| bar.set_position(done as u64))
        .with_context(|| format!("statistics of {model_name} on {}", args.noisy.display()))?
        .with_metadata("model", model_name.clone())
        .with_metadata("command", std::env::args().collect::<Vec<_>>().join(" "));
    bar.finish_and_clear();
    stats.write(&args.output, args.force)?;
    let lams = stats.lambdas();
    println!(
        "statistics of {model_name} on {} λ nodes ({:.3} to {:.3}), shape {:?} (pooled over frames): {}",
        lams.len(),
        lams[0],
        lams[lams.len() - 1],
        stats.shape(),
        args.output.display()
    );
    println!("use them as: diffuse audio enhance --sampler dpm-solver-v3:stats={}", args.output.display());
    Ok(ExitCode::SUCCESS)
}
