//! `diffuse restore train`: trains a restoration model on clean images degraded on the fly.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use diffuse_core::Parameterization;
use diffuse_core::path::PathSpec;
use diffuse_restoration::degrade::Task;
use diffuse_restoration::model::ModelInput;
use diffuse_restoration::pipeline::{
    DEFAULT_TILING, for_model_input, load_clean_images, load_fixed_pairs, mean_scores, restore_planes,
    training_degrader,
};
use diffuse_restoration::sample::SampleOptions;
use diffuse_restoration::train::{MODEL, Recipe, TrainOptions, train};
use diffuse_restoration::{ModelConfig, NetConfig, RestorationModel};

use super::super::Context;
use super::parse_task;

/// `--net` sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetSize {
    /// A few thousand parameters: for tests and smoke runs only.
    Tiny,
    /// `NetConfig::fast()`: 4×4 stem, 64/96/128 channels, one block per level (3.7 M parameters).
    Small,
    /// The default network: 2×2 stem, 32/64/128/128 channels, two blocks per level (6.0 M parameters, ≈ 24 MB).
    Default,
}

/// Arguments of `diffuse restore train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// What to learn to undo: denoise, deblur or lowlight (random draws of that degradation, made on the fly).
    #[arg(long, value_parser = parse_task)]
    pub task: Task,
    /// Folders of clean training images (PNG or JPEG; unreadable or too small files are skipped with a note).
    #[arg(long, required = true, num_args = 1.., value_name = "DIR")]
    pub images: Vec<PathBuf>,
    /// Output folder: model.safetensors + model.json (EMA weights) and checkpoint.safetensors.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Total training steps.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub steps: u64,
    /// Crops per step.
    #[arg(long, default_value_t = 8, value_name = "B")]
    pub batch: usize,
    /// Crop side in pixels (a multiple of the network's multiple).
    #[arg(long, default_value_t = 64, value_name = "P")]
    pub crop: usize,
    /// Learning rate (Adam).
    #[arg(long, default_value_t = 2e-4, value_name = "X")]
    pub lr: f64,
    /// The diffusion path: rddm, resfusion or ir_sde (core's default parameters of that path).
    #[arg(long, default_value = "rddm", value_parser = ["rddm", "resfusion", "ir_sde"])]
    pub path: String,
    /// What the network predicts (default: residual for rddm, resnoise for resfusion, eps for ir_sde), e.g.
    /// residual, eps, residual_noise, resnoise, x0.
    #[arg(long, value_name = "P")]
    pub param: Option<String>,
    /// Network size.
    #[arg(long, value_enum, default_value_t = NetSize::Default)]
    pub net: NetSize,
    /// Start from this model's weights (fine-tuning, e.g. a deblurring model from the denoiser); its network,
    /// path and parameterization replace --net, --path and --param.
    #[arg(long, value_name = "M.safetensors", conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// A non-blind model: it learns to restore the classical inversion of each degradation by its own
    /// parameters (lowlight: the inverse exposure curve; deblur: Wiener deconvolution by the kernel), and is run
    /// with `restore lowlight --exposure E --gamma G` or `restore deblur --blur-sigma S | --kernel K.png`.
    #[arg(long, alias = "known-curve")]
    pub known: bool,
    /// With --known for deblur: the Wiener filter's noise-to-signal ratio.
    #[arg(long, default_value_t = 1e-3, value_name = "X", requires = "known")]
    pub nsr: f64,
    /// Folder of clean validation images: PSNR of the fixed test degradation restored with the model's default
    /// sampler, every --val-every steps and at the end.
    #[arg(long, value_name = "DIR")]
    pub val_images: Option<PathBuf>,
    /// Validate every N steps.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub val_every: u64,
    /// Checkpoints, time limit, resume, force.
    #[command(flatten)]
    pub run: super::super::RunArgs,
}

fn parameterization(path: &str, param: Option<&str>) -> anyhow::Result<Parameterization> {
    let name = param.unwrap_or(match path {
        "resfusion" => "resnoise",
        "ir_sde" => "eps",
        _ => "residual",
    });
    serde_json::from_value(serde_json::Value::String(name.into())).map_err(|_| {
        anyhow::anyhow!("--param: '{name}' is not a parameterization (eps, x0, v, score, velocity, residual, residual_noise, resnoise)")
    })
}

/// Runs `diffuse restore train`.
pub fn run(ctx: &Context, args: &TrainArgs) -> anyhow::Result<ExitCode> {
    let p = &ctx.printer;
    anyhow::ensure!(args.steps > 0, "--steps must be at least 1");
    anyhow::ensure!(args.lr.is_finite() && args.lr > 0.0, "--lr must be a positive number");
    let model_file = args.out.join(MODEL);
    let time_limit = args.run.check(&args.out, MODEL)?;
    let param = parameterization(&args.path, args.param.as_deref())?;
    let spec = PathSpec::default_of(&args.path)?;
    let net = match args.net {
        NetSize::Tiny => NetConfig::tiny(3, 1),
        NetSize::Small => NetConfig::fast(),
        NetSize::Default => NetConfig::default(),
    };
    let mut config = ModelConfig::new(args.task.name(), spec, param, net);
    let init = match &args.init {
        Some(path) => {
            let m =
                RestorationModel::load(path, ctx.device()?).with_context(|| format!("--init {}", path.display()))?;
            let c = m.config();
            config = ModelConfig::new(args.task.name(), c.path.clone(), c.parameterization, c.network.clone());
            Some(m)
        }
        None => None,
    };
    if args.known {
        config.input = match args.task {
            Task::Lowlight => ModelInput::InverseCurve,
            Task::Deblur => {
                anyhow::ensure!(args.nsr.is_finite() && args.nsr > 0.0 && args.nsr < 1.0, "--nsr must be in (0, 1)");
                ModelInput::Wiener { nsr: args.nsr }
            }
            Task::Denoise => anyhow::bail!("--known is for lowlight (a known curve) and deblur (a known kernel)"),
        };
    }
    // A resumed run with another task or input is refused by the checkpoint's recipe (restoration::train).
    let multiple = config.network.multiple();
    anyhow::ensure!(
        args.crop >= multiple && args.crop.is_multiple_of(multiple),
        "--crop {} must be a multiple of the network's {multiple}",
        args.crop
    );
    tch::manual_seed(ctx.global.seed as i64);
    let mut model = RestorationModel::new(config, ctx.device()?)?;
    if let Some(src) = &init {
        model.copy_weights_from(src)?;
    }

    let (images, notes) = load_clean_images(&args.images, args.crop)?;
    for (file, why) in &notes {
        p.warn(format!("skipping {}: {why}", file.display()));
    }
    anyhow::ensure!(!images.is_empty(), "no usable training images in the --images folders");
    p.info(format!(
        "{} training image{}, {} network ({} parameters), {} path predicting {param:?}",
        images.len(),
        if images.len() == 1 { "" } else { "s" },
        format!("{:?}", args.net).to_lowercase(),
        diffuse_restoration::net::parameter_count(model.var_store()),
        args.path
    ));
    let images: Vec<tch::Tensor> = images.into_iter().map(|(_, t)| t).collect();

    let val = match &args.val_images {
        Some(dir) => {
            let (pairs, notes) = load_fixed_pairs(args.task, dir, ctx.global.seed).context("--val-images")?;
            let pairs = for_model_input(pairs, args.task, model.config().input)?;
            for (file, why) in &notes {
                p.warn(format!("skipping {}: {why}", file.display()));
            }
            anyhow::ensure!(!pairs.is_empty(), "{}: no usable validation images", dir.display());
            let (psnr, _) = mean_scores(&pairs, None)?;
            p.info(format!("{} validation images, degraded input {psnr:.2} dB", pairs.len()));
            Some(pairs)
        }
        None => None,
    };
    let mut validate = |m: &RestorationModel, _step: u64| -> diffuse_restoration::Result<f64> {
        let pairs = val.as_deref().unwrap_or_default();
        let opts = SampleOptions { seed: ctx.global.seed, ..SampleOptions::defaults_of(m) };
        let restored = pairs
            .iter()
            .map(|pair| restore_planes(m, &pair.degraded, &opts, DEFAULT_TILING))
            .collect::<diffuse_restoration::Result<Vec<_>>>()?;
        Ok(mean_scores(pairs, Some(&restored))?.0)
    };

    let opts = TrainOptions {
        recipe: Recipe { batch: args.batch, crop: args.crop, lr: args.lr, seed: ctx.global.seed, ..Recipe::default() },
        steps: args.steps,
        checkpoint_every: args.run.checkpoint_every,
        time_limit,
        out: args.out.clone(),
        resume: args.run.resume,
        validate_every: if val.is_some() { args.val_every.max(1) } else { 0 },
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}: cannot create the folder", args.out.display()))?;
    let bar = p.progress(args.steps, "training");
    let mut running = f64::NAN;
    let mut progress = |pr: &diffuse_restoration::train::Progress| {
        running = if running.is_finite() { 0.95 * running + 0.05 * pr.loss } else { pr.loss };
        bar.set_position(pr.step);
        bar.set_message(format!("loss {running:.4}"));
        if let Some(v) = pr.validation {
            bar.suspend(|| p.info(format!("step {}: validation PSNR {v:.2} dB", pr.step)));
        }
    };
    let mut degrade = training_degrader(args.task, model.config().input);
    let start = Instant::now();
    let report = train(
        &mut model,
        &images,
        &mut degrade,
        &opts,
        &mut progress,
        if val.is_some() { Some(&mut validate) } else { None },
    )?;
    bar.finish_and_clear();
    // Record the command that trained the model in its sidecar.
    let command: Vec<String> = std::env::args().collect();
    if let serde_json::Value::Object(map) = &mut model.config_mut().training {
        map.insert("command".into(), serde_json::Value::String(command.join(" ")));
        map.insert("task".into(), serde_json::Value::String(args.task.name().into()));
        if let Some(init) = &args.init {
            map.insert("init".into(), serde_json::Value::String(init.display().to_string()));
        }
        map.insert("seconds".into(), serde_json::json!(start.elapsed().as_secs_f64().round()));
        map.insert("machine".into(), serde_json::Value::String(ctx.machine()));
    }
    model.save(&model_file, true)?;
    let validation = report.validation.map(|v| format!(", validation PSNR {v:.2} dB")).unwrap_or_default();
    super::super::print_trained(&report, start.elapsed().as_secs_f64(), &validation, &model_file);
    Ok(ExitCode::SUCCESS)
}
