//! Noise sources beyond [`super::SeededNoise`]: a Brownian tree (the same Brownian path at any step count, for
//! strong-order tests and reproducible SDE sampling) and a fixed list of tensors (to replay a reference run).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::Tensor;

use super::run::NoiseSource;
use crate::seed::{SampleSeeds, mix64};
use crate::{Error, Result};

/// A Brownian motion per sample on `[lo, hi]`, built lazily by Lévy's midpoint construction: the value at every
/// dyadic point is drawn from a generator seeded by (sample seed, node), so any query order and any step count see
/// the same path. Off the dyadic grid (depth `depth`), a Brownian bridge with a value seeded by the exact time fills
/// in. Each query costs `depth` normal vectors per sample: meant for tests and small states.
pub struct BrownianTree {
    seeds: SampleSeeds,
    lo: f64,
    hi: f64,
    depth: u32,
    fallback: super::SeededNoise,
}

impl BrownianTree {
    /// A tree over `[lo, hi]` for the samples of `seeds`, resolved to `(hi − lo)/2^depth` (depth ≤ 40).
    pub fn new(seeds: SampleSeeds, lo: f64, hi: f64, depth: u32) -> Result<Self> {
        if !(hi > lo && lo.is_finite() && hi.is_finite()) {
            return Err(Error::invalid("brownian interval", format!("need lo < hi, got [{lo}, {hi}]")));
        }
        let fallback = super::SeededNoise::new(seeds.clone());
        Ok(BrownianTree { seeds, lo, hi, depth: depth.clamp(1, 40), fallback })
    }

    fn normals(&self, sample: usize, node: u64, n: usize) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(self.seeds.seeds()[sample] ^ mix64(node)));
        (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
    }

    /// W(t) for one sample, `n` values.
    fn value(&self, sample: usize, t: f64, n: usize) -> Vec<f64> {
        let t = t.clamp(self.lo, self.hi);
        let (mut a, mut b) = (self.lo, self.hi);
        let mut wa = vec![0.0; n];
        let root = self.normals(sample, 1, n);
        let mut wb: Vec<f64> = root.iter().map(|z| z * (b - a).sqrt()).collect();
        let mut node: u64 = 1;
        for _ in 0..self.depth {
            if t == a {
                return wa;
            }
            if t == b {
                return wb;
            }
            let m = 0.5 * (a + b);
            let z = self.normals(sample, node << 1, n);
            let sd = (0.25 * (b - a)).sqrt();
            let wm: Vec<f64> = wa.iter().zip(&wb).zip(&z).map(|((x, y), z)| 0.5 * (x + y) + sd * z).collect();
            // Heap numbering: left child 2k, right child 2k + 1 (the midpoint value belongs to the parent).
            if t < m {
                node <<= 1;
                b = m;
                wb = wm;
            } else {
                node = (node << 1) | 1;
                a = m;
                wa = wm;
            }
        }
        let frac = (t - a) / (b - a);
        let sd = ((t - a) * (b - t) / (b - a)).max(0.0).sqrt();
        let z = self.normals(sample, mix64(t.to_bits()) | (1 << 63), n);
        wa.iter().zip(&wb).zip(&z).map(|((x, y), z)| x + frac * (y - x) + sd * z).collect()
    }
}

impl NoiseSource for BrownianTree {
    fn normal(&mut self, draw: u64, like: &Tensor) -> Result<Tensor> {
        self.fallback.normal(draw, like)
    }

    fn brownian(&mut self, _draw: u64, s0: f64, s1: f64, like: &Tensor) -> Result<Tensor> {
        let size = like.size();
        if size.first().copied() != Some(self.seeds.len() as i64) {
            return Err(Error::Shape {
                op: "brownian",
                expected: format!("batch of {}", self.seeds.len()),
                got: format!("{size:?}"),
            });
        }
        let per: usize = size[1..].iter().map(|&d| d as usize).product();
        let mut values = Vec::with_capacity(per * self.seeds.len());
        for i in 0..self.seeds.len() {
            let w0 = self.value(i, s0, per);
            let w1 = self.value(i, s1, per);
            values.extend(w1.iter().zip(&w0).map(|(a, b)| a - b));
        }
        Ok(Tensor::from_slice(&values).view(size.as_slice()).to_kind(like.kind()).to_device(like.device()))
    }
}

/// Replays given noise tensors by draw number (parity tests against a reference run's recorded noise).
pub struct FixedNoise {
    tensors: Vec<Tensor>,
}

impl FixedNoise {
    /// Noise for draws `0, 1, …` in order.
    pub fn new(tensors: Vec<Tensor>) -> Self {
        FixedNoise { tensors }
    }
}

impl NoiseSource for FixedNoise {
    fn normal(&mut self, draw: u64, like: &Tensor) -> Result<Tensor> {
        let t = self.tensors.get(draw as usize).ok_or_else(|| {
            Error::invalid("noise", format!("no recorded noise for draw {draw} ({} given)", self.tensors.len()))
        })?;
        if t.size() != like.size() {
            return Err(Error::Shape {
                op: "fixed noise",
                expected: format!("{:?}", like.size()),
                got: format!("{:?}", t.size()),
            });
        }
        Ok(t.to_kind(like.kind()).to_device(like.device()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn brownian_increments_are_consistent_and_have_the_right_variance() {
        let n = 4000;
        let mut tree = BrownianTree::new(SampleSeeds::new(9, 0, n), 0.0, 1.0, 24).unwrap();
        let like = Tensor::zeros([n as i64, 1], (Kind::Double, Device::Cpu));
        let whole = tree.brownian(0, 0.2, 0.7, &like).unwrap();
        let a = tree.brownian(0, 0.2, 0.45, &like).unwrap();
        let b = tree.brownian(0, 0.45, 0.7, &like).unwrap();
        // Same path: increments add up exactly, whatever the subdivision.
        assert!(f64::try_from((&a + &b - &whole).abs().max()).unwrap() < 1e-12);
        let var = f64::try_from(whole.var(true)).unwrap();
        assert!((var - 0.5).abs() < 5.0 * 0.5 * (2.0 / n as f64).sqrt(), "{var}");
        // Independent increments on disjoint intervals.
        let corr = f64::try_from((&a * &b).mean(Kind::Double)).unwrap() / (0.25f64).sqrt() / (0.25f64).sqrt();
        assert!(corr.abs() < 5.0 / (n as f64).sqrt(), "{corr}");
        // A sample's path does not depend on the batch.
        let mut alone = BrownianTree::new(SampleSeeds::new(9, 7, 1), 0.0, 1.0, 24).unwrap();
        let one = alone.brownian(0, 0.2, 0.7, &Tensor::zeros([1, 1], (Kind::Double, Device::Cpu))).unwrap();
        assert_eq!(
            f64::try_from(one.view([-1]).get(0)).unwrap(),
            f64::try_from(whole.get(7).view([-1]).get(0)).unwrap()
        );
    }
}
