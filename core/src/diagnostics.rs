//! Diagnostics of a learned score: how far it is from being the score of the path's marginals.
//!
//! A true score `S = ∇ₓ log p_t` is conservative (its Jacobian is a Hessian, so symmetric) and obeys the score
//! Fokker–Planck equation of the forward SDE `dx = F dt + ĝ dW`, `F = f·x + a·μ` (Lai et al., ICML 2023):
//!
//! ```text
//! ∂ₜS = ∇ₓ[ ½ĝ²·∇·S + ½ĝ²·‖S‖² − F·S − ∇·F ]      (∇·F = f·n does not depend on x)
//! ```
//!
//! A network trained by denoising score matching satisfies neither exactly; where it violates them, the
//! probability-flow ODE and the reverse SDE no longer sample the same law, which is one reason the two kinds of
//! sampler disagree on a model. [`score_diagnostics`] measures both at given states, in core's convention (the
//! score `−ε̂/σ` of standard normal noise); `noise_variance` is the variance of one coordinate of the noise the
//! path actually adds (½ for complex spectrograms whose parts each carry half, as in SGMSE+). With that score
//! `s`, the equation above reads `∂ₜs = ∇ₓ[ ½·c·g²·∇·s + ½g²‖s‖² − F·s ]` with core's `g² = dσ²/dt − 2fσ²`.
//!
//! The divergence is exact (one vector–Jacobian product per coordinate) for small states and a Hutchinson
//! estimate otherwise; the estimate's own spread is reported beside the residual, so that a residual no larger
//! than the noise floor is read as "not measurably wrong", not as a number.

use tch::{Kind, Tensor};

use crate::path::Point;
use crate::seed::SampleSeeds;
use crate::solvers::Run;
use crate::{Error, Result};

/// How the divergence `∇·s` is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Divergence {
    /// Exactly, one vector–Jacobian product per coordinate of an item (small states: tests, toy problems).
    Exact,
    /// Hutchinson's estimator with this many Gaussian probes (each its own residual; their spread is the noise
    /// floor).
    Hutchinson(usize),
}

/// What [`score_diagnostics`] measures and how.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnosticSettings {
    /// How the divergence is taken.
    pub divergence: Divergence,
    /// Probes of the Jacobian's asymmetry (Hutchinson estimates of Frobenius norms).
    pub asymmetry_probes: usize,
    /// Half-width of the central difference in t for `∂ₜs` (one-sided at the ends of the path's range).
    pub dt: f64,
    /// Variance of one coordinate of the noise the path adds (1 for real data; ½ for SGMSE's complex noise).
    pub noise_variance: f64,
    /// Seed of the probes.
    pub seed: u64,
}

impl Default for DiagnosticSettings {
    fn default() -> Self {
        DiagnosticSettings {
            divergence: Divergence::Hutchinson(4),
            asymmetry_probes: 4,
            dt: 1e-3,
            noise_variance: 1.0,
            seed: 0,
        }
    }
}

/// Squared norms, summed over a batch of states, from which the relative measures are formed (sums, so that
/// several batches pool by adding).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScoreDiagnostics {
    /// `‖R‖²` of the Fokker–Planck residual `R = ∂ₜs − ∇ₓΦ` (mean over the divergence probes).
    pub residual: f64,
    /// Squared standard error of that mean from the probes' spread (0 for the exact divergence).
    pub residual_noise: f64,
    /// `‖∂ₜs‖²`, the scale the residual is read against.
    pub time_derivative: f64,
    /// `‖(J − Jᵀ)u‖²` summed over the asymmetry probes, J the score's Jacobian.
    pub antisymmetric: f64,
    /// `‖Ju‖²` summed over the same probes.
    pub jacobian: f64,
    /// The same two for the denoiser's Jacobian `∂x̂0/∂x = (I + σ²J)/α`, free of the identity that dominates J at
    /// high noise.
    pub denoiser_antisymmetric: f64,
    /// `‖(∂x̂0/∂x)u‖²` summed over the probes.
    pub denoiser_jacobian: f64,
    /// Model evaluations spent.
    pub evaluations: usize,
}

impl ScoreDiagnostics {
    /// Pools two measurements (sums of squares add).
    pub fn add(&mut self, o: &ScoreDiagnostics) {
        self.residual += o.residual;
        self.residual_noise += o.residual_noise;
        self.time_derivative += o.time_derivative;
        self.antisymmetric += o.antisymmetric;
        self.jacobian += o.jacobian;
        self.denoiser_antisymmetric += o.denoiser_antisymmetric;
        self.denoiser_jacobian += o.denoiser_jacobian;
        self.evaluations += o.evaluations;
    }

    /// `‖R‖ / ‖∂ₜs‖`: 0 for a true score.
    pub fn relative_residual(&self) -> f64 {
        ratio(self.residual, self.time_derivative)
    }

    /// The residual's noise floor on the same scale (the Hutchinson estimate's standard error).
    pub fn relative_residual_noise(&self) -> f64 {
        ratio(self.residual_noise, self.time_derivative)
    }

    /// `‖J − Jᵀ‖_F / (√2·‖J‖_F)` of the score's Jacobian: 0 when conservative, about 1 for a matrix with no
    /// symmetry, √2 for an antisymmetric one.
    pub fn asymmetry(&self) -> f64 {
        ratio(self.antisymmetric, 2.0 * self.jacobian)
    }

    /// The same measure for the denoiser's Jacobian.
    pub fn denoiser_asymmetry(&self) -> f64 {
        ratio(self.denoiser_antisymmetric, 2.0 * self.denoiser_jacobian)
    }
}

fn ratio(num2: f64, den2: f64) -> f64 {
    if den2 > 0.0 { (num2 / den2).sqrt() } else { f64::NAN }
}

fn sum_sq(x: &Tensor) -> Result<f64> {
    Ok(f64::try_from(x.f_square()?.f_sum(Kind::Double)?)?)
}

fn dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.f_mul(b)?.f_sum(Kind::Double)?)
}

/// The single gradient of `out` with respect to `input`.
fn grad(out: &Tensor, input: &Tensor, create_graph: bool) -> Result<Tensor> {
    Tensor::f_run_backward(&[out], &[input], true, create_graph)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::invalid("diagnostics", "no gradient"))
}

/// The Fokker–Planck residual and the Jacobian asymmetry of the run's model at the states `x` (model space, a
/// batch whose items are independent) at the path's point `p`. The path's drift and anchor come from the run.
pub fn score_diagnostics(
    run: &mut Run<'_>,
    x: &Tensor,
    p: &Point,
    settings: &DiagnosticSettings,
) -> Result<ScoreDiagnostics> {
    if !(p.sigma > 0.0 && p.alpha > 0.0) {
        return Err(Error::invalid("diagnostics", "the score is only defined where α > 0 and σ > 0"));
    }
    if !(settings.dt > 0.0 && settings.noise_variance > 0.0) {
        return Err(Error::invalid("diagnostics", "dt and the noise variance must be positive"));
    }
    let before = run.nfe();
    let path = run.path();
    let (lo, hi) = path.t_range();
    let x = x.f_detach()?;
    let item: Vec<i64> = x.size()[1..].to_vec();
    let batch = x.size().first().copied().unwrap_or(1) as usize;
    let seeds = SampleSeeds::new(settings.seed, 0, batch);

    // ∂ₜs at fixed x, by a central difference (one-sided at the range's ends).
    let (t_minus, t_plus) = ((p.t - settings.dt).max(lo), (p.t + settings.dt).min(hi));
    let score_at = |run: &mut Run<'_>, x: &Tensor, q: &Point| -> Result<Tensor> {
        let tilde = run.to_tilde(x, q)?;
        run.score(&tilde, q)
    };
    let (q_minus, q_plus) = (path.point(t_minus), path.point(t_plus));
    let ds_dt = tch::no_grad(|| -> Result<Tensor> {
        let s_plus = score_at(run, &x, &q_plus)?;
        let s_minus = score_at(run, &x, &q_minus)?;
        Ok(s_plus.f_sub(&s_minus)?.f_div_scalar(t_plus - t_minus)?)
    })?;

    let (f, a, g2) = (path.drift(p.t), path.anchor_drift(p.t), path.diffusion2(p.t));
    // F(x) = f·x + a·μ, differentiated with the rest (∇(F·s) = f·s + Jᵀ·F).
    let anchor = run.cond().anchor.as_ref().map(Tensor::shallow_clone);
    let drift = |x: &Tensor| -> Result<Tensor> {
        Ok(match &anchor {
            Some(mu) if a != 0.0 => x.f_mul_scalar(f)?.f_add(&mu.f_mul_scalar(a)?)?,
            _ => x.f_mul_scalar(f)?,
        })
    };
    let probes: Vec<Vec<Tensor>> = match settings.divergence {
        Divergence::Exact => {
            let n: i64 = item.iter().product();
            let basis = (0..n)
                .map(|i| {
                    let e = Tensor::f_zeros([n], (x.kind(), x.device()))?;
                    let e = e.f_index_fill(0, &Tensor::from_slice(&[i]), 1.0)?;
                    Ok(e.f_view(item.as_slice())?.f_expand_as(&x)?.f_contiguous()?)
                })
                .collect::<Result<Vec<_>>>()?;
            vec![basis]
        }
        Divergence::Hutchinson(k) if k >= 2 => {
            (0..k as u64).map(|d| Ok(vec![seeds.normal(d, &item, x.kind(), x.device())])).collect::<Result<Vec<_>>>()?
        }
        Divergence::Hutchinson(_) => {
            return Err(Error::invalid("diagnostics", "a Hutchinson divergence needs at least 2 probes"));
        }
    };

    // One residual per divergence estimate: R = ∂ₜs − ∇ₓ[½cg²·∇·s + ½g²‖s‖² − F·s].
    let mut residuals = Vec::with_capacity(probes.len());
    for dirs in &probes {
        let r = tch::with_grad(|| -> Result<Tensor> {
            let leaf = x.f_detach()?.set_requires_grad(true);
            let s = score_at(run, &leaf, p)?;
            let mut div = Tensor::f_zeros([], (Kind::Double, x.device()))?;
            for z in dirs {
                let jt_z = grad(&dot(&s, z)?, &leaf, true)?;
                div = div.f_add(&dot(&jt_z, z)?)?;
            }
            let phi = div
                .f_mul_scalar(0.5 * settings.noise_variance * g2)?
                .f_add(&dot(&s, &s)?.f_mul_scalar(0.5 * g2)?)?
                .f_sub(&dot(&drift(&leaf)?, &s)?)?;
            Ok(ds_dt.f_sub(&grad(&phi, &leaf, false)?)?)
        })?;
        residuals.push(r);
    }
    let k = residuals.len();
    let mean = Tensor::f_stack(&residuals, 0)?.f_mean_dim(0, false, Kind::Double)?;
    let residual_noise = if k > 1 {
        let spread: f64 = residuals.iter().map(|r| sum_sq(&r.f_sub(&mean)?)).sum::<Result<f64>>()?;
        spread / ((k * (k - 1)) as f64)
    } else {
        0.0
    };

    // Asymmetry: Ju by the double-backward trick (Ju = ∂/∂w[(Jᵀw)·u]), Jᵀu by one vector–Jacobian product.
    let mut out = ScoreDiagnostics {
        residual: sum_sq(&mean)?,
        residual_noise,
        time_derivative: sum_sq(&ds_dt)?,
        ..ScoreDiagnostics::default()
    };
    for d in 0..settings.asymmetry_probes as u64 {
        let u = seeds.normal(1000 + d, &item, x.kind(), x.device());
        let (ju, jtu) = tch::with_grad(|| -> Result<(Tensor, Tensor)> {
            let leaf = x.f_detach()?.set_requires_grad(true);
            let w = x.f_zeros_like()?.set_requires_grad(true);
            let s = score_at(run, &leaf, p)?;
            let jt_w = grad(&dot(&s, &w)?, &leaf, true)?;
            let ju = grad(&dot(&jt_w, &u)?, &w, false)?;
            let jtu = grad(&dot(&s, &u)?, &leaf, false)?;
            Ok((ju, jtu))
        })?;
        let anti = ju.f_sub(&jtu)?;
        out.antisymmetric += sum_sq(&anti)?;
        out.jacobian += sum_sq(&ju)?;
        // ∂x̂0/∂x·u = (u + σ²·Ju)/α, whose antisymmetric part is σ²/α times J's.
        let s2 = p.sigma * p.sigma;
        out.denoiser_antisymmetric += sum_sq(&anti)? * (s2 / p.alpha).powi(2);
        out.denoiser_jacobian += sum_sq(&u.f_add(&ju.f_mul_scalar(s2)?)?.f_div_scalar(p.alpha)?)?;
    }
    out.evaluations = run.nfe() - before;
    Ok(out)
}
