//! Variance-preserving paths (α² + σ² = 1) and sub-VP.

use std::f64::consts::PI;

use super::table::{BetaSchedule, PiecewiseLinear};
use super::{NoisePath, softplus};
use crate::{Error, Result};

/// `ln α(t) = −(β1 − β0)t²/4 − β0·t/2` of the linear-β VP SDE; shared by [`VpLinear`] and [`SubVp`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct LinearBeta {
    beta_min: f64,
    beta_max: f64,
}

impl LinearBeta {
    fn log_alpha(&self, t: f64) -> f64 {
        -(self.beta_max - self.beta_min) * t * t / 4.0 - self.beta_min * t / 2.0
    }
    fn d_log_alpha(&self, t: f64) -> f64 {
        -(self.beta_max - self.beta_min) * t / 2.0 - self.beta_min / 2.0
    }
    /// The t ≥ 0 with `ln α(t) = la` (la ≤ 0).
    fn t_of_log_alpha(&self, la: f64) -> f64 {
        let (b0, d) = (self.beta_min, self.beta_max - self.beta_min);
        // d/4·t² + b0/2·t + la = 0, written without cancellation: t = −2·la / (b0/2 + √(b0²/4 − d·la)).
        let disc = (b0 * b0 / 4.0 - d * la).max(0.0);
        -2.0 * la / (b0 / 2.0 + disc.sqrt())
    }
    fn check(&self) -> Result<()> {
        if !(self.beta_min >= 0.0 && self.beta_max > self.beta_min && self.beta_max.is_finite()) {
            return Err(Error::invalid(
                "path.beta",
                format!("need 0 ≤ beta_min < beta_max, got {} and {}", self.beta_min, self.beta_max),
            ));
        }
        Ok(())
    }
}

/// `σ = √(1 − α²)` from `ln α`, accurate near α = 1.
fn vp_sigma(log_alpha: f64) -> f64 {
    (-(2.0 * log_alpha).exp_m1()).max(0.0).sqrt()
}

/// `ln α` of a VP path from λ: `ln α = −½·ln(1 + e^{−2λ})`.
fn vp_log_alpha_of_lambda(lambda: f64) -> f64 {
    -0.5 * softplus(-2.0 * lambda)
}

/// The VP SDE with linear β(t) = β0 + t(β1 − β0) (score SDE "vpsde"; DDPM's continuous limit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpLinear {
    beta: LinearBeta,
    t_min: f64,
}

impl VpLinear {
    /// β from `beta_min` to `beta_max` (score SDE: 0.1 → 20), sampling down to `t_min` (1e-3 as in dpm-solver).
    pub fn new(beta_min: f64, beta_max: f64, t_min: f64) -> Result<Self> {
        let beta = LinearBeta { beta_min, beta_max };
        beta.check()?;
        check_t_min(t_min, 1.0)?;
        Ok(VpLinear { beta, t_min })
    }
}

impl Default for VpLinear {
    fn default() -> Self {
        VpLinear { beta: LinearBeta { beta_min: 0.1, beta_max: 20.0 }, t_min: 1e-3 }
    }
}

impl NoisePath for VpLinear {
    fn name(&self) -> String {
        format!("vp-linear(β {}→{})", self.beta.beta_min, self.beta.beta_max)
    }
    fn alpha(&self, t: f64) -> f64 {
        self.beta.log_alpha(t).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        vp_sigma(self.beta.log_alpha(t))
    }
    fn d_alpha(&self, t: f64) -> f64 {
        self.alpha(t) * self.beta.d_log_alpha(t)
    }
    fn d_sigma(&self, t: f64) -> f64 {
        let a = self.alpha(t);
        -a * self.d_alpha(t) / self.sigma(t)
    }
    fn t_range(&self) -> (f64, f64) {
        (self.t_min, 1.0)
    }
    fn lambda(&self, t: f64) -> f64 {
        let la = self.beta.log_alpha(t);
        la - vp_sigma(la).ln()
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        self.beta.t_of_log_alpha(vp_log_alpha_of_lambda(lambda))
    }
}

/// The cosine VP schedule of Nichol & Dhariwal in continuous time (dpm-solver's `cosine`, T = 0.9946):
/// `ln α(t) = ln cos((t + s)/(1 + s)·π/2) − ln cos(s/(1 + s)·π/2)`, s = 0.008.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpCosine {
    s: f64,
    t_min: f64,
    t_max: f64,
}

impl Default for VpCosine {
    fn default() -> Self {
        VpCosine { s: 0.008, t_min: 1e-3, t_max: 0.9946 }
    }
}

impl VpCosine {
    /// The cosine path with offset `s`, evaluated on `[t_min, t_max]` (dpm-solver stops at 0.9946, where
    /// λ ≈ −5.4, because α → 0 at t = 1).
    pub fn new(s: f64, t_min: f64, t_max: f64) -> Result<Self> {
        if !(s > 0.0 && s < 1.0) {
            return Err(Error::invalid("path.s", format!("must be in (0, 1), got {s}")));
        }
        if !(t_max > 0.0 && t_max < 1.0) {
            return Err(Error::invalid("path.t_max", format!("must be in (0, 1) (α = 0 at t = 1), got {t_max}")));
        }
        check_t_min(t_min, t_max)?;
        Ok(VpCosine { s, t_min, t_max })
    }
    fn angle(&self, t: f64) -> f64 {
        (t + self.s) / (1.0 + self.s) * PI / 2.0
    }
    fn log_alpha(&self, t: f64) -> f64 {
        self.angle(t).cos().ln() - self.angle(0.0).cos().ln()
    }
}

impl NoisePath for VpCosine {
    fn name(&self) -> String {
        format!("vp-cosine(s {})", self.s)
    }
    fn alpha(&self, t: f64) -> f64 {
        self.log_alpha(t).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        vp_sigma(self.log_alpha(t))
    }
    fn d_alpha(&self, t: f64) -> f64 {
        -self.alpha(t) * self.angle(t).tan() * PI / (2.0 * (1.0 + self.s))
    }
    fn d_sigma(&self, t: f64) -> f64 {
        -self.alpha(t) * self.d_alpha(t) / self.sigma(t)
    }
    fn t_range(&self) -> (f64, f64) {
        (self.t_min, self.t_max)
    }
    fn lambda(&self, t: f64) -> f64 {
        let la = self.log_alpha(t);
        la - vp_sigma(la).ln()
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        let la = vp_log_alpha_of_lambda(lambda);
        let c = (la + self.angle(0.0).cos().ln()).exp().clamp(-1.0, 1.0);
        c.acos() * 2.0 * (1.0 + self.s) / PI - self.s
    }
}

/// A discrete-time DDPM model's β table as a continuous VP path, as in dpm-solver's `NoiseScheduleVP('discrete')`:
/// `ln α` is piecewise linear in t through `(k + 1)/N ↦ ½·Σ_{i≤k} ln(1 − β_i)`, and model time `t` corresponds to the
/// integer step `k = N·t − 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct VpTable {
    log_alpha: PiecewiseLinear,
    n: usize,
    label: String,
}

impl VpTable {
    /// The path of `n` steps of a named β schedule.
    pub fn from_schedule(schedule: BetaSchedule, n: usize) -> Result<Self> {
        let label = format!("{schedule:?}").split_whitespace().next().unwrap_or("table").to_lowercase();
        Self::from_betas(&schedule.betas(n)).map(|mut p| {
            p.label = label;
            p
        })
    }

    /// The path of an explicit β table (each β in (0, 1)).
    pub fn from_betas(betas: &[f64]) -> Result<Self> {
        if betas.len() < 2 {
            return Err(Error::invalid("path.betas", "needs at least 2 steps"));
        }
        if let Some((i, b)) = betas.iter().enumerate().find(|(_, b)| !(**b > 0.0 && **b < 1.0)) {
            return Err(Error::invalid("path.betas", format!("β[{i}] = {b} is outside (0, 1)")));
        }
        let n = betas.len();
        let mut acc = 0.0;
        let ys: Vec<f64> = betas
            .iter()
            .map(|b| {
                acc += 0.5 * (-b).ln_1p();
                acc
            })
            .collect();
        let xs = (0..n).map(|k| (k + 1) as f64 / n as f64).collect();
        Ok(VpTable { log_alpha: PiecewiseLinear::new(xs, ys)?, n, label: "custom".into() })
    }

    /// Number of steps N of the table.
    pub fn steps(&self) -> usize {
        self.n
    }

    /// The integer step k of time t (`k = N·t − 1`; model inputs of discrete models use this).
    pub fn step_of_t(&self, t: f64) -> f64 {
        self.n as f64 * t - 1.0
    }

    /// The time of integer step k (`t = (k + 1)/N`).
    pub fn t_of_step(&self, k: f64) -> f64 {
        (k + 1.0) / self.n as f64
    }

    pub(crate) fn log_alpha(&self, t: f64) -> f64 {
        self.log_alpha.eval(t)
    }

    pub(crate) fn d_log_alpha(&self, t: f64) -> f64 {
        self.log_alpha.slope(t)
    }

    pub(crate) fn t_of_log_alpha(&self, la: f64) -> f64 {
        self.log_alpha.inverse_decreasing(la)
    }
}

impl NoisePath for VpTable {
    fn name(&self) -> String {
        format!("vp-table({}, N {})", self.label, self.n)
    }
    fn alpha(&self, t: f64) -> f64 {
        self.log_alpha(t).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        vp_sigma(self.log_alpha(t))
    }
    fn d_alpha(&self, t: f64) -> f64 {
        self.alpha(t) * self.d_log_alpha(t)
    }
    fn d_sigma(&self, t: f64) -> f64 {
        -self.alpha(t) * self.d_alpha(t) / self.sigma(t)
    }
    fn t_range(&self) -> (f64, f64) {
        (1.0 / self.n as f64, 1.0)
    }
    fn train_steps(&self) -> Option<usize> {
        Some(self.n)
    }
    fn lambda(&self, t: f64) -> f64 {
        let la = self.log_alpha(t);
        la - vp_sigma(la).ln()
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        let (lo, hi) = self.t_range();
        self.t_of_log_alpha(vp_log_alpha_of_lambda(lambda)).clamp(lo, hi)
    }
}

/// The sub-VP SDE (Song et al. 2021): α as [`VpLinear`], `σ = 1 − α²`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubVp {
    beta: LinearBeta,
    t_min: f64,
}

impl Default for SubVp {
    fn default() -> Self {
        SubVp { beta: LinearBeta { beta_min: 0.1, beta_max: 20.0 }, t_min: 1e-3 }
    }
}

impl SubVp {
    /// β from `beta_min` to `beta_max`, sampling down to `t_min`.
    pub fn new(beta_min: f64, beta_max: f64, t_min: f64) -> Result<Self> {
        let beta = LinearBeta { beta_min, beta_max };
        beta.check()?;
        check_t_min(t_min, 1.0)?;
        Ok(SubVp { beta, t_min })
    }
}

impl NoisePath for SubVp {
    fn name(&self) -> String {
        format!("sub-vp(β {}→{})", self.beta.beta_min, self.beta.beta_max)
    }
    fn alpha(&self, t: f64) -> f64 {
        self.beta.log_alpha(t).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        -(2.0 * self.beta.log_alpha(t)).exp_m1()
    }
    fn d_alpha(&self, t: f64) -> f64 {
        self.alpha(t) * self.beta.d_log_alpha(t)
    }
    fn d_sigma(&self, t: f64) -> f64 {
        -2.0 * self.alpha(t) * self.d_alpha(t)
    }
    fn t_range(&self) -> (f64, f64) {
        (self.t_min, 1.0)
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        self.beta.t_of_log_alpha(subvp_log_alpha_of_lambda(lambda))
    }
}

/// `ln α` with `α/(1 − α²) = e^λ`, without overflow or cancellation for any λ.
fn subvp_log_alpha_of_lambda(lambda: f64) -> f64 {
    if lambda <= 0.0 {
        let e = lambda.exp();
        (2.0 * e / (1.0 + (1.0 + 4.0 * e * e).sqrt())).ln()
    } else {
        // α = 2/(e^{−λ} + √(e^{−2λ} + 4)); 1 − α² = e^{−λ}·α gives ln α accurately when α ≈ 1.
        let em = (-lambda).exp();
        let alpha = 2.0 / (em + (em * em + 4.0).sqrt());
        0.5 * (-em * alpha).ln_1p()
    }
}

pub(super) fn check_t_min(t_min: f64, t_max: f64) -> Result<()> {
    if !(t_min > 0.0 && t_min < t_max) {
        return Err(Error::invalid("path.t_min", format!("must be in (0, {t_max}), got {t_min}")));
    }
    Ok(())
}
