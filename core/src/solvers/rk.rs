//! Runge–Kutta solvers of the probability-flow ODE: Euler, Heun (EDM), RK4 and adaptive Dormand–Prince 5(4),
//! in the scaled variable `x̄ = x̃/α` against `σ̄ = σ/α` (`dx̄/dσ̄ = ε̂`, the k-diffusion/EDM convention; on EDM
//! paths σ̄ = σ = t) or directly in t (`dx̃/dt = α′·x̂0 + σ′·ε̂`, the flow-matching convention). Butcher tableaux
//! are constants checked by one test.

use tch::Tensor;

use super::common::weighted_sum;
pub use super::driver::AdaptiveStats;
use super::driver::{AdaptiveStep, AdaptiveStepper, Interval, StepControl, Stepper, Stepping, adapt, cached};
use super::run::Run;
use super::{Solver, SolverInfo};
use crate::param::lin2;
use crate::path::Point;
use crate::{Error, Result};

/// An explicit Runge–Kutta method: `c`, lower-triangular `a`, weights `b`, optional embedded weights.
#[derive(Debug, Clone, Copy)]
pub struct Tableau {
    /// Name for messages.
    pub name: &'static str,
    /// Stage times.
    pub c: &'static [f64],
    /// Stage coefficients (row i has i entries).
    pub a: &'static [&'static [f64]],
    /// Solution weights.
    pub b: &'static [f64],
    /// Embedded lower-order weights (for error estimates), if any.
    pub b_low: Option<&'static [f64]>,
    /// Order of `b`.
    pub order: u32,
}

/// Forward Euler: order 1, one stage.
pub const EULER: Tableau = Tableau { name: "euler", c: &[0.0], a: &[&[]], b: &[1.0], b_low: None, order: 1 };
/// Heun's method (trapezoidal predictor–corrector): order 2, two stages, embedded Euler.
pub const HEUN: Tableau =
    Tableau { name: "heun", c: &[0.0, 1.0], a: &[&[], &[1.0]], b: &[0.5, 0.5], b_low: Some(&[1.0, 0.0]), order: 2 };
/// The classical fourth-order Runge–Kutta method.
pub const RK4: Tableau = Tableau {
    name: "rk4",
    c: &[0.0, 0.5, 0.5, 1.0],
    a: &[&[], &[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
    b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
    b_low: None,
    order: 4,
};
/// Dormand–Prince 5(4): order 5, embedded order 4, seven stages with the last one reused (FSAL).
pub const DOPRI5: Tableau = Tableau {
    name: "dopri5",
    c: &[0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0],
    a: &[
        &[],
        &[1.0 / 5.0],
        &[3.0 / 40.0, 9.0 / 40.0],
        &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
        &[19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0],
        &[9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0],
        &[35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0],
    ],
    b: &[35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0, 0.0],
    b_low: Some(&[
        5179.0 / 57600.0,
        0.0,
        7571.0 / 16695.0,
        393.0 / 640.0,
        -92097.0 / 339200.0,
        187.0 / 2100.0,
        1.0 / 40.0,
    ]),
    order: 5,
};

/// All tableaux (for the consistency test).
pub const TABLEAUX: [Tableau; 4] = [EULER, HEUN, RK4, DOPRI5];

/// One explicit RK step of size h from (s, y) with `f(s, y)` given as `k0`; returns (y_new, y_low, stages).
pub fn rk_step(
    tab: &Tableau,
    f: &mut dyn FnMut(f64, &Tensor) -> Result<Tensor>,
    s: f64,
    y: &Tensor,
    h: f64,
    k0: Tensor,
) -> Result<(Tensor, Option<Tensor>, Vec<Tensor>)> {
    let mut ks: Vec<Tensor> = vec![k0];
    for i in 1..tab.c.len() {
        let mut terms: Vec<(f64, &Tensor)> = vec![(1.0, y)];
        for (j, aij) in tab.a[i].iter().enumerate() {
            terms.push((h * aij, &ks[j]));
        }
        let yi = weighted_sum(&terms)?;
        let k = f(s + tab.c[i] * h, &yi)?;
        ks.push(k);
    }
    let combine = |w: &[f64]| -> Result<Tensor> {
        let mut terms: Vec<(f64, &Tensor)> = vec![(1.0, y)];
        for (wi, k) in w.iter().zip(&ks) {
            terms.push((h * wi, k));
        }
        weighted_sum(&terms)
    };
    let y_new = combine(tab.b)?;
    let y_low = tab.b_low.map(combine).transpose()?;
    Ok((y_new, y_low, ks))
}

/// Dormand–Prince's step-size control: safety 0.9, exponent 1/5, the step changing by a factor 0.2–5.
pub const DOPRI5_CONTROL: StepControl = StepControl {
    safety: 0.9,
    exponent: 0.2,
    min_factor: 0.2,
    max_factor: 5.0,
    min_step: 1e-300,
    min_step_rel: 1e-14,
    max_attempts: 100_000,
};

/// The scaled error of a Dormand–Prince step: `‖(y_new − y_low)/(atol + rtol·max(|y|, |y_new|))‖_RMS`.
fn dopri5_error(y: &Tensor, y_new: &Tensor, y_low: Option<Tensor>, rtol: f64, atol: f64) -> Result<f64> {
    let y_low = y_low.ok_or_else(|| Error::Numerical { op: "dopri5", reason: "no embedded weights".into() })?;
    let scale = y.f_abs()?.f_maximum(&y_new.f_abs()?)?.f_mul_scalar(rtol)?.f_add_scalar(atol)?;
    Ok(f64::try_from(y_new.f_sub(&y_low)?.f_div(&scale)?.f_square()?.f_mean(tch::Kind::Double)?.f_sqrt()?)?)
}

/// Dormand–Prince 5(4) with FSAL on `dy/ds = f(s, y)` as an [`AdaptiveStep`], with the standard error
/// `‖(y_new − y_low)/(atol + rtol·max(|y|, |y_new|))‖_RMS`.
struct Dopri5Ode<'f> {
    f: &'f mut dyn FnMut(f64, &Tensor) -> Result<Tensor>,
    y: Tensor,
    /// f at the current state (FSAL: the last stage of the accepted step).
    k0: Tensor,
    next: Option<(Tensor, Tensor)>,
    rtol: f64,
    atol: f64,
    evaluations: usize,
    on_step: &'f mut dyn FnMut(f64, &Tensor) -> Result<()>,
}

impl AdaptiveStep for Dopri5Ode<'_> {
    fn attempt(&mut self, c: f64, h: f64, _c_next: f64, _last: bool) -> Result<f64> {
        let (y_new, y_low, ks) = rk_step(&DOPRI5, self.f, c, &self.y, h, self.k0.shallow_clone())?;
        self.evaluations += DOPRI5.c.len() - 1;
        let err = dopri5_error(&self.y, &y_new, y_low, self.rtol, self.atol)?;
        let last =
            ks.into_iter().last().ok_or_else(|| Error::Numerical { op: "dopri5", reason: "no stages".into() })?;
        self.next = Some((y_new, last));
        Ok(err)
    }

    fn accept(&mut self, c_next: f64) -> Result<()> {
        let (y, k) = self.next.take().ok_or_else(|| Error::invalid("dopri5", "accept without an attempt"))?;
        self.y = y;
        self.k0 = k;
        (self.on_step)(c_next, &self.y)
    }

    fn reject(&mut self) {
        self.next = None;
    }
}

/// Integrates `dy/ds = f(s, y)` from s0 to s1 (either direction) with Dormand–Prince 5(4), FSAL, and the
/// standard error control `‖err/(atol + rtol·max(|y|, |y_new|))‖_RMS ≤ 1` (Hairer, Nørsett & Wanner II.4),
/// through the driver's [`adapt`] loop.
pub fn integrate_adaptive(
    f: &mut dyn FnMut(f64, &Tensor) -> Result<Tensor>,
    s0: f64,
    s1: f64,
    y0: &Tensor,
    rtol: f64,
    atol: f64,
    mut on_step: impl FnMut(f64, &Tensor) -> Result<()>,
) -> Result<(Tensor, AdaptiveStats)> {
    if !(rtol > 0.0 && atol >= 0.0) {
        return Err(Error::invalid("tolerance", format!("need rtol > 0 and atol ≥ 0, got {rtol}, {atol}")));
    }
    let k0 = f(s0, y0)?;
    let mut ode =
        Dopri5Ode { f, y: y0.shallow_clone(), k0, next: None, rtol, atol, evaluations: 1, on_step: &mut on_step };
    let h0 = (s1 - s0).abs() * rtol.powf(0.2).min(0.1);
    let mut stats = adapt(&mut ode, s0, s1, h0, &DOPRI5_CONTROL, "dopri5")?;
    stats.evaluations = ode.evaluations;
    Ok((ode.y, stats))
}

/// The variable an RK solver integrates in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    /// `x̄ = x̃/α` against `σ̄ = σ/α` (needs α > 0 at the start).
    SigmaBar,
    /// `x̃` against the path's t.
    Time,
}

/// A fixed-step Runge–Kutta solver of the probability-flow ODE.
#[derive(Debug, Clone)]
pub struct RungeKutta {
    tableau: Tableau,
    variable: Variable,
}

impl RungeKutta {
    /// The solver of `tableau` in `variable`.
    pub fn new(tableau: Tableau, variable: Variable) -> Self {
        RungeKutta { tableau, variable }
    }
}

/// The ODE right-hand side in the chosen variable, evaluating the model through `run`.
fn rhs<'r, 'a>(run: &'r mut Run<'a>, variable: Variable) -> impl FnMut(f64, &Tensor) -> Result<Tensor> + 'r {
    move |s: f64, y: &Tensor| -> Result<Tensor> {
        match variable {
            Variable::SigmaBar => {
                let p = run.point_at_lambda(-s.ln());
                let xt = y.f_mul_scalar(p.alpha)?;
                run.eps(&xt, &p)
            }
            Variable::Time => {
                let p = run.point(s);
                let path = run.path();
                let (da, ds) = (path.d_alpha(s), path.d_sigma(s));
                if !(da.is_finite() && ds.is_finite()) {
                    return Err(Error::invalid(
                        "solver",
                        format!(
                            "integrating in t needs finite dα/dt and dσ/dt, but they are singular at t = {s} on {}; use a solver in λ or σ/α (ddim, dpm++2m, unipc)",
                            path.name()
                        ),
                    ));
                }
                let (x0, eps) = run.both(y, &p)?;
                lin2(da, &x0, ds, &eps)
            }
        }
    }
}

/// One step of `tab` from s to t (neither the data) in `variable`, on x̃.
pub(crate) fn rk_interval(
    run: &mut Run<'_>,
    tab: &Tableau,
    variable: Variable,
    xt: &Tensor,
    s: &Point,
    t: &Point,
) -> Result<Tensor> {
    let (c0, c1) = (coordinate(variable, s), coordinate(variable, t));
    let y = match variable {
        Variable::SigmaBar => xt.f_div_scalar(s.alpha)?,
        Variable::Time => xt.shallow_clone(),
    };
    let mut f = rhs(run, variable);
    let k0 = f(c0, &y)?;
    let (y_new, _, _) = rk_step(tab, &mut f, c0, &y, c1 - c0, k0)?;
    Ok(match variable {
        Variable::SigmaBar => y_new.f_mul_scalar(t.alpha)?,
        Variable::Time => y_new,
    })
}

fn coordinate(variable: Variable, p: &Point) -> f64 {
    match variable {
        Variable::SigmaBar => p.sigma_bar(),
        Variable::Time => p.t,
    }
}

impl Solver for RungeKutta {
    fn info(&self) -> SolverInfo {
        let suffix = if self.variable == Variable::Time { "-t" } else { "" };
        let description = match (self.tableau.name, self.variable) {
            ("euler", Variable::SigmaBar) => "Euler on the PF-ODE in σ̄ = σ/α (k-diffusion's euler; equals DDIM)",
            ("heun", Variable::SigmaBar) => {
                "Heun on the PF-ODE in σ̄ (EDM's deterministic sampler: Euler on the final step, NFE 2N − 1)"
            }
            ("rk4", Variable::SigmaBar) => "classical RK4 on the PF-ODE in σ̄",
            ("euler", Variable::Time) => {
                "Euler on the PF-ODE in the path's t (flow-matching convention; works from α = 0)"
            }
            ("heun", Variable::Time) => "Heun on the PF-ODE in the path's t",
            _ => "classical RK4 on the PF-ODE in the path's t",
        };
        SolverInfo::deterministic(&format!("{}{suffix}", self.tableau.name), description, self.tableau.order)
    }

    fn plan_steps(&self, steps: usize, to_data: bool) -> Result<Vec<u32>> {
        let mut orders = vec![self.tableau.order; steps];
        if to_data {
            orders[steps - 1] = 1;
        }
        Ok(orders)
    }

    fn cost(&self, _index: usize, order: u32, to_data: bool) -> usize {
        if to_data || order == 1 { 1 } else { self.tableau.c.len() }
    }

    fn stepper<'s>(&'s self, _run: &Run<'_>, grid: &[Point], _orders: &[u32]) -> Result<Stepping<'s>> {
        if self.variable == Variable::SigmaBar && !(grid[0].alpha > 0.0) {
            return Err(Error::invalid(
                "solver",
                format!(
                    "{} integrates in σ/α and needs α > 0 at the start; use {}-t or start lower (t_start)",
                    self.tableau.name, self.tableau.name
                ),
            ));
        }
        Ok(Stepping::Fixed(Box::new(self)))
    }
}

impl Stepper for &RungeKutta {
    fn step(&mut self, run: &mut Run<'_>, x: &Tensor, iv: &Interval) -> Result<Tensor> {
        let tab = if iv.order == 1 { EULER } else { self.tableau };
        rk_interval(run, &tab, self.variable, x, &iv.s, &iv.t)
    }
}

/// Adaptive Dormand–Prince 5(4) on the PF-ODE in σ̄ (ending with a first-order jump when the grid ends at the data).
#[derive(Debug, Clone)]
pub struct Dopri5 {
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

impl Solver for Dopri5 {
    fn info(&self) -> SolverInfo {
        let mut info = SolverInfo::deterministic(
            "dopri5",
            "adaptive Dormand–Prince 5(4) on the PF-ODE in σ̄, rtol/atol error control",
            5,
        );
        info.adaptive = true;
        info
    }

    fn plan_steps(&self, _steps: usize, to_data: bool) -> Result<Vec<u32>> {
        Ok(if to_data { vec![5, 1] } else { vec![5] })
    }

    fn plan_nfe(&self, _nfe: usize, to_data: bool) -> Result<Vec<u32>> {
        self.plan_steps(1, to_data)
    }

    fn cost(&self, _index: usize, _order: u32, to_data: bool) -> usize {
        if to_data { 1 } else { 6 }
    }

    fn stepper<'s>(&'s self, _run: &Run<'_>, grid: &[Point], _orders: &[u32]) -> Result<Stepping<'s>> {
        if !(grid[0].alpha > 0.0) {
            return Err(Error::invalid("solver", "dopri5 integrates in σ/α and needs α > 0 at the start"));
        }
        if !(self.rtol > 0.0 && self.atol >= 0.0) {
            return Err(Error::invalid(
                "tolerance",
                format!("need rtol > 0 and atol ≥ 0, got {}, {}", self.rtol, self.atol),
            ));
        }
        Ok(Stepping::Adaptive(Box::new(Dopri5Stepper { solver: self, k0: None, next_k0: None })))
    }
}

/// A dopri5 run on the PF-ODE in σ̄ (`x̄ = x̃/α`, `dx̄/dσ̄ = ε̂`), keeping the last stage for FSAL.
struct Dopri5Stepper<'s> {
    solver: &'s Dopri5,
    k0: Option<Tensor>,
    next_k0: Option<Tensor>,
}

impl AdaptiveStepper for Dopri5Stepper<'_> {
    fn control(&self) -> StepControl {
        DOPRI5_CONTROL
    }

    fn coordinate(&self, p: &Point) -> f64 {
        p.sigma_bar()
    }

    fn point(&self, run: &Run<'_>, c: f64) -> Point {
        run.point_at_lambda(-c.ln())
    }

    fn initial_step(&self, span: f64) -> f64 {
        span * self.solver.rtol.powf(0.2).min(0.1)
    }

    fn attempt(
        &mut self,
        run: &mut Run<'_>,
        x: &Tensor,
        s: &Point,
        t: &Point,
        c: f64,
        h: f64,
    ) -> Result<(Tensor, f64)> {
        let y = x.f_div_scalar(s.alpha)?;
        let mut f = rhs(run, Variable::SigmaBar);
        let k0 = cached(&mut self.k0, || f(c, &y))?;
        let (y_new, y_low, ks) = rk_step(&DOPRI5, &mut f, c, &y, h, k0)?;
        let err = dopri5_error(&y, &y_new, y_low, self.solver.rtol, self.solver.atol)?;
        self.next_k0 = ks.into_iter().last();
        Ok((y_new.f_mul_scalar(t.alpha)?, err))
    }

    fn accept(&mut self) {
        // FSAL: the last stage was evaluated at the accepted state.
        self.k0 = self.next_k0.take();
    }

    fn reject(&mut self) {
        self.next_k0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tableaux_are_consistent() {
        for tab in TABLEAUX {
            let sum: f64 = tab.b.iter().sum();
            assert!((sum - 1.0).abs() < 1e-14, "{}: Σb = {sum}", tab.name);
            if let Some(bl) = tab.b_low {
                assert!((bl.iter().sum::<f64>() - 1.0).abs() < 1e-14, "{}: Σb_low", tab.name);
            }
            for (i, row) in tab.a.iter().enumerate() {
                assert_eq!(row.len(), i, "{}: row {i}", tab.name);
                let rs: f64 = row.iter().sum();
                assert!((rs - tab.c[i]).abs() < 1e-14, "{}: row {i} sums to {rs}, c = {}", tab.name, tab.c[i]);
            }
        }
    }

    #[test]
    fn dopri5_solves_exponential_decay() {
        let y0 = Tensor::from_slice(&[1.0f64, 2.0]);
        let mut f = |_s: f64, y: &Tensor| -> Result<Tensor> { Ok(y.f_neg()?) };
        let (y, stats) = integrate_adaptive(&mut f, 0.0, 3.0, &y0, 1e-10, 1e-12, |_, _| Ok(())).unwrap();
        let want = (-3.0f64).exp();
        let got: Vec<f64> = Vec::try_from(y).unwrap();
        assert!((got[0] - want).abs() < 1e-9 && (got[1] - 2.0 * want).abs() < 1e-9, "{got:?}");
        assert!(stats.accepted > 5 && stats.evaluations == 1 + 6 * (stats.accepted + stats.rejected));
    }
}
