//! `diffuse audio …`: speech enhancement with SGMSE-family score models (argument handling, file planning,
//! progress and the summary; the work is in diffuse-audio).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use diffuse_audio::pipeline::StageTimes;
use diffuse_audio::sampling::build_sampler;
use diffuse_audio::{Chunking, Enhancer, ScoreModel, SpectrogramSampler};
use diffuse_core::batch::{ListEntry, Progress, Status};

use super::Context;
use super::manifest::{BatchArgs, BatchRun};

/// Audio subcommands.
#[derive(Debug, Subcommand)]
pub enum AudioCommand {
    /// Enhance noisy speech with a score-based model (SGMSE+): one file, several files or folders.
    Enhance(EnhanceArgs),
    /// Train a native score network on clean speech and noise mixed on the fly.
    Train(Box<TrainArgs>),
    /// Score enhanced files against clean references (SI-SDR, ESTOI), matched by relative path.
    Eval(EvalArgs),
    /// Quality vs NFE and real-time factor of samplers on (clean, noisy) pairs.
    Bench(BenchArgs),
}

/// Arguments of `diffuse audio eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Folder of clean references.
    #[arg(long, value_name = "DIR")]
    pub clean: PathBuf,
    /// Folder of enhanced files (same relative paths as the clean ones).
    #[arg(long, value_name = "DIR")]
    pub enhanced: PathBuf,
    /// Folder of the noisy inputs: adds their scores and the improvement.
    #[arg(long, value_name = "DIR")]
    pub noisy: Option<PathBuf>,
    /// Also write the per-file table as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Overwrite an existing CSV file.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `diffuse audio bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Folder of clean references.
    #[arg(long, value_name = "DIR")]
    pub clean: PathBuf,
    /// Folder of noisy inputs (same relative paths).
    #[arg(long, value_name = "DIR")]
    pub noisy: PathBuf,
    /// Model (default: the built-in model).
    #[arg(long, value_name = "PATH|NAME")]
    pub model: Option<String>,
    /// Samplers: pc (2 NFE per step), ode (Heun on the probability-flow ODE, 2 NFE per step), or core solvers.
    #[arg(long, default_value = "pc,ode,dpm++2m,unipc-bh2", value_delimiter = ',')]
    pub samplers: Vec<String>,
    /// Step counts.
    #[arg(long, default_value = "5,10,20,30", value_delimiter = ',')]
    pub steps: Vec<usize>,
    /// Use at most this many pairs.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a Markdown table.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write an SVG plot of SI-SDR vs NFE.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `diffuse audio train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Folder(s) of clean speech (.wav, searched recursively; any rate, resampled to 16 kHz).
    #[arg(long, required = true, num_args = 1.., value_name = "DIR")]
    pub clean: Vec<PathBuf>,
    /// Folder(s) of noise.
    #[arg(long, required = true, num_args = 1.., value_name = "DIR")]
    pub noise: Vec<PathBuf>,
    /// Validation clean speech (SI-SDR and ESTOI of an enhancement with the model's own sampler each epoch).
    #[arg(long, value_name = "DIR")]
    pub val_clean: Option<PathBuf>,
    /// Validation noise (default: the training noise).
    #[arg(long, value_name = "DIR")]
    pub val_noise: Option<PathBuf>,
    /// Output folder: model.safetensors + model.json (EMA weights), checkpoint.safetensors.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Optimisation steps in total.
    #[arg(long, default_value_t = 20_000)]
    pub steps: u64,
    /// Mixtures per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// STFT frames per crop (128 frames ≈ 1 s at 16 kHz).
    #[arg(long, default_value_t = 128)]
    pub crop_frames: usize,
    /// SNR range of the mixtures in dB, LOW:HIGH.
    #[arg(long, default_value = "-5:20", value_name = "LOW:HIGH")]
    pub snr: String,
    /// After peak normalisation, mixtures are scaled by a random gain down to −DB dB.
    #[arg(long, default_value_t = 6.0, value_name = "DB")]
    pub gain_jitter: f64,
    /// Pass the speech and the noise of each mixture through their own random second-order filter (RNNoise's
    /// spectral-shaping augmentation): more timbres and noise colours than the folders hold.
    #[arg(long)]
    pub spectral_shaping: bool,
    /// What the network learns: score (the reference's denoising score matching; the model outputs the score),
    /// data (x0 prediction with EDM-style preconditioning; the model outputs x̂0), or crp (fine-tunes the
    /// data-prediction model given by --init through its --crp-steps sampler: "correcting the reverse process").
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Score)]
    pub objective: ObjectiveArg,
    /// Start from this trained native model (.safetensors + sidecar): its network, σ_d and weights, with a
    /// fresh optimiser. Required by --objective crp.
    #[arg(long, value_name = "MODEL")]
    pub init: Option<PathBuf>,
    /// The sampler --objective crp trains through (a deterministic solver: dpm++2m, ddim, unipc-bh2, ...).
    #[arg(long, default_value = "dpm++2m", value_name = "SOLVER")]
    pub crp_solver: String,
    /// Its steps.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub crp_steps: usize,
    /// What --objective crp compares with the clean target: spec (squared error on the compressed spectrogram,
    /// as Lay et al.) or snr (negative waveform SNR per mixture, capped at 30 dB: weighs errors as SI-SDR does).
    #[arg(long, value_enum, default_value_t = CrpLossArg::Spec)]
    pub crp_loss: CrpLossArg,
    /// σ_d of the data objective's preconditioning (default: measured on the training mixtures).
    #[arg(long, value_name = "X")]
    pub sigma_data: Option<f64>,
    /// Adam learning rate.
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// Linear learning-rate warm-up over this many steps.
    #[arg(long, default_value_t = 0, value_name = "STEPS")]
    pub warmup: u64,
    /// Stop after this many minutes of this call (with a checkpoint and the model), even before --steps.
    #[arg(long, value_name = "MINUTES")]
    pub time_limit: Option<f64>,
    /// EMA decay of the weights (the EMA weights are the model).
    #[arg(long, default_value_t = 0.999)]
    pub ema: f64,
    /// Gradients are clipped to this global norm.
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Write a checkpoint (and the model) every N steps.
    #[arg(long, default_value_t = 250, value_name = "N")]
    pub checkpoint_every: u64,
    /// Validate every N steps (default: every epoch, a pass over the clean clips).
    #[arg(long, value_name = "N")]
    pub val_every: Option<u64>,
    /// Number of validation mixtures (2 s each, 0–10 dB SNR).
    #[arg(long, default_value_t = 16)]
    pub val_items: usize,
    /// Channels of the network's levels.
    #[arg(long, default_value = "32,64,96,128", value_delimiter = ',')]
    pub channels: Vec<usize>,
    /// Residual blocks per level.
    #[arg(long, default_value_t = 1)]
    pub res_blocks: usize,
    /// Continue the run in --out from its checkpoint.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Start over even if --out holds a run.
    #[arg(long)]
    pub force: bool,
}

/// `--objective` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ObjectiveArg {
    /// Denoising score matching (sgmse "score_matching").
    Score,
    /// Data prediction with EDM-style preconditioning.
    Data,
    /// Correcting the reverse process: fine-tuning through the sampler (Lay et al. 2023).
    Crp,
}

/// `--crp-loss` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CrpLossArg {
    /// Squared error on the compressed spectrogram.
    Spec,
    /// Negative waveform SNR per mixture.
    Snr,
}

/// Arguments of `diffuse audio enhance`.
#[derive(Debug, Args)]
pub struct EnhanceArgs {
    /// WAV files, or folders searched recursively for .wav files.
    #[arg(required_unless_present = "list", value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Output: a file for one input file (default `<stem>_enhanced.wav` beside it), otherwise a folder that
    /// receives the same relative paths (default `<folder>_enhanced` for one folder).
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Model: a TorchScript (.pt) or native (.safetensors) file with its .json sidecar beside it, or the name of
    /// an installed model (default: the built-in model).
    #[arg(long, value_name = "PATH|NAME")]
    pub model: Option<String>,
    /// Sampler: auto (the model's own), pc, ode, passthrough (no enhancement; checks the audio chain), or a
    /// diffuse-core solver such as dpm++2m, dpm++3m, unipc-bh2, heun, ddim.
    #[arg(long, default_value = "auto")]
    pub sampler: String,
    /// Sampler steps (default: the model's for its own sampler, 10 for core solvers).
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,
    /// Corrector signal-to-noise ratio of the pc sampler (default: the model's).
    #[arg(long, value_name = "X")]
    pub snr: Option<f64>,
    /// Overwrite existing outputs (inputs are never overwritten).
    #[arg(long)]
    pub force: bool,
    /// Long files are enhanced in chunks of this many STFT frames (memory of the network grows with it)…
    #[arg(long, default_value_t = 256, value_name = "FRAMES")]
    pub chunk_frames: usize,
    /// …that overlap by this many frames and are cross-faded.
    #[arg(long, default_value_t = 32, value_name = "FRAMES")]
    pub overlap_frames: usize,
    /// Batches on a cluster: --list, --shard, --manifest, --resume (docs/scale-out.md).
    #[command(flatten)]
    pub batch: BatchArgs,
}

/// Runs `diffuse audio …`.
pub fn run(ctx: &Context, cmd: &AudioCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AudioCommand::Enhance(args) => enhance(ctx, args),
        AudioCommand::Train(args) => train(ctx, args),
        AudioCommand::Eval(args) => eval(ctx, args),
        AudioCommand::Bench(args) => bench(ctx, args),
    }
}

/// Loads the model `spec` (a path or an installed name), or the built-in model for `None`/`builtin`; returns it
/// with its name for messages.
fn load_model(spec: Option<&str>, device: tch::Device) -> anyhow::Result<(ScoreModel, String)> {
    match spec {
        None | Some("builtin") | Some("default") | Some(diffuse_audio::default_model::NAME) => {
            Ok((diffuse_audio::default_model::load(device)?, diffuse_audio::default_model::NAME.to_string()))
        }
        Some(spec) => {
            let path = resolve_model(spec)?;
            let model = ScoreModel::load(&path, device)?;
            Ok((model, path.display().to_string()))
        }
    }
}

/// Finds a model by path or by name in the model folders.
fn resolve_model(spec: &str) -> anyhow::Result<PathBuf> {
    let as_path = PathBuf::from(spec);
    if as_path.is_file() {
        return Ok(as_path);
    }
    if spec.contains('/') || spec.ends_with(".pt") || spec.ends_with(".safetensors") {
        bail!("model {spec}: no such file");
    }
    let dirs = diffuse_core::models::model_dirs();
    for dir in &dirs {
        for ext in ["pt", "safetensors"] {
            for candidate in [dir.join(format!("{spec}.{ext}")), dir.join(spec).join(format!("{spec}.{ext}"))] {
                if candidate.is_file() {
                    return Ok(candidate);
                }
            }
        }
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "no model named '{spec}' is installed (searched {}); pass --model PATH to a TorchScript model with its .json \
         sidecar (docs/models.md explains how to export a published SGMSE+ checkpoint)",
        if searched.is_empty() { "no folders".into() } else { searched.join(", ") }
    )
}

/// One input file and where its enhanced version goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Job {
    input: PathBuf,
    output: PathBuf,
}

/// The planned jobs and the folder that receives them (where a shard's manifest goes by default).
#[derive(Debug)]
struct Plan {
    jobs: Vec<Job>,
    folder: PathBuf,
}

/// Where every input goes; errors for missing inputs, missing -o with several inputs and name collisions.
/// `listed` are the lines of a --list file; they always make a batch and keep their relative paths.
fn plan_jobs(inputs: &[PathBuf], listed: &[ListEntry], output: Option<&Path>) -> anyhow::Result<Plan> {
    for i in inputs.iter().chain(listed.iter().map(|e| &e.path)) {
        if !i.exists() {
            bail!("{}: no such file or folder", i.display());
        }
    }
    if let ([single], []) = (inputs, listed)
        && single.is_file()
    {
        let out = match output {
            Some(o) if o.is_dir() => o.join(single.file_name().unwrap_or_default()),
            Some(o) => o.to_path_buf(),
            None => {
                let stem = single.file_stem().unwrap_or_default().to_string_lossy();
                single.with_file_name(format!("{stem}_enhanced.wav"))
            }
        };
        let folder = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        return Ok(Plan { jobs: vec![Job { input: single.clone(), output: out }], folder });
    }
    let out_dir = match (output, inputs, listed) {
        (Some(o), _, _) => o.to_path_buf(),
        (None, [dir], []) => {
            let name =
                dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_os_string())).unwrap_or_default();
            dir.join("..").join(format!("{}_enhanced", name.to_string_lossy()))
        }
        (None, _, _) => bail!("several inputs or a --list need an output folder: pass -o FOLDER"),
    };
    if out_dir.is_file() {
        bail!("{}: the output for several inputs must be a folder, not a file", out_dir.display());
    }
    let mut jobs = Vec::new();
    let mut seen: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut sources: Vec<(PathBuf, PathBuf)> = Vec::new();
    for i in inputs {
        if i.is_dir() {
            let mut files = Vec::new();
            diffuse_audio::wav::collect_wavs(i, &mut files)?;
            sources
                .extend(files.into_iter().map(|f| (f.strip_prefix(i).map(Path::to_path_buf).unwrap_or_default(), f)));
        } else {
            sources.push((PathBuf::from(i.file_name().unwrap_or_default()), i.clone()));
        }
    }
    for e in listed {
        if e.path.is_dir() {
            bail!("{}: a --list line must name a file, not a folder", e.path.display());
        }
        sources.push((e.relative.clone(), e.path.clone()));
    }
    for (rel, input) in sources {
        let output = out_dir.join(&rel);
        if let Some(other) = seen.insert(output.clone(), input.clone()) {
            bail!("{} and {} would both be written to {}", other.display(), input.display(), output.display());
        }
        jobs.push(Job { input, output });
    }
    if jobs.is_empty() {
        bail!(
            "no .wav files found in {}",
            inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(Plan { jobs, folder: out_dir })
}

/// Canonical form of a path that may not exist yet (its parent must).
fn canonical(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Some(c);
    }
    let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    parent.canonicalize().ok().map(|d| d.join(p.file_name().unwrap_or_default()))
}

fn enhance(ctx: &Context, args: &EnhanceArgs) -> anyhow::Result<ExitCode> {
    let p = &ctx.printer;
    let listed = args.batch.listed()?;
    let plan = plan_jobs(&args.inputs, &listed, args.output.as_deref())?;
    let mut run = BatchRun::open(ctx, &args.batch, &plan.folder, args.force)?;
    let total = plan.jobs.len();
    let jobs = run.select(plan.jobs);
    if run.shard().count > 1 {
        p.info(format!("shard {}: {} of {total} input{}", run.shard(), jobs.len(), if total == 1 { "" } else { "s" }));
    }
    let chunking = Chunking { frames: args.chunk_frames, overlap: args.overlap_frames };
    diffuse_core::limits::at_most("--chunk-frames", args.chunk_frames, diffuse_audio::pipeline::MAX_CHUNK_FRAMES)?;
    chunking.validate().context("--chunk-frames/--overlap-frames")?;

    let device = ctx.device()?;
    let (model, model_name) = load_model(args.model.as_deref(), device)?;
    let cfg = model.config().clone();
    let name = if args.sampler == "auto" { cfg.sampler.name.clone() } else { args.sampler.clone() };
    if args.snr.is_some() && name != "pc" {
        p.warn(format!("--snr only applies to the pc sampler; ignored for {name}"));
    }
    let sampler: Box<dyn SpectrogramSampler> = build_sampler(&name, args.steps, args.snr, &cfg)?;
    p.verbose(format!(
        "model {} ({} Hz, {:?}), sampler {} ({} NFE per chunk), chunks of {} frames with {} overlap",
        model_name,
        cfg.sample_rate,
        cfg.sde,
        sampler.name(),
        sampler.nfe(),
        chunking.frames,
        chunking.overlap
    ));
    let enhancer = Enhancer::new(&model, sampler.as_ref(), chunking, ctx.global.seed)?;

    for job in &jobs {
        diffuse_core::io::protect_input(&job.input);
    }
    let inputs: HashSet<PathBuf> = jobs.iter().filter_map(|j| j.input.canonicalize().ok()).collect();
    let mut failures: Vec<(PathBuf, String)> = Vec::new();
    let mut todo = Vec::new();
    let (mut skipped, mut resumed) = (0usize, 0usize);
    for job in jobs {
        if let Progress::Complete = run.is_done(&job.input, &job.output) {
            resumed += 1;
            p.verbose(format!("done already: {} -> {}", job.input.display(), job.output.display()));
        } else if canonical(&job.output).is_some_and(|o| inputs.contains(&o)) {
            let why = format!("the output {} is an input; refusing to overwrite it", job.output.display());
            run.record(&job.input, &job.output, Status::Failed, Some(why.clone()), 0.0)?;
            failures.push((job.input.clone(), why));
        } else if job.output.exists() && !args.force {
            skipped += 1;
            p.info(format!(
                "skipping {}: {} exists (use --force to overwrite)",
                job.input.display(),
                job.output.display()
            ));
            let why = format!("{} exists and was not recorded as done (use --force to redo it)", job.output.display());
            run.record(&job.input, &job.output, Status::Skipped, Some(why), 0.0)?;
        } else {
            todo.push(job);
        }
    }

    // One progress unit per network evaluation (estimated from the headers) plus one per file.
    let planned: Vec<usize> = todo
        .iter()
        .map(|j| {
            diffuse_audio::wav::probe(&j.input).map(|(n, rate, ch)| enhancer.planned_nfe_for(n, rate, ch)).unwrap_or(0)
        })
        .collect();
    let bar = p.progress((planned.iter().sum::<usize>() + todo.len()) as u64, "enhancing");
    let start = Instant::now();
    let mut times = StageTimes::default();
    let (mut done, mut audio_s, mut nfe) = (0usize, 0.0f64, 0usize);
    for (job, planned) in todo.iter().zip(&planned) {
        bar.set_message(job.input.file_name().unwrap_or_default().to_string_lossy().into_owned());
        let before = bar.position();
        let item_start = Instant::now();
        if let Some(dir) = job.output.parent().filter(|d| !d.as_os_str().is_empty())
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            let why = format!("{}: cannot create the folder: {e}", dir.display());
            run.record(&job.input, &job.output, Status::Failed, Some(why.clone()), 0.0)?;
            failures.push((job.input.clone(), why));
            continue;
        }
        let mut step = || bar.inc(1);
        let result = enhancer.enhance_file(&job.input, &job.output, args.force, &mut step);
        let seconds = item_start.elapsed().as_secs_f64();
        match &result {
            Ok(_) => run.record(&job.input, &job.output, Status::Ok, None, seconds)?,
            Err(e) => run.record(&job.input, &job.output, Status::Failed, Some(e.to_string()), seconds)?,
        }
        match result {
            Ok(report) => {
                done += 1;
                audio_s += report.duration_s;
                nfe += report.nfe;
                times.add(&report.times);
                if report.clipped > 0 {
                    p.warn(format!(
                        "{}: {} samples clipped to the output format's range",
                        job.output.display(),
                        report.clipped
                    ));
                }
                if report.silent_channels > 0 {
                    p.warn(format!(
                        "{}: {} silent channel(s) left silent",
                        job.input.display(),
                        report.silent_channels
                    ));
                }
                p.verbose(format!("{} -> {} (RTF {:.3})", job.input.display(), job.output.display(), report.rtf()));
            }
            Err(e) => failures.push((job.input.clone(), e.to_string())),
        }
        bar.set_position(before + *planned as u64 + 1);
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();

    if done > 0 {
        println!(
            "enhanced {done} file{} ({audio_s:.1} s of audio) in {elapsed:.1} s with {} ({} NFE): real-time factor {:.3}",
            if done == 1 { "" } else { "s" },
            sampler.name(),
            nfe,
            elapsed / audio_s.max(1e-9)
        );
        p.verbose(format!(
            "stages: io {:.2} s, resampling {:.2} s, stft {:.2} s, sampling {:.2} s, inverse {:.2} s",
            times.io.as_secs_f64(),
            times.resample.as_secs_f64(),
            times.stft.as_secs_f64(),
            times.sampling.as_secs_f64(),
            times.inverse.as_secs_f64()
        ));
    }
    if skipped > 0 {
        p.info(format!("skipped {skipped} existing output{}", if skipped == 1 { "" } else { "s" }));
    }
    if resumed > 0 {
        p.info(format!(
            "{resumed} input{} already done according to the manifest",
            if resumed == 1 { " was" } else { "s were" }
        ));
    }
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{} file{} failed:", failures.len(), if failures.len() == 1 { "" } else { "s" });
    for (input, why) in &failures {
        // Library errors name the file already.
        let shown = input.display().to_string();
        if why.contains(&shown) { eprintln!("  {why}") } else { eprintln!("  {shown}: {why}") }
    }
    Ok(ExitCode::from(1))
}

fn eval(ctx: &Context, args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let p = &ctx.printer;
    let report = diffuse_audio::eval::evaluate(&args.clean, &args.enhanced, args.noisy.as_deref())?;
    let has_noisy = args.noisy.is_some();
    let mut table = String::new();
    let mut csv = String::from("file,si_sdr_db,estoi,pesq_wb");
    if has_noisy {
        csv.push_str(",noisy_si_sdr_db,noisy_estoi,noisy_pesq_wb,si_sdr_improvement_db,estoi_improvement");
    }
    csv.push('\n');
    for r in &report.rows {
        let f = r.file.display().to_string();
        let pesq = |s: &diffuse_audio::eval::Scores| s.pesq.map_or("-".to_string(), |p| format!("{p:.2}"));
        let mut line = format!("{f:<40} {:>8.2} {:>7.3} {:>6}", r.enhanced.si_sdr, r.enhanced.estoi, pesq(&r.enhanced));
        csv.push_str(&format!(
            "{},{:.4},{:.5},{}",
            f.replace(',', "_"),
            r.enhanced.si_sdr,
            r.enhanced.estoi,
            r.enhanced.pesq.map_or(String::new(), |p| format!("{p:.4}"))
        ));
        if let Some(n) = r.noisy {
            line.push_str(&format!(
                " {:>8.2} {:>7.3} {:>6} {:>+8.2} {:>+7.3}",
                n.si_sdr,
                n.estoi,
                pesq(&n),
                r.enhanced.si_sdr - n.si_sdr,
                r.enhanced.estoi - n.estoi
            ));
            csv.push_str(&format!(
                ",{:.4},{:.5},{},{:.4},{:.5}",
                n.si_sdr,
                n.estoi,
                n.pesq.map_or(String::new(), |p| format!("{p:.4}")),
                r.enhanced.si_sdr - n.si_sdr,
                r.enhanced.estoi - n.estoi
            ));
        }
        csv.push('\n');
        table.push_str(&line);
        table.push('\n');
    }
    let header = if has_noisy {
        format!(
            "{:<40} {:>8} {:>7} {:>6} {:>8} {:>7} {:>6} {:>8} {:>7}",
            "file", "SI-SDR", "ESTOI", "PESQ", "noisy", "noisy", "noisy", "ΔSI-SDR", "ΔESTOI"
        )
    } else {
        format!("{:<40} {:>8} {:>7} {:>6}", "file", "SI-SDR", "ESTOI", "PESQ")
    };
    if ctx.global.verbose > 0 || report.rows.len() <= 50 {
        println!("{header}\n{table}");
    }
    if let Some((e, n)) = report.means() {
        match n {
            Some(n) => println!(
                "mean of {} files: SI-SDR {:.2} dB (noisy {:.2}, improvement {:+.2} dB), ESTOI {:.3} (noisy {:.3}, improvement {:+.3}){}",
                report.rows.len(),
                e.si_sdr,
                n.si_sdr,
                e.si_sdr - n.si_sdr,
                e.estoi,
                n.estoi,
                e.estoi - n.estoi,
                match (e.pesq, n.pesq) {
                    (Some(a), Some(b)) => format!(", PESQ-WB {a:.2} (noisy {b:.2})"),
                    _ => String::new(),
                }
            ),
            None => println!(
                "mean of {} files: SI-SDR {:.2} dB, ESTOI {:.3}{}",
                report.rows.len(),
                e.si_sdr,
                e.estoi,
                e.pesq.map_or(String::new(), |p| format!(", PESQ-WB {p:.2}"))
            ),
        }
    }
    if let Some(path) = &args.csv {
        diffuse_core::io::write_bytes_atomic(path, args.force, csv.as_bytes())?;
        p.info(format!("per-file table written to {}", path.display()));
    }
    if report.failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{} file{} could not be scored:",
        report.failures.len(),
        if report.failures.len() == 1 { "" } else { "s" }
    );
    for (f, why) in &report.failures {
        let shown = f.display().to_string();
        if why.contains(&shown) { eprintln!("  {why}") } else { eprintln!("  {shown}: {why}") }
    }
    Ok(ExitCode::from(1))
}

fn bench(ctx: &Context, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    use crate::plot::{Plot, Series};
    let p = &ctx.printer;
    for out in [&args.json, &args.markdown, &args.plot].into_iter().flatten() {
        anyhow::ensure!(!out.exists() || args.force, "{}: already exists (use --force to overwrite)", out.display());
    }
    let device = ctx.device()?;
    let (model, model_name) = load_model(args.model.as_deref(), device)?;
    let rate = model.config().sample_rate;
    let pairs = diffuse_audio::eval::read_pairs(&args.clean, &args.noisy, rate, args.limit)?;
    let audio_s: f64 = pairs.iter().map(|(_, c, _)| c.len() as f64).sum::<f64>() / f64::from(rate);
    p.info(format!("{} pairs ({audio_s:.1} s of audio), model {model_name}", pairs.len()));
    let noisy = {
        let (mut si, mut es, mut pq) = (0.0, 0.0, 0.0);
        for (_, c, y) in &pairs {
            let s = diffuse_audio::eval::score(c, y, rate);
            si += s.si_sdr;
            es += s.estoi;
            pq += s.pesq.unwrap_or(f64::NAN);
        }
        let k = pairs.len() as f64;
        (si / k, es / k, pq / k)
    };
    let data: Vec<(Vec<f32>, Vec<f32>)> = pairs.into_iter().map(|(_, c, y)| (c, y)).collect();
    let total = (args.samplers.len() * args.steps.len() * data.len()) as u64;
    let bar = p.progress(total, "benchmark");
    let mut points = Vec::new();
    for name in &args.samplers {
        // `ode` at a fixed step count: Heun on the probability-flow ODE (the reference's own ODE sampler is
        // adaptive; `diffuse audio enhance --sampler ode` runs that one).
        let solver = if name == "ode" { "heun" } else { name.as_str() };
        bar.set_message(name.clone());
        let mut pts =
            diffuse_audio::eval::bench_sampler(&model, &data, solver, &args.steps, ctx.global.seed, &mut || {
                bar.inc(1)
            })?;
        for pt in &mut pts {
            pt.sampler = name.clone();
        }
        points.extend(pts);
    }
    bar.finish_and_clear();
    let mut md = format!(
        "| sampler | steps | NFE | SI-SDR (dB) | ΔSI-SDR (dB) | ESTOI | ΔESTOI | PESQ-WB | RTF |\n|---|---|---|---|---|---|---|---|---|\n| noisy input | – | 0 | {:.2} | – | {:.3} | – | {:.2} | – |\n",
        noisy.0, noisy.1, noisy.2
    );
    for pt in &points {
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:+.2} | {:.3} | {:+.3} | {} | {:.3} |\n",
            pt.sampler,
            pt.steps,
            pt.nfe,
            pt.scores.si_sdr,
            pt.scores.si_sdr - noisy.0,
            pt.scores.estoi,
            pt.scores.estoi - noisy.1,
            pt.scores.pesq.map_or("–".to_string(), |p| format!("{p:.2}")),
            pt.rtf
        ));
    }
    print!("{md}");
    if let Some(path) = &args.markdown {
        diffuse_core::io::write_bytes_atomic(path, args.force, md.as_bytes())?;
    }
    if let Some(path) = &args.json {
        let j = serde_json::json!({
            "model": model_name, "noisy": {"si_sdr": noisy.0, "estoi": noisy.1, "pesq_wb": noisy.2}, "points": points
        });
        diffuse_core::io::write_bytes_atomic(path, args.force, serde_json::to_string_pretty(&j)?.as_bytes())?;
    }
    if let Some(path) = &args.plot {
        let mut series: Vec<Series> = args
            .samplers
            .iter()
            .map(|s| Series {
                name: s.clone(),
                points: points.iter().filter(|pt| &pt.sampler == s).map(|pt| (pt.nfe, pt.scores.si_sdr)).collect(),
            })
            .collect();
        let max_nfe = points.iter().map(|pt| pt.nfe).fold(1.0, f64::max);
        series.push(Series { name: "noisy input".into(), points: vec![(1.0, noisy.0), (max_nfe, noisy.0)] });
        let plot = Plot {
            title: format!("SI-SDR vs model evaluations ({model_name})"),
            x_label: "network evaluations (NFE)".into(),
            y_label: "SI-SDR (dB)".into(),
            x_log: true,
            y_log: false,
            series,
        };
        diffuse_core::io::write_bytes_atomic(path, args.force, plot.to_svg().as_bytes())?;
        p.info(format!("plot written to {}", path.display()));
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_range(s: &str) -> anyhow::Result<(f64, f64)> {
    let (a, b) = s.split_once(':').with_context(|| format!("'{s}': expected LOW:HIGH, e.g. -5:20"))?;
    let lo: f64 = a.trim().parse().with_context(|| format!("'{a}' is not a number"))?;
    let hi: f64 = b.trim().parse().with_context(|| format!("'{b}' is not a number"))?;
    anyhow::ensure!(lo <= hi, "'{s}': LOW must not exceed HIGH");
    Ok((lo, hi))
}

fn train(ctx: &Context, args: &TrainArgs) -> anyhow::Result<ExitCode> {
    use diffuse_audio::train::{TrainEvent, TrainOptions};
    let p = &ctx.printer;
    let mut opts = TrainOptions::new(args.clean.clone(), args.noise.clone(), args.out.clone());
    opts.val_clean = args.val_clean.clone();
    opts.val_noise = args.val_noise.clone();
    opts.steps = args.steps;
    opts.batch = args.batch;
    opts.crop_frames = args.crop_frames;
    opts.snr_db = parse_range(&args.snr).context("--snr")?;
    opts.gain_jitter_db = args.gain_jitter;
    opts.spectral_shaping = args.spectral_shaping;
    opts.lr = args.lr;
    opts.objective = match args.objective {
        ObjectiveArg::Score => diffuse_audio::train::Objective::Score,
        ObjectiveArg::Data => diffuse_audio::train::Objective::Data,
        ObjectiveArg::Crp => diffuse_audio::train::Objective::Crp,
    };
    opts.init = args.init.clone();
    opts.crp_solver = args.crp_solver.clone();
    opts.crp_steps = args.crp_steps;
    opts.crp_loss = match args.crp_loss {
        CrpLossArg::Spec => diffuse_audio::train::CrpLoss::Spec,
        CrpLossArg::Snr => diffuse_audio::train::CrpLoss::Snr,
    };
    opts.sigma_data = args.sigma_data;
    opts.warmup = args.warmup;
    if let Some(m) = args.time_limit {
        anyhow::ensure!(m.is_finite() && m > 0.0, "--time-limit: need a positive number of minutes, got {m}");
        opts.time_limit = Some(std::time::Duration::from_secs_f64(m * 60.0));
    }
    opts.ema_decay = args.ema;
    opts.grad_clip = args.grad_clip;
    opts.checkpoint_every = args.checkpoint_every;
    opts.val_every = args.val_every;
    opts.val_items = args.val_items;
    opts.resume = args.resume;
    opts.force = args.force;
    opts.seed = ctx.global.seed;
    opts.device = ctx.device()?;
    if let Some(net) = opts.model.network.as_mut() {
        net.channels = args.channels.clone();
        net.res_blocks = args.res_blocks;
    }

    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut window: Vec<f64> = Vec::new();
    let mut last = Instant::now();
    let mut first_step = 0u64;
    let start = Instant::now();
    let batch = args.batch;
    let mut on_event = |e: TrainEvent| match e {
        TrainEvent::Data { clean, noise, val_items, notes } => {
            p.info(format!(
                "data: {} clean clips ({:.1} min), {} noise clips ({:.1} min), {}",
                clean.0,
                clean.1 / 60.0,
                noise.0,
                noise.1 / 60.0,
                if val_items > 0 { format!("{val_items} validation mixtures") } else { "no validation".into() }
            ));
            for n in notes {
                p.info(format!("  {n}"));
            }
        }
        TrainEvent::Start { step, steps, parameters } => {
            p.info(format!("training {parameters} parameters from step {step} to {steps}"));
            first_step = step.saturating_sub(1);
            let b = p.progress(steps, "training");
            b.set_position(step.saturating_sub(1));
            bar = Some(b);
        }
        TrainEvent::Step { step, loss, grad_norm } => {
            window.push(loss);
            if window.len() > 50 {
                window.remove(0);
            }
            if let Some(b) = &bar {
                b.set_position(step);
                if last.elapsed().as_secs_f64() > 0.5 || step % 50 == 0 {
                    last = Instant::now();
                    let rate = (step - first_step) as f64 / start.elapsed().as_secs_f64().max(1e-9);
                    b.set_message(format!(
                        "loss {:.4} (mean of {}), grad {:.2}, {:.2} steps/s, {:.1} clips/s",
                        window.iter().sum::<f64>() / window.len() as f64,
                        window.len(),
                        grad_norm,
                        rate,
                        rate * batch as f64
                    ));
                }
            }
            if step % 100 == 0 && bar.as_ref().is_none_or(|b| b.is_hidden()) {
                let rate = (step - first_step) as f64 / start.elapsed().as_secs_f64().max(1e-9);
                p.verbose(format!(
                    "step {step}: loss {loss:.5} (mean of last {} {:.5}), grad norm {grad_norm:.3}, {rate:.2} steps/s, \
                     {:.0} s",
                    window.len(),
                    window.iter().sum::<f64>() / window.len().max(1) as f64,
                    start.elapsed().as_secs_f64()
                ));
            }
        }
        TrainEvent::Validation(v) => {
            let msg = format!(
                "step {}: validation SI-SDR {:.2} dB (noisy {:.2}), ESTOI {:.3} (noisy {:.3})",
                v.step, v.si_sdr, v.noisy_si_sdr, v.estoi, v.noisy_estoi
            );
            match &bar {
                Some(b) if !b.is_hidden() => b.println(msg),
                _ => p.info(msg),
            }
        }
        TrainEvent::Checkpoint { step, path } => {
            p.verbose(format!("step {step}: checkpoint {}", path.display()));
        }
    };
    let result = diffuse_audio::train::train(&opts, &mut on_event);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let summary = result?;
    println!(
        "trained {} steps (to step {}{}) in {:.1} min; model: {}{}",
        summary.steps_run,
        summary.step,
        if summary.stopped_by_time { ", stopped at the time limit" } else { "" },
        summary.seconds / 60.0,
        summary.model.display(),
        summary
            .last_validation
            .map(|v| format!(
                "; validation SI-SDR {:.2} dB (noisy {:.2}), ESTOI {:.3} (noisy {:.3})",
                v.si_sdr, v.noisy_si_sdr, v.estoi, v.noisy_estoi
            ))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_goes_beside_it_and_folders_keep_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.wav");
        std::fs::write(&a, b"x").unwrap();
        let jobs = plan_jobs(std::slice::from_ref(&a), &[], None).unwrap().jobs;
        assert_eq!(jobs[0].output, dir.path().join("a_enhanced.wav"));

        let sub = dir.path().join("in/sub");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("b.WAV"), b"x").unwrap();
        std::fs::write(sub.join("notes.txt"), b"x").unwrap();
        let out = dir.path().join("out");
        let jobs = plan_jobs(&[dir.path().join("in"), a.clone()], &[], Some(&out)).unwrap().jobs;
        let outs: Vec<_> = jobs.iter().map(|j| j.output.clone()).collect();
        assert_eq!(outs, vec![out.join("sub/b.WAV"), out.join("a.wav")]);

        assert!(plan_jobs(&[a.clone(), sub.join("b.WAV")], &[], None).unwrap_err().to_string().contains("-o FOLDER"));
        let err = plan_jobs(&[a.clone(), a.clone()], &[], Some(&out)).unwrap_err().to_string();
        assert!(err.contains("would both be written"), "{err}");
        let missing = plan_jobs(&[dir.path().join("missing.wav")], &[], None).unwrap_err().to_string();
        assert!(missing.contains("missing.wav"), "{missing}");
    }

    #[test]
    fn listed_inputs_keep_their_relative_paths_and_need_an_output_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("in/sub")).unwrap();
        std::fs::write(dir.path().join("in/sub/b.wav"), b"x").unwrap();
        std::fs::write(dir.path().join("in/a.wav"), b"x").unwrap();
        let list = dir.path().join("in/list.txt");
        std::fs::write(&list, "sub/b.wav\na.wav\n").unwrap();
        let listed = diffuse_core::batch::read_list(&list).unwrap();
        assert!(plan_jobs(&[], &listed[..1], None).unwrap_err().to_string().contains("-o FOLDER"));
        let out = dir.path().join("out");
        let plan = plan_jobs(&[], &listed, Some(&out)).unwrap();
        assert_eq!(plan.folder, out);
        let pairs: Vec<_> = plan.jobs.iter().map(|j| (j.input.clone(), j.output.clone())).collect();
        assert_eq!(
            pairs,
            vec![
                (dir.path().join("in/a.wav"), out.join("a.wav")),
                (dir.path().join("in/sub/b.wav"), out.join("sub/b.wav"))
            ]
        );
    }
}
