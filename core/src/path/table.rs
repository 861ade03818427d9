//! Tabulated schedules: piecewise-linear interpolation and the DDPM β tables.

use std::f64::consts::FRAC_PI_2;

use crate::{Error, Result};

/// A piecewise-linear function through `(xs[k], ys[k])`, extended linearly beyond both ends (as dpm-solver's
/// `interpolate_fn`). `xs` is strictly increasing.
#[derive(Debug, Clone, PartialEq)]
pub struct PiecewiseLinear {
    xs: Vec<f64>,
    ys: Vec<f64>,
}

impl PiecewiseLinear {
    /// Builds the interpolant; needs at least two knots with strictly increasing `xs`.
    pub fn new(xs: Vec<f64>, ys: Vec<f64>) -> Result<Self> {
        if xs.len() < 2 || xs.len() != ys.len() {
            return Err(Error::invalid(
                "table",
                format!("needs ≥ 2 knots and equal lengths, got {} and {}", xs.len(), ys.len()),
            ));
        }
        if xs.windows(2).any(|w| !(w[1] > w[0])) || ys.iter().chain(&xs).any(|v| !v.is_finite()) {
            return Err(Error::invalid("table", "knots must be finite with strictly increasing x"));
        }
        Ok(PiecewiseLinear { xs, ys })
    }

    /// The knots' x values.
    pub fn xs(&self) -> &[f64] {
        &self.xs
    }

    /// The knots' y values.
    pub fn ys(&self) -> &[f64] {
        &self.ys
    }

    /// Index of the segment holding x (the first or last segment outside the table).
    fn segment(&self, x: f64) -> usize {
        let n = self.xs.len();
        self.xs.partition_point(|&k| k <= x).clamp(1, n - 1) - 1
    }

    /// The value at x.
    pub fn eval(&self, x: f64) -> f64 {
        let k = self.segment(x);
        self.ys[k] + self.slope_of(k) * (x - self.xs[k])
    }

    /// The slope at x (the right-hand segment's slope at a knot).
    pub fn slope(&self, x: f64) -> f64 {
        self.slope_of(self.segment(x))
    }

    fn slope_of(&self, k: usize) -> f64 {
        (self.ys[k + 1] - self.ys[k]) / (self.xs[k + 1] - self.xs[k])
    }

    /// The x with `eval(x) = y` for a strictly decreasing table (extrapolating linearly beyond the ends).
    pub fn inverse_decreasing(&self, y: f64) -> f64 {
        let n = self.ys.len();
        // ys decreasing: find the first knot whose value is ≤ y.
        let k = self.ys.partition_point(|&v| v > y).clamp(1, n - 1) - 1;
        self.xs[k] + (y - self.ys[k]) / self.slope_of(k)
    }
}

/// The β tables of discrete DDPM models (names as in diffusers' `beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `β = linspace(start, end, N)` (DDPM: 1e-4 → 0.02).
    Linear {
        /// First β.
        #[serde(default = "default_linear_start")]
        start: f64,
        /// Last β.
        #[serde(default = "default_linear_end")]
        end: f64,
    },
    /// `β = linspace(√start, √end, N)²` (Stable Diffusion: 0.00085 → 0.012).
    ScaledLinear {
        /// First β.
        #[serde(default = "default_scaled_start")]
        start: f64,
        /// Last β.
        #[serde(default = "default_scaled_end")]
        end: f64,
    },
    /// `β_i = min(1 − ᾱ((i+1)/N)/ᾱ(i/N), 0.999)` with `ᾱ(t) = cos²((t + 0.008)/1.008 · π/2)` (Nichol & Dhariwal).
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredCosCapV2,
}

fn default_linear_start() -> f64 {
    1e-4
}
fn default_linear_end() -> f64 {
    0.02
}
fn default_scaled_start() -> f64 {
    0.00085
}
fn default_scaled_end() -> f64 {
    0.012
}

impl BetaSchedule {
    /// DDPM's linear table (1e-4 → 0.02).
    pub const DDPM: BetaSchedule = BetaSchedule::Linear { start: 1e-4, end: 0.02 };

    /// The N betas.
    pub fn betas(&self, n: usize) -> Vec<f64> {
        let lin = |a: f64, b: f64| -> Vec<f64> {
            if n == 1 {
                return vec![a];
            }
            (0..n).map(|i| a + (b - a) * i as f64 / (n - 1) as f64).collect()
        };
        match *self {
            BetaSchedule::Linear { start, end } => lin(start, end),
            BetaSchedule::ScaledLinear { start, end } => {
                lin(start.sqrt(), end.sqrt()).into_iter().map(|b| b * b).collect()
            }
            BetaSchedule::SquaredCosCapV2 => {
                let abar = |t: f64| ((t + 0.008) / 1.008 * FRAC_PI_2).cos().powi(2);
                (0..n).map(|i| (1.0 - abar((i + 1) as f64 / n as f64) / abar(i as f64 / n as f64)).min(0.999)).collect()
            }
        }
    }
}
