//! Parameterizations of a denoiser's output and exact conversions between them on any affine path.
//!
//! With `x̃ = x − γ·μ = α·x0 + σ·ε` (μ the anchor), every parameterization is an affine function of (x0, ε):
//!
//! | name | prediction | x0 from it | ε from it |
//! |---|---|---|---|
//! | `eps` | ε̂ | `(x̃ − σε̂)/α` | ε̂ |
//! | `x0` | x̂0 | x̂0 | `(x̃ − αx̂0)/σ` |
//! | `v` | `αε − σx0` | `(αx̃ − σv)/(α² + σ²)` | `(σx̃ + αv)/(α² + σ²)` |
//! | `score` | `∇ log p = −ε/σ` | via ε | `−σ·s` |
//! | `velocity` | `dx/dt = α′x0 + σ′ε + γ′μ` | `(σ′x̃ − σu′)/(ασ′ − σα′)` | `(αu′ − α′x̃)/(ασ′ − σα′)`, `u′ = u − γ′μ` |
//! | `residual` | `R̂ = μ − x0` (RDDM) | `μ − R̂` | via x0 |
//! | `residual_noise` | R̂ and ε̂ | `μ − R̂` | ε̂ |
//! | `resnoise` | `r̂ = ε + κ·(μ − x0)` (Resfusion) | `(x̃ + σκμ − σr̂)/(α + σκ)` | `r̂ − κ·(μ − x̂0)` |
//!
//! RDDM's three outputs are `residual` (SM-Res), `eps` (SM-N) and `residual_noise` (SM-Res-N): its path is
//! `I_t = I_0 + ᾱ_t·I_res + β̄_t·ε` with `I_res = I_in − I_0`, i.e. α = 1 − ᾱ_t, γ = ᾱ_t, σ = β̄_t, μ = I_in, so
//! RDDM's `I_res` is exactly `μ − x0` and its noise is the path's ε.
//!
//! Resfusion's "resnoise" target `ε + (1 − √α_t)·√(1 − ᾱ_t)/β_t·R` (R = y − x0, per-step α_t = 1 − β_t) is
//! `ε + κ(t)·(μ − x0)` with μ = y and `κ(t) = NoisePath::resnoise_weight(t)`; on the Resfusion path κ is the
//! reference's per-step value, elsewhere its continuous-time limit σ/2 (see `NoisePath::resnoise_weight`). The
//! conversion is exact on any path with an anchor wherever `α + σκ > 0` (including α = 0 at Resfusion's
//! acceleration point).

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::path::{NoisePath, Point};
use crate::{Error, Result};

/// What a denoiser's output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parameterization {
    /// Noise ε.
    #[serde(alias = "epsilon", alias = "noise")]
    Eps,
    /// Clean data x0.
    #[serde(rename = "x0", alias = "data", alias = "sample")]
    Data,
    /// `v = α·ε − σ·x0` (Salimans & Ho; for any path).
    #[serde(alias = "v_prediction")]
    V,
    /// The score `∇ₓ log p_t(x) = −ε/σ`.
    Score,
    /// The flow velocity `dx_t/dt` of the conditional path.
    #[serde(alias = "flow")]
    Velocity,
    /// RDDM's residual `μ − x0`.
    Residual,
    /// RDDM's residual and noise together (SM-Res-N).
    ResidualNoise,
    /// Resfusion's "resnoise" `ε + κ(t)·(μ − x0)`.
    #[serde(alias = "res_noise")]
    Resnoise,
}

impl Parameterization {
    /// All parameterizations.
    pub const ALL: [Parameterization; 8] = [
        Parameterization::Eps,
        Parameterization::Data,
        Parameterization::V,
        Parameterization::Score,
        Parameterization::Velocity,
        Parameterization::Residual,
        Parameterization::ResidualNoise,
        Parameterization::Resnoise,
    ];
}

/// A denoiser's output, tagged with its parameterization.
#[derive(Debug)]
pub enum Prediction {
    /// Predicted noise ε̂.
    Eps(Tensor),
    /// Predicted clean data x̂0.
    Data(Tensor),
    /// Predicted `v = α·ε − σ·x0`.
    V(Tensor),
    /// Predicted score.
    Score(Tensor),
    /// Predicted velocity `dx_t/dt`.
    Velocity(Tensor),
    /// Predicted residual `μ − x0`.
    Residual(Tensor),
    /// Predicted residual and noise.
    ResidualNoise {
        /// `μ − x0`.
        residual: Tensor,
        /// ε.
        noise: Tensor,
    },
    /// Predicted Resfusion resnoise `ε + κ·(μ − x0)`.
    Resnoise(Tensor),
}

/// Where a prediction was made: the path's coefficients and derivatives at t, the input x and the anchor μ.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    /// Coefficients at t.
    pub point: Point,
    /// (dα/dt, dσ/dt, dγ/dt), needed by the velocity parameterization only.
    pub rates: Option<(f64, f64, f64)>,
    /// The model input `x_t` (not x̃).
    pub x: &'a Tensor,
    /// The anchor μ, for paths with γ ≠ 0 and the residual parameterizations.
    pub anchor: Option<&'a Tensor>,
    /// Resfusion's weight κ(t) of the residual in `resnoise` ([`NoisePath::resnoise_weight`]).
    pub resnoise_weight: Option<f64>,
}

impl<'a> At<'a> {
    /// The context at time t of `path`, with derivatives.
    pub fn new(path: &dyn NoisePath, t: f64, x: &'a Tensor, anchor: Option<&'a Tensor>) -> Self {
        At {
            point: path.point(t),
            rates: Some((path.d_alpha(t), path.d_sigma(t), path.d_gamma(t))),
            x,
            anchor,
            resnoise_weight: Some(path.resnoise_weight(t)),
        }
    }

    /// `x̃ = x − γ·μ`.
    pub fn x_tilde(&self) -> Result<Tensor> {
        tilde(self.x, self.point.gamma, self.anchor)
    }

    /// κ and the denominator `α + σκ` of the resnoise conversion.
    fn kappa(&self) -> Result<(f64, f64)> {
        let k = self
            .resnoise_weight
            .ok_or_else(|| Error::invalid("resnoise", "the resnoise parameterization needs the path's weight κ(t)"))?;
        let det = self.point.alpha + self.point.sigma * k;
        if !(det > 0.0 && det.is_finite()) {
            return Err(Error::Numerical {
                op: "resnoise",
                reason: format!("α + σκ = {det} does not determine x0 (t = {})", self.point.t),
            });
        }
        Ok((k, det))
    }

    fn anchor(&self, what: &str) -> Result<&'a Tensor> {
        self.anchor.ok_or_else(|| Error::invalid("anchor", format!("{what} needs the anchor μ (conditioning input)")))
    }
}

/// `x − γ·μ` (x itself when γ = 0 or there is no anchor).
pub fn tilde(x: &Tensor, gamma: f64, anchor: Option<&Tensor>) -> Result<Tensor> {
    match anchor {
        Some(mu) if gamma != 0.0 => Ok(x.f_sub(&mu.f_mul_scalar(gamma)?)?),
        None if gamma != 0.0 => {
            Err(Error::invalid("anchor", format!("this path has γ = {gamma} ≠ 0 and needs the anchor μ")))
        }
        _ => Ok(x.shallow_clone()),
    }
}

/// `a·x + b·y` with f64 coefficients: one fused pass (`lerp`) when `a + b = 1`, otherwise a scaled copy and one
/// fused multiply-add (solver steps are memory-bound, so passes over the data are what costs).
pub(crate) fn lin2(a: f64, x: &Tensor, b: f64, y: &Tensor) -> Result<Tensor> {
    if b == 0.0 {
        return Ok(x.f_mul_scalar(a)?);
    }
    if a == 0.0 {
        return Ok(y.f_mul_scalar(b)?);
    }
    if (a + b - 1.0).abs() < 1e-15 && x.kind() == y.kind() && x.size() == y.size() {
        return Ok(x.f_lerp(y, b)?);
    }
    let mut out = x.f_mul_scalar(a)?;
    let _ = out.f_addcmul_(y, &Tensor::f_scalar_tensor(b, (y.kind(), y.device()))?)?;
    Ok(out)
}

impl Prediction {
    /// Its parameterization.
    pub fn kind(&self) -> Parameterization {
        match self {
            Prediction::Eps(_) => Parameterization::Eps,
            Prediction::Data(_) => Parameterization::Data,
            Prediction::V(_) => Parameterization::V,
            Prediction::Score(_) => Parameterization::Score,
            Prediction::Velocity(_) => Parameterization::Velocity,
            Prediction::Residual(_) => Parameterization::Residual,
            Prediction::ResidualNoise { .. } => Parameterization::ResidualNoise,
            Prediction::Resnoise(_) => Parameterization::Resnoise,
        }
    }

    /// The predicted clean data x̂0.
    pub fn into_data(self, at: &At<'_>) -> Result<Tensor> {
        let Point { alpha: a, sigma: s, .. } = at.point;
        let need_alpha = |what: &str| -> Result<()> {
            if a > 0.0 {
                Ok(())
            } else {
                Err(Error::Numerical {
                    op: "to x0",
                    reason: format!("a {what} prediction does not determine x0 where α = 0 (t = {})", at.point.t),
                })
            }
        };
        match self {
            Prediction::Data(x0) => Ok(x0),
            Prediction::Eps(e) => {
                need_alpha("noise")?;
                lin2(1.0 / a, &at.x_tilde()?, -s / a, &e)
            }
            Prediction::Score(sc) => {
                need_alpha("score")?;
                lin2(1.0 / a, &at.x_tilde()?, s * s / a, &sc)
            }
            Prediction::V(v) => {
                let n = a * a + s * s;
                lin2(a / n, &at.x_tilde()?, -s / n, &v)
            }
            Prediction::Velocity(u) => {
                let (da, ds, dg) = rates(at)?;
                let det = a * ds - s * da;
                let u = shift_velocity(u, dg, at)?;
                lin2(ds / det, &at.x_tilde()?, -s / det, &u)
            }
            Prediction::Residual(r) | Prediction::ResidualNoise { residual: r, .. } => {
                Ok(at.anchor("a residual prediction")?.f_sub(&r)?)
            }
            Prediction::Resnoise(r) => {
                // x̃ = αx0 + σ(r − κ(μ − x0)) ⇒ x0 = (x̃ + σκμ − σr)/(α + σκ).
                let (k, det) = at.kappa()?;
                let mu = at.anchor("a resnoise prediction")?;
                let num = lin2(1.0, &at.x_tilde()?, s * k, mu)?;
                lin2(1.0 / det, &num, -s / det, &r)
            }
        }
    }

    /// The predicted noise ε̂.
    pub fn into_eps(self, at: &At<'_>) -> Result<Tensor> {
        let Point { alpha: a, sigma: s, .. } = at.point;
        let need_sigma = || -> Result<()> {
            if s > 0.0 {
                Ok(())
            } else {
                Err(Error::Numerical {
                    op: "to ε",
                    reason: format!("x0 does not determine ε where σ = 0 (t = {})", at.point.t),
                })
            }
        };
        match self {
            Prediction::Eps(e) | Prediction::ResidualNoise { noise: e, .. } => Ok(e),
            p @ Prediction::Resnoise(_) => Ok(p.into_both(at)?.1),
            Prediction::Score(sc) => Ok(sc.f_mul_scalar(-s)?),
            Prediction::V(v) => {
                let n = a * a + s * s;
                lin2(s / n, &at.x_tilde()?, a / n, &v)
            }
            Prediction::Velocity(u) => {
                let (da, ds, dg) = rates(at)?;
                let det = a * ds - s * da;
                let u = shift_velocity(u, dg, at)?;
                lin2(-da / det, &at.x_tilde()?, a / det, &u)
            }
            p @ (Prediction::Data(_) | Prediction::Residual(_)) => {
                need_sigma()?;
                let x0 = p.into_data(at)?;
                lin2(1.0 / s, &at.x_tilde()?, -a / s, &x0)
            }
        }
    }

    /// Both x̂0 and ε̂; where σ = 0 (a bridge's start, where x̃ = 0) ε̂ is taken as 0.
    pub fn into_both(self, at: &At<'_>) -> Result<(Tensor, Tensor)> {
        let Point { alpha: a, sigma: s, .. } = at.point;
        match self {
            Prediction::ResidualNoise { residual, noise } => {
                Ok((at.anchor("a residual prediction")?.f_sub(&residual)?, noise))
            }
            Prediction::Resnoise(r) => {
                let (k, _) = at.kappa()?;
                let mu = at.anchor("a resnoise prediction")?;
                let x0 = Prediction::Resnoise(r.shallow_clone()).into_data(at)?;
                let eps = lin2(1.0, &r, -k, &mu.f_sub(&x0)?)?;
                Ok((x0, eps))
            }
            Prediction::Eps(e) if a > 0.0 => {
                let x0 = lin2(1.0 / a, &at.x_tilde()?, -s / a, &e)?;
                Ok((x0, e))
            }
            p => {
                let x0 = p.into_data(at)?;
                let eps = if s > 0.0 { lin2(1.0 / s, &at.x_tilde()?, -a / s, &x0)? } else { x0.f_zeros_like()? };
                Ok((x0, eps))
            }
        }
    }

    /// Expresses clean data `x0` (and noise `eps`, derived from x when omitted) in parameterization `kind`.
    pub fn from_data(kind: Parameterization, x0: &Tensor, eps: Option<&Tensor>, at: &At<'_>) -> Result<Prediction> {
        let Point { alpha: a, sigma: s, .. } = at.point;
        let eps = match eps {
            Some(e) => e.shallow_clone(),
            None if s > 0.0 => lin2(1.0 / s, &at.x_tilde()?, -a / s, x0)?,
            None => x0.f_zeros_like()?,
        };
        Ok(match kind {
            Parameterization::Data => Prediction::Data(x0.shallow_clone()),
            Parameterization::Eps => Prediction::Eps(eps),
            Parameterization::Score => Prediction::Score(eps.f_mul_scalar(-1.0 / s)?),
            Parameterization::V => Prediction::V(lin2(a, &eps, -s, x0)?),
            Parameterization::Velocity => {
                let (da, ds, dg) = rates(at)?;
                let mut u = lin2(da, x0, ds, &eps)?;
                if dg != 0.0 {
                    u = u.f_add(&at.anchor("a velocity on a path with γ ≠ 0")?.f_mul_scalar(dg)?)?;
                }
                Prediction::Velocity(u)
            }
            Parameterization::Residual => Prediction::Residual(at.anchor("a residual prediction")?.f_sub(x0)?),
            Parameterization::ResidualNoise => {
                Prediction::ResidualNoise { residual: at.anchor("a residual prediction")?.f_sub(x0)?, noise: eps }
            }
            Parameterization::Resnoise => {
                let (k, _) = at.kappa()?;
                let res = at.anchor("a resnoise prediction")?.f_sub(x0)?;
                Prediction::Resnoise(lin2(1.0, &eps, k, &res)?)
            }
        })
    }

    /// `wa·a + wb·b` of two predictions of the same kind (classifier-free guidance; every conversion is affine in
    /// the prediction at fixed x and t, so guidance in any parameterization equals guidance in ε).
    pub fn combine(a: Prediction, wa: f64, b: Prediction, wb: f64) -> Result<Prediction> {
        use Prediction as P;
        Ok(match (a, b) {
            (P::Eps(x), P::Eps(y)) => P::Eps(lin2(wa, &x, wb, &y)?),
            (P::Data(x), P::Data(y)) => P::Data(lin2(wa, &x, wb, &y)?),
            (P::V(x), P::V(y)) => P::V(lin2(wa, &x, wb, &y)?),
            (P::Score(x), P::Score(y)) => P::Score(lin2(wa, &x, wb, &y)?),
            (P::Velocity(x), P::Velocity(y)) => P::Velocity(lin2(wa, &x, wb, &y)?),
            (P::Residual(x), P::Residual(y)) => P::Residual(lin2(wa, &x, wb, &y)?),
            (P::Resnoise(x), P::Resnoise(y)) => P::Resnoise(lin2(wa, &x, wb, &y)?),
            (P::ResidualNoise { residual: r1, noise: n1 }, P::ResidualNoise { residual: r2, noise: n2 }) => {
                P::ResidualNoise { residual: lin2(wa, &r1, wb, &r2)?, noise: lin2(wa, &n1, wb, &n2)? }
            }
            (x, y) => {
                return Err(Error::invalid(
                    "guidance",
                    format!("cannot combine {:?} with {:?} predictions", x.kind(), y.kind()),
                ));
            }
        })
    }
}

fn rates(at: &At<'_>) -> Result<(f64, f64, f64)> {
    at.rates
        .ok_or_else(|| Error::invalid("velocity", "the velocity parameterization needs the path's time derivatives"))
}

/// `u − γ′·μ`: the velocity of x̃.
fn shift_velocity(u: Tensor, dg: f64, at: &At<'_>) -> Result<Tensor> {
    if dg == 0.0 {
        return Ok(u);
    }
    Ok(u.f_sub(&at.anchor("a velocity on a path with γ ≠ 0")?.f_mul_scalar(dg)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::PathSpec;
    use tch::{Device, Kind};

    fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
        f64::try_from((a - b).abs().max()).unwrap()
    }

    /// Every parameterization round-trips to (x0, ε) exactly on every path, with and without anchors.
    #[test]
    fn conversions_round_trip_on_every_path() {
        let opts = (Kind::Double, Device::Cpu);
        let x0 = Tensor::randn([3, 5], opts);
        let eps = Tensor::randn([3, 5], opts);
        let mu = Tensor::randn([3, 5], opts);
        for kind in PathSpec::KINDS {
            let path = PathSpec::default_of(kind).unwrap().build().unwrap();
            let (lo, hi) = path.t_range();
            let t = lo + 0.37 * (hi - lo);
            let p = path.point(t);
            let x = &(&x0 * p.alpha + &eps * p.sigma) + &mu * p.gamma;
            let at = At::new(path.as_ref(), t, &x, Some(&mu));
            for param in Parameterization::ALL {
                let pred = Prediction::from_data(param, &x0, None, &at).unwrap();
                let (x0b, epsb) = pred.into_both(&at).unwrap();
                assert!(max_abs(&x0b, &x0) < 1e-10, "{kind} {param:?}: x0 error {}", max_abs(&x0b, &x0));
                assert!(max_abs(&epsb, &eps) < 1e-9, "{kind} {param:?}: ε error {}", max_abs(&epsb, &eps));
                let e2 = Prediction::from_data(param, &x0, None, &at).unwrap().into_eps(&at).unwrap();
                assert!(max_abs(&e2, &eps) < 1e-9, "{kind} {param:?}: into_eps");
            }
        }
    }

    #[test]
    fn clear_errors_where_a_conversion_is_undefined() {
        let path = PathSpec::default_of("rectified_flow").unwrap().build().unwrap();
        let x = Tensor::ones([2], (Kind::Double, Device::Cpu));
        let at = At::new(path.as_ref(), 1.0, &x, None);
        let err = Prediction::Eps(x.shallow_clone()).into_data(&at).unwrap_err().to_string();
        assert!(err.contains("α = 0"), "{err}");
        let err = Prediction::Residual(x.shallow_clone()).into_data(&at).unwrap_err().to_string();
        assert!(err.contains("anchor"), "{err}");
        let ouve = PathSpec::default_of("ouve").unwrap().build().unwrap();
        let at = At::new(ouve.as_ref(), 0.5, &x, None);
        assert!(Prediction::Data(x.shallow_clone()).into_eps(&at).unwrap_err().to_string().contains("anchor"));
        assert!(
            Prediction::combine(Prediction::Eps(x.shallow_clone()), 1.0, Prediction::V(x.shallow_clone()), 1.0)
                .is_err()
        );
    }

    #[test]
    fn parameterization_names() {
        let p: Parameterization = serde_json::from_str("\"x0\"").unwrap();
        assert_eq!(p, Parameterization::Data);
        let p: Parameterization = serde_json::from_str("\"v_prediction\"").unwrap();
        assert_eq!(p, Parameterization::V);
        assert!(serde_json::from_str::<Parameterization>("\"eps0\"").is_err());
    }
}
