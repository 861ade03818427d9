//! A native score network of the NCSN++ family in tch, sized for CPU inference.
//!
//! Input: the contract's 4 real channels `[Re x_t, Im x_t, Re y, Im y]` of shape `[B, 4, F, T]` and t `[B]`.
//! Layout (NCSN++'s ingredients, fewer and narrower levels):
//! - Gaussian Fourier embedding of ln t (fixed random frequencies × `fourier_scale`), then a two-layer MLP;
//! - a 2×2 space-to-depth stem (`[B, 4, F, T]` → `[B, 16, F/2, T/2]`) so the first level works at half
//!   resolution (F = 256 bins would otherwise dominate the cost), and the inverse at the output;
//! - a U-Net: per level `res_blocks` residual blocks (GroupNorm, SiLU, 3×3 conv, time embedding added, skip
//!   rescaled by 1/√2 as NCSN++'s `skip_rescale`), stride-2 convolutions down, nearest upsampling + conv up,
//!   skip connections concatenated; self-attention at the lowest resolution;
//! - score objective: the output is the noise estimate `ẑ` (complex, as `[Re, Im]`); the score is `−ẑ/σ(t)`
//!   (NCSN++'s `scale_by_sigma` idea), so the reference's denoising score-matching loss `|σ·score + z|²` is
//!   `|z − ẑ|²`;
//! - data objective: the network `F` is wrapped in an EDM-style preconditioning on the OUVE path ([`DataPrecond`]):
//!   `x̂0 = y + c_skip·(x_t − y) + c_out·F([c_in·(x_t − y), y], t)`, so that the linear minimum-mean-square
//!   estimate is built in and `F`'s target has unit variance at every t.
//!
//! Frames must be a multiple of `2^levels` (the sidecar's `pad.multiple`).

use diffuse_core::nn::{Conv, Dense, Norm, UNetLevels};
use diffuse_core::path::NoisePath;
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// The architecture of a native network (the sidecar's `network` field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Architecture name; this build knows `ncsnpp-s`.
    pub arch: String,
    /// Channels of each U-Net level (the first works at half the STFT resolution).
    pub channels: Vec<usize>,
    /// Residual blocks per level on the way down (one more on the way up).
    pub res_blocks: usize,
    /// Self-attention blocks at the lowest level.
    #[serde(default = "one_usize")]
    pub attention: usize,
    /// Number of Fourier frequencies of the time embedding.
    pub fourier_features: usize,
    /// Standard deviation of the Fourier frequencies (NCSN++: 16).
    pub fourier_scale: f64,
    /// Groups of every GroupNorm (must divide every level's channels).
    pub groups: usize,
    /// Data-prediction networks only: the standard deviation σ_d of `x0 − y` per real coordinate, which sets the
    /// preconditioning ([`DataPrecond`]); absent for noise-estimating (score) networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_data: Option<f64>,
}

fn one_usize() -> usize {
    1
}

impl NetConfig {
    /// The network of the shipped default model: about 2 M parameters, 4 levels.
    pub fn small() -> Self {
        NetConfig {
            arch: "ncsnpp-s".into(),
            channels: vec![32, 64, 96, 128],
            res_blocks: 1,
            attention: 1,
            fourier_features: 32,
            fourier_scale: 16.0,
            groups: 8,
            sigma_data: None,
        }
    }

    /// A very small network for tests.
    pub fn tiny() -> Self {
        NetConfig {
            arch: "ncsnpp-s".into(),
            channels: vec![8, 16],
            res_blocks: 1,
            attention: 1,
            fourier_features: 8,
            fourier_scale: 16.0,
            groups: 4,
            sigma_data: None,
        }
    }

    /// Frames must be a multiple of this: the stem halves T, each level but the last halves it again.
    pub fn frame_multiple(&self) -> usize {
        2usize << (self.channels.len().saturating_sub(1))
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let bad = |r: String| Err(Error::invalid("network", r));
        if self.arch != "ncsnpp-s" {
            return bad(format!("unknown architecture '{}' (this build knows ncsnpp-s)", self.arch));
        }
        if self.channels.is_empty() || self.channels.len() > 6 {
            return bad(format!("need 1 to 6 levels, got {}", self.channels.len()));
        }
        if self.groups == 0 || self.channels.iter().any(|&c| c == 0 || c % self.groups != 0) {
            return bad(format!("groups {} must divide every level's channels {:?}", self.groups, self.channels));
        }
        if self.res_blocks == 0 || self.fourier_features == 0 || !(self.fourier_scale > 0.0) {
            return bad("res_blocks, fourier_features and fourier_scale must be positive".into());
        }
        if let Some(sd) = self.sigma_data
            && !(sd.is_finite() && sd > 0.0)
        {
            return bad(format!("sigma_data must be positive and finite, got {sd}"));
        }
        Ok(())
    }
}

/// The native score network. Its variables live in the `VarStore` it was built with.
#[derive(Debug)]
pub struct ScoreNet {
    config: NetConfig,
    fourier: Tensor,
    temb1: Dense,
    temb2: Dense,
    conv_in: Conv,
    levels: UNetLevels,
    norm_out: Norm,
    conv_out: Conv,
}

const STEM: i64 = 2;

impl ScoreNet {
    /// Builds the network under `p` (random initialisation; load weights into the `VarStore` afterwards).
    pub fn new(p: &nn::Path<'_>, config: &NetConfig) -> Result<Self> {
        config.validate()?;
        let ch = &config.channels;
        let g = config.groups;
        let ff = config.fourier_features;
        let temb = 4 * ch[0];
        // Fixed random frequencies (a buffer in NCSN++): stored with the weights, never trained.
        let fourier = p.zeros_no_train("fourier", &[ff as i64]);
        {
            let _guard = tch::no_grad_guard();
            let w = Tensor::f_randn([ff as i64], (Kind::Float, p.device()))?.f_mul_scalar(config.fourier_scale)?;
            fourier.shallow_clone().f_copy_(&w)?;
        }
        let temb1 = Dense::new(p / "temb1", 2 * ff, temb);
        let temb2 = Dense::new(p / "temb2", temb, temb);
        let stem = (STEM * STEM) as usize;
        let conv_in = Conv::new(p / "conv_in", 4 * stem, ch[0], 3, 1, 1.0);
        let levels = UNetLevels::new(p, ch, config.res_blocks, config.attention, temb, g);
        let c = levels.out_channels();
        let norm_out = Norm::new(p / "norm_out", c, g);
        let conv_out = Conv::new(p / "conv_out", c, 2 * stem, 3, 1, 0.1);
        Ok(ScoreNet { config: config.clone(), fourier, temb1, temb2, conv_in, levels, norm_out, conv_out })
    }

    /// The architecture.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// The noise estimate ẑ `[B, 2, F, T]` for input `[B, 4, F, T]` and times t `[B]` (F and T even, T a
    /// multiple of [`NetConfig::frame_multiple`]).
    pub fn forward(&self, input: &Tensor, t: &Tensor) -> Result<Tensor> {
        let size = input.size();
        let m = self.config.frame_multiple() as i64;
        if size.len() != 4 || size[1] != 4 || size[2] % STEM != 0 || size[3] % m != 0 {
            return Err(Error::Shape {
                op: "score network input",
                expected: format!("[B, 4, F (even), T (multiple of {m})]"),
                got: format!("{size:?}"),
            });
        }
        // Time embedding: Fourier features of ln t.
        let proj = t
            .f_log()?
            .f_unsqueeze(1)?
            .f_mul(&self.fourier.f_unsqueeze(0)?)?
            .f_mul_scalar(2.0 * std::f64::consts::PI)?;
        let emb = Tensor::f_cat(&[proj.f_sin()?, proj.f_cos()?], 1)?;
        let emb = self.temb2.forward(&self.temb1.forward(&emb)?.f_silu()?)?.f_silu()?;

        let h = self.conv_in.forward(&input.f_pixel_unshuffle(STEM)?)?;
        let h = self.levels.forward(&h, &emb)?;
        let out = self.conv_out.forward(&self.norm_out.forward(&h)?.f_silu()?)?;
        Ok(out.f_pixel_shuffle(STEM)?)
    }
}

/// The preconditioning of a data-prediction network on an anchored path `x_t = α·x0 + γ·y + σ·z` (OUVE: γ = 1 − α;
/// the SBVE bridge: γ = 1 − α too), α, γ and σ from core's path; complex z of variance ½ per part, so per real
/// coordinate the noise has standard deviation `s = σ/√2`.
///
/// With `r = x0 − y` of standard deviation σ_d per coordinate, `u = x_t − (α + γ)·y = α·r + σ·z`, and
/// `D = √(α²σ_d² + s²)`:
/// `c_in = 1/D` (the network sees `u` at unit variance), `c_skip = α·σ_d²/D²` (`y + c_skip·u` is the linear
/// minimum-mean-square estimate of x0 from u), `c_out = σ_d·s/D` (the standard deviation of that estimate's error),
/// and `x̂0 = y + c_skip·u + c_out·F`. Where the bridge pins the state (α = σ = 0, so D = 0) the network sees
/// `u = 0` and the estimate is `y + σ_d·F`. Training minimises `‖(x̂0 − x0)/c_out‖²` (EDM's weighting
/// λ = 1/c_out²: every t gets a unit-variance target for F), whose minimiser is the conditional mean
/// `E[x0 | x_t, y]`. At t → 0, `c_skip → 1/α` and `c_out → 0`: the identity is built in.
#[derive(Debug)]
pub struct DataPrecond {
    /// Input scale of `x_t − y`, `[B, 1, 1, 1]`.
    pub c_in: Tensor,
    /// Skip weight of `x_t − y`, `[B, 1, 1, 1]`.
    pub c_skip: Tensor,
    /// Output scale of the network, `[B, 1, 1, 1]`.
    pub c_out: Tensor,
}

impl DataPrecond {
    /// The coefficients at times `t` `[B]` on `path`, and σ_d; also the anchor weight `α + γ` `[B, 1, 1, 1]`.
    pub fn new(t: &Tensor, path: &dyn NoisePath, sigma_data: f64) -> Result<(Self, Tensor)> {
        let b = t.size().first().copied().unwrap_or(1);
        let p = diffuse_core::path::BatchPoint::at(path, &t.f_to_kind(Kind::Double)?)?;
        let s = p.sigma.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?;
        let sd2 = sigma_data * sigma_data;
        let d2 = p.alpha.f_square()?.f_mul_scalar(sd2)?.f_add(&s.f_square()?)?;
        // D = 0 only where the bridge pins x_t = y (u = 0): any finite c_in gives the same input.
        let d = d2.f_sqrt()?.f_clamp_min(1e-30)?;
        let shape = [b, 1, 1, 1];
        let cast = |x: Tensor| -> Result<Tensor> { Ok(x.f_view(shape)?.f_to_kind(t.kind())?) };
        let precond = DataPrecond {
            c_in: cast(d.f_reciprocal()?)?,
            c_skip: cast(p.alpha.f_mul_scalar(sd2)?.f_div(&d.f_square()?)?)?,
            // s/D → 1 towards the bridge's pin (s dominates α there), and is 1 at it.
            c_out: cast(s.f_add_scalar(1e-150)?.f_div(&d2.f_sqrt()?.f_add_scalar(1e-150)?)?.f_mul_scalar(sigma_data)?)?,
        };
        Ok((precond, cast(p.alpha.f_add(&p.gamma)?)?))
    }
}

impl ScoreNet {
    /// The data prediction x̂0 `[B, 2, F, T]` of a data-prediction network for `x_t`, `y` `[B, 2, F, T]` and t
    /// `[B]` on `path`, with its preconditioning (σ_d from the network's config).
    pub fn denoise(&self, x_t: &Tensor, y: &Tensor, t: &Tensor, path: &dyn NoisePath) -> Result<(Tensor, DataPrecond)> {
        let sigma_data = self
            .config
            .sigma_data
            .ok_or_else(|| Error::invalid("network", "a data-prediction network needs sigma_data"))?;
        let (p, anchor) = DataPrecond::new(t, path, sigma_data)?;
        let u = x_t.f_sub(&y.f_mul(&anchor)?)?;
        let f = self.forward(&Tensor::f_cat(&[&u.f_mul(&p.c_in)?, y], 1)?, t)?;
        let x0 = y.f_add(&u.f_mul(&p.c_skip)?)?.f_add(&f.f_mul(&p.c_out)?)?;
        Ok((x0, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffuse_core::NoisePath;
    use tch::Device;

    #[test]
    fn shapes_parameters_and_frame_multiple() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = ScoreNet::new(&vs.root(), &NetConfig::tiny()).unwrap();
        assert_eq!(NetConfig::tiny().frame_multiple(), 4);
        assert_eq!(NetConfig::small().frame_multiple(), 16);
        let x = Tensor::randn([2, 4, 256, 8], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[0.5f32, 0.1]);
        let out = net.forward(&x, &t).unwrap();
        assert_eq!(out.size(), [2, 2, 256, 8]);
        let err = net.forward(&Tensor::zeros([1, 4, 256, 6], (Kind::Float, Device::Cpu)), &t).unwrap_err();
        assert!(err.to_string().contains("multiple of 4"), "{err}");
        // The Fourier frequencies are stored but not trained.
        assert!(vs.variables().contains_key("fourier"));
        assert_eq!(vs.trainable_variables().len() + 1, vs.variables().len());
        let mut bad = NetConfig::tiny();
        bad.groups = 3;
        assert!(ScoreNet::new(&vs.root(), &bad).unwrap_err().to_string().contains("groups"));
    }

    #[test]
    fn batch_items_are_independent_and_time_matters() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = ScoreNet::new(&vs.root(), &NetConfig::tiny()).unwrap();
        let x = Tensor::randn([2, 4, 16, 8], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[0.7f32, 0.2]);
        let both = net.forward(&x, &t).unwrap();
        let one = net.forward(&x.narrow(0, 1, 1), &t.narrow(0, 1, 1)).unwrap();
        assert!(f64::try_from((both.get(1) - one.get(0)).abs().max()).unwrap() < 1e-5);
        let other_t = net.forward(&x.narrow(0, 1, 1), &Tensor::from_slice(&[0.9f32])).unwrap();
        assert!(f64::try_from((other_t - one).abs().max()).unwrap() > 1e-4);
    }

    #[test]
    fn the_preconditioning_is_the_linear_mmse_estimate_and_its_error() {
        // For Gaussian r ~ N(0, σ_d²) and u = α·r + s·n, E[r | u] = α σ_d²/(α²σ_d² + s²)·u and the error variance
        // is σ_d² s²/(α²σ_d² + s²): check c_skip and c_out against these, and c_in·u at unit variance, by sampling.
        tch::manual_seed(3);
        let sd = 0.2;
        let ouve = diffuse_core::path::Ouve::new(1.5, 0.05, 0.5, 0.03, 1.0).unwrap();
        let sbve = diffuse_core::path::Sbve::default();
        let paths: [&dyn NoisePath; 2] = [&ouve, &sbve];
        for path in paths {
            for t in [0.03f64, 0.3, 0.9] {
                let n = 400_000;
                let tt = Tensor::from_slice(&[t as f32]);
                let (p, anchor) = DataPrecond::new(&tt, path, sd).unwrap();
                let point = path.point(t as f32 as f64);
                assert!((anchor.double_value(&[0, 0, 0, 0]) - (point.alpha + point.gamma)).abs() < 1e-6);
                let r = Tensor::randn([n], (Kind::Float, Device::Cpu)) * sd;
                let u = &r * point.alpha + Tensor::randn([n], (Kind::Float, Device::Cpu)) * (point.sigma / 2f64.sqrt());
                let (c_in, c_skip, c_out) = (
                    p.c_in.double_value(&[0, 0, 0, 0]),
                    p.c_skip.double_value(&[0, 0, 0, 0]),
                    p.c_out.double_value(&[0, 0, 0, 0]),
                );
                // The least-squares slope of r on u is c_skip; the residual's spread is c_out.
                let slope = f64::try_from((&r * &u).mean(Kind::Double)).unwrap()
                    / f64::try_from((&u * &u).mean(Kind::Double)).unwrap();
                let resid = f64::try_from((&r - &u * c_skip).square().mean(Kind::Double)).unwrap().sqrt();
                let unit = f64::try_from((&u * c_in).square().mean(Kind::Double)).unwrap().sqrt();
                let name = path.name();
                assert!((slope / c_skip - 1.0).abs() < 0.02, "{name} t {t}: slope {slope} vs c_skip {c_skip}");
                assert!((resid / c_out - 1.0).abs() < 0.02, "{name} t {t}: residual {resid} vs c_out {c_out}");
                assert!((unit - 1.0).abs() < 0.02, "{name} t {t}: c_in·u has spread {unit}");
            }
        }
        // Near t = 0 the skip undoes α and the network's share vanishes.
        let (p, _) = DataPrecond::new(&Tensor::from_slice(&[1e-4f32]), &ouve, sd).unwrap();
        assert!((p.c_skip.double_value(&[0, 0, 0, 0]) * (-1.5 * 1e-4f64).exp() - 1.0).abs() < 0.01);
        assert!(p.c_out.double_value(&[0, 0, 0, 0]) < 0.01);
        // At the bridge's pin (t = 1: x_t = y) every coefficient is finite and the network gives the estimate.
        let (p, anchor) = DataPrecond::new(&Tensor::from_slice(&[1.0f32]), &sbve, sd).unwrap();
        for c in [&p.c_in, &p.c_skip, &p.c_out, &anchor] {
            assert!(c.double_value(&[0, 0, 0, 0]).is_finite());
        }
        assert!((p.c_out.double_value(&[0, 0, 0, 0]) - sd).abs() < 1e-6);
    }
}
