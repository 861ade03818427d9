//! `diffuse audio train`: the native score network on speech and noise mixed on the fly.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;

use super::super::Context;

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
    /// enhance (the target is the speech as recorded) or dereverb (every mixture's speech is first reverberated
    /// by one of the --rirs rooms and the target is its direct path, as SGMSE+'s dereverberation models).
    #[arg(long, value_enum, default_value_t = TaskArg::Enhance)]
    pub task: TaskArg,
    /// Folder(s) of room impulse responses (.wav, any rate) for --task dereverb, e.g. from
    /// scripts/make-rirs.py.
    #[arg(long, num_args = 1.., value_name = "DIR")]
    pub rirs: Vec<PathBuf>,
    /// Validation rooms (default: the training rooms).
    #[arg(long, value_name = "DIR")]
    pub val_rirs: Option<PathBuf>,
    /// Reflections within MS milliseconds after the direct path stay in the --task dereverb target (0: the
    /// direct path alone, as SGMSE+'s WSJ0-Reverb; 50: the DNS Challenge's early-reverberation target).
    #[arg(long, default_value_t = 50.0, value_name = "MS")]
    pub early_ms: f64,
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
    /// data-prediction model given by --init through its --crp-steps sampler: "correcting the reverse process"),
    /// or rectified (re-trains the --init model on the (noise, sample) pairs its --pair-solver makes, for few
    /// steps of --crp-solver: Rectified Diffusion), or nft (fine-tunes the --init model towards its own
    /// --pair-solver generations that score well on --nft-reward and away from the bad ones: DiffusionNFT).
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Score)]
    pub objective: ObjectiveArg,
    /// Start from this trained native model (.safetensors + sidecar): its network, σ_d and weights, with a
    /// fresh optimiser. Required by --objective crp.
    #[arg(long, value_name = "MODEL")]
    pub init: Option<PathBuf>,
    /// Noise path of a new model (core's names): ouve (SGMSE+) or sbve (the Schrödinger bridge, which needs
    /// --objective data); a model given by --init keeps its own.
    #[arg(long, value_name = "KIND", default_value = "ouve", conflicts_with = "init")]
    pub path: String,
    /// The sampler --objective crp trains through, and the one --objective rectified makes the model for (a
    /// deterministic solver: dpm++2m, ddim, unipc-bh2, ...); it becomes the model's default.
    #[arg(long, default_value = "dpm++2m", value_name = "SOLVER")]
    pub crp_solver: String,
    /// Its steps.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub crp_steps: usize,
    /// What --objective crp compares with the clean target: spec (squared error on the compressed spectrogram,
    /// as Lay et al.) or snr (negative waveform SNR per mixture, capped at 30 dB: weighs errors as SI-SDR does).
    #[arg(long, value_enum, default_value_t = CrpLossArg::Spec)]
    pub crp_loss: CrpLossArg,
    /// Take the --objective crp gradient by the adjoint ODE with N Runge–Kutta steps (memory of one network call
    /// whatever --crp-steps) instead of backpropagation through the sampler.
    #[arg(long, value_name = "N")]
    pub crp_adjoint: Option<usize>,
    /// The sampler of the --init model that makes the (noise, sample) pairs of --objective rectified and the
    /// generations of --objective nft.
    #[arg(long, default_value = "dpm++2m", value_name = "SOLVER")]
    pub pair_solver: String,
    /// Its steps.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub pair_steps: usize,
    /// The reward --objective nft scores its generations by, against the clean speech.
    #[arg(long, value_enum, default_value_t = RewardArg::Pesq)]
    pub nft_reward: RewardArg,
    /// Generations per mixture for --objective nft (a step scores --batch × this many).
    #[arg(long, default_value_t = 4, value_name = "K")]
    pub nft_group: usize,
    /// β of --objective nft: how far the implicit positive and negative policies stand from the initial model.
    #[arg(long, default_value_t = 1.0, value_name = "BETA")]
    pub nft_beta: f64,
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

/// `--nft-reward` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RewardArg {
    /// Wide-band PESQ.
    Pesq,
    /// Extended STOI.
    Estoi,
    /// SI-SDR.
    SiSdr,
}

/// `--task` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskArg {
    /// Noise removal: the target is the speech as recorded.
    Enhance,
    /// Reverberation and noise removal: the target is the direct path of the --rirs rooms.
    Dereverb,
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
    /// Rectified Diffusion: re-training on the model's own (noise, sample) pairs (Wang et al. 2024).
    Rectified,
    /// DiffusionNFT: reward-weighted fine-tuning on the forward process (Zheng et al. 2025).
    Nft,
}

/// `--crp-loss` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CrpLossArg {
    /// Squared error on the compressed spectrogram.
    Spec,
    /// Negative waveform SNR per mixture.
    Snr,
}

fn parse_range(s: &str) -> anyhow::Result<(f64, f64)> {
    let (a, b) = s.split_once(':').with_context(|| format!("'{s}': expected LOW:HIGH, e.g. -5:20"))?;
    let lo: f64 = a.trim().parse().with_context(|| format!("'{a}' is not a number"))?;
    let hi: f64 = b.trim().parse().with_context(|| format!("'{b}' is not a number"))?;
    anyhow::ensure!(lo <= hi, "'{s}': LOW must not exceed HIGH");
    Ok((lo, hi))
}

pub(super) fn train(ctx: &Context, args: &TrainArgs) -> anyhow::Result<ExitCode> {
    use diffuse_audio::train::{TrainEvent, TrainOptions};
    let p = &ctx.printer;
    let mut opts = TrainOptions::new(args.clean.clone(), args.noise.clone(), args.out.clone());
    opts.val_clean = args.val_clean.clone();
    opts.val_noise = args.val_noise.clone();
    match args.task {
        TaskArg::Enhance => anyhow::ensure!(
            args.rirs.is_empty() && args.val_rirs.is_none(),
            "--rirs and --val-rirs are for --task dereverb (the enhancement target is the speech as recorded)"
        ),
        TaskArg::Dereverb => anyhow::ensure!(!args.rirs.is_empty(), "--task dereverb needs --rirs DIR"),
    }
    opts.rirs = args.rirs.clone();
    opts.val_rirs = args.val_rirs.clone();
    opts.early_ms = args.early_ms;
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
        ObjectiveArg::Rectified => diffuse_audio::train::Objective::Rectified,
        ObjectiveArg::Nft => diffuse_audio::train::Objective::Nft,
    };
    opts.init = args.init.clone();
    opts.model.path = diffuse_core::path::PathSpec::default_of(&args.path).context("--path")?;
    opts.crp_solver = args.crp_solver.clone();
    opts.crp_steps = args.crp_steps;
    opts.crp_adjoint = args.crp_adjoint;
    opts.pair_solver = args.pair_solver.clone();
    opts.pair_steps = args.pair_steps;
    opts.nft_reward = match args.nft_reward {
        RewardArg::Pesq => diffuse_audio::train::Reward::Pesq,
        RewardArg::Estoi => diffuse_audio::train::Reward::Estoi,
        RewardArg::SiSdr => diffuse_audio::train::Reward::SiSdr,
    };
    opts.nft_group = args.nft_group;
    opts.nft_beta = args.nft_beta;
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
