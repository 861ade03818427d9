//! The training objectives: denoising score matching, data prediction, and crp through the sampler.

use tch::{Kind, Tensor};

use super::{CrpLoss, waveform_batch_torch};
use diffuse_core::path::{BatchPoint, NoisePath};

use crate::config::ModelConfig;
use crate::net::ScoreNet;
use crate::{Error, Result};

/// A training input on the path: time `[B]`, the complex noise drawn and `x_t`.
pub(super) struct Perturbed {
    pub(super) t: Tensor,
    pub(super) z: Tensor,
    pub(super) x_t: Tensor,
}

/// Draws t ~ U(t_eps, 1) `[B]` and the complex noise z (variance ½ per part) from libtorch's generator and
/// returns them with `x_t`.
pub(super) fn perturb(path: &dyn NoisePath, x0: &Tensor, y: &Tensor) -> Result<Perturbed> {
    let b = x0.size()[0];
    let (t_eps, t_max) = path.t_range();
    let opts = (Kind::Float, x0.device());
    let t = Tensor::f_rand([b], opts)?.f_mul_scalar(t_max - t_eps)?.f_add_scalar(t_eps)?;
    let p = BatchPoint::at(path, &t.f_view([b, 1, 1, 1])?)?;
    let (alpha, gamma, sigma) = (p.alpha, p.gamma, p.sigma);
    let mean = x0.f_mul(&alpha)?.f_add(&y.f_mul(&gamma)?)?;
    let z = Tensor::f_randn(x0.size(), opts)?.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?;
    let x_t = mean.f_add(&z.f_mul(&sigma)?)?;
    Ok(Perturbed { t, z, x_t })
}

/// The denoising score-matching loss of a batch (sgmse "score_matching" for OUVE): returns the mean over the
/// batch of `½·Σ|z − ẑ|²`. Noise and times are drawn from libtorch's generator (seed it first).
pub fn dsm_loss(net: &ScoreNet, config: &ModelConfig, x0: &Tensor, y: &Tensor) -> Result<Tensor> {
    let Perturbed { t, z, x_t } = perturb(config.noise_path()?.as_ref(), x0, y)?;
    let zhat = net.forward(&Tensor::f_cat(&[&x_t, y], 1)?, &t)?;
    let err = z.f_sub(&zhat)?;
    Ok(err.f_square()?.f_sum_dim_intlist(Some(&[1i64, 2, 3][..]), false, None)?.f_mul_scalar(0.5)?.f_mean(None)?)
}

/// The data-prediction loss of a batch: `mean ((x̂0 − x0)/c_out)²` over every coefficient, with x̂0 the
/// preconditioned network's estimate ([`crate::net::DataPrecond`]; EDM's weighting λ(t) = 1/c_out², so F's target
/// has unit variance at every t). Its minimiser is the conditional mean `E[x0 | x_t, y]`. Noise and times are drawn
/// from libtorch's generator (seed it first).
pub fn data_loss(net: &ScoreNet, config: &ModelConfig, x0: &Tensor, y: &Tensor) -> Result<Tensor> {
    let path = config.noise_path()?;
    let Perturbed { t, x_t, .. } = perturb(path.as_ref(), x0, y)?;
    let (x0_hat, p) = net.denoise(&x_t, y, &t, path.as_ref())?;
    Ok(x0_hat.f_sub(x0)?.f_div(&p.c_out)?.f_square()?.f_mean(Kind::Float)?)
}

/// A network being trained, seen as a core data-prediction denoiser (its calls keep the autograd graph).
pub(super) struct NetDenoiser<'a> {
    pub(super) net: &'a ScoreNet,
    pub(super) path: &'a dyn NoisePath,
}

impl diffuse_core::denoiser::Denoiser for NetDenoiser<'_> {
    fn parameterization(&self) -> diffuse_core::param::Parameterization {
        diffuse_core::param::Parameterization::Data
    }

    fn predict(
        &self,
        x: &Tensor,
        t: f64,
        cond: &diffuse_core::denoiser::Conditioning,
    ) -> diffuse_core::Result<diffuse_core::param::Prediction> {
        let y = cond.anchor.as_ref().ok_or_else(|| diffuse_core::Error::invalid("conditioning", "need y"))?;
        let tt = Tensor::f_full([x.size()[0]], t, (Kind::Float, x.device()))?;
        let (x0, _) = self.net.denoise(x, y, &tt, self.path).map_err(|e| match e {
            Error::Torch(t) => diffuse_core::Error::Torch(t),
            other => diffuse_core::Error::invalid("network", other.to_string()),
        })?;
        Ok(diffuse_core::param::Prediction::Data(x0))
    }
}

/// The `crp` loss ([`CrpLoss`]) of the output x̂ of `sampler` run from the prior `y + σ(1)z` (z complex, variance ½
/// per part, from libtorch's generator), differentiable through every network call.
pub fn crp_loss(
    net: &ScoreNet,
    config: &ModelConfig,
    sampler: &crate::sampling::CoreSampler,
    loss: CrpLoss,
    x0: &Tensor,
    y: &Tensor,
) -> Result<Tensor> {
    let sd = net.config().sigma_data.ok_or_else(|| Error::invalid("network", "crp needs a data-prediction network"))?;
    let z = Tensor::f_randn(x0.size(), (Kind::Float, x0.device()))?.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?;
    let x_t = sampler.prior_with(y, &z)?;
    let denoiser = NetDenoiser { net, path: sampler.path() };
    let out = sampler.solve_differentiable(&denoiser, y, &x_t)?;
    match loss {
        CrpLoss::Spec => Ok(out.f_sub(x0)?.f_div_scalar(sd)?.f_square()?.f_mean(Kind::Float)?),
        CrpLoss::Snr => {
            let s = waveform_batch_torch(x0, config)?;
            let s_hat = waveform_batch_torch(&out, config)?;
            let dims = Some(&[1i64][..]);
            let power = s.f_square()?.f_sum_dim_intlist(dims, false, None)?;
            let error = s.f_sub(&s_hat)?.f_square()?.f_sum_dim_intlist(dims, false, None)?;
            let ratio =
                error.f_add(&power.f_mul_scalar(1e-3)?)?.f_add_scalar(1e-8)?.f_div(&power.f_add_scalar(1e-8)?)?;
            Ok(ratio.f_log10()?.f_mul_scalar(10.0)?.f_mean(Kind::Float)?)
        }
    }
}
