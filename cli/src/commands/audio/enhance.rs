//! `diffuse audio enhance`: noisy speech in, enhanced speech out (files, folders or a list).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use diffuse_audio::pipeline::StageTimes;
use diffuse_audio::sampling::build_sampler;
use diffuse_audio::{Chunking, Enhancer, SpectrogramSampler};
use diffuse_core::batch::{ListEntry, Progress, Status};

use super::super::Context;
use super::super::manifest::{BatchArgs, BatchRun};
use super::load_model;

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
    /// Run a searched schedule of this file (`diffuse audio search`) instead of --sampler/--steps: the best one
    /// with the fewest evaluations, or of --schedule-nfe.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["sampler", "steps"])]
    pub schedule: Option<PathBuf>,
    /// Which NFE of the --schedule file to run.
    #[arg(long, value_name = "N", requires = "schedule")]
    pub schedule_nfe: Option<usize>,
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

pub(super) fn enhance(ctx: &Context, args: &EnhanceArgs) -> anyhow::Result<ExitCode> {
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
    let sampler: Box<dyn SpectrogramSampler> = match &args.schedule {
        Some(file) => {
            let schedules = diffuse_core::search::ScheduleFile::load(file)?;
            anyhow::ensure!(
                schedules.path == cfg.path,
                "{}: its schedules were searched for another path than {model_name}'s",
                file.display()
            );
            let chosen = schedules.pick(args.schedule_nfe).with_context(|| file.display().to_string())?;
            Box::new(
                diffuse_audio::sampling::CoreSampler::from_schedule(chosen, &cfg)
                    .with_context(|| file.display().to_string())?,
            )
        }
        None => build_sampler(&name, args.steps, args.snr, &cfg)?,
    };
    p.verbose(format!(
        "model {} ({} Hz, {}), sampler {} ({} NFE per chunk), chunks of {} frames with {} overlap",
        model_name,
        cfg.sample_rate,
        cfg.noise_path().map_or_else(|e| e.to_string(), |p| p.name()),
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
