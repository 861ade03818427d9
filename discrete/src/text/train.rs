//! Training a text model on a byte corpus: random windows of the training bytes, the exact objectives of
//! [`crate::loss`] (MDLM ELBO for masked diffusion, the uniform ELBO for uniform diffusion, next-byte
//! cross-entropy for the autoregressive baseline), stratified t within each batch, AdamW with linear warm-up and
//! cosine decay, an EMA of the weights (written as the model), atomic checkpoints and exact `resume`: every draw
//! of step n depends only on (seed, n), and the checkpoint holds weights, EMA and both Adam moments.

use diffuse_core::optim::{AdamEma, AdamSettings, RunOptions, StepReport, drive};
use diffuse_core::seed::mix64;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::loss::{UniformElbo, consistency_loss, mdlm_elbo, uniform_elbo};
use crate::param::subs_logits;
use crate::text::model::{ModelKind, SPECIAL, TextModel};
use crate::{Denoiser, Error, Result};

/// Largest batch.
pub const MAX_BATCH: usize = 4096;
/// The checkpoint in the output folder.
pub use diffuse_core::optim::CHECKPOINT;
/// The model (EMA weights) in the output folder; its sidecar is `model.json`.
pub const MODEL: &str = "model.safetensors";
/// Validation windows scored at most.
pub const MAX_VALIDATION_WINDOWS: usize = 64;

/// The options a resumed run must keep (recorded in the checkpoint and the sidecar).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Sequences per step.
    pub batch: usize,
    /// Sequence length (≤ the network's context).
    pub length: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: u64,
    /// Steps of the cosine decay (to 10 % of the peak); the run's `steps`.
    pub decay_steps: u64,
    /// AdamW settings and EMA.
    pub adam: AdamSettings,
    /// Seed of every draw.
    pub seed: u64,
    /// CDLM consistency training with this gap between t and s (masked models; `None`: the model's ELBO or
    /// cross-entropy).
    #[serde(default)]
    pub consistency_gap: Option<f64>,
}

impl Recipe {
    /// The defaults for `steps` steps of `batch` sequences of `length` bytes.
    pub fn new(batch: usize, length: usize, steps: u64) -> Self {
        Recipe {
            batch,
            length,
            lr: 1e-3,
            warmup: 200.min(steps / 10 + 1),
            decay_steps: steps,
            adam: AdamSettings { betas: (0.9, 0.98), weight_decay: 0.01, grad_clip: 1.0, ema_decay: 0.999 },
            seed: 0,
            consistency_gap: None,
        }
    }

    /// The learning rate of step `n` (1-based): warm-up, then cosine to 10 % of the peak.
    pub fn lr_at(&self, n: u64) -> f64 {
        diffuse_core::optim::warmup_cosine(self.lr, self.warmup, n, self.decay_steps, 0.1)
    }
}

/// What a training run does (core's [`RunOptions`] with this crate's [`Recipe`]).
pub type TrainOptions = RunOptions<Recipe>;

/// One step's report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Step just done (1-based).
    pub step: u64,
    /// Total steps.
    pub steps: u64,
    /// The step's loss in bits per byte (an ELBO estimate for diffusion models).
    pub bits_per_byte: f64,
    /// Training tokens per second in this run.
    pub tokens_per_second: f64,
    /// Validation bits per byte (EMA weights), when it ran.
    pub validation: Option<f64>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Steps done in total.
    pub step: u64,
    /// Last step's training bits per byte.
    pub last_bits_per_byte: f64,
    /// Last validation bits per byte.
    pub validation: Option<f64>,
    /// Whether the time limit stopped it.
    pub stopped_by_time: bool,
    /// Training tokens per second.
    pub tokens_per_second: f64,
}

/// `[b, l]` uniform draws in [0, 1) from `rng` (not the global torch generator, which parallel work shares), so
/// training and scoring depend on their seeds only.
fn uniform(rng: &mut ChaCha8Rng, b: i64, l: i64, device: tch::Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..b * l).map(|_| rng.random::<f32>()).collect();
    Ok(Tensor::f_from_slice(&v)?.f_view([b, l])?.f_to_device(device)?)
}

/// The loss in nats per byte of `x0` `[B, L]` under `model` (mean over the batch): see [`per_token_nats`].
pub fn loss_nats(model: &TextModel, x0: &Tensor, t: &[f64], rng: &mut ChaCha8Rng) -> Result<Tensor> {
    Ok(per_token_nats(model, x0, t, rng)?.f_mean(Kind::Float)?)
}

/// The per-byte loss terms in nats `[B, L]` of `x0` `[B, L]` under `model`: the NELBO terms of a diffusion model
/// at the time `t[b]` of each row (corruption drawn from `rng`; their sum over a row is an
/// unbiased estimate of the row's NELBO when t is uniform), or the exact next-byte NLL of the autoregressive model.
pub fn per_token_nats(model: &TextModel, x0: &Tensor, t: &[f64], rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let device = model.device();
    let x0 = x0.f_to_device(device)?;
    let (b, l) = x0.size2()?;
    if model.config().kind == ModelKind::Autoregressive {
        return model.ar_nll(&x0);
    }
    if t.len() != b as usize {
        return Err(Error::invalid("t", format!("{} times for {b} sequences", t.len())));
    }
    let sched = model.schedule();
    let alpha: Vec<f64> = t.iter().map(|&t| sched.alpha(t)).collect();
    let prime: Vec<f64> = t.iter().map(|&t| sched.alpha_prime(t)).collect();
    let col = |v: &[f64]| -> Result<Tensor> {
        Ok(Tensor::f_from_slice(v)?.f_to_kind(Kind::Float)?.f_to_device(device)?.f_view([b, 1])?)
    };
    let (a, ap) = (col(&alpha)?, col(&prime)?);
    let keep = uniform(rng, b, l, device)?.f_ge_tensor(&a.f_neg()?.f_add_scalar(1.0)?)?;
    let tt = Tensor::f_from_slice(t)?.f_to_kind(Kind::Float)?;
    match model.config().kind {
        ModelKind::Masked => {
            let x_t = x0.f_where_self(&keep, &Tensor::f_full([b, l], SPECIAL, (Kind::Int64, device))?)?;
            let logits = model.logits(&x_t, &tt)?;
            mdlm_elbo(&logits, &x0, &x_t, &a, &ap, model.process())
        }
        _ => {
            let draws: Vec<i64> = (0..b * l).map(|_| rng.random_range(0..256i64)).collect();
            let noise = Tensor::f_from_slice(&draws)?.f_view([b, l])?.f_to_device(device)?;
            let x_t = x0.f_where_self(&keep, &noise)?;
            let logits = model.logits(&x_t, &tt)?;
            uniform_elbo(&logits, &x0, &x_t, &a, &ap, model.process(), UniformElbo::PlugIn)
        }
    }
}

/// CDLM's consistency objective per byte `[B, L]` for a masked model: x_t from the forward process at t[b],
/// x_s from the exact bridge q(x_s | x_t, x0) at s = max(0, t − gap) (each masked byte revealed with probability
/// (α_s − α_t)/(1 − α_t)), and the cross-entropy of the model at (x_t, t) against its own stopped-gradient
/// prediction at (x_s, s) ([`crate::loss::consistency_loss`], SUBS on both), at the bytes masked in x_t. Its
/// minimiser is the exact clean posterior (the bridge averages p(x0 | x_s) to p(x0 | x_t)).
pub fn consistency_per_token(
    model: &TextModel,
    x0: &Tensor,
    t: &[f64],
    gap: f64,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    if model.config().kind != ModelKind::Masked {
        return Err(Error::not_applicable("CDLM consistency training", "it is implemented for masked models"));
    }
    let device = model.device();
    let x0 = x0.f_to_device(device)?;
    let (b, l) = x0.size2()?;
    let sched = model.schedule();
    let s: Vec<f64> = t.iter().map(|&t| (t - gap).max(0.0)).collect();
    let reveal: Vec<f64> = t
        .iter()
        .zip(&s)
        .map(|(&t, &s)| {
            let (a_t, a_s) = (sched.alpha(t), sched.alpha(s));
            if a_t >= 1.0 { 0.0 } else { ((a_s - a_t) / (1.0 - a_t)).clamp(0.0, 1.0) }
        })
        .collect();
    let col = |v: Vec<f64>| -> Result<Tensor> {
        Ok(Tensor::f_from_slice(&v)?.f_to_kind(Kind::Float)?.f_to_device(device)?.f_view([b, 1])?)
    };
    let a_t = col(t.iter().map(|&t| sched.alpha(t)).collect())?;
    let keep = uniform(rng, b, l, device)?.f_ge_tensor(&a_t.f_neg()?.f_add_scalar(1.0)?)?;
    let mask = Tensor::f_full([b, l], SPECIAL, (Kind::Int64, device))?;
    let x_t = x0.f_where_self(&keep, &mask)?;
    let revealed = uniform(rng, b, l, device)?.f_lt_tensor(&col(reveal)?)?.f_logical_and(&keep.f_logical_not()?)?;
    let x_s = x0.f_where_self(&revealed, &x_t)?;
    let tt = Tensor::f_from_slice(t)?.f_to_kind(Kind::Float)?;
    let ss = Tensor::f_from_slice(&s)?.f_to_kind(Kind::Float)?;
    let logits_t = subs_logits(&model.logits(&x_t, &tt)?, &x_t, SPECIAL)?;
    let target = tch::no_grad(|| -> Result<Tensor> { subs_logits(&model.logits(&x_s, &ss)?, &x_s, SPECIAL) })?;
    let ce = consistency_loss(&logits_t, &target)?;
    Ok(ce.f_where_self(&keep.f_logical_not()?, &ce.f_zeros_like()?)?)
}

/// `n` stratified times in (0, 1]: `(u + i)/n` for one uniform u, shuffled by the same draw.
pub fn stratified_times(n: usize, rng: &mut impl Rng) -> Vec<f64> {
    let u: f64 = rng.random();
    let mut t: Vec<f64> = (0..n).map(|i| ((u + i as f64) / n as f64).max(1e-4)).collect();
    let shift = rng.random_range(0..n.max(1));
    t.rotate_left(shift);
    t
}

pub(crate) fn windows(bytes: &[u8], length: usize, starts: &[usize]) -> Result<Tensor> {
    let mut flat = Vec::with_capacity(starts.len() * length);
    for &s in starts {
        flat.extend(bytes[s..s + length].iter().map(|&b| b as i64));
    }
    Ok(Tensor::f_from_slice(&flat)?.f_view([starts.len() as i64, length as i64])?)
}

/// Validation bits per byte: up to [`MAX_VALIDATION_WINDOWS`] disjoint windows of `bytes`, with draws fixed by
/// `seed` (the same every time, so values along a run are comparable).
pub fn validation_bits(model: &TextModel, bytes: &[u8], length: usize, seed: u64) -> Result<f64> {
    let n = (bytes.len() / length).min(MAX_VALIDATION_WINDOWS);
    if n == 0 {
        return Err(Error::invalid("validation", format!("fewer than {length} validation bytes")));
    }
    let starts: Vec<usize> = (0..n).map(|i| i * length).collect();
    let x0 = windows(bytes, length, &starts)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let t = stratified_times(n, &mut rng);
    let nats = tch::no_grad(|| loss_nats(model, &x0, &t, &mut rng))?.double_value(&[]);
    Ok(nats / std::f64::consts::LN_2)
}

fn check(model: &TextModel, train: &[u8], opts: &TrainOptions) -> Result<()> {
    let r = &opts.recipe;
    if r.batch == 0 || r.batch > MAX_BATCH {
        return Err(Error::invalid("batch", format!("must be 1 to {MAX_BATCH}, got {}", r.batch)));
    }
    if r.length < 2 || r.length > model.context() {
        return Err(Error::invalid(
            "length",
            format!("must be 2 to the context {}, got {}", model.context(), r.length),
        ));
    }
    if train.len() < r.length {
        return Err(Error::invalid(
            "corpus",
            format!("{} training bytes are fewer than one sequence of {}", train.len(), r.length),
        ));
    }
    if let Some(g) = r.consistency_gap
        && !(g > 0.0 && g <= 1.0)
    {
        return Err(Error::invalid("consistency gap", format!("must be in (0, 1], got {g}")));
    }
    if !(r.lr > 0.0 && r.lr.is_finite()) {
        return Err(Error::invalid("lr", format!("must be a positive number, got {}", r.lr)));
    }
    r.adam.validate()?;
    Ok(())
}

/// Trains `model` on `train` bytes, validating on `validation` bytes (EMA weights) every
/// `opts.validate_every` steps and at the end; writes the checkpoint and the EMA model into `opts.out`, and
/// leaves the EMA weights in `model`.
pub fn train(
    model: &mut TextModel,
    train: &[u8],
    validation: &[u8],
    opts: &TrainOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<TrainReport> {
    check(model, train, opts)?;
    let r = opts.recipe.clone();
    let mut state = AdamEma::new(model.var_store())?;
    if opts.resume {
        state.load_with_recipe(&opts.out.join(CHECKPOINT), &r)?;
    }
    let first = state.step;
    let tokens =
        |s: &StepReport| ((s.step - first) * (r.batch * r.length) as u64) as f64 / s.elapsed.as_secs_f64().max(1e-9);
    let can_validate = validation.len() >= r.length;
    let model_ref: &TextModel = model;
    let mut step = |n: u64| -> Result<f64> {
        let model = model_ref;
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(r.seed ^ mix64(n)));
        let starts: Vec<usize> = (0..r.batch).map(|_| rng.random_range(0..=train.len() - r.length)).collect();
        let x0 = windows(train, r.length, &starts)?;
        let t = stratified_times(r.batch, &mut rng);
        let loss = match r.consistency_gap {
            Some(gap) => consistency_per_token(model, &x0, &t, gap, &mut rng)?.f_mean(Kind::Float)?,
            None => loss_nats(model, &x0, &t, &mut rng)?,
        };
        loss.f_backward()?;
        Ok(loss.double_value(&[]))
    };
    // EMA warm-up: the average starts short so that short runs are not dominated by the initial weights.
    let update = |n: u64| {
        (AdamSettings { ema_decay: r.adam.ema_decay.min((1 + n) as f64 / (10 + n) as f64), ..r.adam }, r.lr_at(n))
    };
    let mut check = |_: u64| validation_bits(model_ref, validation, r.length, r.seed);
    let mut tokens_per_second = 0.0;
    let done =
        drive(&mut state, opts, &mut step, &update, if can_validate { Some(&mut check) } else { None }, &mut |s| {
            tokens_per_second = tokens(s);
            progress(&Progress {
                step: s.step,
                steps: s.steps,
                bits_per_byte: s.loss / std::f64::consts::LN_2,
                tokens_per_second,
                validation: s.validation,
            });
        })?;
    let report = TrainReport {
        step: done.step,
        last_bits_per_byte: done.last_loss / std::f64::consts::LN_2,
        validation: done.validation,
        stopped_by_time: done.stopped_by_time,
        tokens_per_second,
    };
    let training = serde_json::json!({
        "recipe": r,
        "steps": report.step,
        "stopped_by_time": report.stopped_by_time,
        "tokens_per_second": report.tokens_per_second.round(),
        "validation_bits_per_byte": report.validation,
    });
    model.config_mut().training = training;
    model.save(&opts.out.join(MODEL), true)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::model::TextConfig;
    use std::path::Path;
    use tch::Device;

    fn corpus() -> Vec<u8> {
        b"the cat sat on the mat. ".repeat(40)
    }

    fn opts(out: &Path, steps: u64, resume: bool) -> TrainOptions {
        let mut recipe = Recipe::new(8, 16, 6);
        recipe.lr = 3e-3;
        recipe.seed = 5;
        TrainOptions {
            recipe,
            steps,
            checkpoint_every: 0,
            time_limit: None,
            out: out.into(),
            resume,
            validate_every: 0,
        }
    }

    fn fresh(kind: ModelKind) -> TextModel {
        tch::manual_seed(3);
        TextModel::new(TextConfig::new(kind, 32, 2, 2, 16), Device::Cpu).unwrap()
    }

    #[test]
    fn every_kind_learns_a_repetitive_corpus() {
        let text = corpus();
        for kind in [ModelKind::Masked, ModelKind::Uniform, ModelKind::Autoregressive] {
            let dir = tempfile::tempdir().unwrap();
            let mut m = fresh(kind);
            let before = validation_bits(&m, &text, 16, 0).unwrap();
            let mut o = opts(dir.path(), 60, false);
            o.recipe.decay_steps = 60;
            o.recipe.adam.ema_decay = 0.5;
            let report = train(&mut m, &text, &text, &o, &mut |_| {}).unwrap();
            let after = report.validation.unwrap();
            assert!(after < 0.7 * before, "{kind:?}: {before:.2} → {after:.2} bits/byte");
            assert!(dir.path().join(MODEL).is_file() && dir.path().join("model.json").is_file());
        }
    }

    #[test]
    fn resume_is_exact() {
        let text = corpus();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Three copies of one initial model (the global generator is shared by tests running in parallel).
        let init = fresh(ModelKind::Masked);
        let file = a.path().join("init.safetensors");
        init.save(&file, false).unwrap();
        let copy = || TextModel::load(&file, Device::Cpu).unwrap();
        let mut straight = copy();
        train(&mut straight, &text, &text, &opts(a.path(), 6, false), &mut |_| {}).unwrap();
        let mut first = copy();
        train(&mut first, &text, &text, &opts(b.path(), 3, false), &mut |_| {}).unwrap();
        let mut resumed = copy();
        train(&mut resumed, &text, &text, &opts(b.path(), 6, true), &mut |_| {}).unwrap();
        for ((na, va), (nb, vb)) in diffuse_core::weights::named(straight.var_store())
            .iter()
            .zip(&diffuse_core::weights::named(resumed.var_store()))
        {
            assert_eq!(na, nb);
            assert!(va.equal(vb), "{na} differs after resume");
        }
        // Another recipe cannot resume this run.
        let mut other = opts(b.path(), 8, true);
        other.recipe.batch = 4;
        let err = train(&mut fresh(ModelKind::Masked), &text, &text, &other, &mut |_| {}).unwrap_err().to_string();
        assert!(err.contains("same recipe"), "{err}");
    }

    #[test]
    fn cdlm_fine_tuning_runs_and_keeps_the_likelihood_of_a_trained_model() {
        let text = corpus();
        let dir = tempfile::tempdir().unwrap();
        let mut m = fresh(ModelKind::Masked);
        let mut o = opts(dir.path(), 60, false);
        o.recipe.decay_steps = 60;
        o.recipe.adam.ema_decay = 0.5;
        train(&mut m, &text, &text, &o, &mut |_| {}).unwrap();
        let before = validation_bits(&m, &text, 16, 0).unwrap();
        let mut c = opts(&dir.path().join("cdlm"), 30, false);
        c.recipe.consistency_gap = Some(0.125);
        c.recipe.lr = 1e-3;
        c.recipe.adam.ema_decay = 0.5;
        let report = train(&mut m, &text, &text, &c, &mut |_| {}).unwrap();
        // Consistency training is exact at its optimum, so it must not wreck the ELBO of a fitted model.
        let after = report.validation.unwrap();
        assert!(after < before + 0.5, "{before:.3} → {after:.3} bits/byte");
        let mut u = fresh(ModelKind::Uniform);
        let x0 = Tensor::from_slice(&[1i64, 2, 3, 4]).view([1, 4]);
        assert!(consistency_per_token(&u, &x0, &[0.5], 0.1, &mut ChaCha8Rng::seed_from_u64(0)).is_err());
        let mut bad = opts(dir.path(), 2, false);
        bad.recipe.consistency_gap = Some(0.0);
        assert!(train(&mut u, &text, &text, &bad, &mut |_| {}).is_err());
    }

    #[test]
    fn bad_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = fresh(ModelKind::Masked);
        let short = b"abc".to_vec();
        let err = train(&mut m, &short, &short, &opts(dir.path(), 2, false), &mut |_| {}).unwrap_err().to_string();
        assert!(err.contains("fewer than one sequence"), "{err}");
        let mut o = opts(dir.path(), 2, false);
        o.recipe.length = 99;
        assert!(train(&mut m, &corpus(), &corpus(), &o, &mut |_| {}).is_err());
    }

    #[test]
    fn the_learning_rate_warms_up_then_decays_to_a_tenth() {
        let r = Recipe { warmup: 10, decay_steps: 110, ..Recipe::new(1, 2, 110) };
        assert!((r.lr_at(5) - 0.5 * r.lr).abs() < 1e-12);
        assert!((r.lr_at(10) - r.lr).abs() < 1e-12);
        assert!((r.lr_at(110) - 0.1 * r.lr).abs() < 1e-12);
        assert!(r.lr_at(60) < r.lr && r.lr_at(60) > 0.1 * r.lr);
    }
}
