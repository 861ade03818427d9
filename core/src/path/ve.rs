//! Variance-exploding paths (α = 1) and rectified flow.

use super::NoisePath;
use super::vp::check_t_min;
use crate::{Error, Result};

/// The VE SDE with geometric `σ(t) = σmin·(σmax/σmin)^t` on t ∈ [t_min, 1] (score SDE "vesde").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ve {
    sigma_min: f64,
    sigma_max: f64,
    t_min: f64,
}

impl Default for Ve {
    fn default() -> Self {
        Ve { sigma_min: 0.01, sigma_max: 50.0, t_min: 1e-5 }
    }
}

impl Ve {
    /// Geometric σ from `sigma_min` to `sigma_max`, sampling down to `t_min` (score SDE: 0.01, 50, 1e-5).
    pub fn new(sigma_min: f64, sigma_max: f64, t_min: f64) -> Result<Self> {
        check_sigmas(sigma_min, sigma_max)?;
        if !(0.0..1.0).contains(&t_min) {
            return Err(Error::invalid("path.t_min", format!("must be in [0, 1), got {t_min}")));
        }
        Ok(Ve { sigma_min, sigma_max, t_min })
    }
    fn log_ratio(&self) -> f64 {
        (self.sigma_max / self.sigma_min).ln()
    }
}

impl NoisePath for Ve {
    fn name(&self) -> String {
        format!("ve(σ {}→{})", self.sigma_min, self.sigma_max)
    }
    fn alpha(&self, _t: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        self.sigma_min * (self.log_ratio() * t).exp()
    }
    fn d_alpha(&self, _t: f64) -> f64 {
        0.0
    }
    fn d_sigma(&self, t: f64) -> f64 {
        self.sigma(t) * self.log_ratio()
    }
    fn t_range(&self) -> (f64, f64) {
        (self.t_min, 1.0)
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        let (lo, hi) = self.t_range();
        ((-lambda - self.sigma_min.ln()) / self.log_ratio()).clamp(lo, hi)
    }
}

/// Karras et al.'s EDM parameterization: time is the noise level, `σ(t) = t`, α = 1, t ∈ [σmin, σmax].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edm {
    sigma_min: f64,
    sigma_max: f64,
}

impl Default for Edm {
    fn default() -> Self {
        Edm { sigma_min: 0.002, sigma_max: 80.0 }
    }
}

impl Edm {
    /// Noise levels from `sigma_min` to `sigma_max` (EDM: 0.002, 80).
    pub fn new(sigma_min: f64, sigma_max: f64) -> Result<Self> {
        check_sigmas(sigma_min, sigma_max)?;
        Ok(Edm { sigma_min, sigma_max })
    }
}

impl NoisePath for Edm {
    fn name(&self) -> String {
        format!("edm(σ {}→{})", self.sigma_min, self.sigma_max)
    }
    fn alpha(&self, _t: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        t
    }
    fn d_alpha(&self, _t: f64) -> f64 {
        0.0
    }
    fn d_sigma(&self, _t: f64) -> f64 {
        1.0
    }
    fn t_range(&self) -> (f64, f64) {
        (self.sigma_min, self.sigma_max)
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        (-lambda).exp().clamp(self.sigma_min, self.sigma_max)
    }
}

/// Rectified flow / flow matching: `x_t = (1 − t)·x0 + t·ε`. At t = 1, α = 0 (λ = −∞); solvers handle
/// that start exactly (data-form steps) or need a `-t` variant (Euler in t).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RectifiedFlow {
    t_min: f64,
    t_max: f64,
}

impl Default for RectifiedFlow {
    fn default() -> Self {
        RectifiedFlow { t_min: 1e-3, t_max: 1.0 }
    }
}

impl RectifiedFlow {
    /// Flow on `[t_min, t_max]` with `0 < t_min < t_max ≤ 1`.
    pub fn new(t_min: f64, t_max: f64) -> Result<Self> {
        if !(t_max > 0.0 && t_max <= 1.0) {
            return Err(Error::invalid("path.t_max", format!("must be in (0, 1], got {t_max}")));
        }
        check_t_min(t_min, t_max)?;
        Ok(RectifiedFlow { t_min, t_max })
    }
}

impl NoisePath for RectifiedFlow {
    fn name(&self) -> String {
        "rectified-flow".into()
    }
    fn alpha(&self, t: f64) -> f64 {
        1.0 - t
    }
    fn sigma(&self, t: f64) -> f64 {
        t
    }
    fn d_alpha(&self, _t: f64) -> f64 {
        -1.0
    }
    fn d_sigma(&self, _t: f64) -> f64 {
        1.0
    }
    fn t_range(&self) -> (f64, f64) {
        (self.t_min, self.t_max)
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        // (1 − t)/t = e^λ  ⇒  t = 1/(1 + e^λ) = sigmoid(−λ).
        let t = if lambda >= 0.0 { (-lambda).exp() / (1.0 + (-lambda).exp()) } else { 1.0 / (1.0 + lambda.exp()) };
        t.clamp(self.t_min, self.t_max)
    }
}

fn check_sigmas(sigma_min: f64, sigma_max: f64) -> Result<()> {
    if !(sigma_min > 0.0 && sigma_max > sigma_min && sigma_max.is_finite()) {
        return Err(Error::invalid(
            "path.sigma",
            format!("need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}"),
        ));
    }
    Ok(())
}
