//! DEIS tAB (Zhang & Chen 2023): a multistep exponential integrator on ε̂ extrapolated in t.

use std::collections::VecDeque;

use tch::Tensor;

use super::common::{integrate, weighted_sum};
use super::driver::{FinalPrediction, Interval, Stepper, Stepping, cached};
use super::multistep::{LowerOrderFinal, Warmup, multistep_orders};
use super::run::Run;
use super::singlestep::{Form, singlestep_update};
use super::{Solver, SolverInfo};
use crate::path::Point;
use crate::{Error, Result};

/// DEIS tAB (Zhang & Chen 2023): exponential integrator on the noise prediction, which is extrapolated by a
/// Lagrange polynomial in t through the last `order` values: `x̃_t = α_t·(x̃_s/α_s + Σ_j C_j·ε̂_j)`,
/// `C_j = ∫_s^t (d(σ/α)/dτ)·ℓ_j(τ) dτ` (Gauss–Legendre after integrating by parts). Needs α > 0.
#[derive(Debug, Clone)]
pub struct DeisTab {
    order: u32,
    lower_order_final: LowerOrderFinal,
    warmup: Warmup,
}

impl DeisTab {
    /// DEIS tAB using `order` (1–3) noise predictions per step; order 1 is DDIM.
    pub fn new(order: u32, lower_order_final: LowerOrderFinal) -> Self {
        DeisTab { order: order.clamp(1, 3), lower_order_final, warmup: Warmup::LowerOrder }
    }

    /// The same solver with another warm-up policy.
    pub fn with_warmup(mut self, warmup: Warmup) -> Self {
        self.warmup = warmup;
        self
    }
}

/// `∫_a^b σ̄'(τ)·ℓ_j(τ) dτ` for the Lagrange basis through `nodes`, as `[σ̄ℓ_j]_a^b − ∫ σ̄·ℓ_j'`.
fn deis_coefficients(run: &Run<'_>, nodes: &[f64], a: f64, b: f64) -> Vec<f64> {
    let path = run.path();
    let sbar = |t: f64| path.sigma(t) / path.alpha(t);
    let ell = |j: usize, tau: f64| -> f64 {
        nodes.iter().enumerate().filter(|(k, _)| *k != j).map(|(_, &tk)| (tau - tk) / (nodes[j] - tk)).product()
    };
    let dell = |j: usize, tau: f64| -> f64 {
        // Derivative of the product: Σ_m Π_{k≠j,m} (τ − t_k)/(t_j − t_k) · 1/(t_j − t_m).
        let mut total = 0.0;
        for (m, &tm) in nodes.iter().enumerate() {
            if m == j {
                continue;
            }
            let mut prod = 1.0 / (nodes[j] - tm);
            for (k, &tk) in nodes.iter().enumerate() {
                if k != j && k != m {
                    prod *= (tau - tk) / (nodes[j] - tk);
                }
            }
            total += prod;
        }
        total
    };
    (0..nodes.len())
        .map(|j| {
            let boundary = sbar(b) * ell(j, b) - sbar(a) * ell(j, a);
            if nodes.len() == 1 {
                return boundary;
            }
            boundary - integrate(|tau| sbar(tau) * dell(j, tau), a, b, 8)
        })
        .collect()
}

impl Solver for DeisTab {
    fn info(&self) -> SolverInfo {
        SolverInfo::deterministic(
            &format!("deis-{}", self.order),
            "DEIS tAB: exponential integrator with Lagrange extrapolation of ε̂ in t (Zhang & Chen 2023)",
            self.order,
        )
    }

    fn plan_steps(&self, steps: usize, to_data: bool) -> Result<Vec<u32>> {
        Ok(multistep_orders(self.order, steps, to_data, self.lower_order_final))
    }

    fn cost(&self, index: usize, _order: u32, to_data: bool) -> usize {
        match self.warmup.starter(self.order) {
            Some(k) if index == 0 && !to_data => k as usize,
            _ => 1,
        }
    }

    fn stepper<'s>(&'s self, _run: &Run<'_>, grid: &[Point], _orders: &[u32]) -> Result<Stepping<'s>> {
        if grid[0].alpha <= 0.0 {
            return Err(Error::invalid(
                "solver",
                "deis needs α > 0 at the start; start lower (t_start) or use a data-form solver (ddim, dpm++2m, unipc)",
            ));
        }
        Ok(Stepping::Fixed(Box::new(DeisStepper { solver: self, e_cur: None, hist: VecDeque::new() })))
    }
}

/// A DEIS run: the noise prediction at the current point and the earlier ones with their times (newest first).
struct DeisStepper<'s> {
    solver: &'s DeisTab,
    e_cur: Option<Tensor>,
    hist: VecDeque<(f64, Tensor)>,
}

impl DeisStepper<'_> {
    fn current(&mut self, run: &mut Run<'_>, x: &Tensor, s: &Point) -> Result<Tensor> {
        cached(&mut self.e_cur, || run.eps(x, s))
    }
}

impl Stepper for DeisStepper<'_> {
    fn step(&mut self, run: &mut Run<'_>, x: &Tensor, iv: &Interval) -> Result<Tensor> {
        let (s, t) = (&iv.s, &iv.t);
        let e_cur = self.current(run, x, s)?;
        let x_new = if let Some(order) = self.solver.warmup.starter(self.solver.order).filter(|_| iv.index == 0) {
            singlestep_update(run, Form::Noise, x, s, t, &e_cur, order, if order == 2 { 0.5 } else { 1.0 / 3.0 })?.0
        } else {
            let k = iv.order.min(self.hist.len() as u32 + 1) as usize;
            let mut nodes = vec![s.t];
            nodes.extend(self.hist.iter().take(k - 1).map(|(tp, _)| *tp));
            let coeffs = deis_coefficients(run, &nodes, s.t, t.t);
            let mut terms: Vec<(f64, &Tensor)> = vec![(t.alpha / s.alpha, x), (t.alpha * coeffs[0], &e_cur)];
            for (c, (_, e)) in coeffs[1..].iter().zip(self.hist.iter()) {
                terms.push((t.alpha * c, e));
            }
            weighted_sum(&terms)?
        };
        if !iv.is_last() && !t.is_data() {
            let e_t = run.eps(&x_new, t)?;
            self.hist.push_front((s.t, e_cur));
            self.hist.truncate(self.solver.order as usize);
            self.e_cur = Some(e_t);
        }
        Ok(x_new)
    }

    fn final_prediction(&mut self, run: &mut Run<'_>, x: &Tensor, s: &Point) -> Result<FinalPrediction> {
        Ok(FinalPrediction::Noise(self.current(run, x, s)?))
    }
}
