//! Residual paths for restoration: RDDM and Resfusion (anchor μ = the degraded input).

use super::NoisePath;
use super::table::BetaSchedule;
use super::vp::VpTable;
use crate::{Error, Result};

/// RDDM (Liu et al. 2024): `I_t = I_0 + ᾱ_res(t)·(I_in − I_0) + β̄(t)·ε`, i.e. α = 1 − ᾱ_res, γ = ᾱ_res, σ = β̄,
/// with the reference's tables in continuous time t = n/T: the residual weights decrease linearly
/// (`ᾱ_res(t) = t(2T − tT + 1)/(T + 1)`, ᾱ_res(1) = 1) and the noise variances increase linearly
/// (`β̄(t)² = s·t(tT + 1)/(T + 1)`, s = `sum_scale`). Both agree with the reference's cumulative sums at every
/// integer step n (index n − 1). At t = 1, α = 0: sampling starts from `I_in + √s·ε`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rddm {
    steps: usize,
    sum_scale: f64,
}

impl Default for Rddm {
    /// T = 1000, sum_scale 0.01 (the reference's conditioned default; 1 for deraining/inpainting).
    fn default() -> Self {
        Rddm { steps: 1000, sum_scale: 0.01 }
    }
}

impl Rddm {
    /// RDDM with T steps and noise scale `sum_scale` (β̄(1)²).
    pub fn new(steps: usize, sum_scale: f64) -> Result<Self> {
        if steps < 2 {
            return Err(Error::invalid("path.steps", format!("must be ≥ 2, got {steps}")));
        }
        if !(sum_scale > 0.0 && sum_scale.is_finite()) {
            return Err(Error::invalid("path.sum_scale", format!("must be > 0, got {sum_scale}")));
        }
        Ok(Rddm { steps, sum_scale })
    }
    fn tt(&self) -> f64 {
        self.steps as f64
    }
    fn res(&self, t: f64) -> f64 {
        let n = self.tt();
        t * (2.0 * n - t * n + 1.0) / (n + 1.0)
    }
    fn d_res(&self, t: f64) -> f64 {
        let n = self.tt();
        (2.0 * n - 2.0 * t * n + 1.0) / (n + 1.0)
    }
    fn var(&self, t: f64) -> f64 {
        let n = self.tt();
        self.sum_scale * t * (t * n + 1.0) / (n + 1.0)
    }
}

impl NoisePath for Rddm {
    fn name(&self) -> String {
        format!("rddm(T {}, s {})", self.steps, self.sum_scale)
    }
    fn alpha(&self, t: f64) -> f64 {
        (1.0 - self.res(t)).max(0.0)
    }
    fn sigma(&self, t: f64) -> f64 {
        self.var(t).max(0.0).sqrt()
    }
    fn gamma(&self, t: f64) -> f64 {
        self.res(t)
    }
    fn d_alpha(&self, t: f64) -> f64 {
        -self.d_res(t)
    }
    fn d_sigma(&self, t: f64) -> f64 {
        let n = self.tt();
        self.sum_scale * (2.0 * t * n + 1.0) / (n + 1.0) / (2.0 * self.sigma(t))
    }
    fn d_gamma(&self, t: f64) -> f64 {
        self.d_res(t)
    }
    fn t_range(&self) -> (f64, f64) {
        (1.0 / self.tt(), 1.0)
    }
    fn train_steps(&self) -> Option<usize> {
        Some(self.steps)
    }
}

/// Resfusion (Shi et al. 2024): `x_t = √ᾱ·x0 + (1 − √ᾱ)·R + √(1 − ᾱ)·ε` with the residual `R = y − x0`, i.e.
/// α = 2√ᾱ − 1, γ = 1 − √ᾱ (μ = y), σ = √(1 − ᾱ). Sampling starts at the acceleration point T′ where
/// √ᾱ = ½ (α = 0), from `½·y + √¾·ε`. ᾱ comes from a DDPM table in continuous time (as [`VpTable`]); T′ is
/// solved exactly on it; the step that ends at T′ is the reference's truncated last step (√ᾱ(T′) = ½ exactly), only
/// its time differs (T′ is fractional here, the integer step in the reference).
#[derive(Debug, Clone, PartialEq)]
pub struct Resfusion {
    table: VpTable,
    t_acc: f64,
    label: String,
}

impl Resfusion {
    /// The reference's "linear pro" schedule of T steps: `β = linspace(1e-4, 0.02)·1000/T` (T = 12 → T′ ≈ 5).
    pub fn linear_pro(steps: usize) -> Result<Self> {
        let scale = 1000.0 / steps as f64;
        Self::from_betas(&BetaSchedule::Linear { start: scale * 1e-4, end: scale * 0.02 }.betas(steps), "linear-pro")
    }

    /// The reference's "cosine pro" schedule of T steps (Nichol's squared-cosine β table).
    pub fn cosine_pro(steps: usize) -> Result<Self> {
        Self::from_betas(&BetaSchedule::SquaredCosCapV2.betas(steps), "cosine-pro")
    }

    /// Resfusion over an explicit β table; only the steps up to the acceleration point are used (later β may
    /// even exceed 1, as in the reference's short linear tables).
    pub fn from_betas(betas: &[f64], label: &str) -> Result<Self> {
        let half = 0.5f64.ln();
        let mut log_sqrt_abar = 0.0;
        let mut used = Vec::new();
        for (i, &b) in betas.iter().enumerate() {
            if !(b > 0.0 && b < 1.0) {
                return Err(Error::invalid(
                    "path.betas",
                    format!("β[{i}] = {b} is outside (0, 1) before √ᾱ reaches ½"),
                ));
            }
            used.push(b);
            log_sqrt_abar += 0.5 * (-b).ln_1p();
            if log_sqrt_abar <= half {
                break;
            }
        }
        if log_sqrt_abar > half {
            return Err(Error::invalid("path.betas", "√ᾱ never reaches ½: no acceleration point"));
        }
        if used.len() < 2 {
            return Err(Error::invalid("path.betas", "√ᾱ reaches ½ in the first step; use more steps"));
        }
        // Knots at (k + 1)/N of the full table, so times mean the same as in the reference.
        let n = betas.len();
        let mut padded = used.clone();
        padded.resize(n, *used.last().unwrap_or(&0.5)); // unused tail keeps the table valid past T′
        let table = VpTable::from_betas(&padded)?;
        let t_acc = table.t_of_log_alpha(half);
        Ok(Resfusion { table, t_acc, label: label.to_string() })
    }

    /// The acceleration point T′ (√ᾱ(T′) = ½).
    pub fn acceleration_point(&self) -> f64 {
        self.t_acc
    }

    /// The underlying DDPM table (its `step_of_t` maps times to the reference's integer steps).
    pub fn table(&self) -> &VpTable {
        &self.table
    }

    fn sqrt_abar(&self, t: f64) -> f64 {
        self.table.log_alpha(t).exp()
    }
}

impl NoisePath for Resfusion {
    fn name(&self) -> String {
        format!("resfusion({}, N {}, T′ {:.4})", self.label, self.table.steps(), self.t_acc)
    }
    fn alpha(&self, t: f64) -> f64 {
        (2.0 * self.sqrt_abar(t) - 1.0).max(0.0)
    }
    fn sigma(&self, t: f64) -> f64 {
        (-(2.0 * self.table.log_alpha(t)).exp_m1()).max(0.0).sqrt()
    }
    fn gamma(&self, t: f64) -> f64 {
        1.0 - self.sqrt_abar(t)
    }
    fn d_alpha(&self, t: f64) -> f64 {
        2.0 * self.sqrt_abar(t) * self.table.d_log_alpha(t)
    }
    fn d_sigma(&self, t: f64) -> f64 {
        let a = self.sqrt_abar(t);
        -a * a * self.table.d_log_alpha(t) / self.sigma(t)
    }
    fn d_gamma(&self, t: f64) -> f64 {
        -self.sqrt_abar(t) * self.table.d_log_alpha(t)
    }
    fn t_range(&self) -> (f64, f64) {
        (self.table.t_range().0, self.t_acc)
    }
    /// `κ = σ/(1 + √(1 − β_n))` with β_n the step of the table that ends at t: `1 − β_n = ᾱ(t)/ᾱ(k/N)` for t in
    /// `(k/N, (k+1)/N]` (ᾱ(0) = 1), so at the table's steps κ is the reference's
    /// `(1 − √α_n)·√(1 − ᾱ_n)/β_n`, and at T′ it uses the truncated last step that makes √ᾱ(T′) = ½.
    fn resnoise_weight(&self, t: f64) -> f64 {
        let n = self.table.steps() as f64;
        let k = ((n * t - 1e-9).ceil() - 1.0).max(0.0);
        let log_prev = if k == 0.0 { 0.0 } else { self.table.log_alpha(k / n) };
        let ratio = (self.table.log_alpha(t) - log_prev).exp(); // √(1 − β_n)
        self.sigma(t) / (1.0 + ratio)
    }
    fn train_steps(&self) -> Option<usize> {
        Some(self.table.steps())
    }
}
