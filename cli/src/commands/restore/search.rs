//! `diffuse restore search`: solver schedules for a restoration model, searched on validation images.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use diffuse_core::solvers::SolverList;
use diffuse_restoration::degrade::Task;
use diffuse_restoration::pipeline::load_fixed_pairs;
use diffuse_restoration::search::SearchOptions;

use super::super::Context;
use super::super::solvers::{search_progress, search_scope, write_scored_schedules};
use super::apply::load_model;
use super::parse_task;

/// Arguments of `diffuse restore search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The model (`.safetensors` with its `.json` sidecar; default: the built-in model of --task).
    #[arg(long, value_name = "M.safetensors")]
    pub model: Option<PathBuf>,
    /// The task (default: the model's).
    #[arg(long, value_parser = parse_task)]
    pub task: Option<Task>,
    /// Folder of clean validation images (never the images results are reported on), degraded with the task's
    /// fixed test variant.
    #[arg(long, value_name = "DIR")]
    pub clean: PathBuf,
    /// Side of the centre crop of each image that the objective restores (pixels).
    #[arg(long, default_value_t = 128, value_name = "PIXELS")]
    pub crop: usize,
    /// NFE budgets: a list (2,3,5) or a range (2..5).
    #[arg(long, default_value = "2..5")]
    pub nfe: String,
    /// Base solvers tried at every budget.
    #[arg(long, default_value = "dpm++2m,ddim,unipc-bh2")]
    pub solvers: SolverList,
    /// Objective evaluations per schedule (deterministic: the same count gives the same schedules).
    #[arg(long, default_value_t = 100)]
    pub evals: usize,
    /// Optional cap on the whole search's time: seconds, or minutes with an `m` (10m).
    #[arg(long)]
    pub budget: Option<String>,
    /// Output schedule file (JSON), for `restore … --schedule` and `restore bench --schedule`.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

/// Runs `diffuse restore search`.
pub fn run(ctx: &Context, args: &SearchArgs) -> anyhow::Result<ExitCode> {
    diffuse_core::io::check_output(&args.output, args.force)?;
    diffuse_core::io::check_writable_folder(&args.output)?;
    anyhow::ensure!((1..=100_000).contains(&args.evals), "--evals: from 1 to 100000, got {}", args.evals);
    anyhow::ensure!((8..=4096).contains(&args.crop), "--crop: from 8 to 4096 pixels, got {}", args.crop);
    let model = match args.task {
        Some(task) => load_model(args.model.as_deref(), task, ctx)?,
        None => match &args.model {
            Some(path) => diffuse_restoration::RestorationModel::load(path, ctx.device()?)?,
            None => anyhow::bail!("name a --model, or a --task to search for its built-in model"),
        },
    };
    let task: Task = model.config().task.parse()?;
    let (pairs, notes) = load_fixed_pairs(task, &args.clean, ctx.global.seed)?;
    for (file, why) in &notes {
        ctx.printer.warn(format!("skipping {}: {why}", file.display()));
    }
    anyhow::ensure!(!pairs.is_empty(), "{}: no usable images", args.clean.display());
    let pairs = diffuse_restoration::pipeline::for_model_input(pairs, task, model.config().input)?;
    let opts = SearchOptions {
        scope: search_scope(&args.nfe, &args.solvers.0, args.evals, args.budget.as_deref())?,
        crop: args.crop,
        seed: ctx.global.seed,
    };
    ctx.printer.info(format!("{} model, {} images, centre crops of {} px", task.name(), pairs.len(), args.crop));
    let bar = ctx.printer.progress(opts.scope.runs() as u64, "searching");
    let file = diffuse_restoration::search::search(&model, &pairs, &opts, search_progress(&bar))
        .with_context(|| format!("searching schedules on {}", args.clean.display()))?;
    bar.finish_and_clear();
    write_scored_schedules(&file, "PSNR", &args.output, args.force)?;
    ctx.printer.info(format!(
        "wrote {} (score it on other images: restore bench --schedule; use it: restore {} --schedule)",
        args.output.display(),
        task.name()
    ));
    Ok(ExitCode::SUCCESS)
}
