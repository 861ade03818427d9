//! `diffuse restore bench`: quality (PSNR, SSIM) against sampler steps for several samplers, with an SVG plot.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use diffuse_core::solvers::split_solver_list;
use diffuse_restoration::degrade::Task;
use diffuse_restoration::pipeline::{DEFAULT_TILING, bench, for_model_input, load_fixed_pairs, mean_scores};

use super::super::Context;
use super::apply::{load_model, load_schedules, sample_options};
use super::parse_task;

/// Arguments of `diffuse restore bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The model (`.safetensors` with its `.json` sidecar; default: the built-in model of --task).
    #[arg(long, value_name = "M.safetensors")]
    pub model: Option<PathBuf>,
    /// Folder of clean images, degraded with the fixed test variant of the task.
    #[arg(long, value_name = "DIR")]
    pub clean: PathBuf,
    /// The task (default: the model's); the model must have been trained for it.
    #[arg(long, value_parser = parse_task)]
    pub task: Option<Task>,
    /// Samplers to compare (core solvers), comma-separated.
    #[arg(long, default_value = "dpm++2m,ddim")]
    pub samplers: Vec<String>,
    /// Step counts (NFE for the single-evaluation solvers), comma-separated.
    #[arg(long, default_value = "1,2,5,10,20", value_delimiter = ',')]
    pub nfe: Vec<usize>,
    /// Also run the searched schedules of this file (`diffuse restore search`), the best per NFE, as rows
    /// `s3:SOLVER`.
    #[arg(long, value_name = "FILE")]
    pub schedule: Option<PathBuf>,
    /// Write an SVG plot of PSNR against NFE.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write the points as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Overwrite existing --plot/--json files.
    #[arg(long)]
    pub force: bool,
}

/// Runs `diffuse restore bench`.
pub fn run(ctx: &Context, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    use crate::plot::{Plot, Series};
    let p = &ctx.printer;
    for out in [&args.json, &args.plot].into_iter().flatten() {
        diffuse_core::io::check_output(out, args.force)?;
    }
    // Each spec keeps its own `key=value` parameters (`ddim-eta:eta=0.5`).
    let samplers: Vec<String> = args.samplers.iter().flat_map(|s| split_solver_list(s)).collect();
    anyhow::ensure!(!samplers.is_empty() && !args.nfe.is_empty(), "--samplers and --nfe must not be empty");
    let model = match args.task {
        Some(task) => load_model(args.model.as_deref(), task, ctx)?,
        None => match &args.model {
            Some(path) => diffuse_restoration::RestorationModel::load(path, ctx.device()?)?,
            None => anyhow::bail!("name a --model, or a --task to benchmark its built-in model"),
        },
    };
    let task: Task = model.config().task.parse()?;
    for s in &samplers {
        for &n in &args.nfe {
            sample_options(&model, Some(s), Some(n), ctx.global.seed)?;
        }
    }
    let schedules: Vec<diffuse_core::search::Schedule> = match &args.schedule {
        Some(file) => load_schedules(&model, file)?.best().into_iter().cloned().collect(),
        None => Vec::new(),
    };
    let (pairs, notes) = load_fixed_pairs(task, &args.clean, ctx.global.seed)?;
    for (file, why) in &notes {
        p.warn(format!("skipping {}: {why}", file.display()));
    }
    anyhow::ensure!(!pairs.is_empty(), "{}: no usable images", args.clean.display());
    let (in_psnr, in_ssim) = mean_scores(&pairs, None)?;
    let pairs = for_model_input(pairs, task, model.config().input)?;
    let runs = samplers.len() * args.nfe.len() + schedules.len();
    let bar = p.progress((runs * pairs.len()) as u64, "benchmark");
    let points =
        bench(&model, &pairs, &samplers, &args.nfe, &schedules, ctx.global.seed, DEFAULT_TILING, &mut || bar.inc(1))?;
    bar.finish_and_clear();
    let mut md = format!(
        "| sampler | NFE | PSNR (dB) | SSIM | s/image |\n|---|---|---|---|---|\n| degraded input | 0 | {in_psnr:.2} | {in_ssim:.4} | – |\n"
    );
    for pt in &points {
        md.push_str(&format!(
            "| {} | {} | {:.2} | {:.4} | {:.3} |\n",
            pt.sampler, pt.steps, pt.psnr, pt.ssim, pt.seconds_per_image
        ));
    }
    print!("{md}");
    let model_name = args.model.as_ref().map(|m| m.display().to_string()).unwrap_or_default();
    if let Some(path) = &args.json {
        let j = serde_json::json!({
            "model": model_name, "task": task, "images": pairs.len(),
            "degraded": {"psnr": in_psnr, "ssim": in_ssim}, "points": points,
        });
        diffuse_core::io::write_bytes_atomic(path, args.force, (serde_json::to_string_pretty(&j)? + "\n").as_bytes())?;
        p.info(format!("points written to {}", path.display()));
    }
    if let Some(path) = &args.plot {
        let mut names: Vec<String> = Vec::new();
        for name in samplers.iter().chain(points.iter().map(|pt| &pt.sampler)) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let mut series: Vec<Series> = names
            .iter()
            .map(|s| Series {
                name: s.clone(),
                points: points.iter().filter(|pt| &pt.sampler == s).map(|pt| (pt.steps as f64, pt.psnr)).collect(),
            })
            .collect();
        let max_nfe = args.nfe.iter().copied().max().unwrap_or(1) as f64;
        series
            .push(Series { name: "degraded input".into(), points: vec![(1.0, in_psnr), (max_nfe.max(2.0), in_psnr)] });
        let plot = Plot {
            title: format!("{} PSNR vs network evaluations ({model_name})", task.name()),
            x_label: "network evaluations (NFE)".into(),
            y_label: "PSNR (dB)".into(),
            x_log: true,
            y_log: false,
            series,
        };
        diffuse_core::io::write_bytes_atomic(path, args.force, plot.to_svg().as_bytes())?;
        p.info(format!("plot written to {}", path.display()));
    }
    Ok(ExitCode::SUCCESS)
}
