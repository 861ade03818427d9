//! Seeded per-sample noise: each sample of a batch draws from its own counter-based stream, so its result does
//! not depend on the batch size, its position in the batch, or the device (noise is made in f64 on the CPU).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};

/// SplitMix64 finaliser: turns correlated integers (base seed, sample index) into independent-looking seeds.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of sample `index` under the run seed `base`.
pub fn sample_seed(base: u64, index: u64) -> u64 {
    mix64(mix64(base) ^ index.wrapping_mul(0xD605_BBB5_8C8A_BBFD))
}

/// One independent random stream per sample of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSeeds {
    seeds: Vec<u64>,
}

impl SampleSeeds {
    /// Seeds of samples `first .. first + batch` of a run with seed `base`.
    pub fn new(base: u64, first: u64, batch: usize) -> Self {
        SampleSeeds { seeds: (0..batch as u64).map(|i| sample_seed(base, first + i)).collect() }
    }

    /// Explicit per-sample seeds (for example a subset of a larger run).
    pub fn from_seeds(seeds: Vec<u64>) -> Self {
        SampleSeeds { seeds }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.seeds.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    /// The per-sample seeds.
    pub fn seeds(&self) -> &[u64] {
        &self.seeds
    }

    /// The seeds of samples `range` (a sub-batch that draws exactly what those samples draw in the full batch).
    pub fn slice(&self, range: std::ops::Range<usize>) -> SampleSeeds {
        SampleSeeds { seeds: self.seeds[range].to_vec() }
    }

    /// A random generator for sample `i`, draw number `draw` (a step index, a probe index, ...).
    pub fn rng(&self, i: usize, draw: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seeds[i]);
        rng.set_stream(draw);
        rng
    }

    /// Standard normal noise of shape `[batch, sample_shape…]`, the `draw`-th draw of every sample's stream.
    pub fn normal(&self, draw: u64, sample_shape: &[i64], kind: Kind, device: Device) -> Tensor {
        let per_sample: usize = sample_shape.iter().map(|&d| d.max(0) as usize).product();
        let mut values = Vec::with_capacity(per_sample * self.len());
        for i in 0..self.len() {
            let mut rng = self.rng(i, draw);
            values.extend((0..per_sample).map(|_| -> f64 { StandardNormal.sample(&mut rng) }));
        }
        let mut shape = vec![self.len() as i64];
        shape.extend_from_slice(sample_shape);
        Tensor::from_slice(&values).view(shape.as_slice()).to_kind(kind).to_device(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_draws_the_same_noise_alone_or_in_a_batch() {
        let batch = SampleSeeds::new(7, 0, 8);
        let alone = SampleSeeds::new(7, 5, 1);
        let a = batch.normal(3, &[4, 2], Kind::Double, Device::Cpu).get(5);
        let b = alone.normal(3, &[4, 2], Kind::Double, Device::Cpu).get(0);
        assert_eq!(f64::try_from((a - b).abs().max()).unwrap(), 0.0);
    }

    #[test]
    fn draws_and_samples_are_different_streams() {
        let s = SampleSeeds::new(1, 0, 2);
        let x = s.normal(0, &[1000], Kind::Double, Device::Cpu);
        let y = s.normal(1, &[1000], Kind::Double, Device::Cpu);
        let corr = f64::try_from((x.get(0) * x.get(1)).mean(Kind::Double)).unwrap();
        assert!(corr.abs() < 0.15, "samples correlated: {corr}");
        assert!(f64::try_from((x - y).abs().max()).unwrap() > 0.1);
    }

    #[test]
    fn noise_is_standard_normal() {
        let x = SampleSeeds::new(0, 0, 1).normal(0, &[20000], Kind::Double, Device::Cpu);
        let mean = f64::try_from(x.mean(Kind::Double)).unwrap();
        let var = f64::try_from(x.var(true)).unwrap();
        // 5 standard errors.
        assert!(mean.abs() < 5.0 / 20000f64.sqrt(), "{mean}");
        assert!((var - 1.0).abs() < 5.0 * (2.0 / 20000f64).sqrt(), "{var}");
    }
}
