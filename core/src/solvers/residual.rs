//! The reference samplers of the residual restoration methods, written on x̃ like every core solver.
//!
//! - `rddm`: RDDM's deterministic sampler (Liu et al. 2024, the DDIM-like update with σ_t = 0):
//!   `I_s = I_t − (ᾱ_t − ᾱ_s)·Î_res − (β̄_t − β̄_s)·ε̂`. On the general path (α = 1 − ᾱ_res, γ = ᾱ_res, σ = β̄)
//!   this is `x̃_s = x̃_t + (α_s − α_t)·x̂0 + (σ_s − σ_t)·ε̂` with the model's own (x̂0, ε̂). When the two are
//!   consistent (`x̃_t = α_t x̂0 + σ_t ε̂`: SM-Res, SM-N, or any single-output model) it *is* `ddim`; with two
//!   independent outputs (SM-Res-N) it carries their disagreement along, as the reference does.
//! - `resfusion`: Resfusion's ancestral sampler (Shi et al. 2024): DDPM's posterior step with the resnoise
//!   target, `x_{n−1} = (x_n − β_n/√(1 − ᾱ_n)·r̂)/√(1 − β_n) + √β̃_n·z`, `β̃_n = β_n(1 − ᾱ_{n−1})/(1 − ᾱ_n)`. It is
//!   the DDPM chain of `x − R` (R = μ − x0), whose signal is `√ᾱ = 1 − γ`, so on x̃ it reads
//!   `x̃_s = α_s x̂0 + √(σ_s² − v)·ε̂ + √v·z` with `v = (σ_s²/σ_t²)(1 − c_t²/c_s²)`, `c = 1 − γ` (t the current,
//!   s the next time). It needs a path with `α = 1 − 2γ` (Resfusion's). Sampling starts at the acceleration point
//!   T′ (α = 0) from `½·μ + √¾·ε` = `√ᾱ·x̂0 + √(1 − ᾱ)·ε` with x̂0 the degraded input.
//!
//! Both end with the usual jump to x̂0 when the grid ends at the data (RDDM: `time_next < 0 → x_start`;
//! Resfusion: the last DDPM step has ᾱ_{−1} = 1, whose posterior mean is x̂0).

use tch::Tensor;

use super::common::weighted_sum;
use super::driver::{FinalPrediction, Interval, Stepper, Stepping};
use super::run::Run;
use super::{Solver, SolverInfo};
use crate::param::lin2;
use crate::path::Point;
use crate::{Error, Result};

/// RDDM's deterministic sampler: `x̃ ← x̃ + Δα·x̂0 + Δσ·ε̂` (order 1, 1 NFE per step; equals `ddim` for
/// consistent predictions).
#[derive(Debug, Clone, Default)]
pub struct RddmDeterministic;

impl Solver for RddmDeterministic {
    fn info(&self) -> SolverInfo {
        SolverInfo::deterministic(
            "rddm",
            "RDDM's deterministic sampler: x̃ += Δα·x̂0 + Δσ·ε̂ (= ddim unless residual and noise are predicted apart)",
            1,
        )
    }
    fn plan_steps(&self, steps: usize, _to_data: bool) -> Result<Vec<u32>> {
        Ok(vec![1; steps])
    }
    fn cost(&self, _index: usize, _order: u32, _to_data: bool) -> usize {
        1
    }
    fn stepper<'s>(&'s self, _run: &Run<'_>, _grid: &[Point], _orders: &[u32]) -> Result<Stepping<'s>> {
        Ok(Stepping::Fixed(Box::new(self)))
    }
}

impl Stepper for &RddmDeterministic {
    fn step(&mut self, run: &mut Run<'_>, x: &Tensor, iv: &Interval) -> Result<Tensor> {
        let (s, t) = (&iv.s, &iv.t);
        let (x0, eps) = run.both(x, s)?;
        weighted_sum(&[(1.0, x), (t.alpha - s.alpha, &x0), (t.sigma - s.sigma, &eps)])
    }

    fn final_prediction(&mut self, run: &mut Run<'_>, x: &Tensor, s: &Point) -> Result<FinalPrediction> {
        // The reference's `time_next < 0 → x_start`: the residual model's own x̂0.
        Ok(FinalPrediction::Data(run.both(x, s)?.0))
    }
}

/// Resfusion's ancestral DDPM sampler on the chain of `x − R` (paths with α = 1 − 2γ; order 1, 1 NFE per step).
#[derive(Debug, Clone, Default)]
pub struct ResfusionAncestral;

impl ResfusionAncestral {
    /// (coefficient of ε̂, noise standard deviation) of the step s → t on the chain with signal `c = 1 − γ`.
    pub fn coefficients(s: &Point, t: &Point) -> Result<(f64, f64)> {
        for p in [s, t] {
            if (p.alpha + 2.0 * p.gamma - 1.0).abs() > 1e-9 {
                return Err(Error::invalid(
                    "solver",
                    format!(
                        "resfusion needs a path with α = 1 − 2γ (Resfusion's); at t = {} α = {}, γ = {}",
                        p.t, p.alpha, p.gamma
                    ),
                ));
            }
        }
        let (cs, ct) = (1.0 - s.gamma, 1.0 - t.gamma);
        let beta = 1.0 - (cs / ct).powi(2);
        let var = (t.sigma / s.sigma).powi(2) * beta;
        Ok(((t.sigma * t.sigma - var).max(0.0).sqrt(), var.max(0.0).sqrt()))
    }
}

impl Solver for ResfusionAncestral {
    fn info(&self) -> SolverInfo {
        SolverInfo {
            name: "resfusion".into(),
            description: "Resfusion's ancestral DDPM step with the resnoise target (Shi et al. 2024)".into(),
            order: 1,
            strong_order: Some(0.5),
            stochastic: true,
            adaptive: false,
        }
    }
    fn plan_steps(&self, steps: usize, _to_data: bool) -> Result<Vec<u32>> {
        Ok(vec![1; steps])
    }
    fn cost(&self, _index: usize, _order: u32, _to_data: bool) -> usize {
        1
    }
    fn stepper<'s>(&'s self, _run: &Run<'_>, _grid: &[Point], _orders: &[u32]) -> Result<Stepping<'s>> {
        Ok(Stepping::Fixed(Box::new(self)))
    }
}

impl Stepper for &ResfusionAncestral {
    fn step(&mut self, run: &mut Run<'_>, x: &Tensor, iv: &Interval) -> Result<Tensor> {
        let (s, t) = (&iv.s, &iv.t);
        let (x0, eps) = run.both(x, s)?;
        let (ce, sd) = ResfusionAncestral::coefficients(s, t)?;
        let mut next = lin2(t.alpha, &x0, ce, &eps)?;
        if sd > 0.0 {
            let z = run.noise(iv.index as u64, &next)?;
            next = next.f_add(&z.f_mul_scalar(sd)?)?;
        }
        Ok(next)
    }

    fn final_prediction(&mut self, run: &mut Run<'_>, x: &Tensor, s: &Point) -> Result<FinalPrediction> {
        // The last DDPM step has ᾱ_{−1} = 1: its posterior mean is x̂0.
        Ok(FinalPrediction::Data(run.both(x, s)?.0))
    }
}
