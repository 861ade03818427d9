//! The transformer denoiser: token embedding, pre-norm blocks with adaptive LayerNorm (shift, scale and gate from
//! the time embedding, zero-initialised as in DiT/MDLM), rotary positions in every attention layer, and a final
//! adaptive norm and projection to logits. Bidirectional for diffusion; with `causal` the same stack is the
//! autoregressive baseline.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Most layers, width, heads and context a network may have (bounds every allocation from a sidecar).
pub const MAX_WIDTH: usize = 4096;
/// Most blocks.
pub const MAX_DEPTH: usize = 64;
/// Longest context.
pub const MAX_CONTEXT: usize = 8192;

/// The shape of a transformer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    /// Input token states (257 for bytes plus the mask or the start token, 256 for uniform bytes).
    pub vocab_in: usize,
    /// Output width (logits per position).
    pub vocab_out: usize,
    /// Model width.
    pub width: usize,
    /// Blocks.
    pub depth: usize,
    /// Attention heads (width / heads must be even, for rotary pairs).
    pub heads: usize,
    /// Longest sequence.
    pub context: usize,
    /// Causal attention (autoregressive).
    pub causal: bool,
    /// Whether t reaches the adaptive norms (without it they see t = 0 and act as learned affine norms).
    pub time_conditioning: bool,
}

impl TransformerConfig {
    /// Checks every size against its bound.
    pub fn validate(&self) -> Result<()> {
        let bad = |r: String| Err(Error::invalid("network", r));
        if self.vocab_in == 0 || self.vocab_in > 1 << 20 || self.vocab_out == 0 || self.vocab_out > 1 << 20 {
            return bad(format!("vocabularies of {} and {} tokens", self.vocab_in, self.vocab_out));
        }
        if self.width == 0 || self.width > MAX_WIDTH || self.depth == 0 || self.depth > MAX_DEPTH {
            return bad(format!("width {} (1–{MAX_WIDTH}) and depth {} (1–{MAX_DEPTH})", self.width, self.depth));
        }
        if self.heads == 0 || !self.width.is_multiple_of(self.heads) || !(self.width / self.heads).is_multiple_of(2) {
            return bad(format!("{} heads must divide width {} into even head sizes", self.heads, self.width));
        }
        if self.context == 0 || self.context > MAX_CONTEXT {
            return bad(format!("context {} must be 1 to {MAX_CONTEXT}", self.context));
        }
        Ok(())
    }
}

fn zero_linear(p: nn::Path<'_>, cin: usize, cout: usize) -> nn::Linear {
    let cfg = nn::LinearConfig { ws_init: nn::Init::Const(0.0), bs_init: Some(nn::Init::Const(0.0)), bias: true };
    nn::linear(p, cin as i64, cout as i64, cfg)
}

fn layer_norm(x: &Tensor) -> Result<Tensor> {
    let w = x.size().last().copied().unwrap_or(1);
    Ok(x.f_layer_norm([w], None::<Tensor>, None::<Tensor>, 1e-6, false)?)
}

/// `norm(x)·(1 + scale) + shift` with `[B, 1, W]` modulations.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    Ok(layer_norm(x)?.f_mul(&scale.f_add_scalar(1.0)?)?.f_add(shift)?)
}

/// Rotary embedding of `x` `[B, H, L, D]` with tables `cos`, `sin` `[L, D/2]` (pairs are the two halves).
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.size()[3] / 2;
    let (a, b) = (x.f_narrow(3, 0, d)?, x.f_narrow(3, d, d)?);
    let ra = a.f_mul(cos)?.f_sub(&b.f_mul(sin)?)?;
    let rb = a.f_mul(sin)?.f_add(&b.f_mul(cos)?)?;
    Ok(Tensor::f_cat(&[ra, rb], 3)?)
}

#[derive(Debug)]
struct Block {
    ada: nn::Linear,
    qkv: nn::Linear,
    proj: nn::Linear,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Block {
    fn new(p: nn::Path<'_>, w: usize) -> Self {
        let lin =
            |name: &str, cin: usize, cout: usize| nn::linear(&p / name, cin as i64, cout as i64, Default::default());
        Block {
            ada: zero_linear(&p / "ada", w, 6 * w),
            qkv: lin("qkv", w, 3 * w),
            proj: lin("proj", w, w),
            fc1: lin("fc1", w, 4 * w),
            fc2: lin("fc2", 4 * w, w),
        }
    }

    fn forward(&self, h: &Tensor, c: &Tensor, rope: (&Tensor, &Tensor), heads: i64, causal: bool) -> Result<Tensor> {
        let (b, l, w) = h.size3()?;
        let m = self.ada.forward(c).f_unsqueeze(1)?.f_chunk(6, 2)?;
        let x = modulate(h, &m[0], &m[1])?;
        let qkv = self.qkv.forward(&x).f_view([b, l, 3, heads, w / heads])?.f_permute([2, 0, 3, 1, 4])?;
        let (q, k, v) = (qkv.f_get(0)?, qkv.f_get(1)?, qkv.f_get(2)?);
        let (q, k) = (rotate(&q, rope.0, rope.1)?, rotate(&k, rope.0, rope.1)?);
        let a = Tensor::f_scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, causal, None, false)?;
        let a = a.f_transpose(1, 2)?.f_contiguous()?.f_view([b, l, w])?;
        let h = h.f_add(&self.proj.forward(&a).f_mul(&m[2])?)?;
        let x = modulate(&h, &m[3], &m[4])?;
        let y = self.fc2.forward(&self.fc1.forward(&x).f_gelu("tanh")?);
        Ok(h.f_add(&y.f_mul(&m[5])?)?)
    }
}

/// The transformer.
#[derive(Debug)]
pub struct Transformer {
    config: TransformerConfig,
    embed: nn::Embedding,
    t1: nn::Linear,
    t2: nn::Linear,
    blocks: Vec<Block>,
    final_ada: nn::Linear,
    out: nn::Linear,
}

/// Sinusoidal features of t, `[B, 256]`.
fn time_features(t: &Tensor) -> Result<Tensor> {
    let half = 128;
    let freqs =
        Tensor::f_arange(half, (Kind::Float, t.device()))?.f_mul_scalar(-(10_000f64.ln()) / half as f64)?.f_exp()?;
    let args = t.f_to_kind(Kind::Float)?.f_unsqueeze(1)?.f_mul_scalar(1000.0)?.f_mul(&freqs.f_unsqueeze(0)?)?;
    Ok(Tensor::f_cat(&[args.f_cos()?, args.f_sin()?], 1)?)
}

impl Transformer {
    /// A freshly initialised network under `p`.
    pub fn new(p: &nn::Path<'_>, config: &TransformerConfig) -> Result<Self> {
        config.validate()?;
        let w = config.width;
        let emb_cfg = nn::EmbeddingConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 }, ..Default::default() };
        Ok(Transformer {
            config: config.clone(),
            embed: nn::embedding(p / "embed", config.vocab_in as i64, w as i64, emb_cfg),
            t1: nn::linear(p / "t1", 256, w as i64, Default::default()),
            t2: nn::linear(p / "t2", w as i64, w as i64, Default::default()),
            blocks: (0..config.depth).map(|i| Block::new(p / "blocks" / i, w)).collect(),
            final_ada: zero_linear(p / "final_ada", w, 2 * w),
            out: zero_linear(p / "out", w, config.vocab_out),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    /// Logits `[B, L, vocab_out]` for tokens `[B, L]` (i64) at times `t` `[B]` (ignored without time
    /// conditioning).
    pub fn forward(&self, tokens: &Tensor, t: &Tensor) -> Result<Tensor> {
        let size = tokens.size();
        if size.len() != 2 || size[1] < 1 || size[1] as usize > self.config.context {
            return Err(Error::Shape {
                op: "transformer input",
                expected: format!("[B, 1..={}]", self.config.context),
                got: format!("{size:?}"),
            });
        }
        let (b, l) = (size[0], size[1]);
        let device = tokens.device();
        let t = if self.config.time_conditioning {
            t.shallow_clone()
        } else {
            Tensor::f_zeros([b], (Kind::Float, device))?
        };
        let c = self.t2.forward(&self.t1.forward(&time_features(&t)?).f_silu()?).f_silu()?;
        let mut h = self.embed.forward(tokens);
        let hd = (self.config.width / self.config.heads) as i64;
        let inv = Tensor::f_arange(hd / 2, (Kind::Float, device))?
            .f_mul_scalar(-2.0 * 10_000f64.ln() / hd as f64)?
            .f_exp()?;
        let pos = Tensor::f_arange(l, (Kind::Float, device))?;
        let ang = pos.f_unsqueeze(1)?.f_mul(&inv.f_unsqueeze(0)?)?;
        let (cos, sin) = (ang.f_cos()?, ang.f_sin()?);
        for block in &self.blocks {
            h = block.forward(&h, &c, (&cos, &sin), self.config.heads as i64, self.config.causal)?;
        }
        let m = self.final_ada.forward(&c).f_unsqueeze(1)?.f_chunk(2, 2)?;
        Ok(self.out.forward(&modulate(&h, &m[0], &m[1])?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn config(causal: bool) -> TransformerConfig {
        TransformerConfig {
            vocab_in: 12,
            vocab_out: 11,
            width: 16,
            depth: 2,
            heads: 2,
            context: 8,
            causal,
            time_conditioning: true,
        }
    }

    #[test]
    fn causal_outputs_do_not_see_later_tokens_and_bidirectional_ones_do() {
        tch::manual_seed(0);
        for causal in [true, false] {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = Transformer::new(&vs.root(), &config(causal)).unwrap();
            // Zero-initialised output layers give zero logits; perturb every variable to test the wiring.
            tch::no_grad(|| {
                for (_, mut v) in vs.variables() {
                    let _ = v.f_add_(&(v.randn_like() * 0.1)).unwrap();
                }
            });
            let a = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]).view([1, 6]);
            let b = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 9]).view([1, 6]);
            let t = Tensor::from_slice(&[0.5f32]);
            let (ya, yb) = (net.forward(&a, &t).unwrap(), net.forward(&b, &t).unwrap());
            assert_eq!(ya.size(), [1, 6, 11]);
            let first_five_same = ya.narrow(1, 0, 5).allclose(&yb.narrow(1, 0, 5), 1e-6, 1e-6, false);
            assert_eq!(first_five_same, causal);
            // Time conditioning changes the output.
            let y2 = net.forward(&a, &Tensor::from_slice(&[0.9f32])).unwrap();
            assert!(!ya.allclose(&y2, 1e-6, 1e-6, false));
        }
    }

    #[test]
    fn bad_shapes_and_configs_are_refused() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Transformer::new(&vs.root(), &config(false)).unwrap();
        let long = Tensor::zeros([1, 9], (Kind::Int64, Device::Cpu));
        assert!(net.forward(&long, &Tensor::from_slice(&[0.5f32])).is_err());
        let odd = TransformerConfig { width: 18, heads: 2, ..config(false) };
        assert!(odd.validate().is_err());
        let huge = TransformerConfig { context: MAX_CONTEXT + 1, ..config(false) };
        assert!(huge.validate().is_err());
    }
}
