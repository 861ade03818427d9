//! `diffuse text …`: discrete diffusion on token sequences. `check` runs a sampler with the exact denoiser of a
//! known target and prints its total-variation distance to the target with the bound (docs/discrete.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use diffuse_discrete::categorical::{Precision, Truncation};
use diffuse_discrete::check::{CheckSpec, check};
use diffuse_discrete::exact::Target;
use diffuse_discrete::sampler::{Corrector, Remask, RemaskSchedule, SamplerConfig, SamplerKind, Selection, Unmasking};
use diffuse_discrete::schedule::ScheduleKind;
use diffuse_discrete::text::TextModel;
use diffuse_discrete::{Output, ProcessKind};

use super::Context;

mod bench;
mod eval;
mod sample;
mod train;

/// Subcommands of `diffuse text`.
#[derive(Debug, Subcommand)]
pub enum TextCommand {
    /// Check a sampler against a known target: TV distance of its samples to the target, with the bound.
    Check(Box<CheckArgs>),
    /// Train a byte-level diffusion language model (or the autoregressive baseline) on text files.
    Train(Box<train::TrainArgs>),
    /// Generate text with a diffusion model (the built-in one by default), with infilling templates.
    Sample(Box<sample::SampleArgs>),
    /// Bits per byte of text files under a model (NELBO ± standard error, or the exact AR likelihood).
    Eval(Box<eval::EvalArgs>),
    /// Sample quality vs steps: bits/byte under an autoregressive judge, unigram entropy, throughput.
    Bench(Box<bench::BenchArgs>),
}

/// Loads `--model`, or the built-in masked model; returns it with its name for messages.
fn load_model(model: Option<&std::path::Path>, device: tch::Device) -> anyhow::Result<(TextModel, String)> {
    match model {
        Some(path) => Ok((TextModel::load(path, device)?, path.display().to_string())),
        None => Ok((diffuse_discrete::default_model::load(device)?, diffuse_discrete::default_model::NAME.to_string())),
    }
}

/// Arguments of `diffuse text check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Target distribution: JSON table of sequences or Markov chain (format in docs/discrete.md).
    #[arg(long, value_name = "FILE")]
    pub target: PathBuf,
    /// Forward process: masked or uniform.
    #[arg(long, value_parser = parse::<ProcessKind>)]
    pub process: ProcessKind,
    /// Sampler: ancestral, tau-leaping, tweedie, pc, remdm, audm, consistency.
    #[arg(long, value_parser = parse::<SamplerKind>)]
    pub sampler: SamplerKind,
    /// Number of sampler steps.
    #[arg(long)]
    pub steps: usize,
    /// Number of samples drawn.
    #[arg(long, default_value_t = 10_000)]
    pub samples: usize,
    /// Parameterization of the exact denoiser: clean, loo, score, audm (default: the sampler's natural one).
    #[arg(long, value_parser = parse::<Output>)]
    pub output: Option<Output>,
    /// Noise schedule: log-linear (eps 1e-3), cosine (eps 1e-3), linear (sigma 0..10).
    #[arg(long, default_value = "log-linear", value_parser = parse::<ScheduleKind>)]
    pub schedule: ScheduleKind,
    /// Temperature on the denoiser's logits.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Keep only the k most probable tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus: keep the most probable tokens up to this mass.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Argmax instead of a draw at the last step.
    #[arg(long)]
    pub greedy_final: bool,
    /// Reuse model outputs while a sequence is unchanged (masked ancestral).
    #[arg(long)]
    pub cache: bool,
    /// Precision of the categorical draws: f64 (inverse CDF), or f32 (the 32-bit race) only to measure its effect.
    #[arg(long, default_value = "f64", value_parser = parse::<Precision>)]
    pub precision: Precision,
    /// ReMDM remasking: cap:ETA, rescale:ETA or loop:T_ON:T_OFF:ALPHA_ON:ETA.
    #[arg(long, default_value = "cap:0.02", value_parser = parse_remask)]
    pub remask: Remask,
    /// ReMDM: remask only once t ≤ this.
    #[arg(long)]
    pub t_switch: Option<f64>,
    /// PC: corrector sweeps per step.
    #[arg(long, default_value_t = 1)]
    pub corrector_sweeps: usize,
    /// PC: positions resampled per sweep.
    #[arg(long, default_value_t = 1)]
    pub corrector_positions: usize,
    /// PC: position selection: random (exact Gibbs, the default) or least-confident (biased towards likely
    /// sequences; opt-in, docs/discrete.md).
    #[arg(long, default_value = "random")]
    pub selection: String,
    /// PC: least-confident selection temperature.
    #[arg(long, default_value_t = 1.0)]
    pub tau: f64,
    /// Masked ancestral and consistency: which positions a step reveals, random or confident[:TAU].
    #[arg(long, default_value = "random", value_parser = parse::<Unmasking>)]
    pub unmask: Unmasking,
    /// Sequences per batch (the result does not depend on it).
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
    /// Probability that the sampling bound fails by chance.
    #[arg(long, default_value_t = 1e-6)]
    pub delta: f64,
    /// Largest number of sampler states enumerated for the exact law.
    #[arg(long, default_value_t = 20_000)]
    pub max_states: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn parse<T: std::str::FromStr<Err = diffuse_discrete::Error>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e: diffuse_discrete::Error| e.to_string())
}

fn parse_remask(s: &str) -> Result<Remask, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |x: &str| x.parse::<f64>().map_err(|_| format!("'{x}' is not a number"));
    match parts.as_slice() {
        ["cap", eta] => Ok(Remask::Cap(num(eta)?)),
        ["rescale", eta] => Ok(Remask::Rescale(num(eta)?)),
        ["loop", t_on, t_off, alpha_on, eta] => {
            Ok(Remask::Loop { t_on: num(t_on)?, t_off: num(t_off)?, alpha_on: num(alpha_on)?, eta: num(eta)? })
        }
        _ => Err(format!("'{s}': expected cap:ETA, rescale:ETA or loop:T_ON:T_OFF:ALPHA_ON:ETA")),
    }
}

/// Runs a `diffuse text` subcommand.
pub fn text(ctx: &Context, cmd: &TextCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TextCommand::Check(args) => run_check(ctx, args),
        TextCommand::Train(args) => train::run(ctx, args),
        TextCommand::Sample(args) => sample::run(ctx, args),
        TextCommand::Eval(args) => eval::run(ctx, args),
        TextCommand::Bench(args) => bench::run(ctx, args),
    }
}

fn run_check(ctx: &Context, a: &CheckArgs) -> anyhow::Result<ExitCode> {
    let target =
        Arc::new(Target::from_json_file(&a.target).with_context(|| format!("--target {}", a.target.display()))?);
    a.schedule.validate().context("--schedule")?;
    let selection = match a.selection.as_str() {
        "random" => Selection::Random,
        "least-confident" => Selection::LeastConfident { tau: a.tau },
        other => anyhow::bail!("--selection '{other}': expected random or least-confident"),
    };
    let mut sampler = SamplerConfig::new(a.sampler, a.steps);
    sampler.cache = a.cache;
    sampler.truncation = Truncation { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p };
    sampler.greedy_final = a.greedy_final;
    sampler.precision = a.precision;
    sampler.remask = RemaskSchedule { rule: a.remask, t_switch: a.t_switch };
    sampler.corrector = Corrector { sweeps: a.corrector_sweeps, positions: a.corrector_positions, selection };
    sampler.unmasking = a.unmask;
    let process = a.process.with_vocab(target.vocab());
    let output = a.output.unwrap_or_else(|| a.sampler.natural_output(a.process));
    let schedule: Arc<dyn diffuse_discrete::Schedule> = match a.schedule {
        ScheduleKind::LogLinear(s) => Arc::new(s),
        ScheduleKind::Cosine(s) => Arc::new(s),
        ScheduleKind::Linear(s) => Arc::new(s),
    };
    let spec = CheckSpec {
        target: target.clone(),
        process,
        output,
        schedule: schedule.clone(),
        sampler,
        samples: a.samples,
        seed: ctx.global.seed,
        batch: a.batch,
        delta: a.delta,
        max_states: a.max_states,
    };
    ctx.printer.info(format!(
        "{} sampler on the {} process, {} steps, {} samples of length {}",
        a.sampler,
        a.process,
        a.steps,
        a.samples,
        target.len()
    ));
    let bar = ctx.printer.progress(a.samples as u64, "sampling");
    let report = check(&spec, &mut |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    if report.discretisation.is_none() {
        ctx.printer.warn(format!(
            "the exact sampler law has more than {} states: the bound holds sampling noise only (--max-states)",
            a.max_states
        ));
    }
    if a.json {
        let json = serde_json::json!({
            "target": a.target.display().to_string(),
            "vocab": target.vocab(),
            "length": target.len(),
            "process": a.process.to_string(),
            "sampler": a.sampler.to_string(),
            "output": output.to_string(),
            "schedule": schedule.describe(),
            "steps": a.steps,
            "samples": a.samples,
            "seed": ctx.global.seed,
            "report": report,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!(
            "target        {} (vocab {}, length {}, {} sequences with p > 0)",
            a.target.display(),
            target.vocab(),
            target.len(),
            target.support_size()
        );
        println!(
            "sampler       {} on {} (denoiser output {output}, {}), {} steps, {} samples, seed {}",
            a.sampler,
            a.process,
            schedule.describe(),
            a.steps,
            a.samples,
            ctx.global.seed
        );
        println!("TV(samples, target)     {:.4}", report.tv);
        match report.discretisation {
            Some(d) => {
                println!("TV(exact law, target)   {d:.4}  discretisation error, by enumeration")
            }
            None => println!("TV(exact law, target)   not computed (more than {} sampler states)", a.max_states),
        }
        if let Some(n) = report.sampling_noise {
            println!("TV(samples, exact law)  {n:.4}");
        }
        println!(
            "sampling bound          {:.4}  sqrt(S/4n) + sqrt(ln(1/delta)/2n), S = {}, delta = {}",
            report.sampling_bound, report.support, a.delta
        );
        println!("bound                   {:.4}  discretisation + sampling", report.bound);
        println!(
            "entropy                 target {:.4}, samples {:.4} nats",
            report.target_entropy, report.sample_entropy
        );
        println!("model calls             {} ({} sequence evaluations)", report.model_calls, report.evaluations);
        println!("result                  {}", if report.pass { "PASS (TV <= bound)" } else { "FAIL (TV > bound)" });
    }
    Ok(if report.pass { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    #[test]
    fn parses_a_check() {
        let cli = Cli::try_parse_from([
            "diffuse",
            "text",
            "check",
            "--target",
            "t.json",
            "--process",
            "uniform",
            "--sampler",
            "pc",
            "--steps",
            "8",
            "--remask",
            "loop:0.55:0.05:0.9:0.1",
        ])
        .unwrap();
        let crate::cli::Command::Text(TextCommand::Check(a)) = cli.command else { panic!("not text check") };
        assert_eq!(a.sampler, SamplerKind::PredictorCorrector);
        assert_eq!(a.remask, Remask::Loop { t_on: 0.55, t_off: 0.05, alpha_on: 0.9, eta: 0.1 });
    }

    #[test]
    fn unknown_names_are_rejected_with_the_valid_ones() {
        let err = Cli::try_parse_from([
            "diffuse",
            "text",
            "check",
            "--target",
            "t.json",
            "--process",
            "uniform",
            "--sampler",
            "magic",
            "--steps",
            "8",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("sampler") && err.contains("ancestral"), "{err}");
    }
}
