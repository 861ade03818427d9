//! Restoring degraded images with any core solver on the model's path, through core's `sample`.
//!
//! The state starts at the path's start time `T` as `x_T = (α_T + γ_T)·y + σ_T·ε` (x0 taken as the degraded image
//! y: exact where α_T = 0 — RDDM's `I_in + √sum_scale·ε`, Resfusion's `½·y + √¾·ε` at T′ — and IR-SDE's
//! `μ + λ·ε` up to its α_T = eps), then any core solver walks the grid to the data: DPM-Solver++ / UniPC / DEIS,
//! the MR sampler of IR-SDE (= `dpm++2m` on x − μ, data form), RDDM's deterministic sampler (`rddm`) and
//! Resfusion's ancestral sampler (`resfusion`). Noise is seeded per image ([`diffuse_core::seed::SampleSeeds`]), so
//! a result does not depend on the batch it was restored in.

use diffuse_core::denoiser::{Conditioning, Denoiser};
use diffuse_core::path::NoisePath;
use diffuse_core::search::Schedule;
use diffuse_core::seed::SampleSeeds;
use diffuse_core::solvers::{
    Budget, NoNoise, NoiseSource, SeededNoise, SolverOptions, build_solver, sample, sample_with_orders,
};
use diffuse_core::spacing::{End, GridSpec, Spacing};
use tch::Tensor;

use crate::model::RestorationModel;
use crate::{Error, Result};

/// How to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOptions {
    /// Core solver name (`diffuse solvers list`).
    pub solver: String,
    /// Grid intervals (the last one a jump to x̂0).
    pub steps: usize,
    /// Time spacing.
    pub spacing: Spacing,
    /// Seed of the starting noise and of stochastic solvers; image i of a batch uses stream `first_index + i`.
    pub seed: u64,
    /// Index of the batch's first image in its seed streams.
    pub first_index: u64,
    /// A searched schedule, which replaces solver, steps and spacing.
    pub schedule: Option<Schedule>,
}

impl SampleOptions {
    /// The model's default sampler with seed 0.
    pub fn defaults_of(model: &RestorationModel) -> Self {
        let s = &model.config().sampler;
        SampleOptions {
            solver: s.solver.clone(),
            steps: s.steps,
            spacing: s.spacing.clone(),
            seed: 0,
            first_index: 0,
            schedule: s.schedule.clone(),
        }
    }
}

/// The starting state `(α_T + γ_T)·y + σ_T·ε` at the path's start for the anchor `y` `[B, …]`.
pub fn start_state(path: &dyn NoisePath, y: &Tensor, seeds: &SampleSeeds) -> Result<Tensor> {
    let p = path.point(path.t_range().1);
    let size = y.size();
    let eps = seeds.normal(0, &size[1..], y.kind(), y.device());
    Ok(y.f_mul_scalar(p.alpha + p.gamma)?.f_add(&eps.f_mul_scalar(p.sigma)?)?)
}

/// Samples from `x` at the path's start to the data with `model` (any core denoiser; anchor `y`), in the
/// model's value range.
pub fn solve(
    model: &dyn Denoiser,
    path: &dyn NoisePath,
    y: &Tensor,
    x: &Tensor,
    opts: &SampleOptions,
) -> Result<Tensor> {
    let cond = Conditioning::with_anchor(y.shallow_clone());
    if let Some(schedule) = &opts.schedule {
        // Schedules are deterministic (checked when they are read): no noise source.
        let solver = schedule.build_solver(&SolverOptions::default())?;
        let orders = schedule.orders(solver.as_ref())?;
        let grid = schedule.grid();
        let out = sample_with_orders(solver.as_ref(), path, model, &cond, x, &grid, &orders, &mut NoNoise, &mut ())?;
        return Ok(out.x);
    }
    let solver = build_solver(&opts.solver, &SolverOptions::default())?;
    let grid = GridSpec::new(opts.spacing.clone(), End::Zero);
    let batch = y.size().first().copied().unwrap_or(1) as usize;
    let mut seeded = SeededNoise::new(SampleSeeds::new(opts.seed ^ 0x005E_ED0F_D1FF, opts.first_index, batch));
    let noise: &mut dyn NoiseSource = if solver.info().stochastic { &mut seeded } else { &mut NoNoise };
    let out = sample(solver.as_ref(), path, model, &cond, x, &grid, Budget::Steps(opts.steps), noise, &mut ())?;
    Ok(out.x)
}

/// Restores degraded images `[B, C, H, W]` with values in [0, 1] (any H, W: reflect-padded to the network's
/// multiple and cropped back); returns values clamped to [0, 1].
pub fn restore(model: &RestorationModel, degraded: &Tensor, opts: &SampleOptions) -> Result<Tensor> {
    let size = degraded.size();
    let c = model.config().network.image_channels as i64;
    if size.len() != 4 || size[1] != c || size[2] < 2 || size[3] < 2 {
        return Err(Error::Shape {
            op: "restore input",
            expected: format!("[B, {c}, H ≥ 2, W ≥ 2]"),
            got: format!("{size:?}"),
        });
    }
    let m = model.config().network.multiple() as i64;
    let (h, w) = (size[2], size[3]);
    let (ph, pw) = ((m - h % m) % m, (m - w % m) % m);
    if ph >= h || pw >= w {
        return Err(Error::Shape {
            op: "restore input",
            expected: format!("H, W ≥ {m} (the network's multiple)"),
            got: format!("{size:?}"),
        });
    }
    let path = model.path();
    let out = tch::no_grad(|| -> Result<Tensor> {
        let y = degraded
            .f_to_kind(tch::Kind::Float)?
            .f_to_device(model.var_store().device())?
            .f_mul_scalar(2.0)?
            .f_sub_scalar(1.0)?;
        let y = if ph + pw > 0 { y.f_pad([0, pw, 0, ph], "reflect", None)? } else { y };
        let seeds = SampleSeeds::new(opts.seed, opts.first_index, size[0] as usize);
        let x = start_state(path.as_ref(), &y, &seeds)?;
        let x0 = solve(model, path.as_ref(), &y, &x, opts)?;
        Ok(x0.f_narrow(2, 0, h)?.f_narrow(3, 0, w)?.f_add_scalar(1.0)?.f_mul_scalar(0.5)?.f_clamp(0.0, 1.0)?)
    })?;
    Ok(out.f_to_device(degraded.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::net::NetConfig;
    use diffuse_core::Parameterization;
    use diffuse_core::path::PathSpec;
    use tch::{Device, Kind};

    fn model(kind: &str, p: Parameterization) -> RestorationModel {
        let cfg = ModelConfig::new("denoise", PathSpec::default_of(kind).unwrap(), p, NetConfig::tiny(3, 1));
        RestorationModel::new(cfg, Device::Cpu).unwrap()
    }

    /// Any size in, the same size out in [0, 1]; an image restored alone (its own seed stream) equals the same
    /// image restored in a batch; the paths' own samplers run through `restore`.
    #[test]
    fn restore_any_size_batch_independent_with_every_sampler() {
        let y = SampleSeeds::new(1, 0, 2).normal(0, &[3, 10, 13], Kind::Float, Device::Cpu).sigmoid();
        for (kind, p, solver) in [
            ("rddm", Parameterization::ResidualNoise, "rddm"),
            ("rddm", Parameterization::Residual, "dpm++2m"),
            ("resfusion", Parameterization::Resnoise, "resfusion"),
            ("resfusion", Parameterization::Resnoise, "unipc-bh2"),
            ("ir_sde", Parameterization::Eps, "dpm++2m"),
        ] {
            let m = model(kind, p);
            let opts = SampleOptions {
                solver: solver.into(),
                steps: 3,
                spacing: Spacing::UniformT,
                seed: 9,
                first_index: 0,
                schedule: None,
            };
            let out = restore(&m, &y, &opts).unwrap();
            assert_eq!(out.size(), y.size());
            let (lo, hi) = (f64::try_from(out.min()).unwrap(), f64::try_from(out.max()).unwrap());
            assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi), "{kind}/{solver}: {lo}..{hi}");
            let alone = restore(&m, &y.narrow(0, 1, 1), &SampleOptions { first_index: 1, ..opts.clone() }).unwrap();
            let d = f64::try_from((alone.get(0) - out.get(1)).abs().max()).unwrap();
            assert!(d < 1e-4, "{kind}/{solver}: batch position changes the result by {d}");
        }
    }

    #[test]
    fn bad_inputs_are_refused() {
        let m = model("rddm", Parameterization::Residual);
        let opts = SampleOptions::defaults_of(&m);
        for shape in [vec![1i64, 1, 8, 8], vec![3, 8, 8], vec![1, 3, 1, 8]] {
            let err = restore(&m, &Tensor::zeros(shape.as_slice(), (Kind::Float, Device::Cpu)), &opts).unwrap_err();
            assert!(err.to_string().contains("restore input"), "{err}");
        }
        let bad = SampleOptions { solver: "magic".into(), ..opts };
        assert!(restore(&m, &Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu)), &bad).is_err());
    }
}
