//! Training a restoration model on clean images with a degradation callback.
//!
//! Each step draws `batch` random crops (with random horizontal/vertical flips) of the clean images, degrades
//! each with the callback (seeded: the same step always gets the same degradations), maps both to [−1, 1], draws
//! t uniformly on the path's sampling range and ε, forms `x_t = α·x0 + γ·y + σ·ε` from the core path, and
//! regresses the network onto the target in the model's parameterization, obtained from (x0, ε) by core's exact
//! conversion (`Prediction::from_data`): plain mean squared error in that parameterization. Adam (AdamW with
//! `weight_decay > 0`), an exponential moving average of the weights (written as the model), checkpoints written
//! atomically every `checkpoint_every` steps and when stopping, and exact resume: every random draw of step n
//! depends only on (seed, n), and the checkpoint holds the weights, EMA and both Adam moments, so a resumed run
//! gives bit-for-bit the result of an uninterrupted one (same device and thread count).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diffuse_core::Prediction;
use diffuse_core::param::At;
use diffuse_core::seed::SampleSeeds;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::model::{RestorationModel, named, unwrap};
use crate::{Error, Result, weights};

/// Largest batch.
pub const MAX_BATCH: usize = 4096;
/// Largest crop side in pixels.
pub const MAX_CROP: usize = 4096;
/// The checkpoint file in the output folder.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// The model file (EMA weights) in the output folder; its sidecar is `model.json`.
pub const MODEL: &str = "model.safetensors";

/// What a training run does. The fields in [`Recipe`] must match when resuming.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// The recipe (batch, crop, optimiser, EMA, seed).
    pub recipe: Recipe,
    /// Total steps (a resumed run continues up to this count).
    pub steps: u64,
    /// Write a checkpoint every this many steps (0: only when stopping).
    pub checkpoint_every: u64,
    /// Stop (with a checkpoint) once this much time has passed.
    pub time_limit: Option<Duration>,
    /// Output folder: `model.safetensors` + `model.json` (EMA weights) and `checkpoint.safetensors`.
    pub out: PathBuf,
    /// Continue from `out/checkpoint.safetensors`.
    pub resume: bool,
    /// Call the validation callback every this many steps and at the end (0: never).
    pub validate_every: u64,
}

/// The options a resumed run must keep, recorded in the checkpoint and the sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Crops per step.
    pub batch: usize,
    /// Crop side in pixels (a multiple of the network's multiple).
    pub crop: usize,
    /// Learning rate.
    pub lr: f64,
    /// Adam's β1 and β2.
    pub betas: (f64, f64),
    /// Decoupled weight decay (AdamW); 0 is Adam.
    pub weight_decay: f64,
    /// Gradient clipping by global norm (0: off).
    pub grad_clip: f64,
    /// EMA decay of the weights written as the model.
    pub ema_decay: f64,
    /// Seed of every random draw.
    pub seed: u64,
    /// Random horizontal and vertical flips.
    pub flips: bool,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            batch: 8,
            crop: 64,
            lr: 2e-4,
            betas: (0.9, 0.999),
            weight_decay: 0.0,
            grad_clip: 1.0,
            ema_decay: 0.999,
            seed: 0,
            flips: true,
        }
    }
}

/// One training step's report to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// The step just done (1-based).
    pub step: u64,
    /// Total steps.
    pub steps: u64,
    /// Its loss.
    pub loss: f64,
    /// Time since this run (not the resumed one) started.
    pub elapsed: Duration,
    /// The validation callback's score at this step (EMA weights), when it ran.
    pub validation: Option<f64>,
}

/// A validation callback: called with the model holding the EMA weights and the step; returns a score (e.g. the
/// mean PSNR on validation pairs). It may use the global torch generator: training draws nothing from it.
pub type Validate<'a> = &'a mut dyn FnMut(&RestorationModel, u64) -> Result<f64>;

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Steps done in total (including resumed ones).
    pub step: u64,
    /// Loss of the last step (NaN when none ran).
    pub last_loss: f64,
    /// Whether the time limit stopped it early.
    pub stopped_by_time: bool,
    /// The last validation score, if any.
    pub validation: Option<f64>,
}

/// The optimiser and EMA state, parallel to the model's sorted variables.
struct State {
    names: Vec<String>,
    params: Vec<Tensor>,
    ema: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
}

impl State {
    fn new(model: &RestorationModel) -> Result<Self> {
        let vars = named(model.var_store());
        let mut s = State { names: vec![], params: vec![], ema: vec![], m: vec![], v: vec![], step: 0 };
        for (name, p) in vars {
            s.ema.push(p.f_detach()?.copy());
            s.m.push(p.f_zeros_like()?);
            s.v.push(p.f_zeros_like()?);
            s.names.push(name);
            s.params.push(p);
        }
        Ok(s)
    }

    fn save(&self, path: &Path, recipe: &Recipe) -> Result<()> {
        let mut tensors = Vec::new();
        for (i, n) in self.names.iter().enumerate() {
            for (prefix, t) in [("p", &self.params[i]), ("ema", &self.ema[i]), ("m", &self.m[i]), ("v", &self.v[i])] {
                tensors.push((format!("{prefix}/{n}"), t.shallow_clone()));
            }
        }
        let meta = HashMap::from([
            ("step".to_string(), self.step.to_string()),
            ("recipe".to_string(), serde_json::to_string(recipe).map_err(|e| Error::invalid("recipe", e.to_string()))?),
        ]);
        let bytes = weights::to_bytes(&tensors, meta)?;
        diffuse_core::io::write_atomic(path, true, |f| std::io::Write::write_all(f, &bytes))?;
        Ok(())
    }

    fn load(&mut self, path: &Path, recipe: &Recipe) -> Result<()> {
        let (tensors, meta) = weights::read(path)?;
        let bad = |r: String| Error::model(path, r);
        let saved: Recipe = meta
            .get("recipe")
            .and_then(|r| serde_json::from_str(r).ok())
            .ok_or_else(|| bad("not a training checkpoint (no recipe)".into()))?;
        if &saved != recipe {
            return Err(bad(format!("was trained with {saved:?}; resuming needs the same recipe, got {recipe:?}")));
        }
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
        Ok(())
    }

    /// Runs `f` with the EMA weights in the model's variables, then restores the trained weights.
    fn with_ema<T>(&mut self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _guard = tch::no_grad_guard();
        let saved: Vec<Tensor> = self.params.iter().map(|p| p.detach().copy()).collect();
        for (p, e) in self.params.iter_mut().zip(&self.ema) {
            p.f_copy_(e)?;
        }
        let out = f();
        for (p, s) in self.params.iter_mut().zip(&saved) {
            p.f_copy_(s)?;
        }
        out
    }

    /// One Adam(W) update and EMA step from the parameters' gradients.
    fn update(&mut self, r: &Recipe) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).collect();
        let mut scale = 1.0;
        if r.grad_clip > 0.0 {
            let mut sq = 0.0;
            for g in grads.iter().filter(|g| g.defined()) {
                sq += g.f_square()?.f_sum(Kind::Double)?.double_value(&[]);
            }
            let norm = sq.sqrt();
            if norm > r.grad_clip {
                scale = r.grad_clip / norm;
            }
        }
        let (b1, b2) = r.betas;
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
            if r.weight_decay > 0.0 {
                let _ = p.f_mul_scalar_(1.0 - r.lr * r.weight_decay)?;
            }
            let _ = p.f_sub_(&upd.f_mul_scalar(r.lr)?)?;
            p.zero_grad();
            let e = &mut self.ema[i];
            let _ = e.f_mul_scalar_(r.ema_decay)?.f_add_(&p.f_mul_scalar(1.0 - r.ema_decay)?)?;
        }
        Ok(())
    }
}

/// SplitMix64: one well-mixed 64-bit value per input.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn check(model: &RestorationModel, images: &[Tensor], opts: &TrainOptions) -> Result<()> {
    let r = &opts.recipe;
    let m = model.config().network.multiple();
    let c = model.config().network.image_channels as i64;
    if r.batch == 0 || r.batch > MAX_BATCH {
        return Err(Error::invalid("batch", format!("must be 1 to {MAX_BATCH}, got {}", r.batch)));
    }
    if r.crop == 0 || r.crop > MAX_CROP || !r.crop.is_multiple_of(m) {
        return Err(Error::invalid("crop", format!("must be a multiple of {m} up to {MAX_CROP}, got {}", r.crop)));
    }
    let unit_range = |v: f64| (0.0..1.0).contains(&v);
    if !(r.lr > 0.0 && r.lr.is_finite() && unit_range(r.ema_decay) && unit_range(r.betas.0) && unit_range(r.betas.1)) {
        return Err(Error::invalid("recipe", "need lr > 0 and EMA decay, β1, β2 in [0, 1)"));
    }
    if !(r.weight_decay >= 0.0 && r.grad_clip >= 0.0) {
        return Err(Error::invalid("recipe", "weight_decay and grad_clip must be ≥ 0"));
    }
    if images.is_empty() {
        return Err(Error::invalid("images", "no training images"));
    }
    for (i, im) in images.iter().enumerate() {
        let s = im.size();
        if s.len() != 3 || s[0] != c || s[1] < r.crop as i64 || s[2] < r.crop as i64 {
            return Err(Error::Shape {
                op: "training image",
                expected: format!("[{c}, H ≥ {0}, W ≥ {0}] (image {i})", r.crop),
                got: format!("{s:?}"),
            });
        }
    }
    Ok(())
}

/// Trains `model` on clean `images` (`[C, H, W]`, values in [0, 1]) degraded by `degrade(clean_crop, seed)`
/// (returns the degraded crop, same shape, values in [0, 1]); writes the checkpoint and, at the end, the EMA model
/// (`model.safetensors` + `model.json`) in `opts.out`, and loads the EMA weights into `model`. `validate`, when
/// given, runs every `opts.validate_every` steps and at the end on the EMA weights.
pub fn train(
    model: &mut RestorationModel,
    images: &[Tensor],
    degrade: &mut dyn FnMut(&Tensor, u64) -> Tensor,
    opts: &TrainOptions,
    progress: &mut dyn FnMut(&Progress),
    mut validate: Option<Validate<'_>>,
) -> Result<TrainReport> {
    check(model, images, opts)?;
    let r = opts.recipe.clone();
    let ckpt = opts.out.join(CHECKPOINT);
    let mut state = State::new(model)?;
    if opts.resume {
        state.load(&ckpt, &r)?;
    }
    let path = model.path();
    let (t_lo, t_hi) = path.t_range();
    let param = model.config().parameterization;
    let device = model.var_store().device();
    let crop = r.crop as i64;
    let started = Instant::now();
    let mut report = TrainReport { step: state.step, last_loss: f64::NAN, stopped_by_time: false, validation: None };
    while state.step < opts.steps {
        let n = state.step + 1;
        let base = mix(r.seed ^ mix(n));
        let (mut clean, mut degr, mut ts) = (Vec::new(), Vec::new(), Vec::new());
        for b in 0..r.batch as u64 {
            let h = mix(base ^ mix(b + 1));
            let im = &images[(h % images.len() as u64) as usize];
            let s = im.size();
            let (top, left) = (mix(h ^ 1) % (s[1] - crop + 1) as u64, mix(h ^ 2) % (s[2] - crop + 1) as u64);
            let mut c = im.f_narrow(1, top as i64, crop)?.f_narrow(2, left as i64, crop)?.f_to_kind(Kind::Float)?;
            if r.flips && mix(h ^ 3) & 1 == 1 {
                c = c.f_flip([2])?;
            }
            if r.flips && mix(h ^ 4) & 1 == 1 {
                c = c.f_flip([1])?;
            }
            let c = c.f_contiguous()?;
            let y = degrade(&c, mix(h ^ 5));
            if y.size() != c.size() {
                return Err(Error::Shape {
                    op: "degradation output",
                    expected: format!("{:?}", c.size()),
                    got: format!("{:?}", y.size()),
                });
            }
            clean.push(c);
            degr.push(y.f_to_kind(Kind::Float)?);
            ts.push(t_lo + (t_hi - t_lo) * unit(mix(h ^ 6)));
        }
        let to_pm1 = |v: Vec<Tensor>| -> Result<Tensor> {
            Ok(Tensor::f_stack(&v, 0)?.f_to_device(device)?.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?)
        };
        let (x0, y) = (to_pm1(clean)?, to_pm1(degr)?);
        let eps = SampleSeeds::new(base, 0, r.batch).normal(0, &x0.size()[1..], Kind::Float, device);
        let (mut xs, mut targets) = (Vec::new(), Vec::new());
        for (b, &t) in ts.iter().enumerate() {
            let (x0b, yb, eb) = (x0.f_get(b as i64)?, y.f_get(b as i64)?, eps.f_get(b as i64)?);
            let p = path.point(t);
            let xb = x0b.f_mul_scalar(p.alpha)?.f_add(&yb.f_mul_scalar(p.gamma)?)?.f_add(&eb.f_mul_scalar(p.sigma)?)?;
            let at = At::new(path.as_ref(), t, &xb, Some(&yb));
            targets.push(unwrap(Prediction::from_data(param, &x0b, Some(&eb), &at)?)?);
            xs.push(xb);
        }
        let (xt, target) = (Tensor::f_stack(&xs, 0)?, Tensor::f_stack(&targets, 0)?);
        let tt = Tensor::f_from_slice(&ts)?.f_to_kind(Kind::Float)?.f_to_device(device)?;
        let out = model.forward(&xt, &y, &tt)?;
        let loss = out.f_mse_loss(&target, tch::Reduction::Mean)?;
        let lv = loss.double_value(&[]);
        if !lv.is_finite() {
            return Err(Error::Training { step: n, reason: format!("loss is {lv}; the last checkpoint is kept") });
        }
        loss.f_backward()?;
        state.update(&r)?;
        report.step = state.step;
        report.last_loss = lv;
        let last = n == opts.steps || opts.time_limit.is_some_and(|lim| started.elapsed() >= lim);
        let mut score = None;
        if let Some(v) = validate.as_mut()
            && opts.validate_every > 0
            && (n % opts.validate_every == 0 || last)
        {
            score = Some(state.with_ema(|| v(model, n))?);
            report.validation = score;
        }
        progress(&Progress { step: n, steps: opts.steps, loss: lv, elapsed: started.elapsed(), validation: score });
        if opts.checkpoint_every > 0 && n % opts.checkpoint_every == 0 && n < opts.steps {
            state.save(&ckpt, &r)?;
        }
        if last && n < opts.steps {
            report.stopped_by_time = true;
            break;
        }
    }
    state.save(&ckpt, &r)?;
    // The model is the EMA of the weights.
    {
        let _guard = tch::no_grad_guard();
        for (p, e) in state.params.iter_mut().zip(&state.ema) {
            p.f_copy_(e)?;
        }
    }
    let recipe = serde_json::json!({"recipe": r, "steps": report.step, "stopped_by_time": report.stopped_by_time});
    model.config_mut().training = recipe;
    model.save(&opts.out.join(MODEL), true)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::net::NetConfig;
    use diffuse_core::Parameterization;
    use diffuse_core::path::PathSpec;
    use tch::Device;

    /// Images from seeded streams (the global torch generator is shared by tests running in parallel).
    fn images() -> Vec<Tensor> {
        let z = SampleSeeds::new(11, 0, 3).normal(0, &[3, 20, 24], Kind::Float, Device::Cpu);
        (0..3).map(|i| z.get(i).sigmoid()).collect()
    }

    fn noisy(c: &Tensor, seed: u64) -> Tensor {
        let n = SampleSeeds::new(seed, 0, 1).normal(0, &c.size(), Kind::Float, Device::Cpu).squeeze_dim(0);
        (c + n * 0.1).clamp(0.0, 1.0)
    }

    fn model(p: Parameterization, kind: &str) -> RestorationModel {
        RestorationModel::new(
            ModelConfig::new("denoise", PathSpec::default_of(kind).unwrap(), p, NetConfig::tiny(3, 1)),
            Device::Cpu,
        )
        .unwrap()
    }

    /// A copy of `m` (same initial weights, whatever other tests do with the global generator).
    fn copy(m: &RestorationModel) -> RestorationModel {
        RestorationModel::from_bytes(&m.to_bytes().unwrap(), m.config().clone(), Path::new("copy"), Device::Cpu)
            .unwrap()
    }

    fn opts(out: &Path, steps: u64, resume: bool) -> TrainOptions {
        TrainOptions {
            recipe: Recipe { batch: 2, crop: 8, lr: 1e-3, ema_decay: 0.9, weight_decay: 0.01, ..Recipe::default() },
            steps,
            checkpoint_every: 0,
            time_limit: None,
            out: out.to_path_buf(),
            resume,
            validate_every: 0,
        }
    }

    fn checkpoint(dir: &Path) -> Vec<(String, Tensor)> {
        let mut t = weights::read(&dir.join(CHECKPOINT)).unwrap().0;
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    }

    /// Resuming after 2 of 5 steps gives bit-for-bit the weights, EMA and Adam state of an uninterrupted run.
    #[test]
    fn resume_is_exact() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let p = Parameterization::Residual;
        let mut losses = Vec::new();
        let init = model(p, "rddm");
        let mut m1 = copy(&init);
        let rep =
            train(&mut m1, &images(), &mut noisy, &opts(a.path(), 5, false), &mut |pr| losses.push(pr.loss), None)
                .unwrap();
        assert_eq!(rep.step, 5);
        assert_eq!(losses.len(), 5);
        let mut m2 = copy(&init);
        train(&mut m2, &images(), &mut noisy, &opts(b.path(), 2, false), &mut |_| {}, None).unwrap();
        let mut m3 = model(p, "rddm");
        let mut resumed = Vec::new();
        train(
            &mut m3,
            &images(),
            &mut noisy,
            &opts(b.path(), 5, true),
            &mut |pr| resumed.push((pr.step, pr.loss)),
            None,
        )
        .unwrap();
        assert_eq!(resumed.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(resumed.iter().map(|r| r.1).collect::<Vec<_>>(), losses[2..].to_vec());
        for ((ka, ta), (kb, tb)) in checkpoint(a.path()).iter().zip(checkpoint(b.path())) {
            assert_eq!(ka, &kb);
            assert_eq!(ta, &tb, "{ka} differs after resume");
        }
        let (wa, wb) = (std::fs::read(a.path().join(MODEL)).unwrap(), std::fs::read(b.path().join(MODEL)).unwrap());
        assert_eq!(wa, wb);
        // A different recipe cannot resume.
        let mut o = opts(b.path(), 6, true);
        o.recipe.lr = 5e-4;
        let err = train(&mut model(p, "rddm"), &images(), &mut noisy, &o, &mut |_| {}, None).unwrap_err().to_string();
        assert!(err.contains(CHECKPOINT) && err.contains("same recipe"), "{err}");
    }

    /// Every parameterization trains (finite, falling loss on a fixed batch size) on every residual path, and the
    /// written model loads with its recipe.
    #[test]
    fn trains_in_every_parameterization_and_writes_a_loadable_model() {
        for (kind, p) in [
            ("rddm", Parameterization::ResidualNoise),
            ("rddm", Parameterization::Residual),
            ("resfusion", Parameterization::Resnoise),
            ("ir_sde", Parameterization::Eps),
            ("ir_sde", Parameterization::Data),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut m = model(p, kind);
            let mut o = opts(dir.path(), 3, false);
            o.recipe.crop = 16;
            let rep = train(&mut m, &images(), &mut noisy, &o, &mut |_| {}, None).unwrap();
            assert!(rep.last_loss.is_finite(), "{kind}/{p:?}");
            let back = RestorationModel::load(&dir.path().join(MODEL), Device::Cpu).unwrap();
            assert_eq!(back.config().training["steps"], 3);
            assert_eq!(back.config().parameterization, p);
        }
    }

    #[test]
    fn time_limit_stops_with_a_checkpoint_and_bad_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path(), 1000, false);
        o.time_limit = Some(Duration::from_millis(1));
        let rep = train(&mut model(Parameterization::Residual, "rddm"), &images(), &mut noisy, &o, &mut |_| {}, None)
            .unwrap();
        assert!(rep.stopped_by_time && rep.step < 1000);
        assert!(dir.path().join(CHECKPOINT).exists() && dir.path().join(MODEL).exists());
        let mut o = opts(dir.path(), 1, false);
        o.recipe.crop = 7;
        let err = train(&mut model(Parameterization::Residual, "rddm"), &images(), &mut noisy, &o, &mut |_| {}, None);
        assert!(err.unwrap_err().to_string().contains("crop"));
        o.recipe.crop = 32;
        let err = train(&mut model(Parameterization::Residual, "rddm"), &images(), &mut noisy, &o, &mut |_| {}, None);
        assert!(err.unwrap_err().to_string().contains("training image"));
    }

    /// Validation sees the EMA weights (the written model's), every `validate_every` steps and at the end, and
    /// does not change the training run.
    #[test]
    fn validation_runs_on_ema_weights_without_changing_training() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let init = model(Parameterization::Residual, "rddm");
        let mut plain = copy(&init);
        train(&mut plain, &images(), &mut noisy, &opts(a.path(), 5, false), &mut |_| {}, None).unwrap();
        let mut o = opts(b.path(), 5, false);
        o.validate_every = 2;
        let mut seen = Vec::new();
        let mut scores = Vec::new();
        let mut v = |m: &RestorationModel, step: u64| -> Result<f64> {
            tch::manual_seed(99); // the global generator is free to use
            let _ = Tensor::randn([4], (Kind::Float, Device::Cpu));
            seen.push(step);
            Ok(f64::try_from(m.var_store().variables()["conv_in.weight"].abs().sum(Kind::Double)).unwrap())
        };
        let mut validated = copy(&init);
        let rep =
            train(&mut validated, &images(), &mut noisy, &o, &mut |p| scores.push(p.validation), Some(&mut v)).unwrap();
        assert_eq!(seen, vec![2, 4, 5]);
        assert_eq!(scores.iter().filter(|s| s.is_some()).count(), 3);
        let final_ema =
            f64::try_from(validated.var_store().variables()["conv_in.weight"].abs().sum(Kind::Double)).unwrap();
        assert_eq!(rep.validation, Some(final_ema));
        let (wa, wb) = (std::fs::read(a.path().join(MODEL)).unwrap(), std::fs::read(b.path().join(MODEL)).unwrap());
        assert_eq!(wa, wb, "validation changed the trained model");
    }
}
