//! Training a native score network ([`crate::net::ScoreNet`]) with the reference's denoising score-matching
//! loss for OUVE (sgmse `ScoreModel._step`, loss type "score_matching"): t ~ U(t_eps, 1), `x_t = e^{−θt}x0 +
//! (1 − e^{−θt})y + σ(t)z` with complex z (variance ½ per part), loss `mean_batch ½·Σ|σ(t)·score + z|²`, which
//! for the network's score `−ẑ/σ` is `½·Σ|z − ẑ|²`.
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
use std::time::Instant;

use diffuse_core::seed::mix64;
use tch::{Device, Kind, Tensor, nn};

use crate::config::{ModelConfig, SdeConfig, sidecar_path};
use crate::net::{NetConfig, ScoreNet, ouve_sigma};
use crate::stft::Stft;
use crate::{Error, Result};

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
    /// Adam learning rate.
    pub lr: f64,
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
            lr: 5e-4,
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
        if !(self.snr_db.0 <= self.snr_db.1) || !self.snr_db.0.is_finite() || !self.snr_db.1.is_finite() {
            return Err(Error::invalid("snr", format!("need LOW ≤ HIGH, got {:?}", self.snr_db)));
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
            collect_wavs(dir, &mut files)?;
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

fn collect_wavs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::data(dir, format!("cannot list the folder: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_wavs(&p, out)?;
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")) {
            out.push(p);
        }
    }
    Ok(())
}

/// One mixture: (clean, noisy), both `len` samples, normalised by the mixture's peak and scaled by the gain.
pub fn mix(
    clean: &ClipSet,
    noise: &ClipSet,
    len: usize,
    snr_db: (f64, f64),
    gain_jitter_db: f64,
    draws: &mut Draws,
) -> (Vec<f32>, Vec<f32>) {
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
    let n = crop(&noise.clips[draws.below(noise.clips.len())], draws, true);
    let snr = snr_db.0 + (snr_db.1 - snr_db.0) * draws.uniform();
    let (pc, pn) = (energy(&c), energy(&n).max(1e-20));
    let k = if pc > 0.0 { (pc / (pn * 10f64.powf(snr / 10.0))).sqrt() } else { 0.0 } as f32;
    let noisy: Vec<f32> = c.iter().zip(&n).map(|(a, b)| a + k * b).collect();
    let peak = noisy.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-8);
    let gain = 10f64.powf(-gain_jitter_db * draws.uniform() / 20.0) as f32 / peak;
    (c.iter().map(|v| v * gain).collect(), noisy.iter().map(|v| v * gain).collect())
}

/// Turns a batch of (clean, noisy) waveforms into transformed spectrograms `[B, 2, F, T]` (x0, y).
pub fn spectrogram_batch(pairs: &[(Vec<f32>, Vec<f32>)], config: &ModelConfig) -> Result<(Tensor, Tensor)> {
    let stft = Stft::new(config.stft.n_fft, config.stft.hop, config.stft.window)?;
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for (c, n) in pairs {
        let mut x = stft.forward(c)?;
        let mut y = stft.forward(n)?;
        config.transform.forward(&mut x);
        config.transform.forward(&mut y);
        xs.push(x.to_tensor());
        ys.push(y.to_tensor());
    }
    Ok((Tensor::f_stack(&xs, 0)?, Tensor::f_stack(&ys, 0)?))
}

/// The denoising score-matching loss of a batch (sgmse "score_matching" for OUVE): returns the mean over the
/// batch of `½·Σ|z − ẑ|²`. Noise and times are drawn from libtorch's generator (seed it first).
pub fn dsm_loss(net: &ScoreNet, config: &ModelConfig, x0: &Tensor, y: &Tensor) -> Result<Tensor> {
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
    let zhat = net.forward(&Tensor::f_cat(&[&x_t, y], 1)?, &t)?;
    let err = z.f_sub(&zhat)?;
    Ok(err.f_square()?.f_sum_dim_intlist(Some(&[1i64, 2, 3][..]), false, None)?.f_mul_scalar(0.5)?.f_mean(None)?)
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
}

/// Adam's state for one parameter.
struct Slot {
    name: String,
    param: Tensor,
    m: Tensor,
    v: Tensor,
    ema: Tensor,
}

/// The training state that goes into a checkpoint.
struct State {
    slots: Vec<Slot>,
    /// Non-trained variables (the Fourier frequencies), saved as they are.
    fixed: Vec<(String, Tensor)>,
    step: u64,
    validations: Vec<Validation>,
}

const CHECKPOINT: &str = "checkpoint.safetensors";
const MODEL: &str = "model.safetensors";

impl State {
    fn new(vs: &nn::VarStore) -> Result<Self> {
        let trainable: Vec<Tensor> = vs.trainable_variables();
        let mut slots = Vec::new();
        let mut fixed = Vec::new();
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, t) in vars {
            let is_trained = trainable.iter().any(|p| p.data_ptr() == t.data_ptr());
            if is_trained {
                let _g = tch::no_grad_guard();
                slots.push(Slot {
                    m: t.f_zeros_like()?,
                    v: t.f_zeros_like()?,
                    ema: t.f_detach_copy()?,
                    name,
                    param: t,
                });
            } else {
                fixed.push((name, t));
            }
        }
        Ok(State { slots, fixed, step: 0, validations: Vec::new() })
    }

    fn ema_tensors(&self) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .map(|s| (s.name.clone(), s.ema.shallow_clone()))
            .chain(self.fixed.iter().map(|(n, t)| (n.clone(), t.shallow_clone())))
            .collect()
    }

    fn checkpoint_bytes(&self, options_json: &str) -> Result<Vec<u8>> {
        let mut tensors = Vec::new();
        for s in &self.slots {
            tensors.push((format!("param/{}", s.name), s.param.shallow_clone()));
            tensors.push((format!("adam_m/{}", s.name), s.m.shallow_clone()));
            tensors.push((format!("adam_v/{}", s.name), s.v.shallow_clone()));
            tensors.push((format!("ema/{}", s.name), s.ema.shallow_clone()));
        }
        for (n, t) in &self.fixed {
            tensors.push((format!("fixed/{n}"), t.shallow_clone()));
        }
        let meta = BTreeMap::from([
            ("format".to_string(), "diffuse-audio-checkpoint".to_string()),
            ("step".to_string(), self.step.to_string()),
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
        let get = |key: String, like: &Tensor| -> Result<Tensor> {
            let t = map.get(&key).ok_or_else(|| {
                Error::model(path, format!("missing '{key}': the checkpoint was made with another network"))
            })?;
            if t.size() != like.size() {
                return Err(Error::model(
                    path,
                    format!("'{key}' has shape {:?}, this network needs {:?}", t.size(), like.size()),
                ));
            }
            Ok(t.f_to_device(like.device())?)
        };
        for s in &mut self.slots {
            s.param.f_copy_(&get(format!("param/{}", s.name), &s.param)?)?;
            s.m = get(format!("adam_m/{}", s.name), &s.param)?;
            s.v = get(format!("adam_v/{}", s.name), &s.param)?;
            s.ema = get(format!("ema/{}", s.name), &s.param)?;
        }
        for (n, t) in &mut self.fixed {
            let v = get(format!("fixed/{n}"), t)?;
            t.f_copy_(&v)?;
        }
        self.step = meta.get("step").and_then(|s| s.parse().ok()).ok_or_else(|| Error::model(path, "no step"))?;
        self.validations = meta.get("validations").and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default();
        Ok(())
    }

    /// One Adam step with global-norm clipping and the EMA update; returns the gradient norm before clipping.
    fn update(&mut self, lr: f64, clip: f64, decay: f64) -> Result<f64> {
        let _g = tch::no_grad_guard();
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let mut sq = 0.0;
        for s in &self.slots {
            let g = s.param.grad();
            if g.defined() {
                sq += g.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
            }
        }
        let norm = sq.sqrt();
        if !norm.is_finite() {
            return Err(Error::Numerical { op: "gradient", reason: "non-finite gradient norm".into() });
        }
        let scale = if norm > clip { clip / norm } else { 1.0 };
        let k = self.step as i32 + 1;
        let (c1, c2) = (1.0 - b1.powi(k), 1.0 - b2.powi(k));
        // torch_ema's warm-up (sgmse uses it with its defaults): the decay grows as (1 + k)/(10 + k) up to `decay`,
        // so the average is not dominated by the random initialisation early in training.
        let decay = decay.min((1.0 + f64::from(k)) / (10.0 + f64::from(k)));
        for s in &mut self.slots {
            let mut g = s.param.grad();
            if !g.defined() {
                continue;
            }
            let g_s = g.f_mul_scalar(scale)?;
            s.m = s.m.f_mul_scalar(b1)?.f_add(&g_s.f_mul_scalar(1.0 - b1)?)?;
            s.v = s.v.f_mul_scalar(b2)?.f_add(&g_s.f_square()?.f_mul_scalar(1.0 - b2)?)?;
            let denom = s.v.f_div_scalar(c2)?.f_sqrt()?.f_add_scalar(eps)?;
            let delta = s.m.f_div_scalar(c1)?.f_div(&denom)?.f_mul_scalar(lr)?;
            let _ = s.param.f_sub_(&delta)?;
            s.ema = s.ema.f_mul_scalar(decay)?.f_add(&s.param.f_mul_scalar(1.0 - decay)?)?;
            let _ = g.f_zero_()?;
        }
        Ok(norm)
    }
}

/// The sidecar of the trained model, with provenance.
fn model_sidecar(opts: &TrainOptions, state: &State, data: &serde_json::Value) -> ModelConfig {
    let mut c = opts.model.clone();
    c.source = Some(serde_json::json!({
        "trainer": "diffuse audio train",
        "step": state.step,
        "batch": opts.batch,
        "crop_frames": opts.crop_frames,
        "snr_db": [opts.snr_db.0, opts.snr_db.1],
        "gain_jitter_db": opts.gain_jitter_db,
        "lr": opts.lr,
        "ema_decay": opts.ema_decay,
        "grad_clip": opts.grad_clip,
        "seed": opts.seed,
        "loss": "sgmse score_matching (OUVE), weights: EMA",
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
            mix(clean, noise, len, (0.0, 10.0), 0.0, &mut d)
        })
        .collect()
}

/// Enhances the validation set with `model` (10-step DPM-Solver++(2M)) and returns the mean metrics.
pub fn validate(model: &crate::ScoreModel, set: &[(Vec<f32>, Vec<f32>)], step: u64) -> Result<Validation> {
    let sampler = crate::sampling::CoreSampler::new("dpm++2m", 10, model.config())?;
    let enhancer = crate::Enhancer::new(model, &sampler, crate::Chunking::default(), 0)?;
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
/// run with the step number, keeping the last good checkpoint.
pub fn train(opts: &TrainOptions, on_event: &mut dyn FnMut(TrainEvent)) -> Result<TrainSummary> {
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
    let net_config = opts.model.network.clone().ok_or_else(|| Error::invalid("network", "missing"))?;
    tch::manual_seed(mix64(opts.seed ^ 0x006e_6574_776f_726b) as i64);
    let vs = nn::VarStore::new(opts.device);
    let net = ScoreNet::new(&vs.root(), &net_config)?;
    let mut state = State::new(&vs)?;
    if opts.resume {
        state.restore(&checkpoint)?;
    }
    let options_json = serde_json::to_string(&serde_json::json!({
        "network": net_config, "batch": opts.batch, "crop_frames": opts.crop_frames, "seed": opts.seed,
    }))
    .map_err(|e| Error::invalid("options", e.to_string()))?;
    let parameters: usize = state.slots.iter().map(|s| s.param.numel()).sum();
    on_event(TrainEvent::Start { step: state.step + 1, steps: opts.steps, parameters });

    let epoch = (clean.clips.len() as u64).div_ceil(opts.batch as u64).max(1);
    let val_every = opts.val_every.unwrap_or(epoch).max(1);
    let first = state.step;
    let mut last_saved = opts.resume.then_some(state.step);
    let save = |state: &State| -> Result<PathBuf> {
        // The checkpoint first: the model file is derived from it.
        crate::weights::write_file(&checkpoint, &state.checkpoint_bytes(&options_json)?)?;
        let model_path = opts.out.join(MODEL);
        let bytes = crate::weights::to_bytes(&state.ema_tensors(), &BTreeMap::new())?;
        crate::weights::write_file(&model_path, &bytes)?;
        model_sidecar(opts, state, &data_note).write(&sidecar_path(&model_path))?;
        Ok(checkpoint.clone())
    };
    while state.step < opts.steps {
        let step = state.step + 1;
        // Data of this step: a function of (seed, step) only.
        let pairs: Vec<(Vec<f32>, Vec<f32>)> = (0..opts.batch)
            .map(|i| {
                let mut d = Draws::new(opts.seed ^ mix64(step) ^ mix64(i as u64 + 0x1000));
                mix(&clean, &noise, crop_len, opts.snr_db, opts.gain_jitter_db, &mut d)
            })
            .collect();
        let (x0, y) = spectrogram_batch(&pairs, &opts.model)?;
        let (x0, y) = (x0.f_to_device(opts.device)?, y.f_to_device(opts.device)?);
        tch::manual_seed(mix64(opts.seed ^ mix64(step) ^ 0x6c6f_7373) as i64);
        let loss = dsm_loss(&net, &opts.model, &x0, &y)?;
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
        let grad_norm = state
            .update(opts.lr, opts.grad_clip, opts.ema_decay)
            .map_err(|e| Error::Training { step, reason: format!("{e}; the last good checkpoint is kept") })?;
        state.step = step;
        on_event(TrainEvent::Step { step, loss: loss_value, grad_norm });

        if !val_set.is_empty() && (step % val_every == 0 || step == opts.steps) {
            let model = crate::ScoreModel::native_from_tensors(
                state.ema_tensors().into_iter().map(|(n, t)| (n, t.f_detach().unwrap_or(t))).collect(),
                opts.model.clone(),
                &opts.out.join(MODEL),
                opts.device,
            )?;
            let v = validate(&model, &val_set, step)?;
            state.validations.push(v);
            on_event(TrainEvent::Validation(v));
        }
        if step % opts.checkpoint_every == 0 || step == opts.steps {
            let path = save(&state)?;
            last_saved = Some(step);
            on_event(TrainEvent::Checkpoint { step, path });
        }
    }
    Ok(TrainSummary {
        steps_run: state.step - first,
        step: state.step,
        seconds: started.elapsed().as_secs_f64(),
        last_validation: state.validations.last().copied(),
        model: opts.out.join(MODEL),
    })
}
