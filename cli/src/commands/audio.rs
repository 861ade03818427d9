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

use super::Context;

/// Audio subcommands.
#[derive(Debug, Subcommand)]
pub enum AudioCommand {
    /// Enhance noisy speech with a score-based model (SGMSE+): one file, several files or folders.
    Enhance(EnhanceArgs),
}

/// Arguments of `diffuse audio enhance`.
#[derive(Debug, Args)]
pub struct EnhanceArgs {
    /// WAV files, or folders searched recursively for .wav files.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Output: a file for one input file (default `<stem>_enhanced.wav` beside it), otherwise a folder that
    /// receives the same relative paths (default `<folder>_enhanced` for one folder).
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Model: a TorchScript file with its .json sidecar beside it, or the name of an installed model.
    #[arg(long, value_name = "PATH|NAME", default_value = "sgmse")]
    pub model: String,
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
    /// Long files are enhanced in chunks of this many STFT frames…
    #[arg(long, default_value_t = 512, value_name = "FRAMES")]
    pub chunk_frames: usize,
    /// …that overlap by this many frames and are cross-faded.
    #[arg(long, default_value_t = 64, value_name = "FRAMES")]
    pub overlap_frames: usize,
}

/// Runs `diffuse audio …`.
pub fn run(ctx: &Context, cmd: &AudioCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AudioCommand::Enhance(args) => enhance(ctx, args),
    }
}

/// Finds a model by path or by name in the model folders.
fn resolve_model(spec: &str) -> anyhow::Result<PathBuf> {
    let as_path = PathBuf::from(spec);
    if as_path.is_file() {
        return Ok(as_path);
    }
    if spec.contains('/') || spec.ends_with(".pt") {
        bail!("model {spec}: no such file");
    }
    let dirs = diffuse_core::models::model_dirs();
    for dir in &dirs {
        for candidate in [dir.join(format!("{spec}.pt")), dir.join(spec).join(format!("{spec}.pt"))] {
            if candidate.is_file() {
                return Ok(candidate);
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
#[derive(Debug)]
struct Job {
    input: PathBuf,
    output: PathBuf,
}

fn is_wav(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav"))
}

fn collect_wavs(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list the folder", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_wavs(&p, out)?;
        } else if is_wav(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Where every input goes; errors for missing inputs, missing -o with several inputs and name collisions.
fn plan_jobs(inputs: &[PathBuf], output: Option<&Path>) -> anyhow::Result<Vec<Job>> {
    for i in inputs {
        if !i.exists() {
            bail!("{}: no such file or folder", i.display());
        }
    }
    if let [single] = inputs
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
        return Ok(vec![Job { input: single.clone(), output: out }]);
    }
    let out_dir = match (output, inputs) {
        (Some(o), _) => o.to_path_buf(),
        (None, [dir]) => {
            let name =
                dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_os_string())).unwrap_or_default();
            dir.join("..").join(format!("{}_enhanced", name.to_string_lossy()))
        }
        (None, _) => bail!("several inputs need an output folder: pass -o FOLDER"),
    };
    if out_dir.is_file() {
        bail!("{}: the output for several inputs must be a folder, not a file", out_dir.display());
    }
    let mut jobs = Vec::new();
    let mut seen: HashMap<PathBuf, PathBuf> = HashMap::new();
    for i in inputs {
        let pairs: Vec<(PathBuf, PathBuf)> = if i.is_dir() {
            let mut files = Vec::new();
            collect_wavs(i, &mut files)?;
            files.into_iter().map(|f| (f.strip_prefix(i).map(Path::to_path_buf).unwrap_or_default(), f)).collect()
        } else {
            vec![(PathBuf::from(i.file_name().unwrap_or_default()), i.clone())]
        };
        for (rel, input) in pairs {
            let output = out_dir.join(&rel);
            if let Some(other) = seen.insert(output.clone(), input.clone()) {
                bail!("{} and {} would both be written to {}", other.display(), input.display(), output.display());
            }
            jobs.push(Job { input, output });
        }
    }
    if jobs.is_empty() {
        bail!(
            "no .wav files found in {}",
            inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(jobs)
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
    let jobs = plan_jobs(&args.inputs, args.output.as_deref())?;
    let chunking = Chunking { frames: args.chunk_frames, overlap: args.overlap_frames };
    chunking.validate().context("--chunk-frames/--overlap-frames")?;

    let device = ctx.device()?;
    let model_path = resolve_model(&args.model)?;
    let model = ScoreModel::load(&model_path, device)?;
    let cfg = model.config().clone();
    let name = if args.sampler == "auto" { cfg.sampler.name.clone() } else { args.sampler.clone() };
    if args.snr.is_some() && name != "pc" {
        p.warn(format!("--snr only applies to the pc sampler; ignored for {name}"));
    }
    let sampler: Box<dyn SpectrogramSampler> = build_sampler(&name, args.steps, args.snr, &cfg)?;
    p.verbose(format!(
        "model {} ({} Hz, {:?}), sampler {} ({} NFE per chunk), chunks of {} frames with {} overlap",
        model_path.display(),
        cfg.sample_rate,
        cfg.sde,
        sampler.name(),
        sampler.nfe(),
        chunking.frames,
        chunking.overlap
    ));
    let enhancer = Enhancer::new(&model, sampler.as_ref(), chunking, ctx.global.seed)?;

    let inputs: HashSet<PathBuf> = jobs.iter().filter_map(|j| j.input.canonicalize().ok()).collect();
    let mut failures: Vec<(PathBuf, String)> = Vec::new();
    let mut todo = Vec::new();
    let mut skipped = 0usize;
    for job in jobs {
        if canonical(&job.output).is_some_and(|o| inputs.contains(&o)) {
            failures.push((
                job.input.clone(),
                format!("the output {} is an input; refusing to overwrite it", job.output.display()),
            ));
        } else if job.output.exists() && !args.force {
            skipped += 1;
            p.info(format!(
                "skipping {}: {} exists (use --force to overwrite)",
                job.input.display(),
                job.output.display()
            ));
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
        if let Some(dir) = job.output.parent().filter(|d| !d.as_os_str().is_empty())
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            failures.push((job.input.clone(), format!("{}: cannot create the folder: {e}", dir.display())));
            continue;
        }
        let mut step = || bar.inc(1);
        match enhancer.enhance_file(&job.input, &job.output, &mut step) {
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
        let jobs = plan_jobs(std::slice::from_ref(&a), None).unwrap();
        assert_eq!(jobs[0].output, dir.path().join("a_enhanced.wav"));

        let sub = dir.path().join("in/sub");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("b.WAV"), b"x").unwrap();
        std::fs::write(sub.join("notes.txt"), b"x").unwrap();
        let out = dir.path().join("out");
        let jobs = plan_jobs(&[dir.path().join("in"), a.clone()], Some(&out)).unwrap();
        let outs: Vec<_> = jobs.iter().map(|j| j.output.clone()).collect();
        assert_eq!(outs, vec![out.join("sub/b.WAV"), out.join("a.wav")]);

        assert!(plan_jobs(&[a.clone(), sub.join("b.WAV")], None).unwrap_err().to_string().contains("-o FOLDER"));
        let err = plan_jobs(&[a.clone(), a.clone()], Some(&out)).unwrap_err().to_string();
        assert!(err.contains("would both be written"), "{err}");
        assert!(plan_jobs(&[dir.path().join("missing.wav")], None).unwrap_err().to_string().contains("missing.wav"));
    }
}
