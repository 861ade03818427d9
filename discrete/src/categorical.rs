//! Categorical sampling, temperature, top-k and top-p.
//!
//! A draw from weights w is done in f64 whatever the model's dtype, by inverse CDF with one 53-bit uniform. The
//! usual 32-bit recipe, an exponential race `argmin_v E_v / w_v` with `E_v = −ln U_v` (equivalently Gumbel-max)
//! in f32, cuts the tail: `E` cannot go below about 6e-8, so a token whose odds against the leader are below that
//! can (almost) never win, which lowers the entropy of samples (arXiv 2409.02908, Fig. 8). [`Precision::F32`]
//! reproduces that recipe only to measure the effect.

use std::str::FromStr;

use rand::RngCore;

use crate::{Error, Result};

/// Floating-point precision of a draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Inverse CDF in f64 with a 53-bit uniform (the default; exact to f64 rounding).
    #[default]
    F64,
    /// The common 32-bit recipe `E = 1e-10 − ln(U + 1e-10)` with a 24-bit uniform U ∈ [0, 1), ratio in f32.
    F32,
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f64" => Ok(Precision::F64),
            "f32" => Ok(Precision::F32),
            _ => Err(Error::invalid("precision", format!("'{s}'; valid: f64, f32"))),
        }
    }
}

/// A 53-bit uniform in (0, 1].
fn uniform_open0<R: RngCore + ?Sized>(rng: &mut R) -> f64 {
    ((rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Exp(1) noise `−ln U` from a 53-bit uniform U in (0, 1].
pub fn exp_noise_f64<R: RngCore + ?Sized>(rng: &mut R) -> f64 {
    -uniform_open0(rng).ln()
}

/// The 32-bit race noise for the 24 random bits `bits` (U = bits·2⁻²⁴): `1e-10 − ln(U + 1e-10)` in f32.
pub fn exp_noise_f32(bits: u32) -> f32 {
    let u = (bits & 0x00FF_FFFF) as f32 * (1.0 / (1u32 << 24) as f32);
    1e-10f32 - (u + 1e-10f32).ln()
}

/// Draws an index with probability proportional to the non-negative `weights`.
/// A single non-zero weight is returned without drawing; all-zero weights give index 0.
pub fn sample<R: RngCore + ?Sized>(weights: &[f64], rng: &mut R, precision: Precision) -> usize {
    let mut nonzero = weights.iter().enumerate().filter(|(_, w)| **w > 0.0);
    let Some((first, _)) = nonzero.next() else {
        return 0;
    };
    if nonzero.next().is_none() {
        return first;
    }
    match precision {
        Precision::F64 => {
            // Inverse CDF with one 53-bit uniform: the first index whose running sum reaches U·Σw, U ∈ (0, 1].
            // Exact to f64 rounding, at one random number per draw where a race needs one per token.
            let total: f64 = weights.iter().filter(|w| **w > 0.0).sum();
            let target = uniform_open0(rng) * total;
            let (mut acc, mut last) = (0.0, first);
            for (v, &w) in weights.iter().enumerate() {
                if w > 0.0 {
                    acc += w;
                    last = v;
                    if acc >= target {
                        return v;
                    }
                }
            }
            // Unreachable: the running sum ends at `total` ≥ target (same terms, same order).
            last
        }
        Precision::F32 => {
            let (mut best, mut key) = (first, f32::NEG_INFINITY);
            for (v, &w) in weights.iter().enumerate() {
                if w > 0.0 {
                    let k = w as f32 / exp_noise_f32(rng.next_u32() >> 8);
                    if k > key {
                        key = k;
                        best = v;
                    }
                }
            }
            best
        }
    }
}

/// Index of the largest weight (first one on ties).
pub fn argmax(weights: &[f64]) -> usize {
    let mut best = 0;
    for (v, &w) in weights.iter().enumerate() {
        if w > weights[best] {
            best = v;
        }
    }
    best
}

/// Shannon entropy in nats of a probability vector.
pub fn entropy(p: &[f64]) -> f64 {
    -p.iter().filter(|&&v| v > 0.0).map(|&v| v * v.ln()).sum::<f64>()
}

/// Scales to sum 1 (no-op on an all-zero vector).
pub fn normalize(p: &mut [f64]) {
    let z: f64 = p.iter().sum();
    if z > 0.0 {
        // One division, then products (within an ulp of dividing each entry; several times faster).
        let inv = 1.0 / z;
        p.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Numerically stable softmax of `logits` into `out`; `−∞` entries get probability 0.
pub fn softmax(logits: &[f64], out: &mut [f64]) {
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY || m.is_nan() {
        out.iter_mut().for_each(|o| *o = 0.0);
        return;
    }
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = (l - m).exp();
    }
    normalize(out);
}

/// How the predicted clean distribution is shaped before it is used: temperature on the raw logits, then
/// top-k and top-p (nucleus) truncation of the probabilities, renormalised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Truncation {
    /// Logits are divided by this (> 0); 1 leaves them unchanged.
    pub temperature: f64,
    /// Keep only the k most probable tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most probable tokens whose mass reaches p ∈ (0, 1].
    pub top_p: Option<f64>,
}

impl Default for Truncation {
    fn default() -> Self {
        Truncation { temperature: 1.0, top_k: None, top_p: None }
    }
}

impl Truncation {
    /// Checks the ranges (temperature > 0, k ≥ 1, p ∈ (0, 1]).
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::invalid("temperature", format!("{} must be > 0", self.temperature)));
        }
        if self.top_k == Some(0) {
            return Err(Error::invalid("top_k", "must be at least 1"));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(Error::invalid("top_p", format!("{p} must lie in (0, 1]")));
        }
        Ok(())
    }

    /// True when it changes nothing.
    pub fn is_identity(&self) -> bool {
        self.temperature == 1.0 && self.top_k.is_none() && self.top_p.is_none_or(|p| p >= 1.0)
    }

    /// Truncates probabilities `p` in place by top-k then top-p and renormalises.
    pub fn truncate(&self, p: &mut [f64]) {
        if self.top_k.is_none() && self.top_p.is_none_or(|q| q >= 1.0) {
            return;
        }
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let total: f64 = p.iter().sum();
        let mut keep = p.len();
        if let Some(k) = self.top_k {
            keep = keep.min(k);
        }
        if let Some(q) = self.top_p
            && q < 1.0
        {
            let mut acc = 0.0;
            for (n, &v) in order.iter().enumerate() {
                acc += p[v] / total;
                if acc >= q {
                    keep = keep.min(n + 1);
                    break;
                }
            }
        }
        for &v in &order[keep..] {
            p[v] = 0.0;
        }
        normalize(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn draw_frequencies_match_weights() {
        let w = [0.5, 0.0, 0.2, 0.3];
        for precision in [Precision::F64, Precision::F32] {
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let n = 40_000;
            let mut counts = [0usize; 4];
            for _ in 0..n {
                counts[sample(&w, &mut rng, precision)] += 1;
            }
            assert_eq!(counts[1], 0);
            for v in 0..4 {
                let f = counts[v] as f64 / n as f64;
                // 5 standard errors.
                assert!(
                    (f - w[v]).abs() < 5.0 * (w[v] * (1.0 - w[v]) / n as f64).sqrt() + 1e-12,
                    "{precision:?} {v}: {f}"
                );
            }
        }
    }

    /// The f64 draw is the inverse CDF of its one uniform: zero weights are never drawn, and an entry at odds
    /// 1e-12 against the rest wins exactly when U falls in its sliver (which no 32-bit race allows).
    #[test]
    fn f64_draw_is_the_inverse_cdf_of_one_uniform() {
        /// Returns the same 64 random bits every time.
        struct Fixed(u64);
        impl RngCore for Fixed {
            fn next_u32(&mut self) -> u32 {
                (self.0 >> 32) as u32
            }
            fn next_u64(&mut self) -> u64 {
                self.0
            }
            fn fill_bytes(&mut self, dst: &mut [u8]) {
                dst.iter_mut().for_each(|b| *b = 0);
            }
        }
        // U = ((bits >> 11) + 1)·2⁻⁵³.
        let bits_for = |u: f64| ((u * (1u64 << 53) as f64) as u64 - 1) << 11;
        let w = [0.0, 0.25, 0.0, 0.5, 0.25];
        assert_eq!(sample(&w, &mut Fixed(bits_for(0.1)), Precision::F64), 1);
        assert_eq!(sample(&w, &mut Fixed(bits_for(0.25)), Precision::F64), 1);
        assert_eq!(sample(&w, &mut Fixed(bits_for(0.5)), Precision::F64), 3);
        assert_eq!(sample(&w, &mut Fixed(bits_for(0.9)), Precision::F64), 4);
        assert_eq!(sample(&w, &mut Fixed(u64::MAX), Precision::F64), 4);
        let tiny = [1e-12, 1.0];
        assert_eq!(sample(&tiny, &mut Fixed(bits_for(0.5e-12)), Precision::F64), 0);
        assert_eq!(sample(&tiny, &mut Fixed(bits_for(2e-12)), Precision::F64), 1);
        // Unnormalised weights: the same draws at any scale.
        let mut g = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..200 {
            let v: Vec<f64> = (0..20).map(|_| g.random::<f64>()).collect();
            let scaled: Vec<f64> = v.iter().map(|x| x * 1024.0).collect();
            let bits = g.next_u64();
            assert_eq!(sample(&v, &mut Fixed(bits), Precision::F64), sample(&scaled, &mut Fixed(bits), Precision::F64));
        }
    }

    #[test]
    fn f32_noise_has_a_floor_and_f64_does_not() {
        // The smallest positive 32-bit noise value is about 6e-8 (U = 1 − 2⁻²⁴).
        let floor = exp_noise_f32(0x00FF_FFFF);
        assert!(floor > 5e-8 && floor < 7e-8, "{floor}");
        let mut max_bits = ChaCha8Rng::seed_from_u64(0);
        let min64 = (0..100_000).map(|_| exp_noise_f64(&mut max_bits)).fold(f64::INFINITY, f64::min);
        assert!(min64 > 0.0);
        // A token at odds 1e-12 against the leader can never win the 32-bit race: it would need E < 1e-12·E_0 ≤ 2.4e-11.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert!((0..50_000).all(|_| sample(&[1.0, 1e-12], &mut rng, Precision::F32) == 0));
    }

    #[test]
    fn truncation_keeps_the_head() {
        let t = Truncation { temperature: 1.0, top_k: Some(2), top_p: None };
        let mut p = vec![0.1, 0.4, 0.3, 0.2];
        t.truncate(&mut p);
        for (got, want) in p.iter().zip([0.0, 0.4 / 0.7, 0.3 / 0.7, 0.0]) {
            assert!((got - want).abs() < 1e-15, "{p:?}");
        }
        let t = Truncation { temperature: 1.0, top_k: None, top_p: Some(0.65) };
        let mut p = vec![0.1, 0.4, 0.3, 0.2];
        t.truncate(&mut p);
        assert!((p[1] - 0.4 / 0.7).abs() < 1e-12 && p[0] == 0.0 && p[3] == 0.0);
        assert!(
            Truncation { temperature: 0.0, ..Default::default() }
                .validate()
                .unwrap_err()
                .to_string()
                .contains("temperature")
        );
        assert!(
            Truncation { top_p: Some(1.5), ..Default::default() }.validate().unwrap_err().to_string().contains("top_p")
        );
    }

    #[test]
    fn softmax_handles_minus_infinity() {
        let mut out = [0.0; 3];
        softmax(&[0.0, f64::NEG_INFINITY, 0.0], &mut out);
        assert_eq!(out, [0.5, 0.0, 0.5]);
    }
}
