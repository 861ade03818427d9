//! DiffusionNFT (Zheng et al. 2025, "DiffusionNFT: Online Diffusion Reinforcement with Forward Process"): the
//! model is fine-tuned on the forward process towards its own better generations and away from its worse ones, as
//! scored by a reward that needs no gradient (PESQ, ESTOI or SI-SDR against the clean speech).

use tch::{Kind, Tensor};

use diffuse_core::path::BatchPoint;

use super::loss::{NetDenoiser, state};
use super::waveform_batch_torch;
use crate::config::ModelConfig;
use crate::net::ScoreNet;
use crate::{Error, Result};

/// The reward of a generation, measured on its waveform against the clean crop's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reward {
    /// Wide-band PESQ (MOS-LQO, 1.04–4.64); an undefined score counts as the group's mean.
    Pesq,
    /// Extended STOI.
    Estoi,
    /// SI-SDR in dB.
    SiSdr,
}

impl std::fmt::Display for Reward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reward::Pesq => "pesq",
            Reward::Estoi => "estoi",
            Reward::SiSdr => "si-sdr",
        })
    }
}

impl Reward {
    /// The score of `estimate` against `clean` (both at `rate` Hz); `None` where it is undefined.
    pub fn score(self, clean: &[f32], estimate: &[f32], rate: u32) -> Option<f64> {
        let v = match self {
            Reward::Pesq => crate::metrics::pesq_wb(clean, estimate, rate)?,
            Reward::Estoi => crate::metrics::estoi(clean, estimate, rate),
            Reward::SiSdr => crate::metrics::si_sdr(clean, estimate),
        };
        v.is_finite().then_some(v)
    }
}

/// Optimality probabilities r ∈ [0, 1] of `rewards` in groups of `group` generations of one mixture:
/// `r = ½ + ½·clip((R − mean of its group) / Z, −1, 1)`, with Z the standard deviation of those within-group
/// deviations over the whole batch (DiffusionNFT's normalisation). Undefined rewards count as their group's
/// mean (r = ½); a batch whose generations all score alike gives ½ everywhere.
pub fn optimality(rewards: &[Option<f64>], group: usize) -> Vec<f64> {
    let mut deviation = vec![0.0; rewards.len()];
    for (g, chunk) in rewards.chunks(group.max(1)).enumerate() {
        let defined: Vec<f64> = chunk.iter().flatten().copied().collect();
        let mean = defined.iter().sum::<f64>() / defined.len().max(1) as f64;
        for (k, r) in chunk.iter().enumerate() {
            deviation[g * group.max(1) + k] = r.map_or(0.0, |v| v - mean);
        }
    }
    let z = (deviation.iter().map(|d| d * d).sum::<f64>() / deviation.len().max(1) as f64).sqrt();
    deviation.iter().map(|d| if z > 1e-12 { 0.5 + 0.5 * (d / z).clamp(-1.0, 1.0) } else { 0.5 }).collect()
}

/// One DiffusionNFT objective: the network being fine-tuned, the frozen model it started from (which generates
/// and is the reference of the implicit policies), the sampler the generations come from, and the reward.
pub struct Nft<'a> {
    /// The network (its data prediction).
    pub net: &'a ScoreNet,
    /// The frozen initial network.
    pub old: &'a ScoreNet,
    /// The model's sidecar (its STFT and rate, for the rewards' waveforms).
    pub config: &'a ModelConfig,
    /// The sampler of the generations.
    pub sampler: &'a crate::sampling::CoreSampler,
    /// The reward.
    pub reward: Reward,
    /// Generations per mixture.
    pub group: usize,
    /// β: how far the implicit positive and negative policies stand from the old one.
    pub beta: f64,
}

impl Nft<'_> {
    /// The loss of a batch of clean `x0` and noisy `y` spectrograms, and the mean reward of its generations.
    ///
    /// `group` generations per mixture from the old model (different prior noise), each scored against the clean
    /// waveform and turned into r by [`optimality`]. Each generation x̂ is then noised along the forward process,
    /// `x_t = α·x̂ + γ·y + σ·z`, and with the old and current data predictions x̂_old, x̂_θ the implicit policies
    /// `x̂⁺ = (1 − β)·x̂_old + β·x̂_θ`, `x̂⁻ = (1 + β)·x̂_old − β·x̂_θ` are trained as
    /// `r·‖(x̂⁺ − x̂)/c_out‖² + (1 − r)·‖(x̂⁻ − x̂)/c_out‖²` (the paper's velocity loss in x0 form: better
    /// generations pull the model towards them, worse ones push it away, and no reward gradient is needed). Draws
    /// come from libtorch's generator (seed it first).
    pub fn loss(&self, x0: &Tensor, y: &Tensor) -> Result<(Tensor, f64)> {
        let k = self.group as i64;
        let path = self.sampler.path();
        let (x0k, yk) =
            (x0.f_repeat_interleave_self_int(k, Some(0), None)?, y.f_repeat_interleave_self_int(k, Some(0), None)?);
        let opts = (Kind::Float, y.device());
        let z = Tensor::f_randn(yk.size(), opts)?.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?;
        let old = NetDenoiser { net: self.old, path };
        let generated = tch::no_grad(|| -> Result<Tensor> {
            let prior = self.sampler.prior_with(&yk, &z)?;
            Ok(self.sampler.solve(&old, &yk, &prior, &mut diffuse_core::solvers::NoNoise, &mut ())?.x)
        })?;
        let rewards = self.rewards(&x0k, &generated)?;
        let defined: Vec<f64> = rewards.iter().flatten().copied().collect();
        let mean_reward = defined.iter().sum::<f64>() / defined.len().max(1) as f64;
        let r = optimality(&rewards, self.group);
        let n = r.len() as i64;
        let r = Tensor::from_slice(&r).f_to_kind(Kind::Float)?.f_to_device(y.device())?;

        let (t_eps, t_max) = path.t_range();
        let t = Tensor::f_rand([n], opts)?.f_mul_scalar(t_max - t_eps)?.f_add_scalar(t_eps)?;
        let p = BatchPoint::at(path, &t.f_view([n, 1, 1, 1])?)?;
        let noise = Tensor::f_randn(yk.size(), opts)?.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?;
        let x_t = state(&p, &generated, &yk, &noise)?;
        let old_hat = tch::no_grad(|| self.old.denoise(&x_t, &yk, &t, path).map(|(x, _)| x))?;
        let (hat, pre) = self.net.denoise(&x_t, &yk, &t, path)?;
        let positive = old_hat.f_mul_scalar(1.0 - self.beta)?.f_add(&hat.f_mul_scalar(self.beta)?)?;
        let negative = old_hat.f_mul_scalar(1.0 + self.beta)?.f_sub(&hat.f_mul_scalar(self.beta)?)?;
        let error = |e: &Tensor| -> Result<Tensor> {
            Ok(e.f_sub(&generated)?.f_div(&pre.c_out)?.f_square()?.f_mean_dim(
                Some(&[1i64, 2, 3][..]),
                false,
                Kind::Float,
            )?)
        };
        let per_item = r.f_mul(&error(&positive)?)?.f_add(&r.f_neg()?.f_add_scalar(1.0)?.f_mul(&error(&negative)?)?)?;
        Ok((per_item.f_mean(Kind::Float)?, mean_reward))
    }

    /// The reward of each generation against its clean crop.
    fn rewards(&self, clean: &Tensor, generated: &Tensor) -> Result<Vec<Option<f64>>> {
        let rate = self.config.sample_rate;
        let to_rows = |spec: &Tensor| -> Result<Vec<Vec<f32>>> {
            let w = waveform_batch_torch(spec, self.config)?.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Float)?;
            let (b, len) = (w.size()[0], w.size()[1]);
            let flat = Vec::<f32>::try_from(w.f_reshape([-1])?).map_err(|e| Error::invalid("nft", e.to_string()))?;
            Ok((0..b as usize).map(|i| flat[i * len as usize..(i + 1) * len as usize].to_vec()).collect())
        };
        let (c, g) = (to_rows(clean)?, to_rows(generated)?);
        Ok(c.iter().zip(&g).map(|(c, g)| self.reward.score(c, g, rate)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimality_is_a_half_plus_the_clipped_normalised_deviation_within_each_group() {
        // Groups of two: deviations ±1 and ±3, Z = √5.
        let r = optimality(&[Some(1.0), Some(3.0), Some(10.0), Some(4.0)], 2);
        let z = 5f64.sqrt();
        let want = [0.5 - 0.5 / z, 0.5 + 0.5 / z, 1.0, 0.0];
        for (a, b) in r.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{r:?}");
        }
    }

    #[test]
    fn undefined_rewards_and_ties_are_neutral() {
        assert_eq!(optimality(&[Some(2.0), None, Some(2.0), Some(2.0)], 2), vec![0.5; 4]);
        let r = optimality(&[Some(1.0), None, Some(0.0), Some(2.0)], 2);
        assert_eq!(r[0..2], [0.5, 0.5]);
        assert!(r[2] < 0.5 && r[3] > 0.5 && (r[2] + r[3] - 1.0).abs() < 1e-12);
    }
}
