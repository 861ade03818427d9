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
    let z = Tensor::f_randn(x0.size(), opts)?.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?;
    let x_t = state(&p, x0, y, &z)?;
    Ok(Perturbed { t, z, x_t })
}

/// The path's state `x_t = α·x0 + γ·y + σ·z` at the batch's points.
pub(super) fn state(p: &BatchPoint, x0: &Tensor, y: &Tensor, z: &Tensor) -> Result<Tensor> {
    Ok(x0.f_mul(&p.alpha)?.f_add(&y.f_mul(&p.gamma)?)?.f_add(&z.f_mul(&p.sigma)?)?)
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

/// Rectified Diffusion's loss (Wang et al. 2024) of a batch: the data loss with the noise and the target
/// coupled. A complex z (variance ½ per part) is drawn, `sampler` runs `teacher` (the frozen model training
/// started from) from the prior `y + σ(1)·z` to its sample x̂, and the network learns x̂ from
/// `x_t = α·x̂ + γ·y + σ·z` with the same z: `mean ((F(x_t) − x̂)/c_out)²`. Trained on its own sampler's pairs,
/// the model's trajectories straighten, so that few first-order steps land where many did. Draws come from
/// libtorch's generator (seed it first).
pub fn rectified_loss(
    net: &ScoreNet,
    config: &ModelConfig,
    teacher: &dyn diffuse_core::denoiser::Denoiser,
    sampler: &crate::sampling::CoreSampler,
    y: &Tensor,
) -> Result<Tensor> {
    let path = config.noise_path()?;
    let b = y.size()[0];
    let opts = (Kind::Float, y.device());
    let z = Tensor::f_randn(y.size(), opts)?.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?;
    let target = tch::no_grad(|| -> Result<Tensor> {
        let prior = sampler.prior_with(y, &z)?;
        Ok(sampler.solve(teacher, y, &prior, &mut diffuse_core::solvers::NoNoise, &mut ())?.x)
    })?;
    let (t_eps, t_max) = path.t_range();
    let t = Tensor::f_rand([b], opts)?.f_mul_scalar(t_max - t_eps)?.f_add_scalar(t_eps)?;
    let p = BatchPoint::at(path.as_ref(), &t.f_view([b, 1, 1, 1])?)?;
    let x_t = state(&p, &target, y, &z)?;
    let (x0_hat, pre) = net.denoise(&x_t, y, &t, path.as_ref())?;
    Ok(x0_hat.f_sub(&target)?.f_div(&pre.c_out)?.f_square()?.f_mean(Kind::Float)?)
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

/// One crp objective: the network being fine-tuned, its sidecar, the sampler it trains through and the loss.
pub struct Crp<'a> {
    /// The network (its data prediction).
    pub net: &'a ScoreNet,
    /// The model's sidecar (its STFT, for the SNR loss).
    pub config: &'a ModelConfig,
    /// The sampler the objective trains through.
    pub sampler: &'a crate::sampling::CoreSampler,
    /// What the output is compared with the clean target by.
    pub loss: CrpLoss,
}

impl Crp<'_> {
    /// The loss of the output x̂ of the sampler run from the prior `x_t` ([`crp_prior`]) for clean `x0` and
    /// noisy `y`, differentiable through every network call.
    pub fn loss(&self, x0: &Tensor, y: &Tensor, x_t: &Tensor) -> Result<Tensor> {
        let denoiser = NetDenoiser { net: self.net, path: self.sampler.path() };
        let out = self.sampler.solve_differentiable(&denoiser, y, x_t)?;
        crp_objective(self.net, self.config, self.loss, &out, x0)
    }

    /// [`Crp::loss`] with its gradient by the adjoint of the probability-flow ODE ([`diffuse_core::adjoint`])
    /// instead of backpropagation through the sampler, so memory is that of one network call whatever the steps.
    /// The sampler runs without a graph to its last time before the data; the jump onto the data (one network
    /// call) is differentiated directly, and the adjoint carries its gradient back to the prior by
    /// `adjoint_steps` Runge–Kutta steps (4 calls each). The gradient is added to the `.grad` of `params` (the
    /// network's trainable variables); returns the loss (no graph). The gradient is the continuous ODE's, which
    /// backpropagation through the sampler matches up to the sampler's discretisation error.
    pub fn adjoint(
        &self,
        x0: &Tensor,
        y: &Tensor,
        x_t: &Tensor,
        params: &[Tensor],
        adjoint_steps: usize,
    ) -> Result<Tensor> {
        let path = self.sampler.path();
        let denoiser = NetDenoiser { net: self.net, path };
        let (x_last, last) = tch::no_grad(|| self.sampler.solve_before_data(&denoiser, y, x_t))?;
        let cond = diffuse_core::denoiser::Conditioning::with_anchor(y.shallow_clone());
        let (mut noise, mut observer) = (diffuse_core::solvers::NoNoise, ());
        let mut run = diffuse_core::solvers::Run::new(path, &denoiser, &cond, &mut noise, &mut observer);
        // The jump onto the data, with a graph through its one network call: ∂L/∂θ (its part) and ∂L/∂x_last.
        let x_leaf = x_last.f_detach()?.set_requires_grad(true);
        let value = tch::with_grad(|| -> Result<Tensor> {
            // The driver's jump onto the data, by core's data step.
            let data = path.point(0.0);
            let x_tilde = run.to_tilde(&x_leaf, &last)?;
            let x0_hat = run.data(&x_tilde, &last)?;
            let out =
                run.from_tilde(&diffuse_core::solvers::common::data_step(&x_tilde, &x0_hat, &last, &data)?, &data)?;
            let value = crp_objective(self.net, self.config, self.loss, &out, x0)?;
            value.f_backward()?;
            Ok(value.f_detach()?)
        })?;
        let grad_last = x_leaf.grad();
        let start = path.point(path.t_range().1);
        let adjoint = diffuse_core::adjoint::adjoint_gradients(
            &mut run,
            params,
            &x_last,
            &grad_last,
            &start,
            &last,
            adjoint_steps,
        )?;
        let _guard = tch::no_grad_guard();
        for (p, g) in params.iter().zip(&adjoint.params) {
            let mut grad = p.grad();
            if grad.defined() {
                let _ = grad.f_add_(&g.f_to_kind(grad.kind())?)?;
            }
        }
        Ok(value)
    }
}

/// The prior `y + σ(1)z` of a crp step (z complex, variance ½ per part, from libtorch's generator).
pub fn crp_prior(sampler: &crate::sampling::CoreSampler, x0: &Tensor, y: &Tensor) -> Result<Tensor> {
    let z = Tensor::f_randn(x0.size(), (Kind::Float, x0.device()))?.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?;
    sampler.prior_with(y, &z)
}

/// The crp comparison of the sampler's output with the clean target.
fn crp_objective(net: &ScoreNet, config: &ModelConfig, loss: CrpLoss, out: &Tensor, x0: &Tensor) -> Result<Tensor> {
    let sd = net.config().sigma_data.ok_or_else(|| Error::invalid("network", "crp needs a data-prediction network"))?;
    match loss {
        CrpLoss::Spec => Ok(out.f_sub(x0)?.f_div_scalar(sd)?.f_square()?.f_mean(Kind::Float)?),
        CrpLoss::Snr => {
            let s = waveform_batch_torch(x0, config)?;
            let s_hat = waveform_batch_torch(out, config)?;
            let dims = Some(&[1i64][..]);
            let power = s.f_square()?.f_sum_dim_intlist(dims, false, None)?;
            let error = s.f_sub(&s_hat)?.f_square()?.f_sum_dim_intlist(dims, false, None)?;
            let ratio =
                error.f_add(&power.f_mul_scalar(1e-3)?)?.f_add_scalar(1e-8)?.f_div(&power.f_add_scalar(1e-8)?)?;
            Ok(ratio.f_log10()?.f_mul_scalar(10.0)?.f_mean(Kind::Float)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::NetConfig;
    use crate::sampling::CoreSampler;
    use diffuse_core::SampleSeeds;
    use tch::{Device, nn};

    /// The parameters' gradients, flattened into one vector, then cleared.
    fn take_grads(params: &[Tensor]) -> Tensor {
        let parts: Vec<Tensor> = params.iter().map(|p| p.grad().reshape([-1])).collect();
        let out = Tensor::cat(&parts, 0).copy();
        for p in params {
            let _ = p.grad().zero_();
        }
        out
    }

    /// The adjoint's crp gradient is backpropagation's through a fine sampler, for the network's own parameters.
    /// Both approximate the continuous probability-flow ODE; with these seeded weights they are 1.9e-3 apart with
    /// 400 Heun steps and 320 adjoint steps (9.1e-3 with 200 Heun steps: the reference's own discretisation).
    #[test]
    fn the_adjoint_crp_gradient_matches_backpropagation_through_a_fine_sampler() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net_config = NetConfig { sigma_data: Some(0.2), ..NetConfig::tiny() };
        let net = ScoreNet::new(&vs.root(), &net_config).unwrap();
        // Weights from fixed seeds instead of libtorch's global generator, which tests running beside this one
        // also draw from: the same network, so the same distance, on every run.
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| {
            for (k, (name, mut v)) in vars.into_iter().enumerate() {
                let size = v.size();
                let z = SampleSeeds::new(17, k as u64, 1).normal(0, &size, Kind::Float, Device::Cpu).squeeze_dim(0);
                let scale = match size.len() {
                    1 if name.ends_with("fourier") => net_config.fourier_scale,
                    1 => continue, // norms' scales and biases keep their constant initial values
                    _ => 1.0 / (size[1..].iter().product::<i64>() as f64).sqrt(),
                };
                v.copy_(&(z * scale));
            }
        });
        let params = vs.trainable_variables();
        let config = crate::default_model::config().unwrap();
        let normal = |seed: u64| SampleSeeds::new(seed, 0, 1).normal(0, &[2, 16, 4], Kind::Float, Device::Cpu);
        let (x0, y) = (normal(1) * 0.3, normal(2) * 0.3);
        let sampler = CoreSampler::new("heun", 400, &config).unwrap();
        let x_t = sampler.prior_with(&y, &(normal(3) * std::f64::consts::FRAC_1_SQRT_2)).unwrap();

        let crp = Crp { net: &net, config: &config, sampler: &sampler, loss: CrpLoss::Spec };
        let value = crp.loss(&x0, &y, &x_t).unwrap();
        value.backward();
        let reference = take_grads(&params);
        let adjoint = crp.adjoint(&x0, &y, &x_t, &params, 320).unwrap();
        let got = take_grads(&params);
        let rel = f64::try_from((&got - &reference).norm() / reference.norm()).unwrap();
        let same_value = f64::try_from((&adjoint - &value).abs()).unwrap() / f64::try_from(value.abs()).unwrap();
        assert!(rel < 5e-3 && same_value < 1e-3, "gradient {rel:.2e}, loss {same_value:.2e}");
    }
}
