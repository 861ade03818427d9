//! `diffuse pose train`: trains the category-level model on procedural scans made on the fly.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use diffuse_pose::category::model::{CategoryModel, CategoryModelConfig};
use diffuse_pose::category::shapes::TEST_SEEDS;
use diffuse_pose::category::train::{MODEL, Recipe, TrainOptions, VALIDATION_SEEDS, make_pool, train};

use super::super::Context;
use super::parse_categories;

/// Arguments of `diffuse pose train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Categories to learn: `all` or a comma-separated list (bottle, bowl, can, mug, box, laptop).
    #[arg(long, default_value = "all", value_name = "all|NAMES")]
    pub category: String,
    /// Output folder: model.safetensors + model.json (EMA weights) and checkpoint.safetensors.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Total training steps.
    #[arg(long, default_value_t = 6000, value_name = "N")]
    pub steps: u64,
    /// Boxes per step.
    #[arg(long, default_value_t = Recipe::default().batch, value_name = "B")]
    pub batch: usize,
    /// Peak learning rate (AdamW, warm-up then cosine decay).
    #[arg(long, default_value_t = Recipe::default().lr, value_name = "X")]
    pub lr: f64,
    /// Training scans per category (procedural instances, one scan each, made before the first step).
    #[arg(long, default_value_t = Recipe::default().scenes_per_category, value_name = "N")]
    pub scenes: usize,
    /// Validation scans per category (instances never used in training, nor in the benchmark).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub val_scenes: usize,
    /// Validate every N steps (and at the end).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub val_every: u64,
    /// Checkpoints, time limit, resume, force.
    #[command(flatten)]
    pub run: super::super::RunArgs,
}

/// Runs `diffuse pose train`.
pub fn run(ctx: &Context, args: &TrainArgs) -> anyhow::Result<ExitCode> {
    let p = &ctx.printer;
    anyhow::ensure!(args.steps > 0, "--steps must be at least 1");
    anyhow::ensure!(args.scenes > 0, "--scenes must be at least 1");
    anyhow::ensure!(args.lr.is_finite() && args.lr > 0.0, "--lr must be a positive number");
    let categories = parse_categories(&args.category)?;
    let model_file = args.out.join(MODEL);
    let time_limit = args.run.check(&args.out, MODEL)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("{}: cannot create the folder: {e}", args.out.display()))?;
    let start = Instant::now();
    let recipe = Recipe {
        batch: args.batch,
        lr: args.lr,
        scenes_per_category: args.scenes,
        seed: ctx.global.seed,
        ..Recipe::default()
    };
    let total = (args.scenes + args.val_scenes) * categories.len();
    let bar = p.progress(total as u64, "making scans");
    let margin = CategoryModelConfig::new(categories.clone()).table_margin;
    let pool = make_pool(margin, false, &categories, args.scenes, 0, recipe.seed, &mut |done, _| {
        bar.set_position(done as u64)
    })?;
    let validation =
        make_pool(margin, true, &categories, args.val_scenes, VALIDATION_SEEDS, recipe.seed ^ 1, &mut |done, _| {
            bar.set_position((args.scenes * categories.len() + done) as u64)
        })?;
    bar.finish_and_clear();
    debug_assert!(VALIDATION_SEEDS + args.val_scenes as u64 <= TEST_SEEDS);
    p.info(format!(
        "{} training and {} validation scans of {} made in {:.0} s",
        pool.len(),
        validation.len(),
        categories.iter().map(|c| c.name()).collect::<Vec<_>>().join(", "),
        start.elapsed().as_secs_f64()
    ));
    tch::manual_seed(ctx.global.seed as i64);
    let mut model = CategoryModel::new(CategoryModelConfig::new(categories.clone()), ctx.device()?)?;
    let command: Vec<String> = std::env::args().collect();
    model.config_mut().training = serde_json::json!({
        "command": command.join(" "),
        "machine": ctx.machine(),
        "data": format!(
            "procedural instances, seeds 0..{} per category for training and {VALIDATION_SEEDS}.. for validation \
             (test instances start at {TEST_SEEDS} and are never used), one table scan each",
            args.scenes
        ),
    });
    let opts = TrainOptions {
        recipe,
        steps: args.steps,
        checkpoint_every: args.run.checkpoint_every,
        time_limit,
        out: args.out.clone(),
        resume: args.run.resume,
        validate_every: args.val_every,
    };
    let bar = p.progress(args.steps, "training");
    let mut running = f64::NAN;
    let mut progress = |pr: &diffuse_pose::category::train::Progress| {
        running = if running.is_finite() { 0.98 * running + 0.02 * pr.loss } else { pr.loss };
        bar.set_position(pr.step);
        bar.set_message(format!("loss {running:.4}"));
        if let Some(v) = pr.validation {
            bar.suspend(|| p.info(format!("step {}: validation score {v:.3} (mean of IoU50, 10°5cm, 5°2cm)", pr.step)));
        }
    };
    let report = train(&mut model, &pool, &validation, &opts, &mut progress)?;
    bar.finish_and_clear();
    if let serde_json::Value::Object(map) = &mut model.config_mut().training {
        map.insert("seconds".into(), serde_json::json!(start.elapsed().as_secs_f64().round()));
        map.insert("validation_score".into(), serde_json::json!(report.validation));
    }
    model.save(&model_file, true)?;
    let validation = report.validation.map(|v| format!(", validation score {v:.3}")).unwrap_or_default();
    super::super::print_trained(&report, start.elapsed().as_secs_f64(), &validation, &model_file);
    Ok(ExitCode::SUCCESS)
}
