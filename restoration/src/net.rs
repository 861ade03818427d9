//! A conditional U-Net for image restoration in tch.
//!
//! Input: the state `x_t` and the degraded image `y` (both `[B, C, H, W]`, values around [−1, 1]) concatenated on
//! the channel axis, and the times t `[B]` of the core path. Layout (DDPM's U-Net, sized for CPU inference):
//! - sinusoidal embedding of `1000·t` (`time_features` frequencies), then a two-layer MLP (width 4·channels[0]);
//! - a space-to-depth stem (`stem` × `stem` pixels to channels, then back at the output; 1 = none) so the first
//!   level works at 1/stem of the resolution (the cost of a call falls about as stem²);
//! - per level `res_blocks` residual blocks (GroupNorm, SiLU, 3×3 conv, time embedding added, skip rescaled by
//!   1/√2), stride-2 convolutions down, nearest upsampling + conv up, skip connections concatenated;
//! - self-attention at the lowest resolution only (`attention` blocks, one head);
//! - output `outputs·C` channels: one image-shaped head per output (2 for RDDM's SM-Res-N: residual, then noise).
//!
//! H and W must be multiples of [`NetConfig::multiple`] (`stem·2^(levels − 1)`); [`crate::sample`] reflect-pads.

use diffuse_core::nn::{Conv, Dense, Norm, UNetLevels};
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Most levels of a network (each halves the resolution).
pub const MAX_LEVELS: usize = 6;
/// Most channels of one level.
pub const MAX_CHANNELS: usize = 1024;
/// Most residual blocks per level and attention blocks.
pub const MAX_BLOCKS: usize = 8;

/// The architecture of a network (the sidecar's `network` field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Architecture name; this build knows `unet-r`.
    #[serde(default = "arch")]
    pub arch: String,
    /// Image channels C (3: RGB, 1: grayscale).
    #[serde(default = "three")]
    pub image_channels: usize,
    /// Image-shaped outputs (2 for `residual_noise`, else 1).
    #[serde(default = "one")]
    pub outputs: usize,
    /// Channels of each level, from full resolution down.
    #[serde(default = "default_channels")]
    pub channels: Vec<usize>,
    /// Residual blocks per level on the way down (one more on the way up).
    #[serde(default = "two")]
    pub res_blocks: usize,
    /// Self-attention blocks at the lowest level.
    #[serde(default = "one")]
    pub attention: usize,
    /// Sinusoidal frequencies of the time embedding.
    #[serde(default = "default_time_features")]
    pub time_features: usize,
    /// Groups of every GroupNorm (must divide every level's channels).
    #[serde(default = "default_groups")]
    pub groups: usize,
    /// Space-to-depth factor of the stem (1, 2 or 4).
    #[serde(default = "two")]
    pub stem: usize,
}

fn arch() -> String {
    "unet-r".into()
}
fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn three() -> usize {
    3
}
fn default_channels() -> Vec<usize> {
    vec![32, 64, 128, 128]
}
fn default_time_features() -> usize {
    32
}
fn default_groups() -> usize {
    8
}

impl Default for NetConfig {
    /// The default network: a 2×2 stem, 4 levels (32, 64, 128, 128 channels), 2 blocks per level, about 6.0 M
    /// parameters (≈ 24 MB of float32 weights, under the 25 MB budget of one model file).
    fn default() -> Self {
        NetConfig {
            arch: arch(),
            image_channels: 3,
            outputs: 1,
            channels: default_channels(),
            res_blocks: 2,
            attention: 1,
            time_features: default_time_features(),
            groups: default_groups(),
            stem: 2,
        }
    }
}

impl NetConfig {
    /// A very small network for tests (two levels of 8 and 16 channels).
    pub fn tiny(image_channels: usize, outputs: usize) -> Self {
        NetConfig {
            arch: arch(),
            image_channels,
            outputs,
            channels: vec![8, 16],
            res_blocks: 1,
            attention: 1,
            time_features: 8,
            groups: 4,
            stem: 1,
        }
    }

    /// A faster network for CPU inference: 4×4 stem, 3 levels (64, 96, 128), 1 block per level (≈ 3.7 M
    /// parameters, 15 MB; about half the default's time per call).
    pub fn fast() -> Self {
        NetConfig { stem: 4, channels: vec![64, 96, 128], res_blocks: 1, ..Self::default() }
    }

    /// H and W must be multiples of this.
    pub fn multiple(&self) -> usize {
        self.stem << self.channels.len().saturating_sub(1)
    }

    /// Checks every value against its bounds.
    pub fn validate(&self) -> Result<()> {
        let bad = |r: String| Err(Error::invalid("network", r));
        if self.arch != "unet-r" {
            return bad(format!("unknown architecture '{}' (this build knows unet-r)", self.arch));
        }
        if !(1..=4).contains(&self.image_channels) {
            return bad(format!("image_channels must be 1 to 4, got {}", self.image_channels));
        }
        if !(1..=2).contains(&self.outputs) {
            return bad(format!("outputs must be 1 or 2, got {}", self.outputs));
        }
        if self.channels.is_empty() || self.channels.len() > MAX_LEVELS {
            return bad(format!("need 1 to {MAX_LEVELS} levels, got {}", self.channels.len()));
        }
        if self.channels.iter().any(|&c| c > MAX_CHANNELS) {
            return bad(format!("at most {MAX_CHANNELS} channels per level, got {:?}", self.channels));
        }
        if self.groups == 0 || self.channels.iter().any(|&c| c == 0 || c % self.groups != 0) {
            return bad(format!("groups {} must divide every level's channels {:?}", self.groups, self.channels));
        }
        if self.res_blocks == 0 || self.res_blocks > MAX_BLOCKS || self.attention > MAX_BLOCKS {
            return bad(format!("res_blocks must be 1 to {MAX_BLOCKS} and attention at most {MAX_BLOCKS}"));
        }
        if ![1, 2, 4].contains(&self.stem) {
            return bad(format!("stem must be 1, 2 or 4, got {}", self.stem));
        }
        if self.time_features < 2 || self.time_features > 1024 {
            return bad(format!("time_features must be 2 to 1024, got {}", self.time_features));
        }
        Ok(())
    }
}

/// The conditional U-Net. Its variables live in the `VarStore` it was built with.
#[derive(Debug)]
pub struct UNet {
    config: NetConfig,
    temb1: Dense,
    temb2: Dense,
    conv_in: Conv,
    levels: UNetLevels,
    norm_out: Norm,
    conv_out: Conv,
}

impl UNet {
    /// Builds the network under `p` (random initialisation; load weights into the `VarStore` afterwards).
    pub fn new(p: &nn::Path<'_>, config: &NetConfig) -> Result<Self> {
        config.validate()?;
        let ch = &config.channels;
        let g = config.groups;
        let temb = 4 * ch[0];
        let temb1 = Dense::new(p / "temb1", config.time_features, temb);
        let temb2 = Dense::new(p / "temb2", temb, temb);
        let s2 = config.stem * config.stem;
        let conv_in = Conv::new(p / "conv_in", 2 * config.image_channels * s2, ch[0], 3, 1, 1.0);
        let levels = UNetLevels::new(p, ch, config.res_blocks, config.attention, temb, g);
        let c = levels.out_channels();
        let norm_out = Norm::new(p / "norm_out", c, g);
        let conv_out = Conv::new(p / "conv_out", c, config.outputs * config.image_channels * s2, 3, 1, 0.1);
        Ok(UNet { config: config.clone(), temb1, temb2, conv_in, levels, norm_out, conv_out })
    }

    /// The architecture.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Sinusoidal features `[sin(1000·t·f_i), cos(1000·t·f_i)]`, `f_i = 10000^{−i/half}` (DDPM), `[B, features]`.
    fn time_embedding(&self, t: &Tensor) -> Result<Tensor> {
        let half = (self.config.time_features / 2) as i64;
        let freqs =
            Tensor::f_arange(half, (Kind::Float, t.device()))?.f_mul_scalar(-(10000f64.ln()) / half as f64)?.f_exp()?;
        let arg = t.f_to_kind(Kind::Float)?.f_mul_scalar(1000.0)?.f_unsqueeze(1)?.f_mul(&freqs.f_unsqueeze(0)?)?;
        let mut emb = Tensor::f_cat(&[arg.f_sin()?, arg.f_cos()?], 1)?;
        if self.config.time_features % 2 == 1 {
            emb = emb.f_pad([0, 1], "constant", Some(0.0))?;
        }
        Ok(emb)
    }

    /// The output `[B, outputs·C, H, W]` for the state `x_t` and degraded image `y` (`[B, C, H, W]`, H and W
    /// multiples of [`NetConfig::multiple`]) at times `t` `[B]`.
    pub fn forward(&self, x_t: &Tensor, y: &Tensor, t: &Tensor) -> Result<Tensor> {
        let size = x_t.size();
        let (c, m) = (self.config.image_channels as i64, self.config.multiple() as i64);
        if size.len() != 4 || size[1] != c || size[2] % m != 0 || size[3] % m != 0 || y.size() != size {
            return Err(Error::Shape {
                op: "restoration network input",
                expected: format!("x_t and y both [B, {c}, H, W] with H, W multiples of {m}"),
                got: format!("{size:?} and {:?}", y.size()),
            });
        }
        if t.size() != [size[0]] {
            return Err(Error::Shape {
                op: "network times",
                expected: format!("[{}]", size[0]),
                got: format!("{:?}", t.size()),
            });
        }
        let emb = self.time_embedding(t)?;
        let emb = self.temb2.forward(&self.temb1.forward(&emb)?.f_silu()?)?.f_silu()?;
        let stem = self.config.stem as i64;
        let mut h = Tensor::f_cat(&[x_t, y], 1)?;
        if stem > 1 {
            h = h.f_pixel_unshuffle(stem)?;
        }
        let h = self.conv_in.forward(&h)?;
        let h = self.levels.forward(&h, &emb)?;
        let out = self.conv_out.forward(&self.norm_out.forward(&h)?.f_silu()?)?;
        Ok(if stem > 1 { out.f_pixel_shuffle(stem)? } else { out })
    }
}

/// Number of values (parameters) in a `VarStore`.
pub fn parameter_count(vs: &nn::VarStore) -> usize {
    vs.variables().values().map(Tensor::numel).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn default_model_fits_25_mb_and_shapes_hold() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = NetConfig::default();
        let net = UNet::new(&vs.root(), &cfg).unwrap();
        let bytes = 4 * parameter_count(&vs);
        assert!(bytes <= 25_000_000, "default network has {bytes} bytes of weights");
        assert!(bytes > 5_000_000, "default network is unexpectedly small: {bytes} bytes");
        assert_eq!(cfg.multiple(), 16);
        let x = Tensor::randn([2, 3, 16, 32], (Kind::Float, Device::Cpu)); // multiple 16 for both nets
        let out = net.forward(&x, &x, &Tensor::from_slice(&[0.5f32, 0.1])).unwrap();
        assert_eq!(out.size(), [2, 3, 16, 32]);
        let err = net.forward(&x.narrow(3, 0, 24), &x.narrow(3, 0, 24), &Tensor::from_slice(&[0.5f32, 0.1]));
        assert!(err.unwrap_err().to_string().contains("multiples of 16"));
        let vs = nn::VarStore::new(Device::Cpu);
        let fast = UNet::new(&vs.root(), &NetConfig::fast()).unwrap();
        assert!(4 * parameter_count(&vs) < 16_000_000, "fast network: {} parameters", parameter_count(&vs));
        assert_eq!(fast.forward(&x, &x, &Tensor::from_slice(&[0.5f32, 0.1])).unwrap().size(), [2, 3, 16, 32]);
    }

    #[test]
    fn two_outputs_batch_independence_and_time_dependence() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = UNet::new(&vs.root(), &NetConfig::tiny(1, 2)).unwrap();
        let x = Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu));
        let y = Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[0.7f32, 0.2]);
        let both = net.forward(&x, &y, &t).unwrap();
        assert_eq!(both.size(), [2, 2, 8, 8]);
        let one = net.forward(&x.narrow(0, 1, 1), &y.narrow(0, 1, 1), &t.narrow(0, 1, 1)).unwrap();
        assert!(f64::try_from((both.get(1) - one.get(0)).abs().max()).unwrap() < 1e-5);
        let other = net.forward(&x.narrow(0, 1, 1), &y.narrow(0, 1, 1), &Tensor::from_slice(&[0.9f32])).unwrap();
        assert!(f64::try_from((other - one).abs().max()).unwrap() > 1e-5);
    }

    #[test]
    fn bad_configs_are_refused() {
        let vs = nn::VarStore::new(Device::Cpu);
        for (f, want) in [
            (Box::new(|c: &mut NetConfig| c.groups = 3) as Box<dyn Fn(&mut NetConfig)>, "groups"),
            (Box::new(|c: &mut NetConfig| c.outputs = 3), "outputs"),
            (Box::new(|c: &mut NetConfig| c.channels = vec![8; 7]), "levels"),
            (Box::new(|c: &mut NetConfig| c.channels = vec![4096]), "channels"),
            (Box::new(|c: &mut NetConfig| c.arch = "resnet".into()), "architecture"),
            (Box::new(|c: &mut NetConfig| c.stem = 3), "stem"),
        ] {
            let mut cfg = NetConfig::tiny(3, 1);
            f(&mut cfg);
            let err = UNet::new(&vs.root(), &cfg).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
