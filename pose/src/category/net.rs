//! The denoiser network of the category-level model: a two-stage PointNet (per-point layers, a max-pooled global
//! feature fed back to every point, then max- and mean-pooling) over the scan points seen in the frame of the noisy
//! box, and a head that also sees the noise level, the noisy box's size, the direction to the sensor and the
//! category. It returns the clean box in the chart of the noisy one ([`super::chart`]), its heading as a bin and
//! a residual.

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn, nn::Module};

use super::chart::DIM;
use crate::error::Result;

/// Largest layer width.
pub const MAX_WIDTH: usize = 4096;
/// Most points per box.
pub const MAX_POINTS: usize = 8192;
/// Inputs besides the points: noise-level features (4), log-size (3), sensor direction (3), table normal (3),
/// height above the table (1), then one per category.
pub const CONDITION_BASE: usize = 14;

/// The bin of a turn `theta` (radians) among `bins` bins centred at multiples of 2π/bins, and the residual
/// from that bin's centre (in [−π/bins, π/bins]).
pub fn heading_bin(theta: f64, bins: usize) -> (usize, f64) {
    let w = std::f64::consts::TAU / bins as f64;
    let k = (theta / w).round();
    (k.rem_euclid(bins as f64) as usize % bins, theta - k * w)
}

/// The centre (radians) of heading bin `k`.
pub fn bin_centre(k: usize, bins: usize) -> f64 {
    k as f64 * std::f64::consts::TAU / bins as f64
}

/// The network's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Points fed per box.
    pub points: usize,
    /// Widths of the per-point layers (first, second, the two after the global feature).
    pub point_widths: [usize; 3],
    /// Width of the head.
    pub head: usize,
    /// Categories (the one-hot input's length).
    pub categories: usize,
    /// Heading bins: the turn about the box's up axis is classified into this many bins (logits after the 9
    /// chart coordinates, whose yaw coordinate is then the residual from the bin's centre), as Frustum PointNets
    /// predicts headings; a turn regressed directly is learnt far more slowly.
    pub heading_bins: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig { points: 256, point_widths: [64, 128, 256], head: 256, categories: 6, heading_bins: 12 }
    }
}

impl NetConfig {
    /// Whether every size is in range.
    pub fn is_valid(&self) -> bool {
        let w = |v: usize| (1..=MAX_WIDTH).contains(&v);
        (8..=MAX_POINTS).contains(&self.points)
            && self.point_widths.iter().all(|&v| w(v))
            && w(self.head)
            && (1..=64).contains(&self.categories)
            && (1..=360).contains(&self.heading_bins)
    }

    /// Outputs per box: the 9 chart coordinates, then the heading logits.
    pub fn outputs(&self) -> usize {
        DIM + self.heading_bins
    }

    /// Length of the conditioning vector.
    pub fn condition(&self) -> usize {
        CONDITION_BASE + self.categories
    }
}

/// The network.
#[derive(Debug)]
pub struct PoseNet {
    p1: nn::Linear,
    p2: nn::Linear,
    p3: nn::Linear,
    p4: nn::Linear,
    c1: nn::Linear,
    h1: nn::Linear,
    h2: nn::Linear,
    out: nn::Linear,
}

impl PoseNet {
    /// A freshly initialised network under `p` (the output layer starts at zero: "no correction").
    pub fn new(p: &nn::Path<'_>, cfg: &NetConfig) -> Self {
        let [w1, w2, w3] = cfg.point_widths;
        let lin = |name: &str, i: usize, o: usize| nn::linear(p / name, i as i64, o as i64, Default::default());
        let zero = nn::LinearConfig { ws_init: nn::Init::Const(0.0), bs_init: Some(nn::Init::Const(0.0)), bias: true };
        PoseNet {
            p1: lin("p1", 3, w1),
            p2: lin("p2", w1, w2),
            p3: lin("p3", 2 * w2, w3),
            p4: lin("p4", w3, w3),
            c1: lin("c1", cfg.condition(), cfg.head / 2),
            h1: lin("h1", 2 * w3 + cfg.head / 2, cfg.head),
            h2: lin("h2", cfg.head, cfg.head),
            out: nn::linear(p / "out", cfg.head as i64, cfg.outputs() as i64, zero),
        }
    }

    /// The raw output `[B, 9 + bins]` (chart coordinates, heading logits) for points `[B, N, 3]` (in the noisy box's frame, divided by its size) and
    /// conditioning `[B, C]`.
    pub fn forward(&self, points: &Tensor, condition: &Tensor) -> Result<Tensor> {
        let h = self.p1.forward(points).f_silu()?;
        let h = self.p2.forward(&h).f_silu()?;
        let (_, n, _) = h.size3()?;
        let global = h.f_amax([1], true)?.f_expand([-1, n, -1], false)?;
        let h = self.p3.forward(&Tensor::f_cat(&[h, global], 2)?).f_silu()?;
        let h = self.p4.forward(&h);
        let pooled = Tensor::f_cat(&[h.f_amax([1], false)?, h.f_mean_dim([1i64].as_slice(), false, None)?], 1)?;
        let c = self.c1.forward(condition).f_silu()?;
        let x = self.h1.forward(&Tensor::f_cat(&[pooled, c], 1)?).f_silu()?;
        let x = self.h2.forward(&x).f_silu()?.f_add(&x)?;
        Ok(self.out.forward(&x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heading_bins_cover_the_turn() {
        for bins in [1, 12, 36] {
            for i in -50..=50 {
                let theta = i as f64 * 0.13;
                let (k, r) = heading_bin(theta, bins);
                assert!(k < bins && r.abs() <= std::f64::consts::PI / bins as f64 + 1e-12);
                let back = bin_centre(k, bins) + r;
                assert!(
                    ((back - theta) / std::f64::consts::TAU).fract().abs() < 1e-9
                        || ((back - theta) / std::f64::consts::TAU).fract().abs() > 1.0 - 1e-9
                );
            }
        }
        assert_eq!(heading_bin(0.0, 12), (0, 0.0));
        assert_eq!(heading_bin(-std::f64::consts::FRAC_PI_2, 4).0, 3);
    }
}
