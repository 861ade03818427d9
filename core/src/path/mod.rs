//! Noise paths (schedules): `x_t = α(t)·x0 + γ(t)·μ + σ(t)·ε`, with `λ(t) = ln(α/σ)` and the SDE form derived
//! from the path.
//!
//! Time runs from data (small t) to noise (large t). Every path gives α, σ, γ and their time derivatives in
//! closed form; λ, its inverse, the drift `f = d ln α/dt`, the diffusion `g² = dσ²/dt − 2fσ²` and the anchor
//! drift `dγ/dt − fγ` are derived once here. Solvers only ever see a [`Point`] (t, α, σ, γ) per time.
//!
//! | path | α | γ | σ |
//! |---|---|---|---|
//! | [`VpLinear`], [`VpCosine`], [`VpTable`] | √ᾱ | 0 | √(1−ᾱ) |
//! | [`SubVp`] | √ᾱ | 0 | 1−ᾱ |
//! | [`Ve`], [`Edm`] | 1 | 0 | σ(t) |
//! | [`RectifiedFlow`] | 1−t | 0 | t |
//! | [`Ouve`] (SGMSE) | e^{−θt} | 1−e^{−θt} | closed form |
//! | [`Sbve`] (SGMSE bridge) | σ̄_t²/σ_1² | σ_t²/σ_1² | σ_t·σ̄_t/σ_1 |
//! | [`IrSde`] | e^{−θ̄(t)} | 1−e^{−θ̄(t)} | λ·√(1−e^{−2θ̄(t)}) |
//! | [`Rddm`] | 1−ᾱ_res(t) | ᾱ_res(t) | β̄(t) |
//! | [`Resfusion`] | 2√ᾱ−1 | 1−√ᾱ | √(1−ᾱ) |

mod batch;
mod mean_revert;
mod residual;
mod spec;
mod table;
mod ve;
mod vp;

use std::fmt;

pub use batch::BatchPoint;
pub use mean_revert::{IrSde, Ouve, Sbve, ThetaSchedule};
pub use residual::{Rddm, Resfusion};
pub use spec::{MAX_TABLE_STEPS, PathSpec};
pub use table::{BetaSchedule, PiecewiseLinear};
pub use ve::{Edm, RectifiedFlow, Ve};
pub use vp::{SubVp, VpCosine, VpLinear, VpTable};

/// The coefficients of a path at one time: `x_t = α·x0 + γ·μ + σ·ε`.
///
/// The data end of every path is [`Point::DATA`] (α = 1, γ = 0, σ = 0); it is never passed to a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The path's time.
    pub t: f64,
    /// Signal coefficient α(t).
    pub alpha: f64,
    /// Noise standard deviation σ(t).
    pub sigma: f64,
    /// Anchor coefficient γ(t).
    pub gamma: f64,
}

impl Point {
    /// The clean data: α = 1, γ = 0, σ = 0 (λ = +∞).
    pub const DATA: Point = Point { t: 0.0, alpha: 1.0, sigma: 0.0, gamma: 0.0 };

    /// `λ = ln(α/σ)`: +∞ at the data, −∞ where α = 0.
    pub fn lambda(&self) -> f64 {
        self.alpha.ln() - self.sigma.ln()
    }

    /// True at the clean-data end (σ = 0 with α > 0).
    pub fn is_data(&self) -> bool {
        self.sigma == 0.0 && self.alpha > 0.0
    }

    /// `σ/α`, the noise level of the scaled variable `x/α` (∞ where α = 0).
    pub fn sigma_bar(&self) -> f64 {
        self.sigma / self.alpha
    }
}

/// An affine Gaussian noise path. Implementors give α, σ, γ and their derivatives in closed form; everything
/// else has a default derived from them.
pub trait NoisePath: Send + Sync + fmt::Debug {
    /// A short description with the parameters, e.g. `vp-linear(β 0.1→20)`.
    fn name(&self) -> String;
    /// Signal coefficient α(t).
    fn alpha(&self, t: f64) -> f64;
    /// Noise standard deviation σ(t).
    fn sigma(&self, t: f64) -> f64;
    /// Anchor coefficient γ(t) (0 for plain diffusion).
    fn gamma(&self, _t: f64) -> f64 {
        0.0
    }
    /// dα/dt.
    fn d_alpha(&self, t: f64) -> f64;
    /// dσ/dt.
    fn d_sigma(&self, t: f64) -> f64;
    /// dγ/dt.
    fn d_gamma(&self, _t: f64) -> f64 {
        0.0
    }
    /// The times a model may be evaluated at, `(t_min, t_max)`: sampling starts at `t_max` and a trajectory
    /// ends at `t_min` or jumps from there to the data.
    fn t_range(&self) -> (f64, f64);

    /// Number of training steps of a discrete-time model's table (for leading/trailing spacings), if any.
    fn train_steps(&self) -> Option<usize> {
        None
    }

    /// Resfusion's weight κ(t) of the residual `μ − x0` in the "resnoise" target `ε + κ·(μ − x0)`
    /// ([`crate::param::Parameterization::Resnoise`]). The reference's per-step value is
    /// `(1 − √α_n)·√(1 − ᾱ_n)/β_n = σ/(1 + √(1 − β_n))`; for small steps it tends to σ/2, the default here.
    /// [`Resfusion`] overrides it with the per-step value of its table.
    fn resnoise_weight(&self, t: f64) -> f64 {
        0.5 * self.sigma(t)
    }

    /// `λ(t) = ln(α/σ)`, decreasing in t.
    fn lambda(&self, t: f64) -> f64 {
        self.alpha(t).ln() - self.sigma(t).ln()
    }

    /// The time with `λ(t) = lambda`, clamped to [`NoisePath::t_range`]. Paths with a closed form override
    /// this; the default brackets and bisects to machine precision (λ is monotone on every path here).
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        invert_decreasing(|t| self.lambda(t), lambda, self.t_range())
    }

    /// The coefficients at time t.
    fn point(&self, t: f64) -> Point {
        Point { t, alpha: self.alpha(t), sigma: self.sigma(t), gamma: self.gamma(t) }
    }

    /// SDE drift coefficient `f(t) = d ln α/dt`.
    fn drift(&self, t: f64) -> f64 {
        self.d_alpha(t) / self.alpha(t)
    }

    /// SDE diffusion `g²(t) = dσ²/dt − 2f(t)σ²`.
    fn diffusion2(&self, t: f64) -> f64 {
        let s = self.sigma(t);
        2.0 * s * self.d_sigma(t) - 2.0 * self.drift(t) * s * s
    }

    /// Anchor term of the drift: in x-space the drift is `f·x + (dγ/dt − fγ)·μ`.
    fn anchor_drift(&self, t: f64) -> f64 {
        self.d_gamma(t) - self.drift(t) * self.gamma(t)
    }
}

/// Solves `f(t) = target` for a decreasing `f` on `[lo, hi]` by bisection, clamping to the ends.
pub(crate) fn invert_decreasing(f: impl Fn(f64) -> f64, target: f64, (lo, hi): (f64, f64)) -> f64 {
    if target.is_nan() {
        return f64::NAN;
    }
    if target >= f(lo) {
        return lo;
    }
    if target <= f(hi) {
        return hi;
    }
    let (mut a, mut b) = (lo, hi);
    for _ in 0..200 {
        let m = 0.5 * (a + b);
        if m <= a || m >= b {
            break;
        }
        if f(m) > target { a = m } else { b = m }
    }
    0.5 * (a + b)
}

/// `ln(1 + e^x)` without overflow.
pub(crate) fn softplus(x: f64) -> f64 {
    if x > 0.0 { x + (-x).exp().ln_1p() } else { x.exp().ln_1p() }
}

#[cfg(test)]
mod tests;
