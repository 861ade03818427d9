//! IGSO(3), the isotropic Gaussian on SO(3): the law of Brownian motion on the rotation group after time `ε²`
//! (each tangent component has variance ≈ `ε²` while `ε` is small).
//!
//! Density with respect to the normalised Haar measure, by its truncated series (jasonkyuyim/se3_diffusion,
//! `data/so3_diffuser.py`):
//! `f(ω, ε) = Σ_l (2l + 1)·e^{−l(l+1)ε²/2}·sin((l + ½)ω)/sin(ω/2)`, where `ω ∈ [0, π]` is the rotation angle.
//! The angle itself has density `p(ω) = f(ω, ε)·(1 − cos ω)/π`. Because
//! `sin((l + ½)ω)·(1 − cos ω)/sin(ω/2) = cos(lω) − cos((l + 1)ω)`, its CDF has the closed series
//! `F(ω) = (1/π)·Σ_l (2l + 1)·e^{−l(l+1)ε²/2}·(sin(lω)/l − sin((l + 1)ω)/(l + 1))` (the `l = 0` term is
//! `ω − sin ω`), which this module uses for sampling by inverse CDF on a grid and for testing.
//! The score `∇ ln f` at a rotation with log `ω·â` is `(∂ ln f/∂ω)·â`.
//! The series is summed until its terms fall below `e^{−40}`, which takes `≈ 9/ε` terms.

use nalgebra::{Rotation3, Unit, Vector3};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};
use crate::so3;

/// Smallest supported `ε` (the series then needs ≈ 9 000 terms).
pub const MIN_EPS: f64 = 1e-3;

/// Number of grid nodes of the inverse-CDF table.
const GRID: usize = 2048;

/// The isotropic Gaussian IGSO(3) with concentration `ε` (its truncated series and an inverse-CDF table).
#[derive(Debug, Clone)]
pub struct Igso3 {
    eps: f64,
    /// `(2l + 1)·e^{−l(l+1)ε²/2}` for `l = 0 ..= L`.
    weights: Vec<f64>,
    /// Angles of the inverse-CDF table, uniform on `[0, ω_max]`.
    grid: Vec<f64>,
    /// `F` at the grid angles, non-decreasing, ending at 1.
    cdf_table: Vec<f64>,
}

impl Igso3 {
    /// IGSO(3) with concentration `eps ≥ MIN_EPS` (finite).
    pub fn new(eps: f64) -> Result<Self> {
        if !eps.is_finite() || eps < MIN_EPS {
            return Err(Error::invalid("IGSO(3) eps", format!("{eps} must be finite and at least {MIN_EPS}")));
        }
        let e2 = eps * eps;
        let mut weights = Vec::new();
        for l in 0.. {
            let lf = l as f64;
            let decay = -lf * (lf + 1.0) * e2 / 2.0;
            if decay < -40.0 && l > 2 {
                break;
            }
            weights.push((2.0 * lf + 1.0) * decay.exp());
        }
        let mut dist = Igso3 { eps, weights, grid: Vec::new(), cdf_table: Vec::new() };
        // Beyond ~12 ε (small ε) the mass is below e^{-70}; a grid on that range resolves narrow laws.
        let omega_max = (12.0 * eps).min(std::f64::consts::PI);
        dist.grid = (0..GRID).map(|i| omega_max * i as f64 / (GRID - 1) as f64).collect();
        let mut running = 0.0f64;
        let mut table: Vec<f64> = dist
            .grid
            .iter()
            .map(|&w| {
                running = running.max(dist.cdf(w).clamp(0.0, 1.0));
                running
            })
            .collect();
        let total = *table.last().unwrap_or(&1.0);
        if total <= 0.0 {
            return Err(Error::Numerical { op: "IGSO(3) table", reason: format!("CDF total {total} at eps {eps}") });
        }
        table.iter_mut().for_each(|c| *c /= total);
        dist.cdf_table = table;
        Ok(dist)
    }

    /// The concentration `ε`.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Number of series terms used (`L + 1`).
    pub fn terms(&self) -> usize {
        self.weights.len()
    }

    /// The density `f(ω, ε)` with respect to the normalised Haar measure, at rotation angle `ω ∈ [0, π]`.
    pub fn density(&self, omega: f64) -> f64 {
        let omega = omega.abs();
        let half = 0.5 * omega;
        let s = half.sin();
        let small = omega * self.weights.len() as f64 <= 1e-3;
        let f: f64 = self
            .weights
            .iter()
            .enumerate()
            .map(|(l, w)| {
                let lf = l as f64;
                let chi = if small {
                    // χ_l(ω) = 1 + 2Σ_{k≤l} cos kω ≈ (2l + 1) − ω²·l(l+1)(2l+1)/6.
                    (2.0 * lf + 1.0) * (1.0 - omega * omega * lf * (lf + 1.0) / 6.0)
                } else {
                    ((lf + 0.5) * omega).sin() / s
                };
                w * chi
            })
            .sum();
        f.max(0.0)
    }

    /// The density of the rotation angle, `f(ω, ε)·(1 − cos ω)/π` on `[0, π]`.
    pub fn angle_density(&self, omega: f64) -> f64 {
        self.density(omega) * (1.0 - omega.cos()) / std::f64::consts::PI
    }

    /// The CDF of the rotation angle, `P(θ ≤ ω)`, by its closed series.
    pub fn cdf(&self, omega: f64) -> f64 {
        let omega = omega.clamp(0.0, std::f64::consts::PI);
        let mut sum = omega - omega.sin();
        for (l, w) in self.weights.iter().enumerate().skip(1) {
            let lf = l as f64;
            sum += w * ((lf * omega).sin() / lf - ((lf + 1.0) * omega).sin() / (lf + 1.0));
        }
        sum / std::f64::consts::PI
    }

    /// `∂ ln f/∂ω` at angle `ω`: the magnitude of the score along the rotation axis (≤ 0 for concentrated laws).
    pub fn score_angle(&self, omega: f64) -> f64 {
        let omega = omega.abs();
        let f = self.density(omega);
        if f <= 0.0 {
            return 0.0;
        }
        let half = 0.5 * omega;
        let (s, c) = half.sin_cos();
        let small = omega * self.weights.len() as f64 <= 1e-3;
        let df: f64 = self
            .weights
            .iter()
            .enumerate()
            .map(|(l, w)| {
                let lf = l as f64;
                let dchi = if small {
                    -omega * lf * (lf + 1.0) * (2.0 * lf + 1.0) / 3.0
                } else {
                    let a = (lf + 0.5) * omega;
                    ((lf + 0.5) * a.cos() * s - 0.5 * a.sin() * c) / (s * s)
                };
                w * dchi
            })
            .sum();
        df / f
    }

    /// The score `∇ ln f` at rotation `r`, as a tangent vector (`(∂ ln f/∂ω)·axis`).
    pub fn score(&self, r: &Rotation3<f64>) -> Vector3<f64> {
        let w = so3::log(r);
        let theta = w.norm();
        if theta == 0.0 {
            return Vector3::zeros();
        }
        w * (self.score_angle(theta) / theta)
    }

    /// Draws a rotation angle by inverting the tabulated CDF (linear between grid nodes).
    pub fn sample_angle<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let u: f64 = rng.random();
        let i = self.cdf_table.partition_point(|&c| c < u).clamp(1, GRID - 1);
        let (c0, c1) = (self.cdf_table[i - 1], self.cdf_table[i]);
        let frac = if c1 > c0 { (u - c0) / (c1 - c0) } else { 0.5 };
        self.grid[i - 1] + frac.clamp(0.0, 1.0) * (self.grid[i] - self.grid[i - 1])
    }

    /// Draws a rotation: a uniform axis and an angle from [`Igso3::sample_angle`].
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Rotation3<f64> {
        let axis = loop {
            let v = Vector3::from_fn(|_, _| -> f64 { StandardNormal.sample(rng) });
            if let Some(a) = Unit::try_new(v, 1e-9) {
                break a;
            }
        };
        so3::exp(&(axis.into_inner() * self.sample_angle(rng)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::f64::consts::PI;

    /// Kolmogorov–Smirnov statistic of `samples` against the CDF `f`.
    fn ks(mut samples: Vec<f64>, f: impl Fn(f64) -> f64) -> f64 {
        samples.sort_by(f64::total_cmp);
        let n = samples.len() as f64;
        samples
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let c = f(x);
                (c - i as f64 / n).abs().max(((i + 1) as f64 / n - c).abs())
            })
            .fold(0.0, f64::max)
    }

    /// KS critical value at α = 0.001.
    fn ks_critical(n: usize) -> f64 {
        1.95 / (n as f64).sqrt()
    }

    #[test]
    fn rejects_bad_eps() {
        for eps in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-4] {
            assert!(Igso3::new(eps).is_err(), "{eps}");
        }
    }

    #[test]
    fn angle_density_integrates_to_one_and_is_the_cdf_derivative() {
        for eps in [0.05, 0.2, 0.7, 1.5] {
            let d = Igso3::new(eps).unwrap();
            // Composite Simpson on [0, π] with 4000 intervals: the density formula alone.
            let n = 4000;
            let h = PI / n as f64;
            let integral: f64 = (0..=n)
                .map(|i| {
                    let w = if i == 0 || i == n {
                        1.0
                    } else if i % 2 == 1 {
                        4.0
                    } else {
                        2.0
                    };
                    w * d.angle_density(i as f64 * h)
                })
                .sum::<f64>()
                * h
                / 3.0;
            assert_relative_eq!(integral, 1.0, epsilon = 1e-6);
            assert_relative_eq!(d.cdf(PI), 1.0, epsilon = 1e-12);
            assert_relative_eq!(d.cdf(0.0), 0.0, epsilon = 1e-15);
            for &w in &[0.3 * eps, eps, 2.0 * eps, 3.0] {
                let w = w.min(3.1);
                let num = (d.cdf(w + 1e-6) - d.cdf(w - 1e-6)) / 2e-6;
                assert_relative_eq!(num, d.angle_density(w), epsilon = 1e-6, max_relative = 1e-5);
            }
        }
    }

    #[test]
    fn large_eps_is_the_uniform_law() {
        let d = Igso3::new(6.0).unwrap();
        for w in [0.3, 1.0, 2.0, 3.0] {
            assert_relative_eq!(d.cdf(w), (w - w.sin()) / PI, epsilon = 1e-10);
            assert_relative_eq!(d.density(w), 1.0, epsilon = 1e-10);
        }
    }

    #[test]
    fn samples_match_the_density_ks() {
        for (k, eps) in [0.02, 0.1, 0.4, 1.0, 2.5].into_iter().enumerate() {
            let d = Igso3::new(eps).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(10 + k as u64);
            let n = 4000;
            let angles: Vec<f64> = (0..n).map(|_| so3::angle(&d.sample(&mut rng))).collect();
            let stat = ks(angles, |w| d.cdf(w));
            assert!(stat < ks_critical(n), "eps {eps}: KS {stat}");
        }
    }

    #[test]
    fn small_eps_is_a_tangent_gaussian_with_variance_eps_squared() {
        // E|ω|² = 3ε² to leading order (three tangent components of variance ε²).
        let eps = 0.02;
        let d = Igso3::new(eps).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let n = 20000;
        let m2 = (0..n).map(|_| d.sample_angle(&mut rng).powi(2)).sum::<f64>() / n as f64;
        // Standard error of the mean of a scaled χ²₃ is ε²·√(6/n) ≈ 0.017·ε²·3.
        assert_relative_eq!(m2 / (3.0 * eps * eps), 1.0, epsilon = 0.03);
    }

    #[test]
    fn brownian_motion_on_so3_has_the_igso3_angle_law() {
        // An independent check of the series and of what ε means: compose many small Gaussian steps.
        let eps: f64 = 0.6;
        let steps = 64;
        let step_sd = eps / (steps as f64).sqrt();
        let d = Igso3::new(eps).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 3000;
        let angles: Vec<f64> = (0..n)
            .map(|_| {
                let mut r = Rotation3::identity();
                for _ in 0..steps {
                    let z = Vector3::from_fn(|_, _| -> f64 { StandardNormal.sample(&mut rng) }) * step_sd;
                    r = so3::exp(&z) * r;
                }
                so3::angle(&r)
            })
            .collect();
        let stat = ks(angles, |w| d.cdf(w));
        assert!(stat < ks_critical(n), "KS {stat}");
    }

    #[test]
    fn score_matches_finite_differences_of_the_log_density() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for eps in [0.1, 0.5, 1.2] {
            let d = Igso3::new(eps).unwrap();
            for _ in 0..20 {
                let r = d.sample(&mut rng);
                let score = d.score(&r);
                for i in 0..3 {
                    let mut e = Vector3::zeros();
                    e[i] = 1e-6;
                    let lp = |q: &Rotation3<f64>| d.density(so3::angle(q)).ln();
                    let num = (lp(&(so3::exp(&e) * r)) - lp(&(so3::exp(&-e) * r))) / 2e-6;
                    assert_relative_eq!(num, score[i], epsilon = 1e-5, max_relative = 1e-5);
                }
            }
        }
    }

    #[test]
    fn density_and_score_are_continuous_at_zero_angle() {
        let d = Igso3::new(0.3).unwrap();
        assert_relative_eq!(d.density(0.0), d.density(1e-4), max_relative = 1e-5);
        assert!(d.score_angle(0.0).abs() < 1e-12);
        assert_relative_eq!(d.score_angle(1e-7) / 1e-7, d.score_angle(1e-3) / 1e-3, max_relative = 1e-4);
        assert_eq!(d.score(&Rotation3::identity()), Vector3::zeros());
    }
}
