//! Training a native network ([`crate::net::ScoreNet`]) on the OUVE path: t ~ U(t_eps, 1), `x_t = e^{−θt}x0 +
//! (1 − e^{−θt})y + σ(t)z` with complex z (variance ½ per part), with one of two objectives ([`Objective`]):
//! - `score`: the reference's denoising score-matching loss (sgmse `ScoreModel._step`, loss type
//!   "score_matching"), `mean_batch ½·Σ|σ(t)·score + z|²`, which for the network's score `−ẑ/σ` is `½·Σ|z − ẑ|²`;
//! - `data`: data prediction with EDM-style preconditioning ([`crate::net::DataPrecond`]), loss
//!   `mean ((x̂0 − x0)/c_out(t))²` over batch and coefficients, minimised by the conditional mean `E[x0 | x_t, y]`.
//!   The model's sidecar says `output.kind: data_prediction`; core's solvers take x̂0 directly, and the PC sampler
//!   converts it to the score `−(x_t − e^{−θt}x̂0 − (1 − e^{−θt})y)/σ²`;
//! - `crp`: "correcting the reverse process" (Lay et al. 2023, *Single and few-step diffusion for generative
//!   speech enhancement*), a second stage that fine-tunes a data-prediction model (`--init`) through the sampler it
//!   will run: from the prior `x_T = y + σ(1)z`, the N-step solver's output x̂ (gradients through every network
//!   call, [`diffuse_core::solvers::sample_differentiable`]) is compared with the clean target,
//!   `mean ((x̂ − x0)/σ_d)²`. It removes the prior mismatch and the discretisation error of that sampler and turns
//!   its output from one posterior sample into an estimate trained for the target.
//!
//! Data are mixed on the fly: a random crop of a clean clip plus a random crop of a noise clip at an SNR drawn
//! uniformly from a range, normalised by the mixture's peak as the pipeline does, then both scaled by a random
//! gain (the network thus also sees the quieter stretches that whole-file normalisation gives long files).
//! Optimiser: Adam (written here so that its moments go into checkpoints and `--resume` continues exactly),
//! global gradient-norm clipping, an exponential moving average of the weights (the EMA weights are the model).
//! Every random draw comes from the seed and the step number, so a run is reproducible and a resumed run
//! continues as if it had not stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diffuse_core::seed::mix64;
use tch::{Device, Kind, Tensor, nn};

use crate::config::{ModelConfig, OutputKind, SdeConfig, sidecar_path};
use crate::net::{NetConfig, ScoreNet, ouve_sigma};
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
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Objective::Score => "score",
            Objective::Data => "data",
            Objective::Crp => "crp",
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
            t_eps: 0.03,
        };
        TrainOptions {
            clean,
            noise,
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

    fn validate(&self) -> Result<()> {
        let net = self.model.network.as_ref().ok_or_else(|| Error::invalid("network", "no network given"))?;
        self.model.validate(Path::new("(training settings)"))?;
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
        if !(self.snr_db.0 <= self.snr_db.1) || !self.snr_db.0.is_finite() || !self.snr_db.1.is_finite() {
            return Err(Error::invalid("snr", format!("need LOW ≤ HIGH, got {:?}", self.snr_db)));
        }
        if let Some(sd) = self.sigma_data
            && !(sd.is_finite() && sd > 0.0)
        {
            return Err(Error::invalid("sigma data", format!("must be positive, got {sd}")));
        }
        if self.objective == Objective::Crp {
            if self.init.is_none() {
                return Err(Error::invalid(
                    "init",
                    "the crp objective fine-tunes a trained data-prediction model: pass it with --init",
                ));
            }
            if self.crp_steps == 0 {
                return Err(Error::invalid("crp steps", "need at least 1"));
            }
        }
        if !matches!(self.model.sde, SdeConfig::Ouve { .. }) {
            return Err(Error::invalid("sde", "training supports OUVE"));
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

/// A counter-based random stream (SplitMix64), so draws depend only on (seed, step, item).
#[derive(Debug, Clone)]
pub struct Draws(u64);

impl Draws {
    /// The stream of `key`.
    pub fn new(key: u64) -> Self {
        Draws(mix64(key))
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

/// Clips of one role (clean or noise) at the model rate, mono.
#[derive(Debug, Default)]
pub struct ClipSet {
    /// The clips.
    pub clips: Vec<Vec<f32>>,
    /// Their files.
    pub files: Vec<PathBuf>,
    /// Files skipped, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Files resampled to the model rate, by original rate.
    pub resampled: BTreeMap<u32, usize>,
}

impl ClipSet {
    /// Reads every .wav under `dirs` (sorted), mixing channels down and resampling to `rate`. Unreadable and
    /// silent files are skipped and listed; an empty or unreadable folder, or one with no usable clip, is an
    /// error naming it.
    pub fn load(dirs: &[PathBuf], rate: u32, role: &str) -> Result<Self> {
        let mut set = ClipSet::default();
        for dir in dirs {
            if !dir.is_dir() {
                return Err(Error::data(dir, format!("the {role} folder does not exist or is not a folder")));
            }
            let mut files = Vec::new();
            crate::wav::collect_wavs(dir, &mut files)?;
            if files.is_empty() {
                return Err(Error::data(dir, format!("no .wav files in the {role} folder")));
            }
            for f in files {
                match crate::wav::read_wav(&f) {
                    Ok(audio) => {
                        let n = audio.len();
                        let ch = audio.channels.len().max(1) as f32;
                        let mono: Vec<f32> =
                            (0..n).map(|i| audio.channels.iter().map(|c| c[i]).sum::<f32>() / ch).collect();
                        let mono = if audio.sample_rate != rate {
                            *set.resampled.entry(audio.sample_rate).or_default() += 1;
                            crate::resample::resample(&mono, audio.sample_rate, rate)?
                        } else {
                            mono
                        };
                        if crate::transform::norm_factor(&mono).is_none() {
                            set.skipped.push((f, "silent".into()));
                            continue;
                        }
                        set.clips.push(mono);
                        set.files.push(f);
                    }
                    Err(e) => set.skipped.push((f, e.to_string())),
                }
            }
        }
        if set.clips.is_empty() {
            let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            return Err(Error::data(
                dirs.first().cloned().unwrap_or_default(),
                format!("no usable {role} clip in {} ({} files skipped)", names.join(", "), set.skipped.len()),
            ));
        }
        Ok(set)
    }

    /// Clips shorter than `len` samples.
    pub fn shorter_than(&self, len: usize) -> usize {
        self.clips.iter().filter(|c| c.len() < len).count()
    }

    /// Total duration in seconds at `rate`.
    pub fn seconds(&self, rate: u32) -> f64 {
        self.clips.iter().map(Vec::len).sum::<usize>() as f64 / f64::from(rate)
    }
}

/// Filters `x` in place by H(z) = (1 + r1 z⁻¹ + r2 z⁻²) / (1 + r3 z⁻¹ + r4 z⁻²) with each r uniform in
/// [−3/8, 3/8] (Valin, "A hybrid DSP/deep learning approach to real-time full-band speech enhancement", 2018):
/// up to about ±17 dB of tilt or resonance; the poles stay inside the unit circle for every draw.
pub fn shape_spectrum(x: &mut [f32], draws: &mut Draws) {
    let mut r = [0.0f64; 4];
    for v in &mut r {
        *v = 0.75 * draws.uniform() - 0.375;
    }
    let (mut x1, mut x2, mut y1, mut y2) = (0.0f64, 0.0, 0.0, 0.0);
    for v in x.iter_mut() {
        let xn = f64::from(*v);
        let yn = xn + r[0] * x1 + r[1] * x2 - r[2] * y1 - r[3] * y2;
        (x2, x1, y2, y1) = (x1, xn, y1, yn);
        *v = yn as f32;
    }
}

/// How [`mix`] draws a mixture (the mixing fields of [`TrainOptions`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Mixing {
    /// SNR range in dB.
    pub snr_db: (f64, f64),
    /// Gains down to −this many dB are applied after normalisation.
    pub gain_jitter_db: f64,
    /// Speech and noise are first shaped by [`shape_spectrum`].
    pub spectral_shaping: bool,
}

impl Mixing {
    /// The validation mixtures: SNR uniform in [0, 10] dB, no gain jitter, no shaping.
    pub const VALIDATION: Mixing = Mixing { snr_db: (0.0, 10.0), gain_jitter_db: 0.0, spectral_shaping: false };
}

/// One mixture: (clean, noisy), both `len` samples, normalised by the mixture's peak and scaled by the gain;
/// with spectral shaping the target is the shaped speech.
pub fn mix(clean: &ClipSet, noise: &ClipSet, len: usize, how: Mixing, draws: &mut Draws) -> (Vec<f32>, Vec<f32>) {
    let crop = |clip: &[f32], draws: &mut Draws, tile: bool| -> Vec<f32> {
        if clip.len() >= len {
            let start = draws.below(clip.len() - len + 1);
            clip[start..start + len].to_vec()
        } else if tile {
            let start = draws.below(clip.len());
            (0..len).map(|k| clip[(start + k) % clip.len()]).collect()
        } else {
            // Short clean clips are zero-padded at a random offset (sgmse pads short clips too).
            let mut out = vec![0.0; len];
            let off = draws.below(len - clip.len() + 1);
            out[off..off + clip.len()].copy_from_slice(clip);
            out
        }
    };
    let energy = |x: &[f32]| x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len().max(1) as f64;
    // A crop that is (nearly) silence cannot set an SNR: try a few others.
    let mut c = Vec::new();
    for _ in 0..8 {
        let idx = draws.below(clean.clips.len());
        c = crop(&clean.clips[idx], draws, false);
        if energy(&c) > 1e-7 {
            break;
        }
    }
    let mut n = crop(&noise.clips[draws.below(noise.clips.len())], draws, true);
    if how.spectral_shaping {
        shape_spectrum(&mut c, draws);
        shape_spectrum(&mut n, draws);
    }
    let snr = how.snr_db.0 + (how.snr_db.1 - how.snr_db.0) * draws.uniform();
    let (pc, pn) = (energy(&c), energy(&n).max(1e-20));
    let k = if pc > 0.0 { (pc / (pn * 10f64.powf(snr / 10.0))).sqrt() } else { 0.0 } as f32;
    let noisy: Vec<f32> = c.iter().zip(&n).map(|(a, b)| a + k * b).collect();
    let peak = noisy.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-8);
    let gain = 10f64.powf(-how.gain_jitter_db * draws.uniform() / 20.0) as f32 / peak;
    (c.iter().map(|v| v * gain).collect(), noisy.iter().map(|v| v * gain).collect())
}

/// Transformed spectrograms `[B, 2, F, T]` of a batch of waveforms `[B, L]` with libtorch's STFT, on the
/// waveforms' device (the same values as this crate's [`crate::stft::Stft`] and transform, up to float rounding).
pub fn spectrogram_batch_torch(waves: &Tensor, config: &ModelConfig) -> Result<Tensor> {
    let n_fft = config.stft.n_fft as i64;
    let window = stft_window(config, waves.device())?;
    // Centred frames by reflect padding here and an uncentred STFT: tch passes `align_to_window` as a set value,
    // which libtorch refuses together with `center = true`.
    let padded =
        waves.f_to_kind(Kind::Float)?.f_unsqueeze(1)?.f_reflection_pad1d([n_fft / 2, n_fft / 2])?.f_squeeze_dim(1)?;
    let z = padded.f_stft_center(
        n_fft,
        config.stft.hop as i64,
        n_fft,
        Some(&window),
        false,
        "constant",
        false,
        true,
        true,
        false,
    )?;
    let ri = z.f_view_as_real()?.f_permute([0, 3, 1, 2])?.f_contiguous()?;
    config.transform.forward_tensor(&ri)
}

/// `[B, L]` tensors of the clean and noisy waveforms of a batch.
fn wave_batch(pairs: &[(Vec<f32>, Vec<f32>)]) -> Result<(Tensor, Tensor)> {
    let shape = [pairs.len() as i64, pairs.first().map_or(0, |p| p.0.len()) as i64];
    let clean: Vec<f32> = pairs.iter().flat_map(|p| p.0.iter().copied()).collect();
    let noisy: Vec<f32> = pairs.iter().flat_map(|p| p.1.iter().copied()).collect();
    Ok((Tensor::from_slice(&clean).f_view(shape)?, Tensor::from_slice(&noisy).f_view(shape)?))
}

/// A training input on the path: time `[B]`, the complex noise drawn and `x_t`.
struct Perturbed {
    t: Tensor,
    z: Tensor,
    x_t: Tensor,
}

/// Draws t ~ U(t_eps, 1) `[B]` and the complex noise z (variance ½ per part) from libtorch's generator and
/// returns them with `x_t`.
fn perturb(config: &ModelConfig, x0: &Tensor, y: &Tensor) -> Result<Perturbed> {
    let SdeConfig::Ouve { theta, sigma_min, sigma_max } = config.sde else {
        return Err(Error::invalid("sde", "training supports OUVE"));
    };
    let b = x0.size()[0];
    let t_eps = config.sampler.t_eps;
    let opts = (Kind::Float, x0.device());
    let t = Tensor::f_rand([b], opts)?.f_mul_scalar(1.0 - t_eps)?.f_add_scalar(t_eps)?;
    let sigma = ouve_sigma(&t, theta, sigma_min, sigma_max)?.f_view([b, 1, 1, 1])?;
    let alpha = t.f_mul_scalar(-theta)?.f_exp()?.f_view([b, 1, 1, 1])?;
    let mean = x0.f_mul(&alpha)?.f_add(&y.f_mul(&alpha.f_neg()?.f_add_scalar(1.0)?)?)?;
    let z = Tensor::f_randn(x0.size(), opts)?.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?;
    let x_t = mean.f_add(&z.f_mul(&sigma)?)?;
    Ok(Perturbed { t, z, x_t })
}

/// The denoising score-matching loss of a batch (sgmse "score_matching" for OUVE): returns the mean over the
/// batch of `½·Σ|z − ẑ|²`. Noise and times are drawn from libtorch's generator (seed it first).
pub fn dsm_loss(net: &ScoreNet, config: &ModelConfig, x0: &Tensor, y: &Tensor) -> Result<Tensor> {
    let Perturbed { t, z, x_t } = perturb(config, x0, y)?;
    let zhat = net.forward(&Tensor::f_cat(&[&x_t, y], 1)?, &t)?;
    let err = z.f_sub(&zhat)?;
    Ok(err.f_square()?.f_sum_dim_intlist(Some(&[1i64, 2, 3][..]), false, None)?.f_mul_scalar(0.5)?.f_mean(None)?)
}

/// The data-prediction loss of a batch: `mean ((x̂0 − x0)/c_out)²` over every coefficient, with x̂0 the
/// preconditioned network's estimate ([`crate::net::DataPrecond`]; EDM's weighting λ(t) = 1/c_out², so F's target
/// has unit variance at every t). Its minimiser is the conditional mean `E[x0 | x_t, y]`. Noise and times are drawn
/// from libtorch's generator (seed it first).
pub fn data_loss(net: &ScoreNet, config: &ModelConfig, x0: &Tensor, y: &Tensor) -> Result<Tensor> {
    let SdeConfig::Ouve { theta, sigma_min, sigma_max } = config.sde else {
        return Err(Error::invalid("sde", "training supports OUVE"));
    };
    let Perturbed { t, x_t, .. } = perturb(config, x0, y)?;
    let (x0_hat, p) = net.denoise(&x_t, y, &t, (theta, sigma_min, sigma_max))?;
    Ok(x0_hat.f_sub(x0)?.f_div(&p.c_out)?.f_square()?.f_mean(Kind::Float)?)
}

/// A network being trained, seen as a core data-prediction denoiser (its calls keep the autograd graph).
struct NetDenoiser<'a> {
    net: &'a ScoreNet,
    sde: (f64, f64, f64),
}

impl diffuse_core::denoiser::Denoiser for NetDenoiser<'_> {
    fn parameterization(&self) -> diffuse_core::param::Parameterization {
        diffuse_core::param::Parameterization::Data
    }

    fn predict(
        &self,
        x: &Tensor,
        t: f64,
        cond: &diffuse_core::denoiser::Conditioning,
    ) -> diffuse_core::Result<diffuse_core::param::Prediction> {
        let y = cond.anchor.as_ref().ok_or_else(|| diffuse_core::Error::invalid("conditioning", "need y"))?;
        let tt = Tensor::f_full([x.size()[0]], t, (Kind::Float, x.device()))?;
        let (x0, _) = self.net.denoise(x, y, &tt, self.sde).map_err(|e| match e {
            Error::Torch(t) => diffuse_core::Error::Torch(t),
            other => diffuse_core::Error::invalid("network", other.to_string()),
        })?;
        Ok(diffuse_core::param::Prediction::Data(x0))
    }
}

/// The `crp` loss ([`CrpLoss`]) of the output x̂ of `sampler` run from the prior `y + σ(1)z` (z complex, variance ½
/// per part, from libtorch's generator), differentiable through every network call.
pub fn crp_loss(
    net: &ScoreNet,
    config: &ModelConfig,
    sampler: &crate::sampling::CoreSampler,
    loss: CrpLoss,
    x0: &Tensor,
    y: &Tensor,
) -> Result<Tensor> {
    let SdeConfig::Ouve { theta, sigma_min, sigma_max } = config.sde else {
        return Err(Error::invalid("sde", "training supports OUVE"));
    };
    let sd = net.config().sigma_data.ok_or_else(|| Error::invalid("network", "crp needs a data-prediction network"))?;
    let z = Tensor::f_randn(x0.size(), (Kind::Float, x0.device()))?.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?;
    let x_t = sampler.prior_with(y, &z)?;
    let denoiser = NetDenoiser { net, sde: (theta, sigma_min, sigma_max) };
    let out = sampler.solve_differentiable(&denoiser, y, &x_t)?;
    match loss {
        CrpLoss::Spec => Ok(out.f_sub(x0)?.f_div_scalar(sd)?.f_square()?.f_mean(Kind::Float)?),
        CrpLoss::Snr => {
            let s = waveform_batch_torch(x0, config)?;
            let s_hat = waveform_batch_torch(&out, config)?;
            let dims = Some(&[1i64][..]);
            let power = s.f_square()?.f_sum_dim_intlist(dims, false, None)?;
            let error = s.f_sub(&s_hat)?.f_square()?.f_sum_dim_intlist(dims, false, None)?;
            let ratio =
                error.f_add(&power.f_mul_scalar(1e-3)?)?.f_add_scalar(1e-8)?.f_div(&power.f_add_scalar(1e-8)?)?;
            Ok(ratio.f_log10()?.f_mul_scalar(10.0)?.f_mean(Kind::Float)?)
        }
    }
}

/// The waveforms `[B, (T − 1)·hop]` of transformed spectrograms `[B, 2, F, T]` made by [`spectrogram_batch_torch`]:
/// the inverse transform and the inverse of its centred STFT, differentiable.
pub fn waveform_batch_torch(spec: &Tensor, config: &ModelConfig) -> Result<Tensor> {
    let n_fft = config.stft.n_fft as i64;
    let frames = spec.size().last().copied().unwrap_or(0);
    let window = stft_window(config, spec.device())?;
    let z = config.transform.backward_tensor(spec)?.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_view_as_complex()?;
    Ok(z.f_istft(
        n_fft,
        config.stft.hop as i64,
        n_fft,
        Some(&window),
        true,
        false,
        true,
        (frames - 1).max(0) * config.stft.hop as i64,
        false,
    )?)
}

fn stft_window(config: &ModelConfig, device: Device) -> Result<Tensor> {
    let hann = Tensor::f_hann_window_periodic(config.stft.n_fft as i64, true, (Kind::Float, device))?;
    Ok(match config.stft.window {
        crate::stft::Window::Hann => hann,
        crate::stft::Window::SqrtHann => hann.f_sqrt()?,
    })
}

/// σ_d for the data objective: the standard deviation of `x0 − y` per real coordinate of the transformed
/// spectrograms over `items` training mixtures drawn from `seed` (independent of the steps' draws).
pub fn estimate_sigma_data(clean: &ClipSet, noise: &ClipSet, opts: &TrainOptions, items: usize) -> Result<f64> {
    let crop_len = (opts.crop_frames - 1) * opts.model.stft.hop;
    let pairs: Vec<(Vec<f32>, Vec<f32>)> = (0..items)
        .map(|i| {
            let mut d = Draws::new(opts.seed ^ 0x7369_676d_615f_6461 ^ mix64(i as u64));
            mix(clean, noise, crop_len, opts.mixing(), &mut d)
        })
        .collect();
    let (c, n) = wave_batch(&pairs)?;
    let r = spectrogram_batch_torch(&c, &opts.model)?.f_sub(&spectrogram_batch_torch(&n, &opts.model)?)?;
    let v = r.f_square()?.f_mean(Kind::Double)?.f_double_value(&[])?;
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::invalid("sigma data", format!("the training mixtures give σ_d² = {v}")));
    }
    Ok(v.sqrt())
}

/// What the training loop reports.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    /// The data were read.
    Data {
        /// Clean clips, total seconds.
        clean: (usize, f64),
        /// Noise clips, total seconds.
        noise: (usize, f64),
        /// Validation mixtures (0: no validation).
        val_items: usize,
        /// Notes: skipped files, resampled rates, short clips.
        notes: Vec<String>,
    },
    /// Training starts (or resumes) at this step.
    Start {
        /// First step to run.
        step: u64,
        /// Last step.
        steps: u64,
        /// Trainable parameters.
        parameters: usize,
    },
    /// One step is done.
    Step {
        /// The step (1-based).
        step: u64,
        /// Its loss.
        loss: f64,
        /// Gradient norm before clipping.
        grad_norm: f64,
    },
    /// A validation pass.
    Validation(Validation),
    /// A checkpoint was written.
    Checkpoint {
        /// At this step.
        step: u64,
        /// Where.
        path: PathBuf,
    },
}

/// Validation metrics (means over the validation mixtures).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Validation {
    /// After this step.
    pub step: u64,
    /// SI-SDR of the noisy input (dB).
    pub noisy_si_sdr: f64,
    /// SI-SDR of the enhanced output (dB).
    pub si_sdr: f64,
    /// ESTOI of the noisy input.
    pub noisy_estoi: f64,
    /// ESTOI of the enhanced output.
    pub estoi: f64,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Steps run in this call.
    pub steps_run: u64,
    /// Last step.
    pub step: u64,
    /// Wall time of this call in seconds.
    pub seconds: f64,
    /// Last validation.
    pub last_validation: Option<Validation>,
    /// The model file.
    pub model: PathBuf,
    /// Whether the run stopped at its time limit before `steps`.
    pub stopped_by_time: bool,
}

/// A trained variable: its name and where it lives in the flat buffers.
struct Slot {
    name: String,
    /// The variable (its data is a view of [`State::flat`]).
    param: Tensor,
    shape: Vec<i64>,
    offset: i64,
    numel: i64,
}

/// The training state that goes into a checkpoint. The trained variables are views into one flat buffer, and the
/// Adam moments and the EMA are flat buffers of the same layout, so an update is a handful of whole-buffer
/// operations rather than a dozen per variable (what bounds a step on a GPU for a small network).
struct State {
    slots: Vec<Slot>,
    flat: Tensor,
    m: Tensor,
    v: Tensor,
    ema: Tensor,
    /// Non-trained variables (the Fourier frequencies), saved as they are.
    fixed: Vec<(String, Tensor)>,
    step: u64,
    validations: Vec<Validation>,
    /// Wall time spent training, over every call (resumes included).
    seconds: f64,
}

const CHECKPOINT: &str = "checkpoint.safetensors";
const MODEL: &str = "model.safetensors";

impl State {
    fn new(vs: &nn::VarStore) -> Result<Self> {
        let trainable: Vec<Tensor> = vs.trainable_variables();
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut slots = Vec::new();
        let mut fixed = Vec::new();
        let mut offset = 0i64;
        for (name, t) in vars {
            if trainable.iter().any(|p| p.data_ptr() == t.data_ptr()) {
                let numel = t.numel() as i64;
                slots.push(Slot { name, shape: t.size(), param: t, offset, numel });
                offset += numel;
            } else {
                fixed.push((name, t));
            }
        }
        let _g = tch::no_grad_guard();
        let flat = Tensor::f_zeros([offset], (Kind::Float, vs.device()))?;
        for s in &mut slots {
            let view = flat.f_narrow(0, s.offset, s.numel)?.f_view(s.shape.as_slice())?;
            view.shallow_clone().f_copy_(&s.param)?;
            s.param.f_set_data(&view)?;
        }
        Ok(State {
            m: flat.f_zeros_like()?,
            v: flat.f_zeros_like()?,
            ema: flat.f_detach_copy()?,
            flat,
            slots,
            fixed,
            step: 0,
            validations: Vec::new(),
            seconds: 0.0,
        })
    }

    /// Variable `s`'s part of a flat buffer, shaped like the variable.
    fn part(&self, buffer: &Tensor, s: &Slot) -> Result<Tensor> {
        Ok(buffer.f_narrow(0, s.offset, s.numel)?.f_view(s.shape.as_slice())?)
    }

    fn ema_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for s in &self.slots {
            out.push((s.name.clone(), self.part(&self.ema, s)?));
        }
        out.extend(self.fixed.iter().map(|(n, t)| (n.clone(), t.shallow_clone())));
        Ok(out)
    }

    fn checkpoint_bytes(&self, options_json: &str) -> Result<Vec<u8>> {
        let mut tensors = Vec::new();
        for s in &self.slots {
            tensors.push((format!("param/{}", s.name), self.part(&self.flat, s)?));
            tensors.push((format!("adam_m/{}", s.name), self.part(&self.m, s)?));
            tensors.push((format!("adam_v/{}", s.name), self.part(&self.v, s)?));
            tensors.push((format!("ema/{}", s.name), self.part(&self.ema, s)?));
        }
        for (n, t) in &self.fixed {
            tensors.push((format!("fixed/{n}"), t.shallow_clone()));
        }
        let meta = BTreeMap::from([
            ("format".to_string(), "diffuse-audio-checkpoint".to_string()),
            ("step".to_string(), self.step.to_string()),
            ("seconds".to_string(), format!("{:.1}", self.seconds)),
            ("options".to_string(), options_json.to_string()),
            (
                "validations".to_string(),
                serde_json::to_string(&self.validations).map_err(|e| Error::invalid("checkpoint", e.to_string()))?,
            ),
        ]);
        crate::weights::to_bytes(&tensors, &meta)
    }

    /// Loads a checkpoint written by [`State::checkpoint_bytes`] into this state (same network).
    fn restore(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (tensors, meta) = crate::weights::from_bytes(&bytes, path)?;
        if meta.get("format").map(String::as_str) != Some("diffuse-audio-checkpoint") {
            return Err(Error::model(path, "not a diffuse-audio training checkpoint"));
        }
        let map: BTreeMap<String, Tensor> = tensors.into_iter().collect();
        let _g = tch::no_grad_guard();
        let get = |key: String, like: &Tensor| -> Result<&Tensor> {
            let t = map.get(&key).ok_or_else(|| {
                Error::model(path, format!("missing '{key}': the checkpoint was made with another network"))
            })?;
            if t.size() != like.size() {
                return Err(Error::model(
                    path,
                    format!("'{key}' has shape {:?}, this network needs {:?}", t.size(), like.size()),
                ));
            }
            Ok(t)
        };
        for s in &self.slots {
            for (prefix, buffer) in
                [("param", &self.flat), ("adam_m", &self.m), ("adam_v", &self.v), ("ema", &self.ema)]
            {
                let mut dst = self.part(buffer, s)?;
                dst.f_copy_(get(format!("{prefix}/{}", s.name), &dst)?)?;
            }
        }
        for (n, t) in &mut self.fixed {
            let v = get(format!("fixed/{n}"), t)?;
            t.f_copy_(v)?;
        }
        self.step = meta.get("step").and_then(|s| s.parse().ok()).ok_or_else(|| Error::model(path, "no step"))?;
        self.seconds = meta.get("seconds").and_then(|s| s.parse().ok()).unwrap_or(0.0);
        self.validations = meta.get("validations").and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default();
        Ok(())
    }

    /// One Adam step with global-norm clipping and the EMA update; returns the gradient norm before clipping.
    fn update(&mut self, lr: f64, clip: f64, decay: f64) -> Result<f64> {
        let _g = tch::no_grad_guard();
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let mut grads = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let g = s.param.grad();
            grads.push(if g.defined() {
                g.f_reshape([-1])?
            } else {
                Tensor::f_zeros([s.numel], (Kind::Float, self.flat.device()))?
            });
        }
        let mut g = Tensor::f_cat(&grads, 0)?;
        drop(grads);
        let norm = g.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?.sqrt();
        if !norm.is_finite() {
            return Err(Error::Numerical { op: "gradient", reason: "non-finite gradient norm".into() });
        }
        if norm > clip {
            let _ = g.f_mul_scalar_(clip / norm)?;
        }
        let k = self.step as i32 + 1;
        let (c1, c2) = (1.0 - b1.powi(k), 1.0 - b2.powi(k));
        // torch_ema's warm-up (sgmse uses it with its defaults): the decay grows as (1 + k)/(10 + k) up to `decay`,
        // so the average is not dominated by the random initialisation early in training.
        let decay = decay.min((1.0 + f64::from(k)) / (10.0 + f64::from(k)));
        // m ← b1·m + (1 − b1)·g, v ← b2·v + (1 − b2)·g², θ ← θ − lr·(m/c1)/(√(v/c2) + eps), ema ← decay·ema + (1 − decay)·θ.
        let _ = self.m.f_lerp_(&g, 1.0 - b1)?;
        let _ = self.v.f_lerp_(&g.f_square()?, 1.0 - b2)?;
        let mut denom = self.v.f_div_scalar(c2)?;
        let _ = denom.f_sqrt_()?.f_add_scalar_(eps)?;
        let _ = self.flat.f_sub_(&self.m.f_div(&denom)?.f_mul_scalar(lr / c1)?)?;
        let _ = self.ema.f_lerp_(&self.flat, 1.0 - decay)?;
        for s in &self.slots {
            let mut g = s.param.grad();
            if g.defined() {
                let _ = g.f_zero_()?;
            }
        }
        Ok(norm)
    }
}

/// The sidecar of the trained model, with provenance.
fn model_sidecar(model: &ModelConfig, opts: &TrainOptions, state: &State, data: &serde_json::Value) -> ModelConfig {
    let mut c = model.clone();
    let loss = match opts.objective {
        Objective::Score => "sgmse score_matching (OUVE), weights: EMA".to_string(),
        Objective::Data => format!(
            "data prediction, EDM-style preconditioning on OUVE (sigma_data {:.5}), mean ((x0_hat - x0)/c_out)^2, \
             weights: EMA",
            model.network.as_ref().and_then(|n| n.sigma_data).unwrap_or(f64::NAN)
        ),
        Objective::Crp => format!(
            "correcting the reverse process (Lay et al. 2023): {} for the output x_hat of {} with {} steps from the \
             prior y + sigma(1) z, gradients through every network call; started from {}; weights: EMA",
            match opts.crp_loss {
                CrpLoss::Spec => "mean ((x_hat - x0)/sigma_data)^2",
                CrpLoss::Snr => "negative waveform SNR, 10 log10((|s - s_hat|^2 + 1e-3 |s|^2)/|s|^2) per mixture",
            },
            opts.crp_solver,
            opts.crp_steps,
            opts.init.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
        ),
    };
    c.source = Some(serde_json::json!({
        "trainer": "diffuse audio train",
        "objective": opts.objective,
        "init": opts.init.as_ref().map(|_| model.source.clone()),
        "step": state.step,
        "batch": opts.batch,
        "crop_frames": opts.crop_frames,
        "snr_db": [opts.snr_db.0, opts.snr_db.1],
        "gain_jitter_db": opts.gain_jitter_db,
        "spectral_shaping": opts.spectral_shaping,
        "lr": opts.lr,
        "warmup": opts.warmup,
        "ema_decay": opts.ema_decay,
        "grad_clip": opts.grad_clip,
        "seed": opts.seed,
        "loss": loss,
        "device": diffuse_core::device::device_name(opts.device),
        "train_seconds": (state.seconds * 10.0).round() / 10.0,
        "data": data,
        "validation": state.validations.last(),
    }));
    c
}

/// Fixed validation mixtures: (clean, noisy) of about 2 s at SNRs uniform in [0, 10] dB, drawn from `seed`.
pub fn validation_set(
    clean: &ClipSet,
    noise: &ClipSet,
    items: usize,
    rate: u32,
    seed: u64,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let len = 2 * rate as usize;
    (0..items)
        .map(|i| {
            let mut d = Draws::new(seed ^ 0x7661_6c69_6461_7465 ^ i as u64);
            mix(clean, noise, len, Mixing::VALIDATION, &mut d)
        })
        .collect()
}

/// Enhances the validation set with `model` and its sidecar's sampler and returns the mean metrics.
pub fn validate(model: &crate::ScoreModel, set: &[(Vec<f32>, Vec<f32>)], step: u64) -> Result<Validation> {
    let cfg = model.config();
    let sampler = crate::sampling::build_sampler(&cfg.sampler.name, Some(cfg.sampler.steps), None, cfg)?;
    let enhancer = crate::Enhancer::new(model, sampler.as_ref(), crate::Chunking::default(), 0)?;
    let rate = model.config().sample_rate;
    let mut v = Validation { step, noisy_si_sdr: 0.0, si_sdr: 0.0, noisy_estoi: 0.0, estoi: 0.0 };
    for (i, (c, n)) in set.iter().enumerate() {
        let mut times = crate::pipeline::StageTimes::default();
        let mut report = crate::EnhanceReport::default();
        let name = PathBuf::from(format!("validation item {i}"));
        let out = enhancer.enhance_channel(n, &name, i, &mut times, &mut report, &mut || {})?.unwrap_or_default();
        v.noisy_si_sdr += crate::metrics::si_sdr(c, n);
        v.si_sdr += crate::metrics::si_sdr(c, &out);
        v.noisy_estoi += crate::metrics::estoi(c, n, rate);
        v.estoi += crate::metrics::estoi(c, &out, rate);
    }
    let k = set.len().max(1) as f64;
    v.noisy_si_sdr /= k;
    v.si_sdr /= k;
    v.noisy_estoi /= k;
    v.estoi /= k;
    Ok(v)
}

/// Trains (or resumes) as `opts` says, reporting through `on_event`. Checkpoints are written atomically, so an
/// interruption or a failed write (disk full) leaves the previous checkpoint intact; a non-finite loss stops the
/// run with the step number, keeping the last good checkpoint. Times and noise come from libtorch's global
/// generator (reseeded every step), so two runs in one process at once are not reproducible: run them in turn.
pub fn train(opts: &TrainOptions, on_event: &mut dyn FnMut(TrainEvent)) -> Result<TrainSummary> {
    let created_out = !opts.out.exists();
    let result = train_into(opts, on_event);
    // A run that fails before writing anything leaves no empty output folder behind.
    if result.is_err() && created_out && std::fs::read_dir(&opts.out).is_ok_and(|mut entries| entries.next().is_none())
    {
        let _ = std::fs::remove_dir(&opts.out);
    }
    result
}

fn train_into(opts: &TrainOptions, on_event: &mut dyn FnMut(TrainEvent)) -> Result<TrainSummary> {
    opts.validate()?;
    let started = Instant::now();
    let rate = opts.model.sample_rate;
    let checkpoint = opts.out.join(CHECKPOINT);
    if checkpoint.exists() && !opts.resume && !opts.force {
        return Err(Error::bad_file(
            &checkpoint,
            "a training run is already here: pass --resume to continue it or --force to start over",
        ));
    }
    if opts.resume && !checkpoint.exists() {
        return Err(Error::bad_file(&checkpoint, "no checkpoint to resume from"));
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;

    // Data.
    let hop = opts.model.stft.hop;
    let crop_len = (opts.crop_frames - 1) * hop;
    let clean = ClipSet::load(&opts.clean, rate, "clean")?;
    let noise = ClipSet::load(&opts.noise, rate, "noise")?;
    let mut notes = Vec::new();
    for (set, role) in [(&clean, "clean"), (&noise, "noise")] {
        for (f, why) in set.skipped.iter().take(5) {
            notes.push(format!("skipped {role} file {}: {why}", f.display()));
        }
        if set.skipped.len() > 5 {
            notes.push(format!("… and {} more {role} files skipped", set.skipped.len() - 5));
        }
        for (r, n) in &set.resampled {
            notes.push(format!("{n} {role} file(s) at {r} Hz resampled to {rate} Hz"));
        }
    }
    let short = clean.shorter_than(crop_len);
    if short > 0 {
        notes.push(format!(
            "{short} clean clip(s) shorter than the {:.2} s crop are zero-padded at a random offset",
            crop_len as f64 / f64::from(rate)
        ));
    }
    let short_noise = noise.shorter_than(crop_len);
    if short_noise > 0 {
        notes.push(format!("{short_noise} noise clip(s) shorter than the crop are repeated"));
    }
    let val_set = match &opts.val_clean {
        Some(vc) => {
            let vclean = ClipSet::load(std::slice::from_ref(vc), rate, "validation clean")?;
            let vnoise = match &opts.val_noise {
                Some(vn) => ClipSet::load(std::slice::from_ref(vn), rate, "validation noise")?,
                None => ClipSet::load(&opts.noise, rate, "noise")?,
            };
            validation_set(&vclean, &vnoise, opts.val_items, rate, opts.seed)
        }
        None => Vec::new(),
    };
    // The model this run trains: the objective sets the output kind and, for data prediction, σ_d (kept from the
    // checkpoint when resuming, so a resumed run continues with the same preconditioning).
    let init = match &opts.init {
        Some(path) => Some(InitModel::load(path, opts.objective)?),
        None => None,
    };
    let mut model_cfg = match &init {
        Some(i) => i.config.clone(),
        None => opts.model.clone(),
    };
    let mut net_config = model_cfg.network.clone().ok_or_else(|| Error::invalid("network", "missing"))?;
    match opts.objective {
        Objective::Score => {
            model_cfg.output = crate::config::OutputConfig { kind: OutputKind::Score, sign: 1.0 };
            net_config.sigma_data = None;
        }
        Objective::Data => {
            model_cfg.output = crate::config::OutputConfig { kind: OutputKind::DataPrediction, sign: 1.0 };
            let resumed = if opts.resume { checkpoint_sigma_data(&checkpoint)? } else { None };
            let sd = match resumed.or(opts.sigma_data).or(net_config.sigma_data) {
                Some(sd) => sd,
                None => estimate_sigma_data(&clean, &noise, opts, 256)?,
            };
            notes.push(format!("data objective: sigma_data {sd:.5} (RMS of x0 − y per real coefficient)"));
            net_config.sigma_data = Some(sd);
        }
        Objective::Crp => {
            // The network, σ_d and output kind are the initial model's (checked by InitModel::load); the model
            // learns the sampler it will run, so that sampler becomes its default.
            model_cfg.sampler.name = opts.crp_solver.clone();
            model_cfg.sampler.steps = opts.crp_steps;
            notes.push(format!(
                "crp: fine-tuning {} through {} with {} steps, {} loss",
                opts.init.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                opts.crp_solver,
                opts.crp_steps,
                opts.crp_loss
            ));
        }
    }
    model_cfg.network = Some(net_config.clone());
    model_cfg.validate(Path::new("(training settings)"))?;
    on_event(TrainEvent::Data {
        clean: (clean.clips.len(), clean.seconds(rate)),
        noise: (noise.clips.len(), noise.seconds(rate)),
        val_items: val_set.len(),
        notes,
    });
    let data_note = serde_json::json!({
        "clean": opts.clean, "noise": opts.noise, "clean_clips": clean.clips.len(),
        "clean_hours": clean.seconds(rate) / 3600.0, "noise_clips": noise.clips.len(),
        "val_clean": opts.val_clean, "val_noise": opts.val_noise,
    });

    // Network and state.
    if opts.device.is_cuda() {
        // Fixed shapes: let cuDNN pick the fastest convolution algorithms once.
        tch::Cuda::cudnn_set_benchmark(true);
    }
    tch::manual_seed(mix64(opts.seed ^ 0x006e_6574_776f_726b) as i64);
    let mut vs = nn::VarStore::new(opts.device);
    let net = ScoreNet::new(&vs.root(), &net_config)?;
    if let Some(i) = init {
        crate::model::load_vars(&mut vs, i.tensors, &i.path)?;
    }
    let mut state = State::new(&vs)?;
    let crp_sampler = match opts.objective {
        Objective::Crp => Some(crate::sampling::CoreSampler::new(&opts.crp_solver, opts.crp_steps, &model_cfg)?),
        _ => None,
    };
    let options = serde_json::json!({
        "network": net_config, "batch": opts.batch, "crop_frames": opts.crop_frames, "seed": opts.seed,
        "objective": opts.objective,
        "crp": (opts.objective == Objective::Crp).then(|| (opts.crp_solver.clone(), opts.crp_steps, opts.crp_loss)),
        "mixing": opts.mixing(),
    });
    if opts.resume {
        check_resume_options(&checkpoint, &options)?;
        state.restore(&checkpoint)?;
    }
    let options_json = serde_json::to_string(&options).map_err(|e| Error::invalid("options", e.to_string()))?;
    let parameters: usize = state.slots.iter().map(|s| s.param.numel()).sum();
    on_event(TrainEvent::Start { step: state.step + 1, steps: opts.steps, parameters });

    let epoch = (clean.clips.len() as u64).div_ceil(opts.batch as u64).max(1);
    let val_every = opts.val_every.unwrap_or(epoch).max(1);
    let first = state.step;
    let seconds_before = state.seconds;
    let mut last_saved = opts.resume.then_some(state.step);
    let mut stopped_by_time = false;
    let save = |state: &State| -> Result<PathBuf> {
        // The checkpoint first: the model file is derived from it.
        crate::weights::write_file(&checkpoint, &state.checkpoint_bytes(&options_json)?)?;
        let model_path = opts.out.join(MODEL);
        let bytes = crate::weights::to_bytes(&state.ema_tensors()?, &BTreeMap::new())?;
        crate::weights::write_file(&model_path, &bytes)?;
        model_sidecar(&model_cfg, opts, state, &data_note).write(&sidecar_path(&model_path))?;
        Ok(checkpoint.clone())
    };
    while state.step < opts.steps {
        let step = state.step + 1;
        // Data of this step: a function of (seed, step) only.
        let pairs: Vec<(Vec<f32>, Vec<f32>)> = (0..opts.batch)
            .map(|i| {
                let mut d = Draws::new(opts.seed ^ mix64(step) ^ mix64(i as u64 + 0x1000));
                mix(&clean, &noise, crop_len, opts.mixing(), &mut d)
            })
            .collect();
        let (c, n) = wave_batch(&pairs)?;
        drop(pairs);
        let x0 = spectrogram_batch_torch(&c.f_to_device(opts.device)?, &model_cfg)?;
        let y = spectrogram_batch_torch(&n.f_to_device(opts.device)?, &model_cfg)?;
        tch::manual_seed(mix64(opts.seed ^ mix64(step) ^ 0x6c6f_7373) as i64);
        let loss = match opts.objective {
            Objective::Score => dsm_loss(&net, &model_cfg, &x0, &y)?,
            Objective::Data => data_loss(&net, &model_cfg, &x0, &y)?,
            Objective::Crp => {
                // Built above for this objective.
                let sampler = crp_sampler.as_ref().ok_or_else(|| Error::invalid("crp", "no sampler"))?;
                crp_loss(&net, &model_cfg, sampler, opts.crp_loss, &x0, &y)?
            }
        };
        let loss_value = loss.f_double_value(&[])?;
        if !loss_value.is_finite() {
            return Err(Error::Training {
                step,
                reason: format!(
                    "the loss is {loss_value}; nothing was updated; {}",
                    match last_saved {
                        Some(s) => format!("the last good checkpoint (step {s}) is kept in {}", opts.out.display()),
                        None => "no checkpoint had been written yet".into(),
                    }
                ),
            });
        }
        loss.f_backward()?;
        let lr = if opts.warmup > 0 { opts.lr * (step as f64 / opts.warmup as f64).min(1.0) } else { opts.lr };
        let grad_norm = state
            .update(lr, opts.grad_clip, opts.ema_decay)
            .map_err(|e| Error::Training { step, reason: format!("{e}; the last good checkpoint is kept") })?;
        state.step = step;
        state.seconds = seconds_before + started.elapsed().as_secs_f64();
        on_event(TrainEvent::Step { step, loss: loss_value, grad_norm });

        let out_of_time = opts.time_limit.is_some_and(|limit| started.elapsed() >= limit);
        let last = step == opts.steps || out_of_time;
        if !val_set.is_empty() && (step % val_every == 0 || last) {
            let model = crate::ScoreModel::native_from_tensors(
                state.ema_tensors()?.into_iter().map(|(n, t)| (n, t.f_detach().unwrap_or(t))).collect(),
                model_cfg.clone(),
                &opts.out.join(MODEL),
                opts.device,
            )?;
            let v = validate(&model, &val_set, step)?;
            state.validations.push(v);
            on_event(TrainEvent::Validation(v));
        }
        if step % opts.checkpoint_every == 0 || last {
            let path = save(&state)?;
            last_saved = Some(step);
            on_event(TrainEvent::Checkpoint { step, path });
        }
        if out_of_time && step < opts.steps {
            stopped_by_time = true;
            break;
        }
    }
    Ok(TrainSummary {
        steps_run: state.step - first,
        step: state.step,
        seconds: started.elapsed().as_secs_f64(),
        last_validation: state.validations.last().copied(),
        model: opts.out.join(MODEL),
        stopped_by_time,
    })
}

/// Refuses to resume with options that change what the run draws or optimises (batch, crop, seed, objective, crp
/// sampler, mixing), since the resumed run would no longer continue the checkpoint's. Options a checkpoint predates
/// (mixing before it was recorded) are not checked.
fn check_resume_options(path: &Path, now: &serde_json::Value) -> Result<()> {
    let meta = crate::weights::read_metadata(path)?;
    let Some(then) = meta.get("options").and_then(|o| serde_json::from_str::<serde_json::Value>(o).ok()) else {
        return Ok(());
    };
    let differ: Vec<String> = ["batch", "crop_frames", "seed", "objective", "crp", "mixing"]
        .iter()
        .filter(|k| then.get(**k).is_some_and(|v| Some(v) != now.get(**k)))
        .map(|k| format!("{k}: checkpoint {}, now {}", then[*k], now[*k]))
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(Error::bad_file(
        path,
        format!(
            "the run was made with other options ({}); resume with the same options, or start a new run from its \
             model with --init",
            differ.join("; ")
        ),
    ))
}

/// σ_d recorded in a checkpoint's options (data-objective runs), read from its header only.
fn checkpoint_sigma_data(path: &Path) -> Result<Option<f64>> {
    let meta = crate::weights::read_metadata(path)?;
    let options: serde_json::Value = meta.get("options").and_then(|o| serde_json::from_str(o).ok()).unwrap_or_default();
    Ok(options["network"]["sigma_data"].as_f64())
}

/// The model a run starts from (`--init`).
struct InitModel {
    path: PathBuf,
    config: ModelConfig,
    tensors: Vec<(String, Tensor)>,
}

impl InitModel {
    /// Reads a native model and its sidecar and checks that `objective` can continue from it.
    fn load(path: &Path, objective: Objective) -> Result<Self> {
        if !crate::model::is_native(path) {
            return Err(Error::model(path, "--init needs a native model (.safetensors with its .json sidecar)"));
        }
        let config = ModelConfig::read(&sidecar_path(path))?;
        let Some(net) = config.network.as_ref() else {
            return Err(Error::model(path, "the sidecar has no `network`: not a native model"));
        };
        let wants_data = matches!(objective, Objective::Data | Objective::Crp);
        let is_data = config.output.kind == OutputKind::DataPrediction && net.sigma_data.is_some();
        if wants_data != is_data {
            return Err(Error::model(
                path,
                format!(
                    "the {objective} objective needs a {} model, this one predicts {}",
                    if wants_data { "data-prediction" } else { "score" },
                    if is_data { "data" } else { "the score" }
                ),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (tensors, _) = crate::weights::from_bytes(&bytes, path)?;
        Ok(InitModel { path: path.to_path_buf(), config, tensors })
    }
}
