//! Solvers: one trait, many methods, all on every affine path, run by one loop.
//!
//! A solver plans its orders and hands out a [`Stepper`] (or an [`AdaptiveStepper`]); [`drive`] walks the [`Point`]
//! grid (from [`crate::spacing::GridSpec`]) with it, evaluating the model through a [`Run`], which works on the
//! anchor-free state `x̃ = x − γ·μ` and counts model evaluations (NFE). Coefficients are computed in f64 whatever the tensors' dtype. Every solver's order is
//! measured against exact solutions in the tests (`tests/solver_order.rs`).
//!
//! | name | method | order | NFE per step |
//! |---|---|---|---|
//! | `ddim` | DDIM = DPM-Solver-1 | 1 | 1 |
//! | `dpm++2m`, `dpm++3m` | DPM-Solver++ multistep | 2, 3 | 1 |
//! | `dpm-solver-2m`, `dpm-solver-3m` | DPM-Solver multistep on ε̂ (noise form) | 2, 3 | 1 |
//! | `dpm++2m+unic`, `dpm++3m+unic` | DPM-Solver++ with the UniC corrector | 3, 4 | 1 |
//! | `unipc-bh1[-p]`, `unipc-bh2[-p]` | UniPC, predictor order p (default 2) | p + 1 | 1 |
//! | `deis-1..3` | DEIS tAB | 1–3 | 1 |
//! | `dpm-solver-1..3`, `dpm++2s`, `dpm++3s` | singlestep DPM-Solver (ε) / DPM-Solver++ (x0), fast order split | ≤ 3 | order |
//! | `euler`, `heun`, `rk4` (and `-t` variants) | Runge–Kutta on the PF-ODE in σ/α (or in t) | 1, 2, 4 | 1, 2, 4 |
//! | `dopri5`, `dpm-solver-12`, `dpm-solver-23` | adaptive, rtol/atol | 5, 2, 3 | adaptive |
//!
//! | `rddm` | RDDM's deterministic sampler (= `ddim` for consistent predictions) | 1 | 1 |
//! | `resfusion` | Resfusion's ancestral DDPM step (paths with α = 1 − 2γ) | 1 | 1 |
//!
//! Every interval that ends at the data (σ = 0) is a first-order jump `x = x̂0` costing one evaluation.

pub mod common;
pub mod deis;
pub mod driver;
pub mod ems;
pub mod multistep;
pub mod noise;
pub mod registry;
pub mod residual;
pub mod rk;
pub mod run;
pub mod singlestep;
pub mod stochastic;
pub mod v3;

use tch::Tensor;

pub use deis::DeisTab;
pub use driver::{AdaptiveStepper, FinalPrediction, Interval, StepControl, Stepper, Stepping, drive};
pub use ems::{EmpiricalStats, EmsSettings, Pooling};
pub use multistep::{DataMultistep, LowerOrderFinal, Predictor, StepStrategy, UniVariant, Warmup};
pub use noise::{BrownianTree, FixedNoise};
pub use registry::{SolverList, SolverSpec, build_solver, solver_names, split_solver_list};
pub use residual::{RddmDeterministic, ResfusionAncestral};
pub use rk::{Dopri5, RungeKutta, Variable};
pub use run::{NoNoise, NoiseSource, Observer, Run, SeededNoise, StepInfo};
pub use singlestep::{AdaptiveDpm, Form, Singlestep};
pub use stochastic::{DdimEta, EdmChurn, EulerMaruyama, PcCorrector, PcPredictor, PredictorCorrector, SdeDpmPlusPlus};
pub use v3::{DpmSolverV3, Toggle};

use crate::denoiser::{Conditioning, Denoiser};
use crate::path::{NoisePath, Point};
use crate::spacing::GridSpec;
use crate::{Error, Result};

/// What a solver is, for listings and benchmarks.
#[derive(Debug, Clone, PartialEq)]
pub struct SolverInfo {
    /// Registry name.
    pub name: String,
    /// One line: method and reference.
    pub description: String,
    /// Global convergence order of the deterministic method (weak order for stochastic ones).
    pub order: u32,
    /// Strong order, for SDE solvers.
    pub strong_order: Option<f64>,
    /// Whether it injects noise.
    pub stochastic: bool,
    /// Whether it chooses its own steps from tolerances.
    pub adaptive: bool,
}

impl SolverInfo {
    /// Info of a deterministic fixed-grid solver.
    pub fn deterministic(name: &str, description: &str, order: u32) -> Self {
        SolverInfo {
            name: name.to_string(),
            description: description.to_string(),
            order,
            strong_order: None,
            stochastic: false,
            adaptive: false,
        }
    }
}

/// A sampler of the reverse process on a time grid.
pub trait Solver {
    /// Name, order and kind.
    fn info(&self) -> SolverInfo;

    /// The order of each of `steps` intervals (warm-up, final-step policy; `to_data`: the grid ends at σ = 0).
    fn plan_steps(&self, steps: usize, to_data: bool) -> Result<Vec<u32>>;

    /// Model evaluations of interval `index` of this order (`to_data`: the interval ends at σ = 0).
    fn cost(&self, index: usize, order: u32, to_data: bool) -> usize;

    /// The most intervals whose plan spends at most `nfe` evaluations; an error when even one step costs more.
    fn plan_nfe(&self, nfe: usize, to_data: bool) -> Result<Vec<u32>> {
        let mut best = None;
        for steps in 1..=nfe {
            let plan = self.plan_steps(steps, to_data)?;
            if plan_cost(self, &plan, to_data) <= nfe {
                best = Some(plan);
            } else if best.is_some() {
                break;
            }
        }
        best.ok_or_else(|| {
            Error::invalid("nfe", format!("{nfe} model evaluations are too few for {}", self.info().name))
        })
    }

    /// The solver's state for one run on `grid` with `orders` (checked by the driver); refuses grids it cannot
    /// walk (an α = 0 start for a method in σ/α, …). [`drive`] runs it.
    fn stepper<'s>(&'s self, run: &Run<'_>, grid: &[Point], orders: &[u32]) -> Result<Stepping<'s>>;

    /// Runs from `x` (model space) at `grid[0]` along the grid through the [`drive`] loop, keeping any autograd
    /// graph; returns x at the last point.
    fn solve(&self, run: &mut Run<'_>, x: &Tensor, grid: &[Point], orders: &[u32]) -> Result<Tensor> {
        drive(self, run, x, grid, orders, true)
    }
}

/// Total model evaluations of a plan.
pub fn plan_cost(solver: &(impl Solver + ?Sized), orders: &[u32], to_data: bool) -> usize {
    let n = orders.len();
    orders.iter().enumerate().map(|(i, &o)| solver.cost(i, o, to_data && i + 1 == n)).sum()
}

/// Options shared by the registry's solvers.
#[derive(Debug, Clone, PartialEq)]
pub struct SolverOptions {
    /// Relative tolerance of adaptive solvers.
    pub rtol: f64,
    /// Absolute tolerance of adaptive solvers.
    pub atol: f64,
    /// Lower-order final steps of multistep solvers.
    pub lower_order_final: LowerOrderFinal,
    /// How multistep solvers start.
    pub warmup: Warmup,
    /// η of `ddim-eta` when the name gives none.
    pub eta: f64,
    /// Corrector signal-to-noise ratio of `pc` when the name gives none.
    pub snr: f64,
    /// Corrector steps of `pc` when the name gives none.
    pub corrector_steps: usize,
}

impl Default for SolverOptions {
    fn default() -> Self {
        SolverOptions {
            rtol: 1e-3,
            atol: 1e-4,
            lower_order_final: LowerOrderFinal::Auto,
            warmup: Warmup::LowerOrder,
            eta: 1.0,
            snr: 0.5,
            corrector_steps: 1,
        }
    }
}

/// How much work a run may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// This many grid intervals.
    Steps(usize),
    /// At most this many model evaluations.
    Nfe(usize),
}

/// The result of [`sample`].
#[derive(Debug)]
pub struct Sample {
    /// The final state.
    pub x: Tensor,
    /// Model evaluations spent.
    pub nfe: usize,
    /// The grid walked.
    pub grid: Vec<Point>,
}

/// Samples from `x` at the grid's start: builds the grid for the budget, plans the orders and solves.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    solver: &dyn Solver,
    path: &dyn NoisePath,
    model: &dyn Denoiser,
    cond: &Conditioning,
    x: &Tensor,
    grid: &GridSpec,
    budget: Budget,
    noise: &mut dyn NoiseSource,
    observer: &mut dyn Observer,
) -> Result<Sample> {
    sample_impl(solver, path, model, cond, x, grid, Plan::Budget(budget), noise, observer, false)
}

/// [`sample`] keeping libtorch's autograd graph, so that a loss on the result can be differentiated through every
/// step into the model's parameters (training through the sampler: "correcting the reverse process", Lay et al.
/// 2023). The graph holds every step's activations: memory grows with the number of model evaluations.
#[allow(clippy::too_many_arguments)]
pub fn sample_differentiable(
    solver: &dyn Solver,
    path: &dyn NoisePath,
    model: &dyn Denoiser,
    cond: &Conditioning,
    x: &Tensor,
    grid: &GridSpec,
    budget: Budget,
    noise: &mut dyn NoiseSource,
    observer: &mut dyn Observer,
) -> Result<Sample> {
    sample_impl(solver, path, model, cond, x, grid, Plan::Budget(budget), noise, observer, true)
}

/// [`sample`] with an explicit order per interval (a solver schedule's plan) instead of the solver's own plan
/// for a budget; multistep solvers lower an order where their history is shorter.
#[allow(clippy::too_many_arguments)]
pub fn sample_with_orders(
    solver: &dyn Solver,
    path: &dyn NoisePath,
    model: &dyn Denoiser,
    cond: &Conditioning,
    x: &Tensor,
    grid: &GridSpec,
    orders: &[u32],
    noise: &mut dyn NoiseSource,
    observer: &mut dyn Observer,
) -> Result<Sample> {
    if orders.is_empty() || orders.iter().any(|&o| !(1..=4).contains(&o)) {
        return Err(Error::invalid("orders", format!("need at least one order, each from 1 to 4, got {orders:?}")));
    }
    sample_impl(solver, path, model, cond, x, grid, Plan::Orders(orders), noise, observer, false)
}

/// How the intervals' orders are chosen.
enum Plan<'a> {
    Budget(Budget),
    Orders(&'a [u32]),
}

#[allow(clippy::too_many_arguments)]
fn sample_impl(
    solver: &dyn Solver,
    path: &dyn NoisePath,
    model: &dyn Denoiser,
    cond: &Conditioning,
    x: &Tensor,
    grid: &GridSpec,
    plan: Plan<'_>,
    noise: &mut dyn NoiseSource,
    observer: &mut dyn Observer,
    differentiable: bool,
) -> Result<Sample> {
    let to_data = grid.end == crate::spacing::End::Zero;
    let orders = match plan {
        Plan::Budget(Budget::Steps(n)) => {
            if n == 0 {
                return Err(Error::invalid("steps", "need at least one step"));
            }
            solver.plan_steps(n, to_data)?
        }
        Plan::Budget(Budget::Nfe(n)) => solver.plan_nfe(n, to_data)?,
        Plan::Orders(o) => o.to_vec(),
    };
    let points = grid.build(path, orders.len())?;
    let mut run = Run::new(path, model, cond, noise, observer);
    let out = drive(solver, &mut run, x, &points, &orders, differentiable)?;
    Ok(Sample { x: out, nfe: run.nfe(), grid: points })
}
