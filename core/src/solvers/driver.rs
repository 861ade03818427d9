//! The one sampling loop (the shape of diffrax's `diffeqsolve`): a solver only hands out a stepper, and
//! [`drive`] owns everything around the steps — checking the plan, the change of variables `x̃ = x − γ·μ`, the
//! walk over the grid or the adaptive step control, the jump onto the data, the observer, gradients on or off,
//! and the final NaN check.
//!
//! - A fixed-grid solver gives a [`Stepper`], which advances x̃ over one [`Interval`] and keeps what later steps
//!   reuse (a multistep history, a cached model output).
//! - An adaptive solver gives an [`AdaptiveStepper`], which attempts a step and scores it; [`adapt`] accepts or
//!   rejects it and sizes the next one with a [`StepControl`]. The same loop integrates plain ODEs
//!   ([`super::rk::integrate_adaptive`]: exact solutions, likelihoods).

use tch::Tensor;

use super::Solver;
use super::common::data_step;
use super::run::Run;
use crate::param::lin2;
use crate::path::Point;
use crate::{Error, Result};

/// One interval of a fixed-grid run.
#[derive(Debug, Clone, Copy)]
pub struct Interval {
    /// Its index (0-based).
    pub index: usize,
    /// Intervals in the run.
    pub steps: usize,
    /// Where it starts.
    pub s: Point,
    /// Where it ends.
    pub t: Point,
    /// The planned order.
    pub order: u32,
}

impl Interval {
    /// Whether it is the run's last interval.
    pub fn is_last(&self) -> bool {
        self.index + 1 == self.steps
    }
}

/// The model output the driver's jump onto the data uses.
pub enum FinalPrediction {
    /// x̂0: the jump is the first-order data step (`x̃ = α·x̂0` at the data).
    Data(Tensor),
    /// ε̂: the jump is `x̂0 = (x̃ − σ·ε̂)/α`.
    Noise(Tensor),
}

/// A fixed-grid solver's state during one run.
pub trait Stepper {
    /// x̃ at `iv.t` from x̃ at `iv.s`. The driver takes the interval onto the data itself unless
    /// [`Stepper::takes_final_jump`] says otherwise.
    fn step(&mut self, run: &mut Run<'_>, x: &Tensor, iv: &Interval) -> Result<Tensor>;

    /// The model output at (x̃, s) for the jump onto the data; steppers that already hold it return it unevaluated.
    fn final_prediction(&mut self, run: &mut Run<'_>, x: &Tensor, s: &Point) -> Result<FinalPrediction> {
        Ok(FinalPrediction::Data(run.data(x, s)?))
    }

    /// Whether the stepper takes the interval onto the data itself (samplers whose reference defines its own
    /// last step: the PC sampler's last predictor, EDM's churn before the last Euler step).
    fn takes_final_jump(&self) -> bool {
        false
    }

    /// The run's result (model space) from the last state x̃ at `end`; the PC sampler returns its last mean.
    fn output(&mut self, run: &mut Run<'_>, x: Tensor, end: &Point) -> Result<Tensor> {
        run.from_tilde(&x, end)
    }
}

/// Step-size control shared by every adaptive integration: after a step with scaled error E (E ≤ 1 accepts it),
/// the next step is `h·clamp(safety·E^(−exponent), min_factor, max_factor)` (Hairer, Nørsett & Wanner II.4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepControl {
    /// Safety factor (0.9 in both references).
    pub safety: f64,
    /// 1/q for an error estimate of order q.
    pub exponent: f64,
    /// Smallest change of the step per step.
    pub min_factor: f64,
    /// Largest change of the step per step.
    pub max_factor: f64,
    /// A step below `max(min_step, min_step_rel·|coordinate|)` is an underflow.
    pub min_step: f64,
    /// See `min_step`.
    pub min_step_rel: f64,
    /// Attempts (accepted and rejected) before giving up.
    pub max_attempts: usize,
}

impl StepControl {
    /// The step's change after an error estimate.
    pub fn factor(&self, err: f64) -> f64 {
        if err == 0.0 {
            return self.max_factor;
        }
        (self.safety * err.powf(-self.exponent)).clamp(self.min_factor, self.max_factor)
    }
}

/// Statistics of an adaptive integration.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AdaptiveStats {
    /// Accepted steps.
    pub accepted: usize,
    /// Rejected steps.
    pub rejected: usize,
    /// Right-hand-side (model) evaluations.
    pub evaluations: usize,
}

/// One adaptive integration, seen by [`adapt`] in the coordinate `c` its steps are measured in.
pub trait AdaptiveStep {
    /// Tries the step of signed size `h` from the current state at `c` to `c_next` (`c_next` is the end exactly
    /// when `last`); returns the scaled error estimate.
    fn attempt(&mut self, c: f64, h: f64, c_next: f64, last: bool) -> Result<f64>;
    /// Keeps the last attempt: the state is now at `c_next`.
    fn accept(&mut self, c_next: f64) -> Result<()>;
    /// Discards the last attempt.
    fn reject(&mut self) {}
}

/// Integrates from `c0` to `c1` (either direction) starting with step `h0`: the one accept/reject loop.
pub fn adapt(
    step: &mut dyn AdaptiveStep,
    c0: f64,
    c1: f64,
    h0: f64,
    control: &StepControl,
    op: &'static str,
) -> Result<AdaptiveStats> {
    let dir = (c1 - c0).signum();
    let end_tol = 1e-15 * (c1 - c0).abs().max(1.0);
    let mut stats = AdaptiveStats::default();
    let mut c = c0;
    let mut h = h0;
    while (c1 - c) * dir > end_tol {
        if stats.accepted + stats.rejected >= control.max_attempts {
            return Err(Error::Numerical { op, reason: format!("more than {} steps", control.max_attempts) });
        }
        h = h.min((c1 - c).abs());
        let last = (c1 - (c + dir * h)) * dir <= end_tol;
        let c_next = if last { c1 } else { c + dir * h };
        let err = step.attempt(c, dir * h, c_next, last)?;
        if !err.is_finite() {
            return Err(Error::Numerical { op, reason: format!("non-finite error estimate at {c}") });
        }
        if err <= 1.0 {
            step.accept(c_next)?;
            c = c_next;
            stats.accepted += 1;
        } else {
            step.reject();
            stats.rejected += 1;
        }
        h *= control.factor(err);
        let floor = control.min_step.max(control.min_step_rel * c.abs().max(c1.abs()));
        if h < floor && (c1 - c) * dir > end_tol {
            return Err(Error::Numerical { op, reason: format!("step size underflow at {c}") });
        }
    }
    Ok(stats)
}

/// An adaptive solver's state during one run.
pub trait AdaptiveStepper {
    /// Its step-size control.
    fn control(&self) -> StepControl;
    /// The coordinate its steps are measured in at `p` (σ̄, λ, …).
    fn coordinate(&self, p: &Point) -> f64;
    /// The path's point at coordinate `c`.
    fn point(&self, run: &Run<'_>, c: f64) -> Point;
    /// The first step's size for a span of `span` in the coordinate.
    fn initial_step(&self, span: f64) -> f64;
    /// The candidate x̃ at `t` from x̃ at `s`, and its scaled error; `c` is the coordinate of s as the step
    /// control counts it and `h` the signed step (which may differ from the points' own coordinates in the last
    /// digits, or more where the path's inverse map is coarse).
    fn attempt(&mut self, run: &mut Run<'_>, x: &Tensor, s: &Point, t: &Point, c: f64, h: f64)
    -> Result<(Tensor, f64)>;
    /// The last attempt was kept.
    fn accept(&mut self) {}
    /// The last attempt was discarded.
    fn reject(&mut self) {}
}

/// What a solver gives the driver for one run.
pub enum Stepping<'s> {
    /// Fixed grid: one step per interval.
    Fixed(Box<dyn Stepper + 's>),
    /// Adaptive: from the grid's start to its last point before the data, then the jump onto the data.
    Adaptive(Box<dyn AdaptiveStepper + 's>),
}

/// The tensor in `slot`, or `eval()` stored there first: a stepper's cached model output.
pub(crate) fn cached(slot: &mut Option<Tensor>, eval: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
    if let Some(v) = slot {
        return Ok(v.shallow_clone());
    }
    let v = eval()?;
    *slot = Some(v.shallow_clone());
    Ok(v)
}

/// A grid of `orders.len() + 1` points, decreasing, whose only data point is the last.
pub fn check_plan(grid: &[Point], orders: &[u32]) -> Result<()> {
    if orders.is_empty() || grid.len() != orders.len() + 1 {
        return Err(Error::invalid("plan", format!("{} orders for a grid of {} points", orders.len(), grid.len())));
    }
    if grid[..grid.len() - 1].iter().any(Point::is_data) {
        return Err(Error::invalid("grid", "only the last point may be the data"));
    }
    Ok(())
}

/// Raises glibc's dynamic allocator thresholds once per process, so that a run's step-sized tensors are reused
/// from the heap instead of being mapped, trimmed and faulted in again at every step.
///
/// glibc starts with a 128 KiB mmap threshold and, each time a mapped block is freed, raises it to that block's
/// size and the heap's trim threshold to twice that. Left alone, a run of 2 MB tensors settles at a 4 MB trim
/// threshold, about what one step frees, and whether a step's frees trim the heap then depends on the order in
/// which its temporaries go: up to 1.9× the per-step time (docs/benchmarks.md, "Per-step solver overhead").
/// Freeing one mapped block just under glibc's 32 MiB cap settles the thresholds at 32 / 64 MiB, as
/// `MALLOC_MMAP_THRESHOLD_` would, without unsafe code. The block is never touched, so it costs one
/// mmap/munmap pair; other allocators ignore it.
fn settle_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // 30 MiB of bytes: above any threshold glibc has yet and below its 32 MiB cap for dynamic raises.
        let _ = Tensor::f_empty([30 << 20], (tch::Kind::Uint8, tch::Device::Cpu));
    });
}

/// Runs `solver` from x (model space) at `grid[0]` along the grid (adaptive: to its last point before the data),
/// then onto the data; returns x at the end. Without `differentiable` no autograd graph is built.
pub fn drive(
    solver: &(impl Solver + ?Sized),
    run: &mut Run<'_>,
    x: &Tensor,
    grid: &[Point],
    orders: &[u32],
    differentiable: bool,
) -> Result<Tensor> {
    check_plan(grid, orders)?;
    settle_allocator();
    let stepping = solver.stepper(run, grid, orders)?;
    let out = if differentiable {
        walk(stepping, run, x, grid, orders)?
    } else {
        tch::no_grad(|| walk(stepping, run, x, grid, orders))?
    };
    if bool::try_from(out.f_isfinite()?.f_all()?.f_logical_not()?)? {
        let reason = format!("{} produced NaN/Inf", solver.info().name);
        return Err(Error::Numerical { op: "sample", reason });
    }
    Ok(out)
}

fn walk(stepping: Stepping<'_>, run: &mut Run<'_>, x: &Tensor, grid: &[Point], orders: &[u32]) -> Result<Tensor> {
    let end = grid[grid.len() - 1];
    let xt = run.to_tilde(x, &grid[0])?;
    match stepping {
        Stepping::Fixed(mut stepper) => {
            let n = orders.len();
            let mut xt = xt;
            for (index, &order) in orders.iter().enumerate() {
                let iv = Interval { index, steps: n, s: grid[index], t: grid[index + 1], order };
                xt = if iv.t.is_data() && !stepper.takes_final_jump() {
                    let pred = stepper.final_prediction(run, &xt, &iv.s)?;
                    jump_to_data(&xt, pred, &iv.s, &iv.t)?
                } else {
                    stepper.step(run, &xt, &iv)?
                };
                run.observe(index + 1, n, iv.t, &xt)?;
            }
            stepper.output(run, xt, &end)
        }
        Stepping::Adaptive(mut stepper) => {
            let target = if end.is_data() { grid[grid.len() - 2] } else { end };
            let (c0, c1) = (stepper.coordinate(&grid[0]), stepper.coordinate(&target));
            let control = stepper.control();
            let h0 = stepper.initial_step((c1 - c0).abs());
            let mut state =
                AdaptiveRun { run, stepper: stepper.as_mut(), x: xt, s: grid[0], target, next: None, accepted: 0 };
            let stats = adapt(&mut state, c0, c1, h0, &control, "adaptive solver")?;
            let AdaptiveRun { run, x: mut xt, s, .. } = state;
            if end.is_data() {
                xt = data_step(&xt, &run.data(&xt, &s)?, &s, &end)?;
                run.observe(stats.accepted + 1, 0, end, &xt)?;
            }
            run.from_tilde(&xt, &end)
        }
    }
}

/// The jump onto the data from (x̃, s).
fn jump_to_data(x: &Tensor, pred: FinalPrediction, s: &Point, t: &Point) -> Result<Tensor> {
    match pred {
        FinalPrediction::Data(x0) => data_step(x, &x0, s, t),
        FinalPrediction::Noise(eps) => {
            if !(s.alpha > 0.0) {
                return Err(Error::invalid("solver", "a noise-form jump onto the data needs α > 0"));
            }
            lin2(1.0 / s.alpha, x, -s.sigma / s.alpha, &eps)
        }
    }
}

/// An adaptive solver's run as [`adapt`] sees it.
struct AdaptiveRun<'r, 'a, 's> {
    run: &'r mut Run<'a>,
    stepper: &'s mut dyn AdaptiveStepper,
    x: Tensor,
    s: Point,
    target: Point,
    next: Option<(Tensor, Point)>,
    accepted: usize,
}

impl AdaptiveStep for AdaptiveRun<'_, '_, '_> {
    fn attempt(&mut self, c: f64, h: f64, c_next: f64, last: bool) -> Result<f64> {
        let t = if last { self.target } else { self.stepper.point(self.run, c_next) };
        let (x, err) = self.stepper.attempt(self.run, &self.x, &self.s, &t, c, h)?;
        self.next = Some((x, t));
        Ok(err)
    }

    fn accept(&mut self, _c_next: f64) -> Result<()> {
        let (x, t) = self.next.take().ok_or_else(|| Error::invalid("adaptive", "accept without an attempt"))?;
        self.x = x;
        self.s = t;
        self.stepper.accept();
        self.accepted += 1;
        self.run.observe(self.accepted, 0, t, &self.x)
    }

    fn reject(&mut self) {
        self.next = None;
        self.stepper.reject();
    }
}
