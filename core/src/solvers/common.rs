//! Helpers shared by the solvers: exponential-integrator coefficients that stay finite at α = 0 or σ = 0,
//! the first-order step, small linear solves and Gauss–Legendre quadrature.

use tch::Tensor;

use crate::param::lin2;
use crate::path::Point;
use crate::{Error, Result};

/// `h = λ_t − λ_s` (∞ when s has α = 0 or t is the data).
pub fn step_h(s: &Point, t: &Point) -> f64 {
    t.lambda() - s.lambda()
}

/// Coefficients of the data-form first-order step `x̃_t = a·x̃_s + b·x̂0` (DDIM = DPM-Solver-1):
/// `a = σ_t/σ_s`, `b = α_t(1 − e^{−h}) = α_t − α_s·σ_t/σ_s`, finite at every end case: a bridge start
/// (σ_s = 0, where x̃_s = 0), an α = 0 start and the data (σ_t = 0).
pub fn data_step_coeffs(s: &Point, t: &Point) -> (f64, f64) {
    if s.sigma == 0.0 || t.sigma == 0.0 {
        return (0.0, t.alpha);
    }
    let a = t.sigma / s.sigma;
    let h = step_h(s, t);
    let b = if h.is_finite() { -t.alpha * (-h).exp_m1() } else { t.alpha - s.alpha * a };
    (a, b)
}

/// The first-order data-form step.
pub fn data_step(x: &Tensor, x0: &Tensor, s: &Point, t: &Point) -> Result<Tensor> {
    let (a, b) = data_step_coeffs(s, t);
    lin2(a, x, b, x0)
}

/// The first-order step from both predictions: `x̃_t = α_t·x̂0 + σ_t·ε̂` (equal to [`data_step`] when ε̂ is
/// derived from x̃; with a model predicting both, as RDDM's SM-Res-N, it uses both).
pub fn both_step(x0: &Tensor, eps: &Tensor, t: &Point) -> Result<Tensor> {
    lin2(t.alpha, x0, t.sigma, eps)
}

/// Whether an interval can use history or higher-order stages: both λ finite.
pub fn regular(s: &Point, t: &Point) -> bool {
    s.lambda().is_finite() && t.lambda().is_finite()
}

/// Solves `A·x = b` (small, dense) by Gaussian elimination with partial pivoting.
pub fn solve_linear(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .ok_or_else(|| Error::Numerical { op: "linear solve", reason: "empty system".into() })?;
        if a[piv][col].abs() < 1e-300 {
            return Err(Error::Numerical { op: "linear solve", reason: "singular matrix (repeated steps?)".into() });
        }
        a.swap(col, piv);
        b.swap(col, piv);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            for k in col..n {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Ok(x)
}

/// `Σ c_k·v_k` over tensors (skipping zero weights) in one scaled copy plus one fused multiply-add per further
/// term: solvers collect their coefficients first and combine the tensors once.
pub fn weighted_sum(terms: &[(f64, &Tensor)]) -> Result<Tensor> {
    let live: Vec<&(f64, &Tensor)> = terms.iter().filter(|(c, _)| *c != 0.0).collect();
    match live.as_slice() {
        [] => Ok(match terms.first() {
            Some((_, v)) => v.f_zeros_like()?,
            None => Tensor::from(0.0),
        }),
        [(c, v)] => Ok(v.f_mul_scalar(*c)?),
        [(a, x), (b, y)] => lin2(*a, x, *b, y),
        [(c0, v0), rest @ ..] => {
            let mut out = v0.f_mul_scalar(*c0)?;
            for (c, v) in rest {
                let _ = out.f_addcmul_(v, &Tensor::f_scalar_tensor(*c, (v.kind(), v.device()))?)?;
            }
            Ok(out)
        }
    }
}

/// 8-point Gauss–Legendre nodes on [−1, 1] (positive half; the rule is symmetric).
const GL8_X: [f64; 4] =
    [0.183_434_642_495_649_8, 0.525_532_409_916_329, 0.796_666_477_413_626_7, 0.960_289_856_497_536_3];
const GL8_W: [f64; 4] =
    [0.362_683_783_378_362, 0.313_706_645_877_887_3, 0.222_381_034_453_374_5, 0.101_228_536_290_376_3];

/// `∫_a^b f` by composite 8-point Gauss–Legendre on `panels` panels (exact for polynomials of degree ≤ 15).
pub fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64, panels: usize) -> f64 {
    let w = (b - a) / panels as f64;
    let mut total = 0.0;
    for p in 0..panels {
        let mid = a + (p as f64 + 0.5) * w;
        let half = 0.5 * w;
        for (x, wt) in GL8_X.iter().zip(GL8_W) {
            total += wt * half * (f(mid - half * x) + f(mid + half * x));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_is_exact_for_degree_15() {
        let v = integrate(|x| x.powi(15) + 3.0 * x.powi(4), 0.0, 2.0, 1);
        let exact = 2f64.powi(16) / 16.0 + 3.0 * 2f64.powi(5) / 5.0;
        assert!((v - exact).abs() < 1e-9 * exact);
        assert!((integrate(f64::exp, 0.0, 1.0, 2) - (1f64.exp() - 1.0)).abs() < 1e-15);
    }

    #[test]
    fn linear_solve() {
        let x = solve_linear(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-14 && (x[1] - 1.4).abs() < 1e-14);
        assert!(solve_linear(vec![vec![1.0, 1.0], vec![1.0, 1.0]], vec![1.0, 2.0]).is_err());
    }

    #[test]
    fn first_order_coefficients_stay_finite_at_the_ends() {
        let s = Point { t: 1.0, alpha: 0.0, sigma: 1.0, gamma: 0.0 };
        let t = Point { t: 0.5, alpha: 0.5, sigma: 0.5, gamma: 0.0 };
        assert_eq!(data_step_coeffs(&s, &t), (0.5, 0.5));
        assert_eq!(data_step_coeffs(&t, &Point::DATA), (0.0, 1.0));
        let bridge = Point { t: 1.0, alpha: 0.0, sigma: 0.0, gamma: 1.0 };
        assert_eq!(data_step_coeffs(&bridge, &t), (0.0, 0.5));
        // Regular case: b = α_t − α_s σ_t/σ_s.
        let u = Point { t: 0.2, alpha: 0.9, sigma: 0.3, gamma: 0.0 };
        let (a, b) = data_step_coeffs(&t, &u);
        assert!((a - 0.6).abs() < 1e-15 && (b - (0.9 - 0.5 * 0.6)).abs() < 1e-15);
    }
}
