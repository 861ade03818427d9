//! Noise schedules of discrete diffusion: α(t), the probability that a token is still clean at time t ∈ [0, 1],
//! its derivative α′(t), and the ELBO weights built from them.
//!
//! Conventions follow MDLM (`noise_schedule.py`): α = e^{−σ(t)} with σ the total noise, so the forward rate is
//! σ′ = −α′/α. Every scalar is f64.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// A discrete-diffusion schedule: α(0) = 1 (clean) decreasing to α(1) ≈ 0.
pub trait Schedule: fmt::Debug + Send + Sync {
    /// `α(t)`: the probability that a token has not been corrupted by time t.
    fn alpha(&self, t: f64) -> f64;
    /// `α′(t) = dα/dt` (≤ 0).
    fn alpha_prime(&self, t: f64) -> f64;
    /// A short name with parameters, for reports.
    fn describe(&self) -> String;

    /// Forward jump rate `σ′(t) = −α′/α` (masking rate; uniform resampling rate).
    fn rate(&self, t: f64) -> f64 {
        -self.alpha_prime(t) / self.alpha(t)
    }

    /// MDLM ELBO weight of a masked token's cross-entropy: `−α′/(1 − α)` (= 1/t for log-linear with ε = 0).
    fn masked_weight(&self, t: f64) -> f64 {
        -self.alpha_prime(t) / (1.0 - self.alpha(t))
    }

    /// Coefficient of the uniform-diffusion (UDLM/DUO) ELBO: `α′/(K·α)`.
    fn uniform_weight(&self, t: f64, vocab: usize) -> f64 {
        self.alpha_prime(t) / (vocab as f64 * self.alpha(t))
    }
}

/// Log-linear schedule `α = 1 − (1 − ε)t` (σ = −ln(1 − (1 − ε)t)); MDLM's default with ε = 1e-3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogLinear {
    /// α(1) = ε: the small chance a token is still clean at t = 1.
    pub eps: f64,
}

impl Default for LogLinear {
    fn default() -> Self {
        LogLinear { eps: 1e-3 }
    }
}

impl Schedule for LogLinear {
    fn alpha(&self, t: f64) -> f64 {
        1.0 - (1.0 - self.eps) * t
    }
    fn alpha_prime(&self, _t: f64) -> f64 {
        -(1.0 - self.eps)
    }
    fn describe(&self) -> String {
        format!("log-linear (eps {})", self.eps)
    }
}

/// Cosine schedule `α = ε + (1 − ε)·cos(πt/2)` (MDLM `CosineNoise`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cosine {
    /// α(1) = ε.
    pub eps: f64,
}

impl Default for Cosine {
    fn default() -> Self {
        Cosine { eps: 1e-3 }
    }
}

impl Schedule for Cosine {
    fn alpha(&self, t: f64) -> f64 {
        self.eps + (1.0 - self.eps) * (std::f64::consts::FRAC_PI_2 * t).cos()
    }
    fn alpha_prime(&self, t: f64) -> f64 {
        -(1.0 - self.eps) * std::f64::consts::FRAC_PI_2 * (std::f64::consts::FRAC_PI_2 * t).sin()
    }
    fn describe(&self) -> String {
        format!("cosine (eps {})", self.eps)
    }
}

/// Linear total noise `σ(t) = σ_min + t(σ_max − σ_min)`, `α = e^{−σ}` (MDLM `Linear`, defaults 0 and 10).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Linear {
    /// σ(0).
    pub sigma_min: f64,
    /// σ(1).
    pub sigma_max: f64,
}

impl Default for Linear {
    fn default() -> Self {
        Linear { sigma_min: 0.0, sigma_max: 10.0 }
    }
}

impl Schedule for Linear {
    fn alpha(&self, t: f64) -> f64 {
        (-(self.sigma_min + t * (self.sigma_max - self.sigma_min))).exp()
    }
    fn alpha_prime(&self, t: f64) -> f64 {
        -(self.sigma_max - self.sigma_min) * self.alpha(t)
    }
    fn describe(&self) -> String {
        format!("linear (sigma {}..{})", self.sigma_min, self.sigma_max)
    }
}

/// The schedules by name, for configuration files and the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScheduleKind {
    /// [`LogLinear`].
    LogLinear(LogLinear),
    /// [`Cosine`].
    Cosine(Cosine),
    /// [`Linear`].
    Linear(Linear),
}

impl ScheduleKind {
    /// The accepted names.
    pub const NAMES: [&'static str; 3] = ["log-linear", "cosine", "linear"];

    /// Checks the parameters (ε ∈ [0, 1), 0 ≤ σ_min < σ_max).
    pub fn validate(&self) -> Result<()> {
        match self {
            ScheduleKind::LogLinear(LogLinear { eps }) | ScheduleKind::Cosine(Cosine { eps }) => {
                if !(0.0..1.0).contains(eps) {
                    return Err(Error::invalid("schedule.eps", format!("{eps} must lie in [0, 1)")));
                }
            }
            ScheduleKind::Linear(Linear { sigma_min, sigma_max }) => {
                if !(*sigma_min >= 0.0 && sigma_max > sigma_min && sigma_max.is_finite()) {
                    return Err(Error::invalid(
                        "schedule.sigma",
                        format!("need 0 <= sigma_min < sigma_max, got {sigma_min}..{sigma_max}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The schedule as a trait object.
    pub fn as_schedule(&self) -> &dyn Schedule {
        match self {
            ScheduleKind::LogLinear(s) => s,
            ScheduleKind::Cosine(s) => s,
            ScheduleKind::Linear(s) => s,
        }
    }
}

impl FromStr for ScheduleKind {
    type Err = Error;

    /// `log-linear`, `cosine` or `linear` with default parameters.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "log-linear" | "loglinear" => Ok(ScheduleKind::LogLinear(LogLinear::default())),
            "cosine" => Ok(ScheduleKind::Cosine(Cosine::default())),
            "linear" => Ok(ScheduleKind::Linear(Linear::default())),
            _ => Err(Error::invalid("schedule", format!("'{s}'; valid: {}", Self::NAMES.join(", ")))),
        }
    }
}

/// Time grid `1 = t_0 > t_1 > … > t_steps = 0`, evenly spaced.
pub fn time_grid(steps: usize) -> Vec<f64> {
    diffuse_core::spacing::linspace(1.0, 0.0, steps + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_derivative(s: &dyn Schedule) {
        for i in 1..20 {
            let t = i as f64 / 20.0;
            let h = 1e-6;
            let fd = (s.alpha(t + h) - s.alpha(t - h)) / (2.0 * h);
            assert!((fd - s.alpha_prime(t)).abs() < 1e-6, "{}: α′({t}) {} vs {fd}", s.describe(), s.alpha_prime(t));
        }
    }

    #[test]
    fn derivatives_match_finite_differences_and_endpoints_hold() {
        let all = [
            ScheduleKind::LogLinear(LogLinear::default()),
            ScheduleKind::Cosine(Cosine::default()),
            ScheduleKind::Linear(Linear::default()),
        ];
        for k in all {
            let s = k.as_schedule();
            check_derivative(s);
            assert!((s.alpha(0.0) - 1.0).abs() < 1e-12);
            assert!(s.alpha(1.0) < 2e-3 && s.alpha(1.0) > 0.0);
            for i in 0..100 {
                let t = i as f64 / 100.0;
                assert!(s.alpha(t + 0.01) < s.alpha(t), "{} not decreasing", s.describe());
            }
        }
        assert!((LogLinear::default().alpha(1.0) - 1e-3).abs() < 1e-15);
    }

    #[test]
    fn log_linear_weight_is_one_over_t() {
        let s = LogLinear { eps: 0.0 };
        for t in [0.1, 0.5, 0.9] {
            assert!((s.masked_weight(t) - 1.0 / t).abs() < 1e-12);
        }
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let e = ScheduleKind::LogLinear(LogLinear { eps: 1.5 }).validate().unwrap_err().to_string();
        assert!(e.contains("schedule.eps"), "{e}");
        let e = "quadratic".parse::<ScheduleKind>().unwrap_err().to_string();
        assert!(e.contains("schedule") && e.contains("log-linear"), "{e}");
    }

    #[test]
    fn grid_runs_from_one_to_zero() {
        assert_eq!(time_grid(4), vec![1.0, 0.75, 0.5, 0.25, 0.0]);
    }
}
