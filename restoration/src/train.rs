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

use diffuse_core::Prediction;
use diffuse_core::param::At;
use diffuse_core::seed::SampleSeeds;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

pub use diffuse_core::optim::CHECKPOINT;
use diffuse_core::optim::{AdamEma, AdamSettings, RunOptions, drive};

use crate::model::{ModelInput, RestorationModel, unwrap};
use crate::{Error, Result};

/// Largest batch.
pub const MAX_BATCH: usize = 4096;
/// Largest crop side in pixels.
pub const MAX_CROP: usize = 4096;
/// The model file (EMA weights) in the output folder; its sidecar is `model.json`.
pub const MODEL: &str = "model.safetensors";

/// What a training run does (core's [`RunOptions`] with this crate's [`Recipe`]).
pub type TrainOptions = RunOptions<Recipe>;

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
    /// The model's task, set by [`train`] from the model so that a checkpoint cannot be resumed as another task's
    /// (empty in checkpoints written before it was recorded).
    #[serde(default)]
    pub task: String,
    /// The model's input, set by [`train`] from the model so that a blind checkpoint cannot be resumed as a
    /// non-blind one, nor with another Wiener NSR.
    #[serde(default)]
    pub input: ModelInput,
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
            task: String::new(),
            input: ModelInput::Degraded,
        }
    }
}

/// One training step's report to the progress callback (the validation score is the callback's, on EMA weights).
pub type Progress = diffuse_core::optim::StepReport;

/// A validation callback: called with the model holding the EMA weights and the step; returns a score (e.g. the
/// mean PSNR on validation pairs). It may use the global torch generator: training draws nothing from it.
pub type Validate<'a> = &'a mut dyn FnMut(&RestorationModel, u64) -> Result<f64>;

/// What a run did.
pub type TrainReport = diffuse_core::optim::DriveReport;

impl Recipe {
    fn adam(&self) -> AdamSettings {
        AdamSettings {
            betas: self.betas,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            ema_decay: self.ema_decay,
        }
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
    let cfg = model.config();
    let r = Recipe { task: cfg.task.clone(), input: cfg.input, ..opts.recipe.clone() };
    let opts = &RunOptions { recipe: r.clone(), ..opts.clone() };
    let mut state = AdamEma::new(model.var_store())?;
    if opts.resume {
        state.load_with_recipe(&opts.out.join(CHECKPOINT), &r)?;
    }
    let path = model.path();
    let (t_lo, t_hi) = path.t_range();
    let param = model.config().parameterization;
    let device = model.var_store().device();
    let crop = r.crop as i64;
    let model_ref: &RestorationModel = model;
    let mut step = |n: u64| -> Result<f64> {
        let model = model_ref;
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
        loss.f_backward()?;
        Ok(loss.double_value(&[]))
    };
    // Validation only where asked for and scheduled (never when validate_every is 0).
    let validating = validate.is_some() && opts.validate_every > 0;
    let mut check = |n: u64| match validate.as_mut() {
        Some(v) => v(model_ref, n),
        None => Ok(f64::NAN),
    };
    let report = drive(
        &mut state,
        opts,
        &mut step,
        &|_| (r.adam(), r.lr),
        if validating { Some(&mut check) } else { None },
        progress,
    )?;
    // The model is the EMA of the weights (drive left them in place).
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
    use std::path::Path;
    use std::time::Duration;
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
        let mut t = diffuse_core::weights::read(&dir.join(CHECKPOINT)).unwrap().0;
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
        // Nor can another task's model, or a non-blind one (the checkpoint records the model's task and input).
        let mut other_task = model(p, "rddm");
        other_task.config_mut().task = "deblur".into();
        let mut non_blind = model(p, "rddm");
        non_blind.config_mut().input = ModelInput::Wiener { nsr: 1e-3 };
        for mut m in [other_task, non_blind] {
            let o = opts(b.path(), 6, true);
            let err = train(&mut m, &images(), &mut noisy, &o, &mut |_| {}, None).unwrap_err().to_string();
            assert!(err.contains("same recipe"), "{err}");
        }
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
