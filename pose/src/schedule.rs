//! The discrete cosine DDPM schedule of the SE(3) reverse process and its posterior weights.
//!
//! The βs come from diffuse-core (`BetaSchedule::SquaredCosCapV2`): `ᾱ(t) = f(t)/f(0)`,
//! `f(t) = cos²(((t + s)/(1 + s))·π/2)`, `s = 0.008` (Nichol & Dhariwal 2021), sampled at `t = i/T`;
//! `β_i = min(1 − ᾱ(i/T)/ᾱ((i−1)/T), 0.999)` and `ᾱ_i = Π_{j≤i}(1 − β_j)`, `ᾱ_0 = 1`.
//! The DDPM posterior `q(x_{i−1} | x_i, x_0)` has mean `γ0·x_0 + γ1·x_i` with
//! `γ0 = β_i·√ᾱ_{i−1}/(1 − ᾱ_i)`, `γ1 = (1 − ᾱ_{i−1})·√α_i/(1 − ᾱ_i)` and variance
//! `β̃_i = (1 − ᾱ_{i−1})/(1 − ᾱ_i)·β_i`.

use diffuse_core::path::BetaSchedule;

use crate::error::{Error, Result};

/// `ᾱ(t) = f(t)/f(0)` of the cosine schedule for `t ∈ [0, 1]` (for reference and tests; the table takes its βs
/// from diffuse-core's `BetaSchedule::SquaredCosCapV2`).
pub fn cosine_alpha_bar(t: f64) -> f64 {
    let f = |t: f64| (((t + 0.008) / 1.008) * std::f64::consts::FRAC_PI_2).cos().powi(2);
    f(t.clamp(0.0, 1.0)) / f(0.0)
}

/// A discrete DDPM table of `T` steps: `ᾱ_i` for `i = 0 ..= T` and `β_i` for `i = 1 ..= T`.
#[derive(Debug, Clone, PartialEq)]
pub struct DdpmTable {
    alpha_bar: Vec<f64>,
    beta: Vec<f64>,
}

impl DdpmTable {
    /// The cosine schedule with `steps ≥ 1` steps.
    pub fn cosine(steps: usize) -> Result<Self> {
        if steps == 0 {
            return Err(Error::invalid("steps", "the reverse process needs at least one step"));
        }
        let mut alpha_bar = vec![1.0];
        let mut beta = vec![0.0];
        for (i, b) in BetaSchedule::SquaredCosCapV2.betas(steps).into_iter().enumerate() {
            beta.push(b);
            alpha_bar.push(alpha_bar[i] * (1.0 - b));
        }
        Ok(DdpmTable { alpha_bar, beta })
    }

    /// Number of steps `T`.
    pub fn steps(&self) -> usize {
        self.beta.len() - 1
    }

    /// `ᾱ_i` (`ᾱ_0 = 1`).
    pub fn alpha_bar(&self, i: usize) -> f64 {
        self.alpha_bar[i]
    }

    /// `β_i` for `i ≥ 1`.
    pub fn beta(&self, i: usize) -> f64 {
        self.beta[i]
    }

    /// The posterior-mean weights `(γ0, γ1)` of step `i ≥ 1`: `E[x_{i−1} | x_i, x_0] = γ0·x_0 + γ1·x_i`.
    pub fn posterior_weights(&self, i: usize) -> (f64, f64) {
        let (ab, ab_prev, b) = (self.alpha_bar[i], self.alpha_bar[i - 1], self.beta[i]);
        let g0 = b * ab_prev.sqrt() / (1.0 - ab);
        let g1 = (1.0 - ab_prev) * (1.0 - b).sqrt() / (1.0 - ab);
        (g0, g1)
    }

    /// The posterior variance `β̃_i` of step `i ≥ 1` (zero at `i = 1`).
    pub fn posterior_variance(&self, i: usize) -> f64 {
        (1.0 - self.alpha_bar[i - 1]) / (1.0 - self.alpha_bar[i]) * self.beta[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn cosine_values_match_the_formula() {
        assert_relative_eq!(cosine_alpha_bar(0.0), 1.0);
        // f(0.5)/f(0) with s = 0.008, computed by hand: cos²(0.508/1.008·π/2)/cos²(0.008/1.008·π/2).
        let want = (0.508f64 / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2)
            / (0.008f64 / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
        assert_relative_eq!(cosine_alpha_bar(0.5), want, epsilon = 1e-15);
        assert!(cosine_alpha_bar(1.0) < 1e-8);
    }

    #[test]
    fn table_is_monotone_and_clipped() {
        for steps in [1, 5, 200] {
            let t = DdpmTable::cosine(steps).unwrap();
            assert_eq!(t.steps(), steps);
            for i in 1..=steps {
                assert!(t.alpha_bar(i) < t.alpha_bar(i - 1));
                assert!(t.beta(i) > 0.0 && t.beta(i) <= 0.999);
                // β_i = 1 − ᾱ(i/T)/ᾱ((i−1)/T), clipped at 0.999 (the last step of the cosine schedule).
                let want = (1.0
                    - cosine_alpha_bar(i as f64 / steps as f64) / cosine_alpha_bar((i - 1) as f64 / steps as f64))
                .min(0.999);
                assert_relative_eq!(t.beta(i), want, epsilon = 1e-12);
            }
        }
        assert!(DdpmTable::cosine(0).is_err());
    }

    #[test]
    fn posterior_identities_hold() {
        let t = DdpmTable::cosine(5).unwrap();
        for i in 1..=5 {
            let (g0, g1) = t.posterior_weights(i);
            // A noise-free x_i = √ᾱ_i·x_0 maps to the noise-free x_{i−1} = √ᾱ_{i−1}·x_0.
            assert_relative_eq!(g0 + g1 * t.alpha_bar(i).sqrt(), t.alpha_bar(i - 1).sqrt(), epsilon = 1e-12);
            // Law of total variance given x_0: Var(x_{i−1}) = γ1²·Var(x_i) + β̃_i.
            assert_relative_eq!(
                g1 * g1 * (1.0 - t.alpha_bar(i)) + t.posterior_variance(i),
                1.0 - t.alpha_bar(i - 1),
                epsilon = 1e-12
            );
        }
        // The last reverse step returns the clean estimate exactly, without noise.
        assert_relative_eq!(t.posterior_weights(1).0, 1.0, epsilon = 1e-12);
        assert_relative_eq!(t.posterior_weights(1).1, 0.0, epsilon = 1e-12);
        assert_eq!(t.posterior_variance(1), 0.0);
    }
}
