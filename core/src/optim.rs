//! AdamW with gradient clipping and an exponential moving average of the weights, written here (not tch's
//! optimiser) so that both moments and the EMA go into checkpoints and a resumed training run continues
//! bit for bit. Shared by every domain crate's training loop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::weights::{self, named};
use crate::{Error, Result};

/// The optimiser's settings (the learning rate is given per step, so schedules live with the caller).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamSettings {
    /// Adam's β1 and β2.
    pub betas: (f64, f64),
    /// Decoupled weight decay (AdamW); 0 is Adam.
    pub weight_decay: f64,
    /// Gradient clipping by global norm (0: off).
    pub grad_clip: f64,
    /// EMA decay of the weights.
    pub ema_decay: f64,
}

impl AdamSettings {
    /// Checks that β1, β2 and the EMA decay are in [0, 1) and the decay and clipping are ≥ 0.
    pub fn validate(&self) -> Result<()> {
        let unit = |v: f64| (0.0..1.0).contains(&v);
        if !(unit(self.ema_decay) && unit(self.betas.0) && unit(self.betas.1)) {
            return Err(Error::invalid("optimiser", "EMA decay, β1 and β2 must be in [0, 1)"));
        }
        if !(self.weight_decay >= 0.0 && self.grad_clip >= 0.0) {
            return Err(Error::invalid("optimiser", "weight decay and gradient clipping must be ≥ 0"));
        }
        Ok(())
    }
}

/// What a training run does; `recipe` holds the options a resumed run must keep (recorded in the checkpoint).
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions<R> {
    /// The recipe (batch, optimiser, seed, …), checked on resume.
    pub recipe: R,
    /// Total steps (a resumed run continues up to this count).
    pub steps: u64,
    /// Write a checkpoint every this many steps (0: only when stopping).
    pub checkpoint_every: u64,
    /// Stop (with a checkpoint and the model) once this much time has passed.
    pub time_limit: Option<Duration>,
    /// Output folder: `model.safetensors` + `model.json` (EMA weights) and `checkpoint.safetensors`.
    pub out: PathBuf,
    /// Continue from the folder's checkpoint.
    pub resume: bool,
    /// Validate every this many steps and at the end (0: only at the end, or never where validation is
    /// optional).
    pub validate_every: u64,
}

/// One training step as [`drive`] reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The step just done (1-based, counting resumed steps).
    pub step: u64,
    /// Total steps.
    pub steps: u64,
    /// Its loss.
    pub loss: f64,
    /// Time since this run (not the resumed one) started.
    pub elapsed: Duration,
    /// The validation score at this step (EMA weights), when validation ran.
    pub validation: Option<f64>,
}

/// What a run of [`drive`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriveReport {
    /// Steps done in total (including resumed ones).
    pub step: u64,
    /// Loss of the last step (NaN when none ran).
    pub last_loss: f64,
    /// Whether the time limit stopped it early.
    pub stopped_by_time: bool,
    /// The last validation score, if any.
    pub validation: Option<f64>,
}

/// The loop every trainer shares, from `state.step + 1` to `opts.steps`: `step(n)` computes step n's loss and its
/// gradients and returns the loss (a non-finite loss stops the run with [`Error::Training`], the last checkpoint
/// kept); `update(n)` gives the optimiser settings and learning rate of the update that follows; `validate`, if
/// given, runs on the EMA weights every `opts.validate_every` steps (0: never mid-run) and at the last step;
/// `progress` sees every step; a checkpoint with `opts.recipe` is written every `opts.checkpoint_every` steps and
/// at the end; the time limit stops the run after the step that passes it. On return the model holds the EMA
/// weights and the checkpoint is on disk; the caller writes the model.
pub fn drive<R: Serialize, E: From<Error>>(
    state: &mut AdamEma,
    opts: &RunOptions<R>,
    step: &mut dyn FnMut(u64) -> std::result::Result<f64, E>,
    update: &dyn Fn(u64) -> (AdamSettings, f64),
    mut validate: Option<&mut dyn FnMut(u64) -> std::result::Result<f64, E>>,
    progress: &mut dyn FnMut(&StepReport),
) -> std::result::Result<DriveReport, E> {
    let ckpt = opts.out.join(CHECKPOINT);
    let started = std::time::Instant::now();
    let mut report = DriveReport { step: state.step, last_loss: f64::NAN, stopped_by_time: false, validation: None };
    while state.step < opts.steps {
        let n = state.step + 1;
        let loss = step(n)?;
        if !loss.is_finite() {
            return Err(
                Error::Training { step: n, reason: format!("loss is {loss}; the last checkpoint is kept") }.into()
            );
        }
        let (settings, lr) = update(n);
        state.update(&settings, lr)?;
        report.step = n;
        report.last_loss = loss;
        let last = n == opts.steps || opts.time_limit.is_some_and(|lim| started.elapsed() >= lim);
        let mut score = None;
        if let Some(v) = validate.as_mut()
            && (n.is_multiple_of(opts.validate_every) || last)
        {
            score = Some(state.with_ema(|| v(n))?);
            report.validation = score;
        }
        progress(&StepReport { step: n, steps: opts.steps, loss, elapsed: started.elapsed(), validation: score });
        if opts.checkpoint_every > 0 && n.is_multiple_of(opts.checkpoint_every) && n < opts.steps {
            state.save_with_recipe(&ckpt, &opts.recipe)?;
        }
        if last && n < opts.steps {
            report.stopped_by_time = true;
            break;
        }
    }
    state.save_with_recipe(&ckpt, &opts.recipe)?;
    state.keep_ema()?;
    Ok(report)
}

/// A learning rate that warms up linearly to `peak` over `warmup` steps, then decays along a half cosine to
/// `floor · peak` at step `decay_steps` and stays there.
pub fn warmup_cosine(peak: f64, warmup: u64, step: u64, decay_steps: u64, floor: f64) -> f64 {
    if step <= warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    let span = decay_steps.saturating_sub(warmup).max(1) as f64;
    let f = ((step - warmup) as f64 / span).min(1.0);
    peak * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * f).cos()))
}

/// The checkpoint file every trainer writes in its output folder.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// AdamW moments and the EMA, parallel to a var store's variables sorted by name.
#[derive(Debug)]
pub struct AdamEma {
    names: Vec<String>,
    params: Vec<Tensor>,
    ema: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates done.
    pub step: u64,
}

impl AdamEma {
    /// Fresh state for the variables of `vs` (EMA = the current weights, zero moments).
    pub fn new(vs: &VarStore) -> Result<Self> {
        let mut s = AdamEma { names: vec![], params: vec![], ema: vec![], m: vec![], v: vec![], step: 0 };
        for (name, p) in named(vs) {
            s.ema.push(p.f_detach()?.copy());
            s.m.push(p.f_zeros_like()?);
            s.v.push(p.f_zeros_like()?);
            s.names.push(name);
            s.params.push(p);
        }
        Ok(s)
    }

    /// Writes the weights, EMA, moments, step and `metadata` to `path` atomically.
    pub fn save(&self, path: &Path, mut metadata: HashMap<String, String>) -> Result<()> {
        let mut tensors = Vec::new();
        for (i, n) in self.names.iter().enumerate() {
            for (prefix, t) in [("p", &self.params[i]), ("ema", &self.ema[i]), ("m", &self.m[i]), ("v", &self.v[i])] {
                tensors.push((format!("{prefix}/{n}"), t.shallow_clone()));
            }
        }
        metadata.insert("step".to_string(), self.step.to_string());
        let bytes = weights::to_bytes(&tensors, metadata)?;
        crate::io::write_atomic(path, true, |f| std::io::Write::write_all(f, &bytes))?;
        Ok(())
    }

    /// Restores a checkpoint written by [`AdamEma::save`] and returns its metadata (the caller checks that its
    /// recipe matches). Errors name `path`.
    pub fn load(&mut self, path: &Path) -> Result<HashMap<String, String>> {
        let (tensors, meta) = weights::read(path)?;
        let bad = |r: String| Error::file(path, r);
        self.step = meta.get("step").and_then(|s| s.parse().ok()).ok_or_else(|| bad("no step count".into()))?;
        let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
        let _guard = tch::no_grad_guard();
        for (i, n) in self.names.iter().enumerate() {
            for (prefix, dst) in
                [("p", &mut self.params[i]), ("ema", &mut self.ema[i]), ("m", &mut self.m[i]), ("v", &mut self.v[i])]
            {
                let key = format!("{prefix}/{n}");
                let t = by_name.remove(&key).ok_or_else(|| bad(format!("missing tensor '{key}'")))?;
                if t.size() != dst.size() {
                    return Err(bad(format!(
                        "tensor '{key}' has shape {:?}, the model needs {:?}",
                        t.size(),
                        dst.size()
                    )));
                }
                dst.f_copy_(&t)?;
            }
        }
        if let Some(extra) = by_name.keys().next() {
            return Err(bad(format!("unexpected tensor '{extra}': the checkpoint does not fit this network")));
        }
        Ok(meta)
    }

    /// [`AdamEma::save`] with `recipe` recorded as JSON under the metadata key `recipe`.
    pub fn save_with_recipe<R: Serialize>(&self, path: &Path, recipe: &R) -> Result<()> {
        let recipe = serde_json::to_string(recipe).map_err(|e| Error::invalid("recipe", e.to_string()))?;
        self.save(path, HashMap::from([("recipe".to_string(), recipe)]))
    }

    /// [`AdamEma::load`] of a checkpoint written by [`AdamEma::save_with_recipe`], refusing one whose recipe is
    /// not `recipe` (a resumed run must keep it). Errors name `path`.
    pub fn load_with_recipe<R: DeserializeOwned + PartialEq + std::fmt::Debug>(
        &mut self,
        path: &Path,
        recipe: &R,
    ) -> Result<()> {
        let meta = self.load(path)?;
        let saved: R = meta
            .get("recipe")
            .and_then(|r| serde_json::from_str(r).ok())
            .ok_or_else(|| Error::file(path, "not a training checkpoint of this kind (no matching recipe)"))?;
        if &saved != recipe {
            return Err(Error::file(
                path,
                format!("was trained with {saved:?}; resuming needs the same recipe, got {recipe:?}"),
            ));
        }
        Ok(())
    }

    /// Runs `f` with the EMA weights in the model's variables, then puts the trained weights back.
    pub fn with_ema<T, E: From<Error>>(
        &mut self,
        f: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let _guard = tch::no_grad_guard();
        let saved: Vec<Tensor> = self.params.iter().map(|p| p.detach().copy()).collect();
        for (p, e) in self.params.iter_mut().zip(&self.ema) {
            p.f_copy_(e).map_err(Error::from)?;
        }
        let out = f();
        for (p, s) in self.params.iter_mut().zip(&saved) {
            p.f_copy_(s).map_err(Error::from)?;
        }
        out
    }

    /// Replaces the model's weights by their EMA for good (at the end of training).
    pub fn keep_ema(&mut self) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for (p, e) in self.params.iter_mut().zip(&self.ema) {
            p.f_copy_(e)?;
        }
        Ok(())
    }

    /// One AdamW update with learning rate `lr` and one EMA step from the parameters' gradients, which are then
    /// zeroed. Returns the gradient's global norm before clipping.
    pub fn update(&mut self, s: &AdamSettings, lr: f64) -> Result<f64> {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).collect();
        let mut sq = 0.0;
        for g in grads.iter().filter(|g| g.defined()) {
            sq += g.f_square()?.f_sum(Kind::Double)?.double_value(&[]);
        }
        let norm = sq.sqrt();
        let scale = if s.grad_clip > 0.0 && norm > s.grad_clip { s.grad_clip / norm } else { 1.0 };
        let (b1, b2) = s.betas;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for i in 0..self.params.len() {
            let g = &grads[i];
            if !g.defined() {
                continue;
            }
            let g = g.f_mul_scalar(scale)?;
            self.m[i] = self.m[i].f_mul_scalar(b1)?.f_add(&g.f_mul_scalar(1.0 - b1)?)?;
            self.v[i] = self.v[i].f_mul_scalar(b2)?.f_add(&g.f_square()?.f_mul_scalar(1.0 - b2)?)?;
            let denom = self.v[i].f_div_scalar(c2)?.f_sqrt()?.f_add_scalar(1e-8)?;
            let upd = self.m[i].f_div_scalar(c1)?.f_div(&denom)?;
            let p = &mut self.params[i];
            if s.weight_decay > 0.0 {
                let _ = p.f_mul_scalar_(1.0 - lr * s.weight_decay)?;
            }
            let _ = p.f_sub_(&upd.f_mul_scalar(lr)?)?;
            p.zero_grad();
            let e = &mut self.ema[i];
            let _ = e.f_mul_scalar_(s.ema_decay)?.f_add_(&p.f_mul_scalar(1.0 - s.ema_decay)?)?;
        }
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, nn};

    fn settings() -> AdamSettings {
        AdamSettings { betas: (0.9, 0.999), weight_decay: 0.01, grad_clip: 1.0, ema_decay: 0.5 }
    }

    fn quadratic_step(vs: &VarStore, opt: &mut AdamEma) {
        let w = &vs.variables()["w"];
        let loss = (w - Tensor::from_slice(&[3.0f32, -1.0])).square().sum(Kind::Float);
        loss.backward();
        opt.update(&settings(), 0.1).unwrap();
    }

    #[test]
    fn first_adam_step_moves_each_weight_by_lr_and_resume_is_exact() {
        let vs = VarStore::new(Device::Cpu);
        let _w = vs.root().var("w", &[2], nn::Init::Const(0.0));
        let mut opt = AdamEma::new(&vs).unwrap();
        quadratic_step(&vs, &mut opt);
        // Adam's first step is lr·sign(g) (bias-corrected moments), here after decay of a zero weight.
        let w: Vec<f32> = Vec::try_from(&vs.variables()["w"]).unwrap();
        assert!((w[0] - 0.1).abs() < 1e-5 && (w[1] + 0.1).abs() < 1e-5, "{w:?}");
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("c.safetensors");
        opt.save(&ckpt, HashMap::from([("recipe".into(), "r".into())])).unwrap();
        for _ in 0..3 {
            quadratic_step(&vs, &mut opt);
        }
        let straight: Vec<f32> = Vec::try_from(&vs.variables()["w"]).unwrap();
        // A second model resumed from the checkpoint reaches the same weights bit for bit.
        let vs2 = VarStore::new(Device::Cpu);
        let _w2 = vs2.root().var("w", &[2], nn::Init::Const(7.0));
        let mut opt2 = AdamEma::new(&vs2).unwrap();
        let meta = opt2.load(&ckpt).unwrap();
        assert_eq!((meta["recipe"].as_str(), opt2.step), ("r", 1));
        for _ in 0..3 {
            quadratic_step(&vs2, &mut opt2);
        }
        let resumed: Vec<f32> = Vec::try_from(&vs2.variables()["w"]).unwrap();
        assert_eq!(straight, resumed);
        // The EMA is swapped in and out.
        let ema = opt2.with_ema(|| Ok::<_, Error>(Vec::<f32>::try_from(&vs2.variables()["w"]).unwrap())).unwrap();
        assert_ne!(ema, resumed);
        assert_eq!(Vec::<f32>::try_from(&vs2.variables()["w"]).unwrap(), resumed);
    }

    #[test]
    fn a_checkpoint_of_another_network_is_refused_by_name() {
        let vs = VarStore::new(Device::Cpu);
        let _w = vs.root().var("w", &[2], nn::Init::Const(0.0));
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("c.safetensors");
        AdamEma::new(&vs).unwrap().save(&ckpt, HashMap::new()).unwrap();
        let other = VarStore::new(Device::Cpu);
        let _u = other.root().var("w", &[3], nn::Init::Const(0.0));
        let err = AdamEma::new(&other).unwrap().load(&ckpt).unwrap_err().to_string();
        assert!(err.contains("c.safetensors") && err.contains("shape"), "{err}");
    }

    #[test]
    fn drive_validates_on_schedule_and_stops_on_a_non_finite_loss_keeping_the_checkpoint() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2], nn::Init::Const(1.0));
        let dir = tempfile::tempdir().unwrap();
        let opts = RunOptions {
            recipe: "r".to_string(),
            steps: 5,
            checkpoint_every: 1,
            time_limit: None,
            out: dir.path().to_path_buf(),
            resume: false,
            validate_every: 2,
        };
        let settings = AdamSettings { betas: (0.9, 0.999), weight_decay: 0.0, grad_clip: 0.0, ema_decay: 0.5 };
        let mut state = AdamEma::new(&vs).unwrap();
        let mut step = |_: u64| -> Result<f64> {
            let loss = w.square().sum(Kind::Float);
            loss.backward();
            Ok(loss.double_value(&[]))
        };
        let (mut validated, mut seen) = (Vec::new(), Vec::new());
        let mut check = |n: u64| -> Result<f64> {
            validated.push(n);
            Ok(n as f64)
        };
        let report =
            drive(&mut state, &opts, &mut step, &|_| (settings, 0.1), Some(&mut check), &mut |s| seen.push(s.step))
                .unwrap();
        // Every 2 steps and at the last one; every step reported; the EMA left in the model.
        assert_eq!((validated, seen), (vec![2, 4, 5], vec![1, 2, 3, 4, 5]));
        assert_eq!((report.step, report.validation, report.stopped_by_time), (5, Some(5.0), false));
        assert!(dir.path().join(CHECKPOINT).exists());
        // A NaN at step 3 stops with the step named; the checkpoint of step 2 stays.
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2], nn::Init::Const(1.0));
        let mut state = AdamEma::new(&vs).unwrap();
        let mut step = |n: u64| -> Result<f64> {
            let loss = w.square().sum(Kind::Float);
            loss.backward();
            Ok(if n == 3 { f64::NAN } else { loss.double_value(&[]) })
        };
        let err = drive(&mut state, &opts, &mut step, &|_| (settings, 0.1), None, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::Training { step: 3, .. }), "{err}");
        let mut back = AdamEma::new(&vs).unwrap();
        back.load(&dir.path().join(CHECKPOINT)).unwrap();
        assert_eq!(back.step, 2);
    }
}
