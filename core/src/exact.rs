//! Exact reference problems: isotropic Gaussian mixtures in any dimension, with the exact denoiser on any
//! affine path, exact samples of the data and of every marginal, the closed-form probability-flow trajectory of a
//! single Gaussian, and high-accuracy reference trajectories (Dormand–Prince in f64) for mixtures.
//!
//! For data `x0 ~ Σ_k π_k N(μ_k, s_k² I)` on `x̃ = α·x0 + σ·ε`, the posterior weights are
//! `w_k ∝ π_k N(x̃; α μ_k, (α² s_k² + σ²) I)` and `E[x0 | x̃] = Σ_k w_k (μ_k + α s_k²/(α² s_k² + σ²)·(x̃ − α μ_k))`.
//! A single Gaussian keeps `(x̃ − α μ)/√(α² s² + σ²)` constant along the PF-ODE.

use std::sync::Arc;

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};

use crate::denoiser::{Conditioning, Denoiser};
use crate::param::{Parameterization, Prediction, tilde};
use crate::path::{NoisePath, Point};
use crate::seed::SampleSeeds;
use crate::solvers::rk::integrate_adaptive;
use crate::{Error, Result};

/// An isotropic Gaussian mixture as the data distribution, denoised exactly on a path.
#[derive(Debug, Clone)]
pub struct GaussianMixture {
    weights: Vec<f64>,
    means: Vec<Vec<f64>>,
    stds: Vec<f64>,
    dim: usize,
    path: Arc<dyn NoisePath>,
    output: Parameterization,
}

impl GaussianMixture {
    /// The mixture `Σ weights_k N(means_k, stds_k² I)` on `path`; weights must sum to 1 (within 1e-9).
    pub fn new(weights: Vec<f64>, means: Vec<Vec<f64>>, stds: Vec<f64>, path: Arc<dyn NoisePath>) -> Result<Self> {
        let k = weights.len();
        if k == 0 || means.len() != k || stds.len() != k {
            return Err(Error::invalid(
                "mixture",
                format!("{} weights, {} means and {} stds must be the same non-zero count", k, means.len(), stds.len()),
            ));
        }
        let dim = means[0].len();
        if dim == 0 {
            return Err(Error::invalid("mixture.means", "dimension must be ≥ 1"));
        }
        if let Some(i) = means.iter().position(|m| m.len() != dim) {
            return Err(Error::invalid(
                "mixture.means",
                format!("mean {i} has {} coordinates, mean 0 has {dim}", means[i].len()),
            ));
        }
        if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
            return Err(Error::invalid("mixture.weights", format!("weights must be > 0, got {w}")));
        }
        let total: f64 = weights.iter().sum();
        if (total - 1.0).abs() > 1e-9 {
            return Err(Error::invalid("mixture.weights", format!("must sum to 1 (±1e-9), sum is {total}")));
        }
        if let Some(s) = stds.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::invalid("mixture.stds", format!("must be > 0, got {s}")));
        }
        if means.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::invalid("mixture.means", "must be finite"));
        }
        Ok(GaussianMixture { weights, means, stds, dim, path, output: Parameterization::Data })
    }

    /// A single Gaussian `N(mean, std² I)`.
    pub fn gaussian(mean: Vec<f64>, std: f64, path: Arc<dyn NoisePath>) -> Result<Self> {
        Self::new(vec![1.0], vec![mean], vec![std], path)
    }

    /// The same mixture returning its exact prediction in parameterization `kind` (to test conversions).
    pub fn with_output(mut self, kind: Parameterization) -> Self {
        self.output = kind;
        self
    }

    /// Data dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The path.
    pub fn path(&self) -> &Arc<dyn NoisePath> {
        &self.path
    }

    /// True for a single Gaussian (closed-form trajectories).
    pub fn is_gaussian(&self) -> bool {
        self.weights.len() == 1
    }

    /// Exact data samples `[B, dim]` (f64), one per seed.
    pub fn sample_data(&self, seeds: &SampleSeeds) -> Tensor {
        let mut values = Vec::with_capacity(seeds.len() * self.dim);
        for i in 0..seeds.len() {
            let mut rng = seeds.rng(i, 0);
            let u: f64 = rng.random();
            let mut acc = 0.0;
            let k = self.weights.iter().position(|w| {
                acc += w;
                u < acc
            });
            let k = k.unwrap_or(self.weights.len() - 1);
            for d in 0..self.dim {
                let z: f64 = StandardNormal.sample(&mut rng);
                values.push(self.means[k][d] + self.stds[k] * z);
            }
        }
        Tensor::from_slice(&values).view([seeds.len() as i64, self.dim as i64])
    }

    /// Exact samples of `x_t = α·x0 + γ·μ + σ·ε` at point p (the noise is the seeds' draw 1).
    pub fn sample_marginal(&self, p: &Point, seeds: &SampleSeeds, anchor: Option<&Tensor>) -> Result<Tensor> {
        let x0 = self.sample_data(seeds);
        let eps = seeds.normal(1, &[self.dim as i64], Kind::Double, Device::Cpu);
        let mut x = x0.f_mul_scalar(p.alpha)?.f_add(&eps.f_mul_scalar(p.sigma)?)?;
        if p.gamma != 0.0 {
            let mu = anchor.ok_or_else(|| Error::invalid("anchor", "a path with γ ≠ 0 needs an anchor"))?;
            x = x.f_add(&mu.f_mul_scalar(p.gamma)?)?;
        }
        Ok(x)
    }

    fn flat(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.size().first().copied().unwrap_or(1);
        let y = x.f_reshape([b, -1])?.f_to_kind(Kind::Double)?;
        if y.size()[1] != self.dim as i64 {
            return Err(Error::Shape {
                op: "exact denoiser",
                expected: format!("{} values per sample", self.dim),
                got: format!("{:?}", x.size()),
            });
        }
        Ok(y)
    }

    /// Posterior weights `[B, K]` and per-component posterior means `[B, K, dim]` for x̃ with variances
    /// `v_k = α² s_k² + σ²` (or in σ̄ coordinates with α = 1).
    fn posterior(&self, xt: &Tensor, alpha: f64, sigma: f64) -> Result<(Tensor, Tensor)> {
        let k = self.weights.len() as i64;
        let means = Tensor::from_slice(&self.means.concat()).view([1, k, self.dim as i64]);
        let var: Vec<f64> = self.stds.iter().map(|s| alpha * alpha * s * s + sigma * sigma).collect();
        let var_t = Tensor::from_slice(&var).view([1, k]);
        let diff = xt.f_unsqueeze(1)?.f_sub(&means.f_mul_scalar(alpha)?)?; // [B, K, D]
        let sq = diff.f_square()?.f_sum_dim_intlist(Some(&[2i64][..]), false, Kind::Double)?; // [B, K]
        let log_prior: Vec<f64> =
            self.weights.iter().zip(&var).map(|(w, v)| w.ln() - 0.5 * self.dim as f64 * v.ln()).collect();
        let logits = Tensor::from_slice(&log_prior).view([1, k]).f_sub(&sq.f_div(&var_t.f_mul_scalar(2.0)?)?)?;
        let w = logits.f_softmax(1, Kind::Double)?;
        let gain: Vec<f64> = self.stds.iter().zip(&var).map(|(s, v)| alpha * s * s / v).collect();
        let gain_t = Tensor::from_slice(&gain).view([1, k, 1]);
        let post = means.f_add(&diff.f_mul(&gain_t)?)?;
        Ok((w, post))
    }

    /// `E[x0 | x̃]` at point p (`x̃ = x − γμ`), shape `[B, dim]`.
    pub fn denoise(&self, x_tilde: &Tensor, p: &Point) -> Result<Tensor> {
        let xt = self.flat(x_tilde)?;
        if p.alpha == 0.0 {
            // x̃ carries no information about x0 (also at a bridge's start, where σ = 0 too): the prior mean.
            let mean: Vec<f64> =
                (0..self.dim).map(|d| self.weights.iter().zip(&self.means).map(|(w, m)| w * m[d]).sum()).collect();
            return Ok(Tensor::from_slice(&mean).view([1, self.dim as i64]).f_expand_as(&xt)?.f_contiguous()?);
        }
        let (w, post) = self.posterior(&xt, p.alpha, p.sigma)?;
        Ok(post.f_mul(&w.f_unsqueeze(2)?)?.f_sum_dim_intlist(Some(&[1i64][..]), false, Kind::Double)?)
    }

    /// The PF-ODE velocity `dx̄/dσ̄ = E[ε | x̄]` in scaled coordinates `x̄ = x̃/α`, `σ̄ = σ/α`, written without
    /// dividing by σ̄ so that it is defined at σ̄ = 0: `Σ_k w_k·σ̄·(x̄ − μ_k)/(s_k² + σ̄²)`.
    pub fn eps_scaled(&self, x_bar: &Tensor, sigma_bar: f64) -> Result<Tensor> {
        let k = self.weights.len() as i64;
        let xb = self.flat(x_bar)?;
        let (w, _) = self.posterior(&xb, 1.0, sigma_bar)?;
        let means = Tensor::from_slice(&self.means.concat()).view([1, k, self.dim as i64]);
        let scale: Vec<f64> = self.stds.iter().map(|s| sigma_bar / (s * s + sigma_bar * sigma_bar)).collect();
        let terms = xb.f_unsqueeze(1)?.f_sub(&means)?.f_mul(&Tensor::from_slice(&scale).view([1, k, 1]))?;
        Ok(terms.f_mul(&w.f_unsqueeze(2)?)?.f_sum_dim_intlist(Some(&[1i64][..]), false, Kind::Double)?)
    }

    /// The exact PF-ODE solution from `x` (model space, with anchor) at `from` to `to` (which may be the data):
    /// closed form for a single Gaussian, otherwise Dormand–Prince 5(4) in f64 in σ̄ at `rtol` (1e-11 gives
    /// trajectories accurate to ~1e-9).
    pub fn flow(&self, x: &Tensor, from: &Point, to: &Point, anchor: Option<&Tensor>, rtol: f64) -> Result<Tensor> {
        if !(from.alpha > 0.0 && to.alpha > 0.0) {
            return Err(Error::invalid("flow", "exact trajectories need α > 0 at both ends"));
        }
        let xt = self.flat(&tilde(x, from.gamma, anchor)?)?;
        let out = if self.is_gaussian() {
            let (s, m) = (self.stds[0], Tensor::from_slice(&self.means[0]).view([1, self.dim as i64]));
            let spread = |p: &Point| (p.alpha * p.alpha * s * s + p.sigma * p.sigma).sqrt();
            let ratio = spread(to) / spread(from);
            xt.f_sub(&m.f_mul_scalar(from.alpha)?)?.f_mul_scalar(ratio)?.f_add(&m.f_mul_scalar(to.alpha)?)?
        } else {
            let y0 = xt.f_div_scalar(from.alpha)?;
            let mut f = |sb: f64, y: &Tensor| self.eps_scaled(y, sb);
            let (y, _) =
                integrate_adaptive(&mut f, from.sigma_bar(), to.sigma_bar(), &y0, rtol, rtol * 1e-2, |_, _| Ok(()))?;
            y.f_mul_scalar(to.alpha)?
        };
        match anchor {
            Some(mu) if to.gamma != 0.0 => Ok(out.f_add(&self.flat(mu)?.f_mul_scalar(to.gamma)?)?),
            _ => Ok(out),
        }
    }

    /// Log-density of the data at x (`[B]`).
    pub fn log_prob_data(&self, x0: &Tensor) -> Result<Tensor> {
        self.log_prob_marginal(x0, &Point::DATA, None)
    }

    /// Log-density of the marginal `p_t(x)` at point p (`[B]`): `Σ_k π_k N(x̃; αμ_k, (α²s_k² + σ²) I)`.
    pub fn log_prob_marginal(&self, x: &Tensor, p: &Point, anchor: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.component_log_probs(x, p, anchor)?.f_logsumexp(&[1i64][..], false)?)
    }

    /// The component each row of x most likely came from under the marginal at p (`[B]`, int64): the largest
    /// `log π_k + log N(x̃; αμ_k, (α²s_k² + σ²) I)`.
    pub fn component(&self, x: &Tensor, p: &Point, anchor: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.component_log_probs(x, p, anchor)?.f_argmax(1, false)?)
    }

    /// `log π_k + log N(x̃; αμ_k, (α²s_k² + σ²) I)` for every row and component (`[B, K]`).
    fn component_log_probs(&self, x: &Tensor, p: &Point, anchor: Option<&Tensor>) -> Result<Tensor> {
        let xt = self.flat(&tilde(x, p.gamma, anchor)?)?;
        let k = self.weights.len() as i64;
        let means = Tensor::from_slice(&self.means.concat()).view([1, k, self.dim as i64]);
        let var: Vec<f64> = self.stds.iter().map(|s| p.alpha * p.alpha * s * s + p.sigma * p.sigma).collect();
        let sq = xt.f_unsqueeze(1)?.f_sub(&means.f_mul_scalar(p.alpha)?)?.f_square()?.f_sum_dim_intlist(
            Some(&[2i64][..]),
            false,
            Kind::Double,
        )?;
        let d = self.dim as f64;
        let consts: Vec<f64> = self
            .weights
            .iter()
            .zip(&var)
            .map(|(w, v)| w.ln() - 0.5 * d * (2.0 * std::f64::consts::PI * v).ln())
            .collect();
        Ok(Tensor::from_slice(&consts)
            .view([1, k])
            .f_sub(&sq.f_div(&Tensor::from_slice(&var).view([1, k]).f_mul_scalar(2.0)?)?)?)
    }
}

impl Denoiser for GaussianMixture {
    fn parameterization(&self) -> Parameterization {
        self.output
    }

    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Prediction> {
        let p = self.path.point(t);
        let shape = x.size();
        let xt = tilde(x, p.gamma, cond.anchor.as_ref())?;
        let x0 = self.denoise(&xt, &p)?.f_view(shape.as_slice())?.f_to_kind(x.kind())?;
        if self.output == Parameterization::Data {
            return Ok(Prediction::Data(x0));
        }
        let at = crate::param::At::new(self.path.as_ref(), t, x, cond.anchor.as_ref());
        Prediction::from_data(self.output, &x0, None, &at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{Edm, Ouve, VpLinear};

    #[test]
    fn gaussian_denoiser_matches_closed_form() {
        let path: Arc<dyn NoisePath> = Arc::new(VpLinear::default());
        let g = GaussianMixture::gaussian(vec![1.0, -2.0], 0.5, path.clone()).unwrap();
        let p = path.point(0.3);
        let x = Tensor::from_slice(&[0.7, 0.1]).view([1, 2]);
        let got: Vec<f64> = Vec::try_from(g.denoise(&x, &p).unwrap().view([-1])).unwrap();
        let gain = p.alpha * 0.25 / (p.alpha * p.alpha * 0.25 + p.sigma * p.sigma);
        let want = [1.0 + gain * (0.7 - p.alpha), -2.0 + gain * (0.1 + 2.0 * p.alpha)];
        assert!((got[0] - want[0]).abs() < 1e-14 && (got[1] - want[1]).abs() < 1e-14);
    }

    #[test]
    fn reference_integrator_matches_the_closed_form() {
        // A two-component mixture with identical components is a single Gaussian: the integrator must reproduce
        // the closed form to 1e-9.
        let path: Arc<dyn NoisePath> = Arc::new(Edm::default());
        let g = GaussianMixture::gaussian(vec![0.3, -0.2, 0.1], 0.4, path.clone()).unwrap();
        let twin =
            GaussianMixture::new(vec![0.5, 0.5], vec![vec![0.3, -0.2, 0.1]; 2], vec![0.4, 0.4], path.clone()).unwrap();
        let seeds = SampleSeeds::new(3, 0, 16);
        let from = path.point(80.0);
        let x = g.sample_marginal(&from, &seeds, None).unwrap();
        for to in [path.point(0.002), Point::DATA] {
            let exact = g.flow(&x, &from, &to, None, 1e-11).unwrap();
            let numeric = twin.flow(&x, &from, &to, None, 1e-11).unwrap();
            let err = f64::try_from((exact - numeric).abs().max()).unwrap();
            assert!(err < 1e-9, "integrator error {err}");
        }
    }

    #[test]
    fn marginal_samples_have_the_exact_moments() {
        let path: Arc<dyn NoisePath> = Arc::new(Ouve::default());
        let g = GaussianMixture::gaussian(vec![2.0], 0.5, path.clone()).unwrap();
        let n = 20000;
        let seeds = SampleSeeds::new(11, 0, n);
        let mu = Tensor::full([n as i64, 1], -1.0, (Kind::Double, Device::Cpu));
        let p = path.point(0.6);
        let x = g.sample_marginal(&p, &seeds, Some(&mu)).unwrap();
        let mean = f64::try_from(x.mean(Kind::Double)).unwrap();
        let var = f64::try_from(x.var(true)).unwrap();
        let (m, v) = (2.0 * p.alpha - p.gamma, p.alpha * p.alpha * 0.25 + p.sigma * p.sigma);
        assert!((mean - m).abs() < 5.0 * (v / n as f64).sqrt(), "{mean} vs {m}");
        assert!((var - v).abs() < 5.0 * v * (2.0 / n as f64).sqrt(), "{var} vs {v}");
        // log-density integrates the data density: at the data point it is the plain Gaussian.
        let lp = f64::try_from(g.log_prob_data(&Tensor::from_slice(&[2.0]).view([1, 1])).unwrap().view([-1]).get(0))
            .unwrap();
        assert!((lp - (-(2.0 * std::f64::consts::PI * 0.25f64).ln() / 2.0)).abs() < 1e-12);
    }

    #[test]
    fn bad_mixtures_are_rejected() {
        let path: Arc<dyn NoisePath> = Arc::new(Edm::default());
        assert!(
            GaussianMixture::new(vec![0.5, 0.6], vec![vec![0.0], vec![1.0]], vec![1.0, 1.0], path.clone())
                .unwrap_err()
                .to_string()
                .contains("sum to 1")
        );
        assert!(GaussianMixture::new(vec![1.0], vec![vec![0.0, 1.0]], vec![-1.0], path.clone()).is_err());
        assert!(
            GaussianMixture::new(vec![0.5, 0.5], vec![vec![0.0], vec![1.0, 2.0]], vec![1.0, 1.0], path)
                .unwrap_err()
                .to_string()
                .contains("mean 1")
        );
    }
}
