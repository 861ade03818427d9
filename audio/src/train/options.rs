//! The settings of a training run and their checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tch::Device;

use super::Mixing;
use crate::config::ModelConfig;
use crate::net::NetConfig;
use crate::{Error, Result};

/// Most mixtures per training step (`--batch`).
pub const MAX_BATCH: usize = 4096;
/// Longest training crop in STFT frames (`--crop-frames`; 4096 frames are 33 s at 16 kHz).
pub const MAX_CROP_FRAMES: usize = 4096;
/// What the network learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The reference's denoising score matching (the network estimates the noise; the model outputs the score).
    Score,
    /// Data prediction with EDM-style preconditioning (the model outputs x̂0).
    Data,
    /// Fine-tuning a data-prediction model through its N-step sampler ("correcting the reverse process").
    Crp,
    /// Rectified Diffusion (Wang et al. 2024): re-training a data-prediction model on matched (noise, sample)
    /// pairs that its own sampler makes, so that few first-order steps follow its trajectories.
    Rectified,
    /// DiffusionNFT (Zheng et al. 2025): fine-tuning a data-prediction model on the forward process towards its
    /// own generations that score well on a reward and away from those that score badly.
    Nft,
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Objective::Score => "score",
            Objective::Data => "data",
            Objective::Crp => "crp",
            Objective::Rectified => "rectified",
            Objective::Nft => "nft",
        })
    }
}

/// What the `crp` objective compares with the clean target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrpLoss {
    /// `mean ((x̂ − x0)/σ_d)²` on the compressed spectrogram the network sees (Lay et al. 2023).
    Spec,
    /// The negative SNR of the waveform (inverse transform and iSTFT of x̂ against the clean crop), per mixture
    /// and soft-capped at 30 dB: `10·log10(‖s − ŝ‖² + 10⁻³‖s‖²) − 10·log10 ‖s‖²`. It weighs coefficients as
    /// SI-SDR does (by their linear energy) instead of the compressed domain's emphasis on quiet ones.
    Snr,
}

impl std::fmt::Display for CrpLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CrpLoss::Spec => "spec",
            CrpLoss::Snr => "snr",
        })
    }
}

/// Everything a training run needs.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Folders of clean speech (searched recursively for .wav).
    pub clean: Vec<PathBuf>,
    /// Folders of noise.
    pub noise: Vec<PathBuf>,
    /// Folders of room impulse responses (`--rirs`): when given, every mixture's speech is reverberated by one
    /// of them and the target is its direct path, so the model learns dereverberation (with the noise on top).
    pub rirs: Vec<PathBuf>,
    /// Validation rooms (defaults to the training rooms).
    pub val_rirs: Option<PathBuf>,
    /// Reflections within this many milliseconds after the direct path stay in the dereverberation target
    /// (0: the direct path alone, as SGMSE+'s WSJ0-Reverb; 50: the DNS Challenge's early-reverberation target).
    pub early_ms: f64,
    /// Validation clean speech (optional; no validation without it).
    pub val_clean: Option<PathBuf>,
    /// Validation noise (defaults to the training noise).
    pub val_noise: Option<PathBuf>,
    /// Output folder: `model.safetensors` + `model.json` (EMA weights), `checkpoint.safetensors`, `log.jsonl`.
    pub out: PathBuf,
    /// The model's settings (STFT, transform, SDE, sampler defaults) and its network.
    pub model: ModelConfig,
    /// Optimisation steps in total (a resumed run continues up to this count).
    pub steps: u64,
    /// Mixtures per step.
    pub batch: usize,
    /// STFT frames per training crop (a multiple of the network's frame multiple).
    pub crop_frames: usize,
    /// SNR range of the mixtures in dB.
    pub snr_db: (f64, f64),
    /// Gains down to −this many dB are applied after normalisation.
    pub gain_jitter_db: f64,
    /// Random spectral shaping: speech and noise of each mixture pass through their own random second-order
    /// filter (RNNoise's augmentation, [`shape_spectrum`]), so the network meets more timbres and noise colours.
    pub spectral_shaping: bool,
    /// What the network learns.
    pub objective: Objective,
    /// Start from this trained native model (its network, σ_d and weights; fresh optimiser state). Required by
    /// the `crp` objective.
    pub init: Option<PathBuf>,
    /// The sampler the `crp` objective trains through: a deterministic diffuse-core solver by name.
    pub crp_solver: String,
    /// Its steps (network evaluations for first-order and multistep solvers).
    pub crp_steps: usize,
    /// What the `crp` objective compares with the clean target.
    pub crp_loss: CrpLoss,
    /// The `crp` gradient by the adjoint ODE with this many Runge–Kutta steps ([`super::Crp::adjoint`]: memory of
    /// one network call whatever `crp_steps`) instead of backpropagation through the sampler.
    pub crp_adjoint: Option<usize>,
    /// The sampler that makes the `rectified` objective's (noise, sample) pairs and the `nft` objective's
    /// generations from the `--init` model: a deterministic diffuse-core solver by name, with its steps.
    pub pair_solver: String,
    /// Its steps.
    pub pair_steps: usize,
    /// The `nft` objective's reward.
    pub nft_reward: super::Reward,
    /// Its generations per mixture (with `batch` mixtures a step scores `batch × nft_group` generations).
    pub nft_group: usize,
    /// Its β: the distance of the implicit positive and negative policies from the frozen initial model.
    pub nft_beta: f64,
    /// σ_d of the data objective's preconditioning (standard deviation of `x0 − y` per real coordinate); `None`:
    /// measured on 256 training mixtures before the first step.
    pub sigma_data: Option<f64>,
    /// Adam learning rate.
    pub lr: f64,
    /// The learning rate rises linearly from 0 over this many steps.
    pub warmup: u64,
    /// Stop (with a checkpoint) after the first step that ends past this wall time of this call.
    pub time_limit: Option<Duration>,
    /// EMA decay per step.
    pub ema_decay: f64,
    /// Gradients are clipped to this global norm.
    pub grad_clip: f64,
    /// A checkpoint (and the model) is written every this many steps.
    pub checkpoint_every: u64,
    /// Validation every this many steps (default: one epoch, a pass over the clean clips).
    pub val_every: Option<u64>,
    /// Validation mixtures.
    pub val_items: usize,
    /// Continue from `out/checkpoint.safetensors`.
    pub resume: bool,
    /// Start over even if `out` holds a checkpoint.
    pub force: bool,
    /// Seed of every random draw.
    pub seed: u64,
    /// Where the network trains.
    pub device: Device,
}

impl TrainOptions {
    /// Defaults for the given data and output (the network and settings of the shipped model).
    pub fn new(clean: Vec<PathBuf>, noise: Vec<PathBuf>, out: PathBuf) -> Self {
        let mut model = ModelConfig::sgmse_16k();
        model.network = Some(NetConfig::small());
        model.pad.multiple = 64;
        // A fast default sampler for the trained model: 10 network evaluations (the pc sampler stays available).
        model.sampler = crate::config::SamplerDefaults {
            name: "dpm++2m".into(),
            steps: 10,
            snr: 0.5,
            corrector_steps: 1,
            schedule: None,
        };
        TrainOptions {
            clean,
            noise,
            rirs: Vec::new(),
            val_rirs: None,
            early_ms: 50.0,
            val_clean: None,
            val_noise: None,
            out,
            model,
            steps: 20_000,
            batch: 8,
            crop_frames: 128,
            snr_db: (-5.0, 20.0),
            gain_jitter_db: 6.0,
            spectral_shaping: false,
            objective: Objective::Score,
            init: None,
            crp_solver: "dpm++2m".into(),
            crp_steps: 10,
            crp_loss: CrpLoss::Spec,
            crp_adjoint: None,
            pair_solver: "dpm++2m".into(),
            pair_steps: 10,
            nft_reward: super::Reward::Pesq,
            nft_group: 4,
            nft_beta: 1.0,
            sigma_data: None,
            lr: 5e-4,
            warmup: 0,
            time_limit: None,
            ema_decay: 0.999,
            grad_clip: 1.0,
            checkpoint_every: 250,
            val_every: None,
            val_items: 16,
            resume: false,
            force: false,
            seed: 0,
            device: Device::Cpu,
        }
    }

    /// The mixing fields.
    pub fn mixing(&self) -> Mixing {
        Mixing { snr_db: self.snr_db, gain_jitter_db: self.gain_jitter_db, spectral_shaping: self.spectral_shaping }
    }

    pub(super) fn validate(&self) -> Result<()> {
        let net = self.model.network.as_ref().ok_or_else(|| Error::invalid("network", "no network given"))?;
        // The objective decides what the network outputs (the model's own output kind is the default's).
        let mut model = self.model.clone();
        if self.objective != Objective::Score {
            model.output.kind = crate::config::OutputKind::DataPrediction;
            if let Some(n) = model.network.as_mut() {
                n.sigma_data = n.sigma_data.or(Some(1.0));
            }
        }
        model.validate(Path::new("(training settings)"))?;
        if self.crop_frames == 0 || !self.crop_frames.is_multiple_of(net.frame_multiple()) {
            return Err(Error::invalid(
                "crop frames",
                format!("{} is not a positive multiple of {}", self.crop_frames, net.frame_multiple()),
            ));
        }
        if self.batch == 0 || self.steps == 0 || self.checkpoint_every == 0 {
            return Err(Error::invalid("batch/steps/checkpoint", "must be at least 1"));
        }
        // A batch × crop the size of a small corpus already fills this machine's memory; more is a typo.
        diffuse_core::limits::at_most("batch", self.batch, MAX_BATCH)?;
        diffuse_core::limits::at_most("crop_frames", self.crop_frames, MAX_CROP_FRAMES)?;
        diffuse_core::limits::at_most("crp_steps", self.crp_steps, diffuse_core::limits::MAX_NFE)?;
        if !(self.early_ms.is_finite() && (0.0..=1000.0).contains(&self.early_ms)) {
            return Err(Error::invalid("early ms", format!("need 0 to 1000 ms, got {}", self.early_ms)));
        }
        if !(self.snr_db.0 <= self.snr_db.1) || !self.snr_db.0.is_finite() || !self.snr_db.1.is_finite() {
            return Err(Error::invalid("snr", format!("need LOW ≤ HIGH, got {:?}", self.snr_db)));
        }
        if let Some(sd) = self.sigma_data
            && !(sd.is_finite() && sd > 0.0)
        {
            return Err(Error::invalid("sigma data", format!("must be positive, got {sd}")));
        }
        if matches!(self.objective, Objective::Crp | Objective::Rectified | Objective::Nft) && self.init.is_none() {
            return Err(Error::invalid(
                "init",
                format!(
                    "the {} objective fine-tunes a trained data-prediction model: pass it with --init",
                    self.objective
                ),
            ));
        }
        if self.objective == Objective::Nft
            && (self.nft_group < 2 || !(self.nft_beta.is_finite() && self.nft_beta > 0.0))
        {
            return Err(Error::invalid(
                "nft",
                format!(
                    "need at least 2 generations per mixture and β > 0, got {} and {}",
                    self.nft_group, self.nft_beta
                ),
            ));
        }
        if matches!(self.objective, Objective::Rectified | Objective::Nft) {
            if self.pair_steps == 0 || self.crp_steps == 0 {
                return Err(Error::invalid(
                    "rectified",
                    "the pair sampler and the model's sampler need at least 1 step",
                ));
            }
            diffuse_core::limits::at_most("pair steps", self.pair_steps, diffuse_core::limits::MAX_NFE)?;
        }
        if self.objective == Objective::Crp {
            if self.crp_steps == 0 {
                return Err(Error::invalid("crp steps", "need at least 1"));
            }
            if let Some(n) = self.crp_adjoint {
                diffuse_core::limits::at_most("crp adjoint steps", n, diffuse_core::limits::MAX_NFE)?;
                if n == 0 {
                    return Err(Error::invalid("crp adjoint steps", "need at least 1"));
                }
            }
        }
        if !(self.lr > 0.0
            && (0.0..1.0).contains(&self.ema_decay)
            && self.grad_clip > 0.0
            && self.gain_jitter_db >= 0.0)
        {
            return Err(Error::invalid("optimiser", "need lr > 0, 0 ≤ ema decay < 1, grad clip > 0, gain jitter ≥ 0"));
        }
        Ok(())
    }
}
