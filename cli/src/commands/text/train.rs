//! `diffuse text train`: trains a byte-level masked or uniform diffusion model, or the autoregressive baseline.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use clap::{Args, ValueEnum};
use diffuse_discrete::text::corpus::Corpus;
use diffuse_discrete::text::train::{MODEL, Recipe, TrainOptions, train};
use diffuse_discrete::text::{ModelKind, TextConfig, TextModel};

use super::super::Context;

/// Training objectives (each fixes the model kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Objective {
    /// MDLM: the masked-diffusion ELBO (masked process).
    Mdlm,
    /// The uniform-diffusion ELBO (UDLM/DUO plug-in form, whose optimum is the leave-one-out posterior).
    UniformElbo,
    /// Next-byte cross-entropy: the causal autoregressive baseline on the same transformer.
    Ar,
    /// CDLM consistency training of a masked model (best as fine-tuning: --init a trained model).
    Cdlm,
}

/// Arguments of `diffuse text train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Text files or folders (every non-hidden file; binary files are skipped with a note).
    #[arg(long, required = true, num_args = 1.., value_name = "PATH")]
    pub corpus: Vec<PathBuf>,
    /// Forward process: masked or uniform (must agree with --objective; ignored by ar).
    #[arg(long, default_value = "masked", value_parser = ["masked", "uniform"])]
    pub process: String,
    /// Objective (default: mdlm for masked, uniform-elbo for uniform).
    #[arg(long, value_enum)]
    pub objective: Option<Objective>,
    /// Output folder: model.safetensors + model.json (EMA weights) and checkpoint.safetensors.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Start from this trained model's weights (its network replaces --width/--depth/--heads/--context).
    #[arg(long, value_name = "M.safetensors")]
    pub init: Option<PathBuf>,
    /// CDLM: the gap between t and s (1/8 trains for 8-step sampling).
    #[arg(long, default_value_t = 0.125)]
    pub cdlm_gap: f64,
    /// Model width.
    #[arg(long, default_value_t = 256)]
    pub width: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 4)]
    pub depth: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Context in bytes (also the training sequence length).
    #[arg(long, default_value_t = 128)]
    pub context: usize,
    /// Training steps (the cosine decay spans them).
    #[arg(long, default_value_t = 10_000)]
    pub steps: u64,
    /// Sequences per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Validation bits/byte every N steps (and at the end).
    #[arg(long, default_value_t = 500)]
    pub validate_every: u64,
    /// Checkpoints, time limit, resume, force.
    #[command(flatten)]
    pub run: super::super::RunArgs,
}

/// Runs `diffuse text train`.
pub fn run(ctx: &Context, a: &TrainArgs) -> anyhow::Result<ExitCode> {
    let p = &ctx.printer;
    let objective =
        a.objective.unwrap_or(if a.process == "uniform" { Objective::UniformElbo } else { Objective::Mdlm });
    let kind = match (objective, a.process.as_str()) {
        (Objective::Mdlm, "masked") => ModelKind::Masked,
        (Objective::UniformElbo, "uniform") => ModelKind::Uniform,
        (Objective::Ar, _) => ModelKind::Autoregressive,
        (Objective::Cdlm, "masked") => ModelKind::Masked,
        (o, process) => bail!("--objective {o:?} does not train the {process} process"),
    };
    anyhow::ensure!(a.steps > 0, "--steps must be at least 1");
    let model_file = a.out.join(MODEL);
    let time_limit = a.run.check(&a.out, MODEL)?;
    let corpus = Corpus::read(&a.corpus)?;
    for (file, why) in &corpus.skipped {
        p.warn(format!("skipping {}: {why}", file.display()));
    }
    p.info(format!("corpus: {}", corpus.summary()));
    tch::manual_seed(ctx.global.seed as i64);
    let mut model = match &a.init {
        Some(init) => {
            let m = TextModel::load(init, ctx.device()?)?;
            anyhow::ensure!(
                m.config().kind == kind,
                "--init {}: a {:?} model cannot start {objective:?} training",
                init.display(),
                m.config().kind
            );
            m
        }
        None => TextModel::new(TextConfig::new(kind, a.width, a.depth, a.heads, a.context), ctx.device()?)?,
    };
    let context = model.context();
    let params: i64 = model.var_store().trainable_variables().iter().map(|t| t.numel() as i64).sum();
    p.info(format!("{kind:?} model, {params} parameters, context {context}").to_lowercase());
    let mut recipe = Recipe::new(a.batch, context, a.steps);
    if objective == Objective::Cdlm {
        recipe.consistency_gap = Some(a.cdlm_gap);
    }
    recipe.lr = a.lr;
    recipe.warmup = a.warmup;
    recipe.seed = ctx.global.seed;
    let opts = TrainOptions {
        recipe,
        steps: a.steps,
        checkpoint_every: a.run.checkpoint_every,
        time_limit,
        out: a.out.clone(),
        resume: a.run.resume,
        validate_every: a.validate_every,
    };
    std::fs::create_dir_all(&a.out)
        .map_err(|e| anyhow::anyhow!("{}: cannot create the folder: {e}", a.out.display()))?;
    let bar = p.progress(a.steps, "training");
    let mut running = f64::NAN;
    let start = Instant::now();
    let mut progress = |pr: &diffuse_discrete::text::train::Progress| {
        running = if running.is_finite() { 0.98 * running + 0.02 * pr.bits_per_byte } else { pr.bits_per_byte };
        bar.set_position(pr.step);
        bar.set_message(format!("{running:.3} bits/byte, {:.0} tokens/s", pr.tokens_per_second));
        if let Some(v) = pr.validation {
            bar.suspend(|| p.info(format!("step {}: validation {v:.4} bits/byte", pr.step)));
        }
    };
    let report = train(&mut model, &corpus.train, &corpus.validation, &opts, &mut progress)?;
    bar.finish_and_clear();
    if let serde_json::Value::Object(map) = &mut model.config_mut().training {
        let command: Vec<String> = std::env::args().collect();
        map.insert("command".into(), command.join(" ").into());
        map.insert(
            "corpus".into(),
            serde_json::json!({
                "inputs": a.corpus.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "files": corpus.files.len(),
                "train_bytes": corpus.train.len(),
                "validation_bytes": corpus.validation.len(),
            }),
        );
        if let Some(init) = &a.init {
            map.insert("init".into(), init.display().to_string().into());
        }
        map.insert("seconds".into(), serde_json::json!(start.elapsed().as_secs_f64().round()));
        map.insert("machine".into(), ctx.machine().into());
    }
    model.save(&model_file, true)?;
    println!(
        "trained to step {} in {:.1} s{} ({:.0} tokens/s), last {:.3} bits/byte{}; model written to {}",
        report.step,
        start.elapsed().as_secs_f64(),
        if report.stopped_by_time { " (time limit)" } else { "" },
        report.tokens_per_second,
        report.last_bits_per_byte,
        report.validation.map(|v| format!(", validation {v:.4} bits/byte")).unwrap_or_default(),
        model_file.display()
    );
    Ok(ExitCode::SUCCESS)
}
