//! `diffuse restore denoise|deblur|lowlight`: restores images with a trained model (files or folders, tiled so
//! memory stays bounded, batches with --shard/--manifest/--resume/--list).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use diffuse_core::batch::{Progress, Status};
use diffuse_core::search::ScheduleFile;
use diffuse_restoration::RestorationModel;
use diffuse_restoration::degrade::{Curve, Kernel, Task};
use diffuse_restoration::image_io::Format;
use diffuse_restoration::known::{Known, check_known, read_kernel};
use diffuse_restoration::pipeline::{DEFAULT_TILING, restore_file};
use diffuse_restoration::planes::Tiling;
use diffuse_restoration::sample::SampleOptions;

use super::super::Context;
use super::super::manifest::{BatchArgs, BatchRun};
use super::{Job, plan, report_failures};

/// Arguments of `diffuse restore denoise|deblur|lowlight`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Degraded images (PNG or JPEG) or folders of them.
    #[arg(required_unless_present = "list", value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Output: a file for one input file (default `NAME_restored.EXT` beside it), otherwise a folder that receives
    /// the same relative paths (default `FOLDER_restored` beside each input folder).
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// The model: a `.safetensors` file with its `.json` sidecar beside it (`diffuse restore train` writes both;
    /// default: the built-in model of the task).
    #[arg(long, value_name = "M.safetensors")]
    pub model: Option<PathBuf>,
    /// Sampler: a core solver (`diffuse solvers list`), e.g. dpm++2m, ddim, unipc-bh2, rddm, resfusion (default:
    /// the model's).
    #[arg(long, value_name = "S")]
    pub sampler: Option<String>,
    /// Sampler steps (default: the model's).
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,
    /// Run a searched schedule from this file (`diffuse restore search`; the one of --nfe, or of the fewest NFE)
    /// instead of a sampler.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["sampler", "steps"])]
    pub schedule: Option<PathBuf>,
    /// With --schedule: the budget whose schedule to run.
    #[arg(long, value_name = "N", requires = "schedule")]
    pub nfe: Option<usize>,
    /// Images are restored in square tiles of this many pixels (memory of the network grows with it)…
    #[arg(long, default_value_t = DEFAULT_TILING.tile, value_name = "PIXELS")]
    pub tile: usize,
    /// …overlapping by this many pixels, blended smoothly.
    #[arg(long, default_value_t = DEFAULT_TILING.overlap, value_name = "PIXELS")]
    pub overlap: usize,
    /// Low light only: the exposure `e` of a known exposure curve `x ↦ e·x^γ` (with --gamma); the image is
    /// restored through that curve's inverse by the known-curve model instead of blindly.
    #[arg(long, value_name = "E", requires = "gamma")]
    pub exposure: Option<f64>,
    /// Low light only: the gamma `γ` of the known exposure curve (with --exposure).
    #[arg(long, value_name = "G", requires = "exposure")]
    pub gamma: Option<f64>,
    /// Deblur only: the blur is a known Gaussian of this standard deviation in pixels; the image is restored
    /// through its Wiener deconvolution by the known-kernel model instead of blindly.
    #[arg(long, value_name = "PIXELS", conflicts_with = "kernel")]
    pub blur_sigma: Option<f64>,
    /// Deblur only: the known blur kernel as an image (square, odd side, normalised to sum 1 on reading).
    #[arg(long, value_name = "K.png")]
    pub kernel: Option<PathBuf>,
    /// Overwrite existing outputs (inputs are never overwritten).
    #[arg(long)]
    pub force: bool,
    /// Sharding, manifest and resume of large batches (docs/scale-out.md).
    #[command(flatten)]
    pub batch: BatchArgs,
}

/// Loads `--model` (default: the built-in model of `task`) and checks that it was trained for `task`.
pub(super) fn load_model(model: Option<&Path>, task: Task, ctx: &Context) -> anyhow::Result<RestorationModel> {
    let Some(path) = model else {
        return Ok(diffuse_restoration::default_models::load(task, ctx.device()?)?);
    };
    let model = RestorationModel::load(path, ctx.device()?)?;
    let trained = &model.config().task;
    if trained != task.name() {
        bail!(
            "{}: the model was trained for '{trained}', not '{}'; use `diffuse restore {trained}` or a {} model",
            path.display(),
            task.name(),
            task.name()
        );
    }
    Ok(model)
}

/// The sampling options: the model's defaults with the command line's overrides, checked. A sampler or a step
/// count given on the command line replaces the model's own schedule, if it has one.
pub(super) fn sample_options(
    model: &RestorationModel,
    sampler: Option<&str>,
    steps: Option<usize>,
    seed: u64,
) -> anyhow::Result<SampleOptions> {
    let mut o = SampleOptions { seed, ..SampleOptions::defaults_of(model) };
    if let Some(s) = sampler {
        diffuse_core::solvers::build_solver(s, &Default::default()).context("--sampler")?;
        o.solver = s.to_string();
        o.schedule = None;
    }
    if let Some(n) = steps {
        diffuse_core::limits::at_most("--steps", n, diffuse_core::limits::MAX_NFE)?;
        anyhow::ensure!(n > 0, "--steps must be at least 1");
        o.steps = n;
        o.schedule = None;
    }
    Ok(o)
}

/// The schedules of `file` for `model`: refused when they were searched on another path.
pub(super) fn load_schedules(model: &RestorationModel, file: &Path) -> anyhow::Result<ScheduleFile> {
    let schedules = ScheduleFile::load(file)?;
    anyhow::ensure!(
        schedules.path == model.config().path,
        "{}: its schedules were searched on another path than the model's",
        file.display()
    );
    let path = model.path();
    for s in &schedules.schedules {
        s.validate(path.as_ref(), path.t_range().1).with_context(|| format!("{}", file.display()))?;
    }
    Ok(schedules)
}

/// `NAME_restored.EXT` beside `file`.
fn beside(file: &Path) -> PathBuf {
    let stem = file.file_stem().unwrap_or_default().to_string_lossy();
    let name = match file.extension() {
        Some(ext) => format!("{stem}_restored.{}", ext.to_string_lossy()),
        None => format!("{stem}_restored"),
    };
    file.with_file_name(name)
}

/// Every job, and the folder that holds the batch's default manifest.
fn plan_jobs(args: &ApplyArgs) -> anyhow::Result<(Vec<Job>, PathBuf)> {
    let listed = args.batch.listed()?;
    let mut jobs = Vec::new();
    let folder = match &args.output {
        Some(out)
            if args.inputs.len() == 1
                && args.inputs[0].is_file()
                && listed.is_empty()
                && !out.is_dir()
                && Format::from_path(out).is_some() =>
        {
            let relative = PathBuf::from(out.file_name().unwrap_or_default());
            jobs.push(Job { input: args.inputs[0].clone(), output: out.clone(), relative });
            out.parent().filter(|p| !p.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        }
        Some(out) => {
            if out.is_file() {
                bail!("{}: the output must be a folder for several inputs or a folder input", out.display());
            }
            jobs = plan(&args.inputs, out)?;
            for entry in &listed {
                jobs.push(Job {
                    input: entry.path.clone(),
                    output: out.join(&entry.relative),
                    relative: entry.relative.clone(),
                });
            }
            out.clone()
        }
        None => {
            anyhow::ensure!(listed.is_empty(), "--list needs an output folder (-o)");
            for input in &args.inputs {
                if input.is_dir() {
                    let name = input.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    let name = if name.is_empty() { "images".to_string() } else { name };
                    jobs.extend(plan(std::slice::from_ref(input), &input.with_file_name(format!("{name}_restored")))?);
                } else if input.exists() {
                    let relative = PathBuf::from(input.file_name().unwrap_or_default());
                    jobs.push(Job { input: input.clone(), output: beside(input), relative });
                } else {
                    bail!("{}: no such file or folder", input.display());
                }
            }
            jobs.first()
                .and_then(|j| j.output.parent().map(Path::to_path_buf))
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| PathBuf::from("."))
        }
    };
    if jobs.is_empty() {
        bail!("no images to restore: name files, folders or --list");
    }
    Ok((jobs, folder))
}

/// The degradation's parameters the command line gives (`--exposure/--gamma`, `--blur-sigma`, `--kernel`), for
/// a known-parameter model.
fn known_parameters(task: Task, args: &ApplyArgs) -> anyhow::Result<Option<Known>> {
    let curve = args.exposure.zip(args.gamma);
    let blur = args.blur_sigma.is_some() || args.kernel.is_some();
    anyhow::ensure!(
        curve.is_none() || task == Task::Lowlight,
        "--exposure and --gamma are for `diffuse restore lowlight`"
    );
    anyhow::ensure!(!blur || task == Task::Deblur, "--blur-sigma and --kernel are for `diffuse restore deblur`");
    if let Some((e, g)) = curve {
        return Ok(Some(Known::Curve(Curve::new(e, g)?)));
    }
    if let Some(s) = args.blur_sigma {
        anyhow::ensure!(s.is_finite() && (0.1..=20.0).contains(&s), "--blur-sigma {s} is outside [0.1, 20] pixels");
        return Ok(Some(Known::Blur(Kernel::gaussian(s))));
    }
    Ok(args.kernel.as_deref().map(read_kernel).transpose()?.map(Known::Blur))
}

/// Runs `diffuse restore denoise|deblur|lowlight`.
pub fn run(ctx: &Context, task: Task, args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let p = &ctx.printer;
    let tiling = Tiling { tile: args.tile, overlap: args.overlap };
    anyhow::ensure!(
        args.tile >= 8 && args.overlap < args.tile,
        "--tile must be at least 8 pixels and --overlap less than --tile"
    );
    diffuse_core::limits::at_most("--tile", args.tile, 4096)?;
    let known = known_parameters(task, args)?;
    let model = match (&args.model, &known) {
        (None, Some(_)) => diffuse_restoration::default_models::load_known(task, ctx.device()?)?,
        _ => load_model(args.model.as_deref(), task, ctx)?,
    };
    check_known(model.config().input, known.as_ref()).with_context(|| match &args.model {
        Some(m) => m.display().to_string(),
        None => "the built-in model".into(),
    })?;
    let mut opts = sample_options(&model, args.sampler.as_deref(), args.steps, ctx.global.seed)?;
    if let Some(file) = &args.schedule {
        opts.schedule = Some(load_schedules(&model, file)?.pick(args.nfe)?.clone());
    }
    let (jobs, folder) = plan_jobs(args)?;
    for job in &jobs {
        diffuse_core::io::protect_input(&job.input);
    }
    let mut run = BatchRun::open(ctx, &args.batch, &folder, args.force)?;
    let total = jobs.len();
    let jobs = run.select(jobs);
    if run.shard().count > 1 {
        p.info(format!("shard {}: {} of {total} image{}", run.shard(), jobs.len(), if total == 1 { "" } else { "s" }));
    }
    let sampler = match &opts.schedule {
        Some(s) => format!("a searched {}-NFE schedule of {}", s.nfe, s.solver),
        None => format!("{} ({} step{})", opts.solver, opts.steps, if opts.steps == 1 { "" } else { "s" }),
    };
    p.verbose(format!("sampler: {sampler}, tiles of {} (overlap {})", tiling.tile, tiling.overlap));
    let inputs: HashSet<PathBuf> = jobs.iter().filter_map(|j| j.input.canonicalize().ok()).collect();
    let bar = p.progress(jobs.len() as u64, task.name());
    let start = Instant::now();
    let mut failures: Vec<(PathBuf, String)> = Vec::new();
    let (mut done, mut megapixels, mut skipped, mut resumed) = (0usize, 0.0f64, 0usize, 0usize);
    for (index, job) in jobs.iter().enumerate() {
        bar.set_message(job.relative.display().to_string());
        bar.inc(1);
        if let Progress::Complete = run.is_done(&job.input, &job.output) {
            resumed += 1;
            continue;
        }
        if job.output.canonicalize().is_ok_and(|o| inputs.contains(&o)) {
            let why = format!("the output {} is an input; refusing to overwrite it", job.output.display());
            run.record(&job.input, &job.output, Status::Failed, Some(why.clone()), 0.0)?;
            failures.push((job.input.clone(), why));
            continue;
        }
        if job.output.exists() && !args.force {
            skipped += 1;
            bar.suspend(|| {
                p.info(format!(
                    "skipping {}: {} exists (use --force to overwrite)",
                    job.input.display(),
                    job.output.display()
                ))
            });
            let why = format!("{} exists and was not recorded as done (use --force to redo it)", job.output.display());
            run.record(&job.input, &job.output, Status::Skipped, Some(why), 0.0)?;
            continue;
        }
        let item_start = Instant::now();
        let result = (|| -> anyhow::Result<f64> {
            if let Some(dir) = job.output.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the folder", dir.display()))?;
            }
            let o = SampleOptions { first_index: (index as u64) << 20, ..opts.clone() };
            Ok(restore_file(&model, &job.input, &job.output, &o, tiling, args.force, known.as_ref())?.megapixels)
        })();
        let seconds = item_start.elapsed().as_secs_f64();
        match result {
            Ok(mp) => {
                run.record(&job.input, &job.output, Status::Ok, None, seconds)?;
                done += 1;
                megapixels += mp;
                p.verbose(format!("{} -> {} ({seconds:.2} s)", job.input.display(), job.output.display()));
            }
            Err(e) => {
                let why = format!("{e:#}");
                run.record(&job.input, &job.output, Status::Failed, Some(why.clone()), seconds)?;
                failures.push((job.input.clone(), why));
            }
        }
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "restored {done} image{} ({megapixels:.2} MP) in {elapsed:.1} s with {sampler}: {:.2} s per megapixel",
        if done == 1 { "" } else { "s" },
        if megapixels > 0.0 { elapsed / megapixels } else { 0.0 }
    );
    if skipped > 0 {
        p.info(format!("skipped {skipped} existing output{}", if skipped == 1 { "" } else { "s" }));
    }
    if resumed > 0 {
        p.info(format!("resumed: {resumed} image{} already done", if resumed == 1 { "" } else { "s" }));
    }
    report_failures(&failures, "image")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_output_is_beside_the_input() {
        assert_eq!(beside(Path::new("a/photo.jpg")), PathBuf::from("a/photo_restored.jpg"));
        assert_eq!(beside(Path::new("x.png")), PathBuf::from("x_restored.png"));
    }
}
