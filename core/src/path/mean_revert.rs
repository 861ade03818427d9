//! Mean-reverting paths with an anchor μ: SGMSE's OUVE and Schrödinger bridge, and IR-SDE.

use std::f64::consts::PI;

use super::NoisePath;
use super::table::PiecewiseLinear;
use crate::{Error, Result};

/// SGMSE's Ornstein–Uhlenbeck variance-exploding SDE `dx = θ(y − x)dt + g(t)dw`,
/// `g(t) = σmin(σmax/σmin)^t·√(2 ln(σmax/σmin))`: α = e^{−θt}, γ = 1 − e^{−θt},
/// `σ(t)² = σmin²·((σmax/σmin)^{2t} − e^{−2θt})·L/(θ + L)` with `L = ln(σmax/σmin)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ouve {
    theta: f64,
    sigma_min: f64,
    sigma_max: f64,
    t_eps: f64,
    t_max: f64,
}

impl Default for Ouve {
    /// SGMSE+ defaults: θ 1.5, σmin 0.05, σmax 0.5, T 1, t_eps 0.03.
    fn default() -> Self {
        Ouve { theta: 1.5, sigma_min: 0.05, sigma_max: 0.5, t_eps: 0.03, t_max: 1.0 }
    }
}

impl Ouve {
    /// OUVE with stiffness θ, noise from σmin to σmax, sampled on `[t_eps, t_max]`.
    pub fn new(theta: f64, sigma_min: f64, sigma_max: f64, t_eps: f64, t_max: f64) -> Result<Self> {
        if !(theta > 0.0 && theta.is_finite()) {
            return Err(Error::invalid("path.theta", format!("must be > 0, got {theta}")));
        }
        if !(sigma_min > 0.0 && sigma_max > sigma_min && sigma_max.is_finite()) {
            return Err(Error::invalid(
                "path.sigma",
                format!("need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"),
            ));
        }
        if !(t_eps > 0.0 && t_max > t_eps && t_max.is_finite()) {
            return Err(Error::invalid("path.t_eps", format!("need 0 < t_eps < T, got {t_eps}, {t_max}")));
        }
        Ok(Ouve { theta, sigma_min, sigma_max, t_eps, t_max })
    }
    fn l(&self) -> f64 {
        (self.sigma_max / self.sigma_min).ln()
    }
    fn var_scale(&self) -> f64 {
        self.sigma_min * self.sigma_min * self.l() / (self.theta + self.l())
    }
}

impl NoisePath for Ouve {
    fn name(&self) -> String {
        format!("ouve(θ {}, σ {}→{})", self.theta, self.sigma_min, self.sigma_max)
    }
    fn alpha(&self, t: f64) -> f64 {
        (-self.theta * t).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        // (e^{2Lt} − e^{−2θt}) = e^{−2θt}·expm1(2(L + θ)t): no cancellation near t = 0.
        let v = self.var_scale() * (-2.0 * self.theta * t).exp() * (2.0 * (self.l() + self.theta) * t).exp_m1();
        v.max(0.0).sqrt()
    }
    fn gamma(&self, t: f64) -> f64 {
        -(-self.theta * t).exp_m1()
    }
    fn d_alpha(&self, t: f64) -> f64 {
        -self.theta * self.alpha(t)
    }
    fn d_sigma(&self, t: f64) -> f64 {
        let (l, th) = (self.l(), self.theta);
        let dvar = self.var_scale() * (2.0 * l * (2.0 * l * t).exp() + 2.0 * th * (-2.0 * th * t).exp());
        dvar / (2.0 * self.sigma(t))
    }
    fn d_gamma(&self, t: f64) -> f64 {
        self.theta * self.alpha(t)
    }
    fn t_range(&self) -> (f64, f64) {
        (self.t_eps, self.t_max)
    }
}

/// SGMSE's Schrödinger bridge with VE SDE (SBVE; f = 0, `g(t) = √c·k^t`):
/// with `σ_t² = c(k^{2t} − 1)/(2 ln k)` and `σ̄_t² = σ_1² − σ_t²`, the marginal is
/// `x_t = (σ̄_t²/σ_1²)·x0 + (σ_t²/σ_1²)·y + (σ_t σ̄_t/σ_1)·ε`. At T = 1 both α and σ vanish: the prior is `x_T = y`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sbve {
    k: f64,
    c: f64,
    t_eps: f64,
}

impl Default for Sbve {
    /// SGMSE defaults: k 2.6, c 0.4; sampling stops at t_eps = 1e-4.
    fn default() -> Self {
        Sbve { k: 2.6, c: 0.4, t_eps: 1e-4 }
    }
}

impl Sbve {
    /// The bridge with stiffness `k > 1` and diffusion `c > 0`, sampled on `[t_eps, 1]`.
    pub fn new(k: f64, c: f64, t_eps: f64) -> Result<Self> {
        if !(k > 1.0 && k.is_finite() && c > 0.0 && c.is_finite()) {
            return Err(Error::invalid("path.k", format!("need k > 1 and c > 0, got k {k}, c {c}")));
        }
        if !(t_eps > 0.0 && t_eps < 1.0) {
            return Err(Error::invalid("path.t_eps", format!("must be in (0, 1), got {t_eps}")));
        }
        Ok(Sbve { k, c, t_eps })
    }
    /// σ_t² of the forward VE SDE.
    fn s2(&self, t: f64) -> f64 {
        self.c * (2.0 * t * self.k.ln()).exp_m1() / (2.0 * self.k.ln())
    }
    fn ds2(&self, t: f64) -> f64 {
        self.c * (2.0 * t * self.k.ln()).exp()
    }
}

impl NoisePath for Sbve {
    fn name(&self) -> String {
        format!("sbve(k {}, c {})", self.k, self.c)
    }
    fn alpha(&self, t: f64) -> f64 {
        ((self.s2(1.0) - self.s2(t)) / self.s2(1.0)).max(0.0)
    }
    fn sigma(&self, t: f64) -> f64 {
        let (s2, s2t) = (self.s2(1.0), self.s2(t));
        (s2t * (s2 - s2t)).max(0.0).sqrt() / s2.sqrt()
    }
    fn gamma(&self, t: f64) -> f64 {
        self.s2(t) / self.s2(1.0)
    }
    fn d_alpha(&self, t: f64) -> f64 {
        -self.ds2(t) / self.s2(1.0)
    }
    fn d_sigma(&self, t: f64) -> f64 {
        let (s2, s2t) = (self.s2(1.0), self.s2(t));
        self.ds2(t) * (s2 - 2.0 * s2t) / (2.0 * s2 * self.sigma(t))
    }
    fn d_gamma(&self, t: f64) -> f64 {
        self.ds2(t) / self.s2(1.0)
    }
    fn t_range(&self) -> (f64, f64) {
        (self.t_eps, 1.0)
    }
}

/// The θ schedules of IR-SDE (names and tables as in image-restoration-sde `sde_utils.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThetaSchedule {
    /// θ_i = 1.
    Constant,
    /// θ_i = linspace(1e-4, 0.02)·1000/(T+1) over T + 1 entries.
    Linear,
    /// θ_i = 1 − ᾱ_{i+1}/ᾱ_0 of a cosine ᾱ over T + 3 points (the reference's table).
    Cosine,
}

impl ThetaSchedule {
    /// The T + 1 θ values of the reference.
    pub fn thetas(&self, t_steps: usize) -> Vec<f64> {
        let n = t_steps + 1;
        match self {
            ThetaSchedule::Constant => vec![1.0; n],
            ThetaSchedule::Linear => {
                let scale = 1000.0 / n as f64;
                let (a, b) = (scale * 1e-4, scale * 0.02);
                (0..n).map(|i| a + (b - a) * i as f64 / (n - 1) as f64).collect()
            }
            ThetaSchedule::Cosine => {
                let steps = t_steps + 2;
                let abar = |x: f64| (((x / steps as f64) + 0.008) / 1.008 * PI * 0.5).cos().powi(2);
                let a0 = abar(0.0);
                (1..=n).map(|i| 1.0 - abar(i as f64) / a0).collect()
            }
        }
    }
}

/// IR-SDE (Luo et al. 2023) `dx = θ_t(μ − x)dt + σ_t dw` with `σ_t² = 2λ²θ_t`: α = e^{−θ̄(t)·Δ}, γ = 1 − α,
/// `σ = λ·√(1 − α²)`, where `θ̄` is the reference's `cumsum(θ) − θ_0` at integer steps i = t·T (linear between
/// steps, i.e. θ constant over each step) and `Δ = −ln(eps)/θ̄_T` so that α(1) = eps.
///
/// Note: the MR sampler reference builds its α without the `− θ_0` shift; this path follows IR-SDE.
#[derive(Debug, Clone, PartialEq)]
pub struct IrSde {
    theta_bar: PiecewiseLinear,
    lambda: f64,
    dt: f64,
    steps: usize,
    schedule: ThetaSchedule,
}

impl IrSde {
    /// IR-SDE with `T` steps, `max_sigma` (values ≥ 1 are on the 0–255 scale and divided by 255, as in the
    /// reference) and `eps` (α at T; reference: 0.01 or 0.005).
    pub fn new(schedule: ThetaSchedule, steps: usize, max_sigma: f64, eps: f64) -> Result<Self> {
        if steps < 2 {
            return Err(Error::invalid("path.steps", format!("must be ≥ 2, got {steps}")));
        }
        if !(max_sigma > 0.0 && max_sigma.is_finite()) {
            return Err(Error::invalid("path.max_sigma", format!("must be > 0, got {max_sigma}")));
        }
        if !(eps > 0.0 && eps < 1.0) {
            return Err(Error::invalid("path.eps", format!("must be in (0, 1), got {eps}")));
        }
        let lambda = if max_sigma >= 1.0 { max_sigma / 255.0 } else { max_sigma };
        let thetas = schedule.thetas(steps);
        let mut acc = 0.0;
        let ys: Vec<f64> = thetas
            .iter()
            .map(|th| {
                acc += th;
                acc - thetas[0]
            })
            .collect();
        let dt = -eps.ln() / ys[steps];
        let xs = (0..=steps).map(|i| i as f64 / steps as f64).collect();
        Ok(IrSde { theta_bar: PiecewiseLinear::new(xs, ys)?, lambda, dt, steps, schedule })
    }

    /// Number of discrete steps T.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The stationary standard deviation λ.
    pub fn stationary_std(&self) -> f64 {
        self.lambda
    }

    fn exponent(&self, t: f64) -> f64 {
        self.theta_bar.eval(t) * self.dt
    }
}

impl NoisePath for IrSde {
    fn name(&self) -> String {
        format!("ir-sde({:?}, T {}, λ {:.4})", self.schedule, self.steps, self.lambda).to_lowercase()
    }
    fn alpha(&self, t: f64) -> f64 {
        (-self.exponent(t)).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        self.lambda * (-(-2.0 * self.exponent(t)).exp_m1()).max(0.0).sqrt()
    }
    fn gamma(&self, t: f64) -> f64 {
        -(-self.exponent(t)).exp_m1()
    }
    fn d_alpha(&self, t: f64) -> f64 {
        -self.alpha(t) * self.theta_bar.slope(t) * self.dt
    }
    fn d_sigma(&self, t: f64) -> f64 {
        -self.lambda * self.lambda * self.alpha(t) * self.d_alpha(t) / self.sigma(t)
    }
    fn d_gamma(&self, t: f64) -> f64 {
        -self.d_alpha(t)
    }
    fn t_range(&self) -> (f64, f64) {
        (1.0 / self.steps as f64, 1.0)
    }
    fn train_steps(&self) -> Option<usize> {
        Some(self.steps)
    }
}
