//! Singlestep DPM-Solver (noise form) and DPM-Solver++ (data form) of orders 1–3 with the "fast" order split
//! for a given NFE, and the adaptive DPM-Solver-12/23 (Lu et al. 2022, Algorithms 1–2 and 4).

use tch::Tensor;

use super::common::{data_step, regular, step_h, weighted_sum};
use super::driver::{AdaptiveStepper, FinalPrediction, Interval, StepControl, Stepper, Stepping, cached};
use super::run::Run;
use super::{Solver, SolverInfo};
use crate::param::lin2;
use crate::path::Point;
use crate::{Error, Result};

/// Which prediction the update formulas integrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// On ε̂ (DPM-Solver).
    Noise,
    /// On x̂0 (DPM-Solver++).
    Data,
}

/// dpm-solver's "fast" split of `nfe` evaluations into singlestep orders (`get_orders_and_timesteps_for_singlestep_solver`).
pub fn fast_orders(nfe: usize, order: u32) -> Vec<u32> {
    match order {
        3 => {
            let k = nfe / 3 + 1;
            match nfe % 3 {
                0 => [vec![3; k.saturating_sub(2)], vec![2, 1]].concat(),
                1 => [vec![3; k - 1], vec![1]].concat(),
                _ => [vec![3; k - 1], vec![2]].concat(),
            }
        }
        2 => {
            if nfe.is_multiple_of(2) {
                vec![2; nfe / 2]
            } else {
                [vec![2; nfe / 2], vec![1]].concat()
            }
        }
        _ => vec![1; nfe],
    }
}

/// Singlestep DPM-Solver / DPM-Solver++ of order ≤ 3.
#[derive(Debug, Clone)]
pub struct Singlestep {
    form: Form,
    order: u32,
}

impl Singlestep {
    /// Singlestep solver of `order` (1–3) in the given form.
    pub fn new(form: Form, order: u32) -> Self {
        Singlestep { form, order: order.clamp(1, 3) }
    }
}

/// One singlestep update of order 2 (r1 = ½) or 3 (r1 = ⅓, r2 = ⅔) from s to t; `m_s` is the model output at s
/// (ε̂ or x̂0 by `form`). Returns the new state and the model outputs at the intermediate points.
pub(crate) fn singlestep_update(
    run: &mut Run<'_>,
    form: Form,
    x: &Tensor,
    s: &Point,
    t: &Point,
    m_s: &Tensor,
    order: u32,
    r1: f64,
) -> Result<(Tensor, Vec<Tensor>)> {
    let h = step_h(s, t);
    let lam_s = s.lambda();
    let eval = |run: &mut Run<'_>, x: &Tensor, p: &Point| -> Result<Tensor> {
        match form {
            Form::Noise => run.eps(x, p),
            Form::Data => run.data(x, p),
        }
    };
    // The first-order move from s to an inner point p, and the coefficient φ(p) = e^{±r h} − 1 etc.
    let first = |p: &Point, rh: f64| -> (f64, f64) {
        match form {
            Form::Noise => (p.alpha / s.alpha, -p.sigma * rh.exp_m1()),
            Form::Data => (p.sigma / s.sigma, -p.alpha * (-rh).exp_m1()),
        }
    };
    match order {
        2 => {
            let s1 = run.point_at_lambda(lam_s + r1 * h);
            let (a1, b1) = first(&s1, r1 * h);
            let u = lin2(a1, x, b1, m_s)?;
            let m_s1 = eval(run, &u, &s1)?;
            let (a, b) = first(t, h);
            // Noise: x_t = (α_t/α_s)x − σ_t(e^h − 1)ε_s − σ_t/(2r1)(e^h − 1)(ε_s1 − ε_s); data form mirrors it.
            let d = lin2(1.0, &m_s1, -1.0, m_s)?;
            let x_t = weighted_sum(&[(a, x), (b, m_s), (b / (2.0 * r1), &d)])?;
            Ok((x_t, vec![m_s1]))
        }
        3 => {
            let (r1, r2) = (r1, 2.0 / 3.0);
            let s1 = run.point_at_lambda(lam_s + r1 * h);
            let s2 = run.point_at_lambda(lam_s + r2 * h);
            let (a1, b1) = first(&s1, r1 * h);
            let x_s1 = lin2(a1, x, b1, m_s)?;
            let m_s1 = eval(run, &x_s1, &s1)?;
            let (a2, b2) = first(&s2, r2 * h);
            // φ22 = (e^{±r2 h} − 1)/(±r2 h) ∓ 1 and φ2 = (e^{±h} − 1)/(±h) ∓ 1 (noise: upper signs).
            let (phi22, phi2, sign) = match form {
                Form::Noise => ((r2 * h).exp_m1() / (r2 * h) - 1.0, h.exp_m1() / h - 1.0, -1.0),
                Form::Data => ((-r2 * h).exp_m1() / (r2 * h) + 1.0, (-h).exp_m1() / h + 1.0, 1.0),
            };
            let scale2 = match form {
                Form::Noise => s2.sigma,
                Form::Data => s2.alpha,
            };
            let d1 = lin2(1.0, &m_s1, -1.0, m_s)?;
            let x_s2 = weighted_sum(&[(a2, x), (b2, m_s), (sign * r2 / r1 * scale2 * phi22, &d1)])?;
            let m_s2 = eval(run, &x_s2, &s2)?;
            let (a, b) = first(t, h);
            let scale_t = match form {
                Form::Noise => t.sigma,
                Form::Data => t.alpha,
            };
            let d2 = lin2(1.0, &m_s2, -1.0, m_s)?;
            let x_t = weighted_sum(&[(a, x), (b, m_s), (sign / r2 * scale_t * phi2, &d2)])?;
            Ok((x_t, vec![m_s1, m_s2]))
        }
        _ => Err(Error::invalid("order", format!("singlestep update of order {order}"))),
    }
}

/// The first-order update from s to t given the model output at s.
pub(crate) fn first_update(form: Form, x: &Tensor, s: &Point, t: &Point, m_s: &Tensor) -> Result<Tensor> {
    match form {
        Form::Data => data_step(x, m_s, s, t),
        Form::Noise => {
            if t.is_data() {
                return lin2(1.0 / s.alpha, x, -s.sigma / s.alpha, m_s);
            }
            lin2(t.alpha / s.alpha, x, -t.sigma * step_h(s, t).exp_m1(), m_s)
        }
    }
}

impl Solver for Singlestep {
    fn info(&self) -> SolverInfo {
        let (name, description) = match self.form {
            Form::Noise => (
                format!("dpm-solver-{}", self.order),
                "singlestep DPM-Solver on ε̂ with the fast order split for the NFE (Lu et al. 2022)",
            ),
            Form::Data => {
                (format!("dpm++{}s", self.order), "singlestep DPM-Solver++ on x̂0 with the fast order split for the NFE")
            }
        };
        SolverInfo::deterministic(&name, description, self.order)
    }

    fn plan_steps(&self, steps: usize, to_data: bool) -> Result<Vec<u32>> {
        let mut orders = vec![self.order; steps];
        if to_data {
            orders[steps - 1] = 1;
        }
        Ok(orders)
    }

    fn plan_nfe(&self, nfe: usize, to_data: bool) -> Result<Vec<u32>> {
        let core = nfe.saturating_sub(usize::from(to_data));
        if core == 0 {
            return Err(Error::invalid(
                "nfe",
                format!("{} needs at least {} evaluations", self.info().name, 1 + usize::from(to_data)),
            ));
        }
        let mut orders = fast_orders(core, self.order);
        if to_data {
            orders.push(1);
        }
        Ok(orders)
    }

    fn cost(&self, _index: usize, order: u32, to_data: bool) -> usize {
        if to_data { 1 } else { order as usize }
    }

    fn stepper<'s>(&'s self, _run: &Run<'_>, _grid: &[Point], _orders: &[u32]) -> Result<Stepping<'s>> {
        Ok(Stepping::Fixed(Box::new(self)))
    }
}

impl Singlestep {
    fn model(&self, run: &mut Run<'_>, x: &Tensor, s: &Point) -> Result<Tensor> {
        match self.form {
            Form::Noise => run.eps(x, s),
            Form::Data => run.data(x, s),
        }
    }
}

impl Stepper for &Singlestep {
    fn step(&mut self, run: &mut Run<'_>, x: &Tensor, iv: &Interval) -> Result<Tensor> {
        let (s, t) = (&iv.s, &iv.t);
        let m_s = self.model(run, x, s)?;
        if iv.order <= 1 || !regular(s, t) {
            if self.form == Form::Noise && s.alpha <= 0.0 {
                return Err(Error::invalid(
                    "solver",
                    "dpm-solver (noise form) needs α > 0; use dpm++2s/3s or a data-form solver",
                ));
            }
            return first_update(self.form, x, s, t, &m_s);
        }
        let r1 = if iv.order == 2 { 0.5 } else { 1.0 / 3.0 };
        Ok(singlestep_update(run, self.form, x, s, t, &m_s, iv.order, r1)?.0)
    }

    fn final_prediction(&mut self, run: &mut Run<'_>, x: &Tensor, s: &Point) -> Result<FinalPrediction> {
        let m_s = self.model(run, x, s)?;
        Ok(match self.form {
            Form::Noise => FinalPrediction::Noise(m_s),
            Form::Data => FinalPrediction::Data(m_s),
        })
    }
}

/// Adaptive DPM-Solver-12 / -23 (data form): a lower- and a higher-order singlestep update share model
/// evaluations; the step in λ is accepted when the scaled difference is ≤ 1 (atol/rtol as in the reference) and
/// adapted by `θ·h·E^{−1/order}`. The model value at an accepted state is reused after a rejection.
#[derive(Debug, Clone)]
pub struct AdaptiveDpm {
    order: u32,
    /// Relative tolerance (reference default 0.05).
    pub rtol: f64,
    /// Absolute tolerance (reference default 0.0078, for images in [−1, 1]).
    pub atol: f64,
    /// Initial step in λ.
    pub h_init: f64,
}

impl AdaptiveDpm {
    /// DPM-Solver-12 (`order` 2) or -23 (`order` 3) with the given tolerances.
    pub fn new(order: u32, rtol: f64, atol: f64) -> Self {
        AdaptiveDpm { order: order.clamp(2, 3), rtol, atol, h_init: 0.05 }
    }
}

impl Solver for AdaptiveDpm {
    fn info(&self) -> SolverInfo {
        let mut info = SolverInfo::deterministic(
            &format!("dpm-solver-{}{}", self.order - 1, self.order),
            "adaptive DPM-Solver (data form): embedded lower/higher singlestep pair, step size in λ (Lu et al. 2022, Alg. 4)",
            self.order,
        );
        info.adaptive = true;
        info
    }

    fn plan_steps(&self, _steps: usize, to_data: bool) -> Result<Vec<u32>> {
        Ok(if to_data { vec![self.order, 1] } else { vec![self.order] })
    }

    fn plan_nfe(&self, _nfe: usize, to_data: bool) -> Result<Vec<u32>> {
        self.plan_steps(1, to_data)
    }

    fn cost(&self, _index: usize, order: u32, to_data: bool) -> usize {
        if to_data { 1 } else { order as usize }
    }

    fn stepper<'s>(&'s self, _run: &Run<'_>, grid: &[Point], _orders: &[u32]) -> Result<Stepping<'s>> {
        if !grid[0].lambda().is_finite() {
            return Err(Error::invalid("solver", "adaptive dpm-solver needs a finite λ at the start (α > 0)"));
        }
        Ok(Stepping::Adaptive(Box::new(AdaptiveDpmStepper { solver: self, m_s: None, x_prev: None, next_prev: None })))
    }
}

/// An adaptive DPM-Solver run: the model value at the current state (kept after a rejection) and the previous
/// lower-order solution (the reference's tolerance scale).
struct AdaptiveDpmStepper<'s> {
    solver: &'s AdaptiveDpm,
    m_s: Option<Tensor>,
    x_prev: Option<Tensor>,
    next_prev: Option<Tensor>,
}

impl AdaptiveStepper for AdaptiveDpmStepper<'_> {
    fn control(&self) -> StepControl {
        // The reference: h ← θ·h·E^(−1/order), θ = 0.9, unclamped.
        StepControl {
            safety: 0.9,
            exponent: 1.0 / self.solver.order as f64,
            min_factor: 0.0,
            max_factor: f64::INFINITY,
            min_step: 1e-10,
            min_step_rel: 0.0,
            max_attempts: 100_000,
        }
    }

    fn coordinate(&self, p: &Point) -> f64 {
        p.lambda()
    }

    fn point(&self, run: &Run<'_>, c: f64) -> Point {
        run.point_at_lambda(c)
    }

    fn initial_step(&self, _span: f64) -> f64 {
        self.solver.h_init
    }

    fn attempt(
        &mut self,
        run: &mut Run<'_>,
        x: &Tensor,
        s: &Point,
        t: &Point,
        _c: f64,
        _h: f64,
    ) -> Result<(Tensor, f64)> {
        let m = cached(&mut self.m_s, || run.data(x, s))?;
        let (x_low, x_high) = if self.solver.order == 2 {
            let low = data_step(x, &m, s, t)?;
            let (high, _) = singlestep_update(run, Form::Data, x, s, t, &m, 2, 0.5)?;
            (low, high)
        } else {
            let (low, inner) = singlestep_update(run, Form::Data, x, s, t, &m, 2, 1.0 / 3.0)?;
            let high = third_from_inner(run, x, s, t, &m, &inner[0])?;
            (low, high)
        };
        let prev = self.x_prev.as_ref().unwrap_or(x);
        let delta =
            x_low.f_abs()?.f_maximum(&prev.f_abs()?)?.f_mul_scalar(self.solver.rtol)?.f_clamp_min(self.solver.atol)?;
        let b = x.size().first().copied().unwrap_or(1);
        let e = f64::try_from(
            x_high
                .f_sub(&x_low)?
                .f_div(&delta)?
                .f_square()?
                .f_reshape([b, -1])?
                .f_mean_dim(Some(&[1i64][..]), false, tch::Kind::Double)?
                .f_sqrt()?
                .f_max()?,
        )?;
        self.next_prev = Some(x_low);
        Ok((x_high, e))
    }

    fn accept(&mut self) {
        self.m_s = None;
        self.x_prev = self.next_prev.take();
    }

    fn reject(&mut self) {
        self.next_prev = None;
    }
}

/// The third-order update (r1 = ⅓, r2 = ⅔) reusing the model value at the first inner point.
fn third_from_inner(
    run: &mut Run<'_>,
    x: &Tensor,
    s: &Point,
    t: &Point,
    m_s: &Tensor,
    m_s1: &Tensor,
) -> Result<Tensor> {
    let h = step_h(s, t);
    let (r1, r2) = (1.0 / 3.0, 2.0 / 3.0);
    let s2 = run.point_at_lambda(s.lambda() + r2 * h);
    let phi12 = (-r2 * h).exp_m1();
    let phi22 = phi12 / (r2 * h) + 1.0;
    let d1 = lin2(1.0, m_s1, -1.0, m_s)?;
    let x_s2 = weighted_sum(&[(s2.sigma / s.sigma, x), (-s2.alpha * phi12, m_s), (r2 / r1 * s2.alpha * phi22, &d1)])?;
    let m_s2 = run.data(&x_s2, &s2)?;
    let phi1 = (-h).exp_m1();
    let phi2 = phi1 / h + 1.0;
    let d2 = lin2(1.0, &m_s2, -1.0, m_s)?;
    weighted_sum(&[(t.sigma / s.sigma, x), (-t.alpha * phi1, m_s), (t.alpha * phi2 / r2, &d2)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_split_matches_dpm_solver() {
        assert_eq!(fast_orders(10, 3), vec![3, 3, 3, 1]);
        assert_eq!(fast_orders(9, 3), vec![3, 3, 2, 1]);
        assert_eq!(fast_orders(8, 3), vec![3, 3, 2]);
        assert_eq!(fast_orders(5, 2), vec![2, 2, 1]);
        for nfe in 1..40 {
            for order in 1..=3 {
                let o = fast_orders(nfe, order);
                assert_eq!(o.iter().map(|&k| k as usize).sum::<usize>(), nfe, "nfe {nfe} order {order}");
            }
        }
    }
}
