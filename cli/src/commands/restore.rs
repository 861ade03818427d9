//! `diffuse restore …`: image restoration. `degrade` makes degraded test pairs from clean images with the
//! crate's seeded degradations; `eval` scores restored images against clean ones (PSNR, SSIM); `denoise`,
//! `deblur` and `lowlight` restore images with a trained model (`restore/apply.rs`), `train` trains one
//! (`restore/train.rs`), `bench` measures quality against sampler steps (`restore/bench.rs`) and `search` finds
//! solver schedules for few steps (`restore/search.rs`).

mod apply;
mod bench;
mod search;
mod train;

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use clap::{Args, Subcommand};
use diffuse_restoration::degrade::{Degradation, Task, rng_for};
use diffuse_restoration::eval::{EvalReport, evaluate};
use diffuse_restoration::{read_image, write_image};

use super::Context;
use super::manifest::{BatchArgs, BatchRun};
use diffuse_core::batch::{Progress, Status};

/// Subcommands of `diffuse restore`.
#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Make degraded copies of clean images (test pairs): a folder in gives the same file names out.
    Degrade(DegradeArgs),
    /// Score restored images against clean ones: PSNR and SSIM per file and the mean.
    Eval(EvalArgs),
    /// Remove noise with a trained model (files or folders; a folder gives the same file names out).
    Denoise(apply::ApplyArgs),
    /// Remove blur with a trained model.
    Deblur(apply::ApplyArgs),
    /// Brighten low-light images with a trained model.
    Lowlight(apply::ApplyArgs),
    /// Train a restoration model on clean images degraded on the fly.
    Train(train::TrainArgs),
    /// Quality (PSNR, SSIM) against sampler steps for several samplers, with an SVG plot.
    Bench(bench::BenchArgs),
    /// Search solver schedules (time grid, per-step orders) for a model on validation images, for `--schedule`.
    Search(search::SearchArgs),
}

/// Arguments of `diffuse restore degrade`.
#[derive(Debug, Args)]
pub struct DegradeArgs {
    /// Degradation: denoise (noise), deblur (blur + noise) or lowlight (exposure, gamma, sensor noise).
    #[arg(long, value_parser = parse_task)]
    pub task: Task,
    /// Clean images (PNG or JPEG) or folders of them.
    #[arg(required_unless_present = "list", value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Output folder; each image keeps its name (and its path relative to an input folder).
    #[arg(short, long, value_name = "OUTDIR")]
    pub output: PathBuf,
    /// Use the fixed test variant: denoise AWGN σ = 25/255, deblur Gaussian σ = 2 px + noise 2/255, lowlight
    /// exposure 0.1, γ 1.8, 400 photons, read noise 1/255. Without it every image gets its own random draw.
    #[arg(long)]
    pub fixed: bool,
    /// Level of the fixed variant (implies --fixed): noise σ in 8-bit units (denoise) or blur σ in pixels (deblur).
    #[arg(long, value_name = "X")]
    pub sigma: Option<f64>,
    /// Random denoise draws are Poisson–Gaussian half of the time.
    #[arg(long)]
    pub poisson: bool,
    /// Also write every image's drawn parameters (and blur kernel) to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Overwrite existing outputs.
    #[arg(long)]
    pub force: bool,
    /// Sharding, manifest and resume of large batches (docs/scale-out.md).
    #[command(flatten)]
    pub batch: BatchArgs,
}

/// Arguments of `diffuse restore eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Folder of clean reference images.
    #[arg(long, value_name = "DIR")]
    pub clean: PathBuf,
    /// Folder of restored images, matched to the clean ones by relative path.
    #[arg(long, value_name = "DIR")]
    pub restored: PathBuf,
    /// Print the scores as JSON (PSNR of identical images is null).
    #[arg(long)]
    pub json: bool,
}

fn parse_task(s: &str) -> Result<Task, String> {
    s.parse().map_err(|e: diffuse_restoration::Error| e.to_string())
}

/// Runs `diffuse restore …`.
pub fn run(ctx: &Context, cmd: &RestoreCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RestoreCommand::Degrade(args) => degrade(ctx, args),
        RestoreCommand::Eval(args) => eval(ctx, args),
        RestoreCommand::Denoise(args) => apply::run(ctx, Task::Denoise, args),
        RestoreCommand::Deblur(args) => apply::run(ctx, Task::Deblur, args),
        RestoreCommand::Lowlight(args) => apply::run(ctx, Task::Lowlight, args),
        RestoreCommand::Train(args) => train::run(ctx, args),
        RestoreCommand::Bench(args) => bench::run(ctx, args),
        RestoreCommand::Search(args) => search::run(ctx, args),
    }
}

/// One image to degrade: where it comes from, where it goes, and its name for seeding and reports.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Job {
    input: PathBuf,
    output: PathBuf,
    relative: PathBuf,
}

/// Every input file with its output under `out_dir`; folders are walked (regular, non-hidden files; whether a
/// file is an image is decided by its content, so a stray non-image is reported rather than silently skipped).
fn plan(inputs: &[PathBuf], out_dir: &Path) -> anyhow::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    let mut seen: HashMap<PathBuf, PathBuf> = HashMap::new();
    for input in inputs {
        if !input.exists() {
            bail!("{}: no such file or folder", input.display());
        }
        let files: Vec<(PathBuf, PathBuf)> = if input.is_dir() {
            // Hidden files and a sharded batch's manifests (manifest-I-of-N.jsonl) are not images.
            let visible = |p: &Path| {
                !p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with('.') || (n.starts_with("manifest-") && n.ends_with(".jsonl"))
                })
            };
            diffuse_core::io::walk_files(input, &visible)?
                .into_iter()
                .map(|f| (f.strip_prefix(input).map(Path::to_path_buf).unwrap_or_else(|_| f.clone()), f))
                .collect()
        } else {
            vec![(PathBuf::from(input.file_name().unwrap_or_default()), input.clone())]
        };
        for (relative, file) in files {
            let output = out_dir.join(&relative);
            if let Some(other) = seen.insert(output.clone(), file.clone()) {
                bail!("{} and {} would both be written to {}", other.display(), file.display(), output.display());
            }
            jobs.push(Job { input: file, output, relative });
        }
    }
    if jobs.is_empty() && !inputs.is_empty() {
        bail!("no files found in {}", inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    Ok(jobs)
}

fn degrade(ctx: &Context, args: &DegradeArgs) -> anyhow::Result<ExitCode> {
    let p = &ctx.printer;
    let fixed = (args.fixed || args.sigma.is_some()).then(|| Degradation::fixed(args.task, args.sigma)).transpose()?;
    if args.output.is_file() {
        bail!("{}: the output must be a folder, not a file", args.output.display());
    }
    let mut jobs = plan(&args.inputs, &args.output)?;
    for entry in args.batch.listed()? {
        let output = args.output.join(&entry.relative);
        jobs.push(Job { input: entry.path, output, relative: entry.relative });
    }
    if jobs.is_empty() {
        bail!("no images to degrade: name files, folders or --list");
    }
    for job in &jobs {
        diffuse_core::io::protect_input(&job.input);
    }
    let mut run = BatchRun::open(ctx, &args.batch, &args.output, args.force)?;
    let total = jobs.len();
    let jobs = run.select(jobs);
    if run.shard().count > 1 {
        p.info(format!("shard {}: {} of {total} image{}", run.shard(), jobs.len(), if total == 1 { "" } else { "s" }));
    }
    diffuse_core::io::check_writable_folder(&args.output.join("x"))?;
    if let Some(record) = &args.record {
        diffuse_core::io::check_output(record, args.force)?;
    }
    let bar = p.progress(jobs.len() as u64, args.task.name());
    let start = Instant::now();
    let mut failures: Vec<(PathBuf, String)> = Vec::new();
    let mut record = BTreeMap::new();
    let mut resumed = 0usize;
    for job in &jobs {
        bar.inc(1);
        if let Progress::Complete = run.is_done(&job.input, &job.output) {
            resumed += 1;
            continue;
        }
        let item_start = Instant::now();
        let result = (|| -> anyhow::Result<Degradation> {
            diffuse_core::io::check_output(&job.output, args.force)?;
            let image = read_image(&job.input)?;
            let mut rng = rng_for(ctx.global.seed, &job.relative.to_string_lossy());
            let d = fixed.clone().unwrap_or_else(|| Degradation::draw(args.task, args.poisson, &mut rng));
            let degraded = image.with_planes(d.apply(&image.planes, &mut rng))?;
            write_image(&degraded, &job.output, args.force)?;
            Ok(d)
        })();
        let seconds = item_start.elapsed().as_secs_f64();
        match &result {
            Ok(_) => run.record(&job.input, &job.output, Status::Ok, None, seconds)?,
            Err(e) => run.record(&job.input, &job.output, Status::Failed, Some(format!("{e:#}")), seconds)?,
        }
        match result {
            Ok(d) => {
                p.verbose(format!(
                    "{} -> {}: {}",
                    job.input.display(),
                    job.output.display(),
                    serde_json::to_string(&d)?
                ));
                record.insert(job.relative.to_string_lossy().into_owned(), d);
            }
            Err(e) => failures.push((job.input.clone(), format!("{e:#}"))),
        }
    }
    bar.finish_and_clear();
    if resumed > 0 {
        p.info(format!("resumed: {resumed} image{} already done", if resumed == 1 { "" } else { "s" }));
    }
    let done = record.len();
    println!(
        "degraded {done} image{} ({}) into {} in {:.1} s",
        if done == 1 { "" } else { "s" },
        if fixed.is_some() { "fixed test variant" } else { "random draws" },
        args.output.display(),
        start.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.record {
        let json = serde_json::json!({
            "task": args.task, "seed": ctx.global.seed, "fixed": fixed.is_some(), "images": record,
        });
        let text = serde_json::to_string_pretty(&json)? + "\n";
        match diffuse_core::io::write_bytes_atomic(path, args.force, text.as_bytes()) {
            Ok(()) => p.info(format!("parameters written to {}", path.display())),
            Err(e) => failures.push((path.clone(), e.to_string())),
        }
    }
    report_failures(&failures, "image")
}

/// Lists failures on stderr (each naming its file once) and gives the exit code: 0 without failures, else 1.
fn report_failures(failures: &[(PathBuf, String)], what: &str) -> anyhow::Result<ExitCode> {
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{} {what}{} failed:", failures.len(), if failures.len() == 1 { "" } else { "s" });
    for (input, why) in failures {
        let shown = input.display().to_string();
        if why.contains(&shown) { eprintln!("  {why}") } else { eprintln!("  {shown}: {why}") }
    }
    Ok(ExitCode::from(1))
}

fn eval(ctx: &Context, args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let report = evaluate(&args.clean, &args.restored)?;
    // Written with `?` so that `… | head` ends quietly (main treats a broken pipe as success).
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&eval_json(&report))?)?;
    } else {
        if ctx.global.verbose > 0 || report.rows.len() <= 50 {
            writeln!(out, "{:<40} {:>8} {:>7}", "file", "PSNR", "SSIM")?;
            for r in &report.rows {
                writeln!(out, "{:<40} {:>8.2} {:>7.4}", r.file.display().to_string(), r.psnr, r.ssim)?;
            }
        }
        if let Some((psnr, ssim)) = report.means() {
            writeln!(out, "mean of {} files: PSNR {psnr:.2} dB, SSIM {ssim:.4}", report.rows.len())?;
        }
    }
    drop(out);
    for u in &report.unmatched {
        ctx.printer.warn(format!("{}: no clean image to compare with", args.restored.join(u).display()));
    }
    let failures: Vec<(PathBuf, String)> =
        report.failures.iter().map(|(f, why)| (args.clean.join(f), why.clone())).collect();
    report_failures(&failures, "file")
}

fn eval_json(report: &EvalReport) -> serde_json::Value {
    let mean = report.means().map(|(psnr, ssim)| serde_json::json!({"psnr": psnr, "ssim": ssim}));
    serde_json::json!({
        "files": report.rows,
        "count": report.rows.len(),
        "mean": mean,
        "failures": report.failures.iter().map(|(f, why)| serde_json::json!({"file": f, "reason": why})).collect::<Vec<_>>(),
        "unmatched": report.unmatched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn degrade_flags_parse_and_the_seed_is_global() {
        let cli = Cli::try_parse_from([
            "diffuse", "restore", "degrade", "--task", "deblur", "a.png", "dir", "-o", "out", "--sigma", "1.5",
            "--seed", "4",
        ])
        .unwrap();
        assert_eq!(cli.global.seed, 4);
        let Command::Restore(RestoreCommand::Degrade(a)) = cli.command else { panic!() };
        assert_eq!((a.task, a.sigma, a.inputs.len()), (Task::Deblur, Some(1.5), 2));
        let err = Cli::try_parse_from(["diffuse", "restore", "degrade", "--task", "blur", "a.png", "-o", "o"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("denoise, deblur, lowlight"), "{err}");
        assert!(Cli::try_parse_from(["diffuse", "restore", "degrade", "--task", "denoise", "a.png"]).is_err());
    }

    #[test]
    fn folders_keep_relative_names_and_collisions_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("in");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        for f in ["a.png", "sub/b.png", ".hidden"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        let out = t.path().join("out");
        let jobs = plan(std::slice::from_ref(&d), &out).unwrap();
        let outs: Vec<_> = jobs.iter().map(|j| j.output.clone()).collect();
        assert_eq!(outs, [out.join("a.png"), out.join("sub/b.png")]);
        let err = plan(&[d.join("a.png"), d.join("a.png")], &out).unwrap_err().to_string();
        assert!(err.contains("would both be written"), "{err}");
        assert!(plan(&[t.path().join("missing")], &out).is_err());
    }
}
