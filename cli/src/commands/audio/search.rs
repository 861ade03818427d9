//! `diffuse audio search`: solver schedules for a speech model, searched on (clean, noisy) pairs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use diffuse_audio::search::{Fit, SearchOptions};
use diffuse_core::solvers::SolverList;

use super::super::Context;
use super::super::solvers::{search_progress, search_scope, write_scored_schedules};
use super::load_model;

/// Arguments of `diffuse audio search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Folder of clean references (validation pairs: never the pairs results are reported on).
    #[arg(long, value_name = "DIR")]
    pub clean: PathBuf,
    /// Folder of noisy inputs (same relative paths).
    #[arg(long, value_name = "DIR")]
    pub noisy: PathBuf,
    /// Model (default: the built-in model).
    #[arg(long, value_name = "PATH|NAME")]
    pub model: Option<String>,
    /// Use at most this many pairs (the first in sorted order).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Seconds cut from the middle of each pair (the objective enhances these crops).
    #[arg(long, default_value_t = 2.0, value_name = "S")]
    pub crop: f64,
    /// NFE budgets: a list (4,5,6) or a range (4..10).
    #[arg(long, default_value = "5")]
    pub nfe: String,
    /// Base solvers tried at every budget.
    #[arg(long, default_value = "ddim,dpm++2m,unipc-bh2")]
    pub solvers: SolverList,
    /// Objective evaluations per schedule (deterministic: the same count gives the same schedules).
    #[arg(long, default_value_t = 60)]
    pub evals: usize,
    /// Optional cap on the whole search's time: seconds, or minutes with an `m` (10m).
    #[arg(long)]
    pub budget: Option<String>,
    /// What the crops are compared with: `clean` (SI-SDR against the references) or a teacher SAMPLER:STEPS
    /// (SI-SDR against that sampler's outputs, for example dpm++2m:30).
    #[arg(long, default_value = "clean", value_parser = parse_fit)]
    pub fit: Fit,
    /// Output schedule file (JSON), for `audio enhance --schedule` and `audio bench --schedule`.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

fn parse_fit(s: &str) -> Result<Fit, String> {
    s.parse().map_err(|e: diffuse_audio::Error| e.to_string())
}

pub(super) fn search(ctx: &Context, args: &SearchArgs) -> anyhow::Result<ExitCode> {
    diffuse_core::io::check_output(&args.output, args.force)?;
    diffuse_core::io::check_writable_folder(&args.output)?;
    anyhow::ensure!((1..=100_000).contains(&args.evals), "--evals: from 1 to 100000, got {}", args.evals);
    anyhow::ensure!(args.crop > 0.0 && args.crop <= 60.0, "--crop: from 0 to 60 seconds, got {}", args.crop);
    let device = ctx.device()?;
    let (model, model_name) = load_model(args.model.as_deref(), device)?;
    let rate = model.config().sample_rate;
    let pairs = diffuse_audio::eval::read_pairs(&args.clean, &args.noisy, rate, args.limit)?;
    let data: Vec<(Vec<f32>, Vec<f32>)> = pairs.into_iter().map(|(_, c, y)| (c, y)).collect();
    let opts = SearchOptions {
        scope: search_scope(&args.nfe, &args.solvers.0, args.evals, args.budget.as_deref())?,
        crop_seconds: args.crop,
        fit: args.fit.clone(),
        seed: ctx.global.seed,
    };
    ctx.printer.info(format!("model {model_name}, {} pairs, crops of {} s", data.len(), args.crop));
    let bar = ctx.printer.progress(opts.scope.runs() as u64, "searching");
    let file = diffuse_audio::search::search(&model, &data, &opts, search_progress(&bar))
        .with_context(|| format!("searching schedules on {}", args.noisy.display()))?;
    bar.finish_and_clear();
    write_scored_schedules(&file, "SI-SDR", &args.output, args.force)?;
    ctx.printer.info(format!(
        "wrote {} (score it on other pairs: audio bench --schedule; use it: audio enhance --schedule)",
        args.output.display()
    ));
    Ok(ExitCode::SUCCESS)
}
