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
use std::time::Instant;

use diffuse_core::seed::mix64;
use tch::nn;

use crate::config::{OutputKind, sidecar_path};
use crate::net::ScoreNet;
use crate::{Error, Result};

mod data;
mod loss;
mod nft;
mod options;
mod state;

pub use data::*;
pub use loss::*;
pub use nft::{Nft, Reward, optimality};
pub use options::*;
use state::*;

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
    let rooms = match opts.rirs.is_empty() {
        true => ClipSet::default(),
        false => ClipSet::load(&opts.rirs, rate, "room impulse response")?,
    };
    let keep = (opts.early_ms * f64::from(rate) / 1000.0).round() as usize;
    let room_set = (!opts.rirs.is_empty()).then_some(Rooms { set: &rooms, keep });
    let mut notes = Vec::new();
    for (set, role) in [(&clean, "clean"), (&noise, "noise"), (&rooms, "room impulse response")] {
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
            let vrooms = match &opts.val_rirs {
                Some(vr) => Some(ClipSet::load(std::slice::from_ref(vr), rate, "validation room impulse response")?),
                None => None,
            };
            let vrooms = vrooms.as_ref().map(|set| Rooms { set, keep }).or(room_set);
            validation_set(&vclean, &vnoise, vrooms, opts.val_items, rate, opts.seed)
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
    // A searched schedule fits the initial weights, not the trained ones: `diffuse audio search` again.
    if model_cfg.sampler.schedule.take().is_some() {
        notes.push("the initial model's sampler schedule is dropped (search one for the new weights)".into());
    }
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
                None => estimate_sigma_data(&clean, &noise, room_set, opts, 256)?,
            };
            notes.push(format!("data objective: sigma_data {sd:.5} (RMS of x0 − y per real coefficient)"));
            net_config.sigma_data = Some(sd);
        }
        Objective::Crp | Objective::Rectified | Objective::Nft => {
            // The network, σ_d and output kind are the initial model's (checked by InitModel::load); the model
            // learns the sampler it will run (crp through it, rectified for it, nft on its generations), so that
            // sampler becomes its default.
            model_cfg.sampler.name = opts.crp_solver.clone();
            model_cfg.sampler.steps = opts.crp_steps;
            let init = opts.init.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            let (solver, steps) = (&opts.crp_solver, opts.crp_steps);
            notes.push(if opts.objective == Objective::Crp {
                format!("crp: fine-tuning {init} through {solver} with {steps} steps, {} loss", opts.crp_loss)
            } else if opts.objective == Objective::Nft {
                format!(
                    "nft: fine-tuning {init} on {} generations per mixture by its {} with {} steps, reward {}, \
                     β {}",
                    opts.nft_group, opts.pair_solver, opts.pair_steps, opts.nft_reward, opts.nft_beta
                )
            } else {
                format!(
                    "rectified: re-training {init} on the (noise, sample) pairs of its {} with {} steps, for \
                     {solver} with {steps} steps",
                    opts.pair_solver, opts.pair_steps
                )
            });
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
        "task": if opts.rirs.is_empty() { "enhance" } else { "dereverb" },
        "rirs": opts.rirs, "rir_count": rooms.clips.len(), "val_rirs": opts.val_rirs,
        "dereverb_target": (!opts.rirs.is_empty()).then(|| format!(
            "the impulse response from {} samples before its peak to {} ms after it",
            data::DIRECT_PATH_HALF_WIDTH, opts.early_ms
        )),
    });

    // Network and state.
    if opts.device.is_cuda() {
        // Fixed shapes: let cuDNN pick the fastest convolution algorithms once.
        tch::Cuda::cudnn_set_benchmark(true);
    }
    tch::manual_seed(mix64(opts.seed ^ 0x006e_6574_776f_726b) as i64);
    let mut vs = nn::VarStore::new(opts.device);
    let net = ScoreNet::new(&vs.root(), &net_config)?;
    // Rectified Diffusion's pairs come from the frozen initial model (its own copy of the weights).
    let teacher = match (&init, opts.objective) {
        (Some(i), Objective::Rectified) => {
            let copies = i.tensors.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
            Some(crate::ScoreModel::native_from_tensors(copies, i.config.clone(), &i.path, opts.device)?)
        }
        _ => None,
    };
    let pair_sampler = match (&teacher, &init) {
        (Some(t), _) => Some(crate::sampling::CoreSampler::new(&opts.pair_solver, opts.pair_steps, t.config())?),
        (None, Some(i)) if opts.objective == Objective::Nft => {
            Some(crate::sampling::CoreSampler::new(&opts.pair_solver, opts.pair_steps, &i.config)?)
        }
        _ => None,
    };
    // DiffusionNFT's old policy: the frozen initial network, in a store of its own.
    let mut old_vs = nn::VarStore::new(opts.device);
    let old_net = match (&init, opts.objective) {
        (Some(i), Objective::Nft) => {
            let net = ScoreNet::new(&old_vs.root(), &net_config)?;
            let copies = i.tensors.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
            crate::model::load_vars(&mut old_vs, copies, &i.path)?;
            old_vs.freeze();
            Some(net)
        }
        _ => None,
    };
    if let Some(i) = init {
        crate::model::load_vars(&mut vs, i.tensors, &i.path)?;
    }
    let mut state = State::new(&vs)?;
    let params = vs.trainable_variables();
    let crp_sampler = match opts.objective {
        Objective::Crp => Some(crate::sampling::CoreSampler::new(&opts.crp_solver, opts.crp_steps, &model_cfg)?),
        _ => None,
    };
    let options = serde_json::json!({
        "network": net_config, "batch": opts.batch, "crop_frames": opts.crop_frames, "seed": opts.seed,
        "objective": opts.objective,
        "crp": (opts.objective == Objective::Crp).then(|| (opts.crp_solver.clone(), opts.crp_steps, opts.crp_loss)),
        "crp_adjoint": opts.crp_adjoint,
        "pairs": matches!(opts.objective, Objective::Rectified | Objective::Nft)
            .then(|| (opts.pair_solver.clone(), opts.pair_steps)),
        "nft": (opts.objective == Objective::Nft).then_some((opts.nft_reward, opts.nft_group, opts.nft_beta)),
        "mixing": opts.mixing(),
        "rooms_keep_ms": (!opts.rirs.is_empty()).then_some(opts.early_ms),
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
                mix(&clean, &noise, room_set, crop_len, opts.mixing(), &mut d)
            })
            .collect();
        let (c, n) = wave_batch(&pairs)?;
        drop(pairs);
        let x0 = spectrogram_batch_torch(&c.f_to_device(opts.device)?, &model_cfg)?;
        let y = spectrogram_batch_torch(&n.f_to_device(opts.device)?, &model_cfg)?;
        tch::manual_seed(mix64(opts.seed ^ mix64(step) ^ 0x6c6f_7373) as i64);
        // The adjoint puts its gradient into the parameters itself.
        let (loss, backpropagated) = match opts.objective {
            Objective::Score => (dsm_loss(&net, &model_cfg, &x0, &y)?, false),
            Objective::Data => (data_loss(&net, &model_cfg, &x0, &y)?, false),
            Objective::Rectified => {
                // Built above for this objective.
                let (Some(teacher), Some(sampler)) = (&teacher, &pair_sampler) else {
                    return Err(Error::invalid("rectified", "no initial model"));
                };
                let teacher = crate::sampling::SgmseDenoiser::new(teacher);
                (rectified_loss(&net, &model_cfg, &teacher, sampler, &y)?, false)
            }
            Objective::Nft => {
                // Built above for this objective.
                let (Some(old), Some(sampler)) = (&old_net, &pair_sampler) else {
                    return Err(Error::invalid("nft", "no initial model"));
                };
                let nft = Nft {
                    net: &net,
                    old,
                    config: &model_cfg,
                    sampler,
                    reward: opts.nft_reward,
                    group: opts.nft_group,
                    beta: opts.nft_beta,
                };
                (nft.loss(&x0, &y)?.0, false)
            }
            Objective::Crp => {
                // Built above for this objective.
                let sampler = crp_sampler.as_ref().ok_or_else(|| Error::invalid("crp", "no sampler"))?;
                let x_t = crp_prior(sampler, &x0, &y)?;
                let crp = Crp { net: &net, config: &model_cfg, sampler, loss: opts.crp_loss };
                match opts.crp_adjoint {
                    Some(n) => (crp.adjoint(&x0, &y, &x_t, &params, n)?, true),
                    None => (crp.loss(&x0, &y, &x_t)?, false),
                }
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
        if !backpropagated {
            loss.f_backward()?;
        }
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
