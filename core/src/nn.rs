//! Building blocks of the native networks (audio's NCSN++-family score network, restoration's U-Net): written
//! once here so the domain crates add only their architecture.
//!
//! Every block creates its variables under the `nn::Path` it is given with the names `weight` and `bias` (and
//! the sub-paths named in each constructor), so the safetensors files of trained models keep their keys. Tensors
//! are `[B, C, H, W]`; every operation goes through tch's fallible `f_*` calls.

use std::path::Path;
use tch::Tensor;

use tch::nn::{self, Init};

use crate::{Error, Result};

/// A 2-D convolution with "same" padding (`k/2`), weights uniform with variance `init_scale/fan_in` (LeCun at
/// scale 1; NCSN++ scales the last convolution of a block by 0.1).
#[derive(Debug)]
pub struct Conv {
    ws: Tensor,
    bs: Tensor,
    stride: i64,
    pad: i64,
}

impl Conv {
    /// A `k × k` convolution from `cin` to `cout` channels with the given stride.
    pub fn new(p: nn::Path<'_>, cin: usize, cout: usize, k: i64, stride: i64, init_scale: f64) -> Self {
        let (cin, cout) = (cin as i64, cout as i64);
        let bound = (3.0 * init_scale / (cin * k * k) as f64).sqrt();
        let ws = p.var("weight", &[cout, cin, k, k], Init::Uniform { lo: -bound, up: bound });
        let bs = p.var("bias", &[cout], Init::Const(0.0));
        Conv { ws, bs, stride, pad: k / 2 }
    }

    /// Applies the convolution.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_conv2d(&self.ws, Some(&self.bs), [self.stride; 2], [self.pad; 2], [1, 1], 1)?)
    }
}

/// A fully connected layer, weights uniform with variance `1/fan_in`.
#[derive(Debug)]
pub struct Dense {
    ws: Tensor,
    bs: Tensor,
}

impl Dense {
    /// A layer from `cin` to `cout` features.
    pub fn new(p: nn::Path<'_>, cin: usize, cout: usize) -> Self {
        let bound = (3.0 / cin as f64).sqrt();
        let ws = p.var("weight", &[cout as i64, cin as i64], Init::Uniform { lo: -bound, up: bound });
        let bs = p.var("bias", &[cout as i64], Init::Const(0.0));
        Dense { ws, bs }
    }

    /// Applies the layer to `[…, cin]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_linear(&self.ws, Some(&self.bs))?)
    }
}

/// Group normalisation with a learned scale and shift (ε = 1e-6, as NCSN++).
#[derive(Debug)]
pub struct Norm {
    ws: Tensor,
    bs: Tensor,
    groups: i64,
}

impl Norm {
    /// Normalises `c` channels in `groups` groups (`groups` must divide `c`; see [`groups_for`]).
    pub fn new(p: nn::Path<'_>, c: usize, groups: usize) -> Self {
        Norm {
            ws: p.var("weight", &[c as i64], Init::Const(1.0)),
            bs: p.var("bias", &[c as i64], Init::Const(0.0)),
            groups: groups as i64,
        }
    }

    /// Applies the normalisation.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_group_norm(self.groups, Some(&self.ws), Some(&self.bs), 1e-6, false)?)
    }
}

/// Greatest divisor of `c` that is at most `g`: the group count for `c` channels (concatenated skips need not be
/// multiples of the usual 32 groups).
pub fn groups_for(c: usize, g: usize) -> usize {
    (1..=g.min(c)).rev().find(|d| c.is_multiple_of(*d)).unwrap_or(1)
}

/// DDPM's (and NCSN++'s) residual block: GroupNorm, SiLU, 3×3 convolution, the time embedding added, again, and
/// the skip (a 1×1 convolution when the width changes), summed and scaled by `1/√2`.
#[derive(Debug)]
pub struct ResBlock {
    norm1: Norm,
    conv1: Conv,
    temb: Dense,
    norm2: Norm,
    conv2: Conv,
    skip: Option<Conv>,
}

impl ResBlock {
    /// A block from `cin` to `cout` channels taking a `temb`-wide time embedding; `groups` for the norms.
    pub fn new(p: nn::Path<'_>, cin: usize, cout: usize, temb: usize, groups: usize) -> Self {
        ResBlock {
            norm1: Norm::new(&p / "norm1", cin, groups_for(cin, groups)),
            conv1: Conv::new(&p / "conv1", cin, cout, 3, 1, 1.0),
            temb: Dense::new(&p / "temb", temb, cout),
            norm2: Norm::new(&p / "norm2", cout, groups),
            conv2: Conv::new(&p / "conv2", cout, cout, 3, 1, 0.1),
            skip: (cin != cout).then(|| Conv::new(&p / "skip", cin, cout, 1, 1, 1.0)),
        }
    }

    /// Applies the block to `x` `[B, cin, H, W]` with the time embedding `temb` `[B, temb]`.
    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x)?.f_silu()?)?;
        let h = h.f_add(&self.temb.forward(temb)?.f_unsqueeze(-1)?.f_unsqueeze(-1)?)?;
        let h = self.conv2.forward(&self.norm2.forward(&h)?.f_silu()?)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?,
            None => x.shallow_clone(),
        };
        Ok(skip.f_add(&h)?.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?)
    }
}

/// Single-head self-attention over all positions with a skip rescaled by `1/√2` (NCSN++'s `AttnBlockpp`).
#[derive(Debug)]
pub struct Attention {
    norm: Norm,
    qkv: Conv,
    out: Conv,
}

impl Attention {
    /// Attention over `c` channels; `groups` for its norm.
    pub fn new(p: nn::Path<'_>, c: usize, groups: usize) -> Self {
        Attention {
            norm: Norm::new(&p / "norm", c, groups),
            qkv: Conv::new(&p / "qkv", c, 3 * c, 1, 1, 1.0),
            out: Conv::new(&p / "out", c, c, 1, 1, 0.1),
        }
    }

    /// Applies attention to `x` `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [b, c, h, w] = <[i64; 4]>::try_from(x.size()).map_err(|_| Error::Shape {
            op: "attention",
            expected: "[B, C, H, W]".into(),
            got: format!("{:?}", x.size()),
        })?;
        let qkv = self.qkv.forward(&self.norm.forward(x)?)?.f_view([b, 3, c, h * w])?;
        // [B, 1, HW, C] per head: one head.
        let head = |i: i64| -> Result<Tensor> { Ok(qkv.f_select(1, i)?.f_transpose(1, 2)?.f_unsqueeze(1)?) };
        let (q, k, v) = (head(0)?, head(1)?, head(2)?);
        let a = Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false)?;
        let a = a.f_squeeze_dim(1)?.f_transpose(1, 2)?.f_contiguous()?.f_view([b, c, h, w])?;
        Ok(x.f_add(&self.out.forward(&a)?)?.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?)
    }
}

/// The levels of a DDPM/NCSN++-style U-Net between its input and output convolutions: per level `res_blocks`
/// residual blocks and a stride-2 convolution down, `attention` attention blocks between two residual blocks at
/// the lowest resolution, then per level `res_blocks + 1` blocks on the skips and nearest upsampling + a
/// convolution up. Variables are named `down{l}_{i}`, `downsample{l}`, `mid1`, `attn{i}`, `mid2`, `up{l}_{i}` and
/// `upsample{l}` under the given path.
#[derive(Debug)]
pub struct UNetLevels {
    down: Vec<Vec<ResBlock>>,
    downsample: Vec<Conv>,
    mid1: ResBlock,
    attn: Vec<Attention>,
    mid2: ResBlock,
    up: Vec<Vec<ResBlock>>,
    upsample: Vec<Conv>,
    out_channels: usize,
}

impl UNetLevels {
    /// Levels of widths `channels` (from full resolution down; the input has `channels[0]`), with a `temb`-wide
    /// time embedding and `groups` for the norms.
    pub fn new(
        p: &nn::Path<'_>,
        channels: &[usize],
        res_blocks: usize,
        attention: usize,
        temb: usize,
        groups: usize,
    ) -> Self {
        let (mut down, mut downsample) = (Vec::new(), Vec::new());
        let mut c = channels.first().copied().unwrap_or(1);
        let mut skips = vec![c];
        for (l, &cl) in channels.iter().enumerate() {
            let mut blocks = Vec::new();
            for i in 0..res_blocks {
                blocks.push(ResBlock::new(p / format!("down{l}_{i}"), c, cl, temb, groups));
                c = cl;
                skips.push(c);
            }
            down.push(blocks);
            if l + 1 < channels.len() {
                downsample.push(Conv::new(p / format!("downsample{l}"), c, c, 3, 2, 1.0));
                skips.push(c);
            }
        }
        let mid1 = ResBlock::new(p / "mid1", c, c, temb, groups);
        let attn = (0..attention).map(|i| Attention::new(p / format!("attn{i}"), c, groups)).collect();
        let mid2 = ResBlock::new(p / "mid2", c, c, temb, groups);
        let (mut up, mut upsample) = (Vec::new(), Vec::new());
        for (l, &cl) in channels.iter().enumerate().rev() {
            let mut blocks = Vec::new();
            for i in 0..=res_blocks {
                // `skips` holds one entry per block, by construction above.
                let s = skips.pop().unwrap_or(cl);
                blocks.push(ResBlock::new(p / format!("up{l}_{i}"), c + s, cl, temb, groups));
                c = cl;
            }
            up.push(blocks);
            if l > 0 {
                upsample.push(Conv::new(p / format!("upsample{l}"), c, c, 3, 1, 1.0));
            }
        }
        UNetLevels { down, downsample, mid1, attn, mid2, up, upsample, out_channels: c }
    }

    /// Channels of the output (`channels[0]`).
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Runs the levels on `h` (after the input convolution) with the time embedding `emb`.
    pub fn forward(&self, h: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let mut h = h.shallow_clone();
        let mut skips = vec![h.shallow_clone()];
        for (l, blocks) in self.down.iter().enumerate() {
            for b in blocks {
                h = b.forward(&h, emb)?;
                skips.push(h.shallow_clone());
            }
            if let Some(d) = self.downsample.get(l) {
                h = d.forward(&h)?;
                skips.push(h.shallow_clone());
            }
        }
        h = self.mid1.forward(&h, emb)?;
        for a in &self.attn {
            h = a.forward(&h)?;
        }
        h = self.mid2.forward(&h, emb)?;
        for (k, blocks) in self.up.iter().enumerate() {
            for b in blocks {
                let s = skips.pop().ok_or_else(|| Error::invalid("network", "skip connections out of step"))?;
                h = b.forward(&Tensor::f_cat(&[&h, &s], 1)?, emb)?;
            }
            if let Some(u) = self.upsample.get(k) {
                let hs = h.size();
                h = u.forward(&h.f_upsample_nearest2d([hs[2] * 2, hs[3] * 2], None, None)?)?;
            }
        }
        Ok(h)
    }
}

/// Copies `tensors` into the variables of `vs` by name, checking that names and shapes agree exactly; errors
/// name `name` (the weights file) and the tensor.
pub fn load_vars(vs: &mut nn::VarStore, tensors: Vec<(String, Tensor)>, name: &Path) -> Result<()> {
    let mut vars = vs.variables();
    let _guard = tch::no_grad_guard();
    let mut missing: Vec<String> = vars.keys().cloned().collect();
    for (key, t) in tensors {
        let Some(var) = vars.get_mut(&key) else {
            return Err(Error::file(
                name,
                format!("unexpected tensor '{key}': the weights do not fit the sidecar's network"),
            ));
        };
        if var.size() != t.size() {
            return Err(Error::file(
                name,
                format!("tensor '{key}' has shape {:?}, the sidecar's network needs {:?}", t.size(), var.size()),
            ));
        }
        var.f_copy_(&t)?;
        missing.retain(|k| k != &key);
    }
    if !missing.is_empty() {
        missing.sort();
        return Err(Error::file(name, format!("missing tensors: {}", missing.join(", "))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn blocks_keep_shapes_and_variable_names() {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let block = ResBlock::new(&root / "res", 6, 8, 16, 4);
        let attn = Attention::new(&root / "attn", 8, 4);
        let x = Tensor::randn([2, 6, 5, 4], (Kind::Float, Device::Cpu));
        let t = Tensor::randn([2, 16], (Kind::Float, Device::Cpu));
        let y = attn.forward(&block.forward(&x, &t).unwrap()).unwrap();
        assert_eq!(y.size(), [2, 8, 5, 4]);
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert!(names.contains(&"res.norm1.weight".to_string()) && names.contains(&"attn.qkv.bias".to_string()));
        assert!(names.contains(&"res.skip.weight".to_string()), "{names:?}");
        assert_eq!(groups_for(6, 4), 3);
        assert_eq!(groups_for(64, 32), 32);
        assert!(attn.forward(&Tensor::zeros([3], (Kind::Float, Device::Cpu))).is_err());
    }
}
