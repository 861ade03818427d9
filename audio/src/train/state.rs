//! The run's state: optimiser slots, checkpoints that resume exactly, the model sidecar, the init model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor, nn};

use super::{CrpLoss, Objective, TrainOptions, Validation};
use crate::config::{ModelConfig, OutputKind, sidecar_path};
use crate::{Error, Result};

/// A trained variable: its name and where it lives in the flat buffers.
pub(super) struct Slot {
    pub(super) name: String,
    /// The variable (its data is a view of [`State::flat`]).
    pub(super) param: Tensor,
    pub(super) shape: Vec<i64>,
    pub(super) offset: i64,
    pub(super) numel: i64,
}

/// The training state that goes into a checkpoint. The trained variables are views into one flat buffer, and the
/// Adam moments and the EMA are flat buffers of the same layout, so an update is a handful of whole-buffer
/// operations rather than a dozen per variable (what bounds a step on a GPU for a small network).
pub(super) struct State {
    pub(super) slots: Vec<Slot>,
    pub(super) flat: Tensor,
    pub(super) m: Tensor,
    pub(super) v: Tensor,
    pub(super) ema: Tensor,
    /// Non-trained variables (the Fourier frequencies), saved as they are.
    pub(super) fixed: Vec<(String, Tensor)>,
    pub(super) step: u64,
    pub(super) validations: Vec<Validation>,
    /// Wall time spent training, over every call (resumes included).
    pub(super) seconds: f64,
}

pub(super) const CHECKPOINT: &str = "checkpoint.safetensors";
pub(super) const MODEL: &str = "model.safetensors";

impl State {
    pub(super) fn new(vs: &nn::VarStore) -> Result<Self> {
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
    pub(super) fn part(&self, buffer: &Tensor, s: &Slot) -> Result<Tensor> {
        Ok(buffer.f_narrow(0, s.offset, s.numel)?.f_view(s.shape.as_slice())?)
    }

    pub(super) fn ema_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for s in &self.slots {
            out.push((s.name.clone(), self.part(&self.ema, s)?));
        }
        out.extend(self.fixed.iter().map(|(n, t)| (n.clone(), t.shallow_clone())));
        Ok(out)
    }

    pub(super) fn checkpoint_bytes(&self, options_json: &str) -> Result<Vec<u8>> {
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
    pub(super) fn restore(&mut self, path: &Path) -> Result<()> {
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
    pub(super) fn update(&mut self, lr: f64, clip: f64, decay: f64) -> Result<f64> {
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
pub(super) fn model_sidecar(
    model: &ModelConfig,
    opts: &TrainOptions,
    state: &State,
    data: &serde_json::Value,
) -> ModelConfig {
    let mut c = model.clone();
    let path = model.noise_path().map_or_else(|e| e.to_string(), |p| p.name());
    let loss = match opts.objective {
        Objective::Score => format!("sgmse score_matching on {path}, weights: EMA"),
        Objective::Data => format!(
            "data prediction, EDM-style preconditioning on {path} (sigma_data {:.5}), mean ((x0_hat - x0)/c_out)^2, \
             weights: EMA",
            model.network.as_ref().and_then(|n| n.sigma_data).unwrap_or(f64::NAN)
        ),
        Objective::Rectified => format!(
            "Rectified Diffusion (Wang et al. 2024): mean ((x0_hat - x_pair)/c_out)^2 with x_t = alpha x_pair + gamma y \
             + sigma z, where x_pair is the sample {} with {} steps of the initial model {} makes from the prior \
             y + sigma(1) z with the same z; made for {} with {} steps; weights: EMA",
            opts.pair_solver,
            opts.pair_steps,
            opts.init.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            opts.crp_solver,
            opts.crp_steps
        ),
        Objective::Nft => format!(
            "DiffusionNFT (Zheng et al. 2025): r mean ((x_pos - x_gen)/c_out)^2 + (1 - r) mean ((x_neg - x_gen)/c_out)^2 \
             with x_pos = (1 - beta) x_old + beta x_theta, x_neg = (1 + beta) x_old - beta x_theta (beta {}) on \
             x_t = alpha x_gen + gamma y + sigma z, where x_gen are {} generations per mixture by {} with {} steps \
             of the frozen initial model {} and r = 1/2 + 1/2 clip of their {} reward's deviation from the group \
             mean over its batch standard deviation; made for {} with {} steps; weights: EMA",
            opts.nft_beta,
            opts.nft_group,
            opts.pair_solver,
            opts.pair_steps,
            opts.init.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            opts.nft_reward,
            opts.crp_solver,
            opts.crp_steps
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

/// Refuses to resume with options that change what the run draws or optimises (batch, crop, seed, objective, crp
/// sampler, mixing), since the resumed run would no longer continue the checkpoint's. Options a checkpoint predates
/// (mixing before it was recorded) are not checked.
pub(super) fn check_resume_options(path: &Path, now: &serde_json::Value) -> Result<()> {
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
pub(super) fn checkpoint_sigma_data(path: &Path) -> Result<Option<f64>> {
    let meta = crate::weights::read_metadata(path)?;
    let options: serde_json::Value = meta.get("options").and_then(|o| serde_json::from_str(o).ok()).unwrap_or_default();
    Ok(options["network"]["sigma_data"].as_f64())
}

/// The model a run starts from (`--init`).
pub(super) struct InitModel {
    pub(super) path: PathBuf,
    pub(super) config: ModelConfig,
    pub(super) tensors: Vec<(String, Tensor)>,
}

impl InitModel {
    /// Reads a native model and its sidecar and checks that `objective` can continue from it.
    pub(super) fn load(path: &Path, objective: Objective) -> Result<Self> {
        if !crate::model::is_native(path) {
            return Err(Error::model(path, "--init needs a native model (.safetensors with its .json sidecar)"));
        }
        let config = ModelConfig::read(&sidecar_path(path))?;
        let Some(net) = config.network.as_ref() else {
            return Err(Error::model(path, "the sidecar has no `network`: not a native model"));
        };
        let wants_data = matches!(objective, Objective::Data | Objective::Crp | Objective::Rectified | Objective::Nft);
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
