//! Solvers: one trait, many methods, all on every affine path.
//!
//! A solver walks a [`Point`] grid (from [`crate::spacing::GridSpec`]) with a per-interval order plan, evaluating
//! the model through a [`Run`], which works on the anchor-free state `x̃ = x − γ·μ` and counts model
//! evaluations (NFE). Coefficients are computed in f64 whatever the tensors' dtype. Every solver's order is
//! measured against exact solutions in the tests (`tests/solver_order.rs`).
//!
//! | name | method | order | NFE per step |
//! |---|---|---|---|
//! | `ddim` | DDIM = DPM-Solver-1 | 1 | 1 |
//! | `dpm++2m`, `dpm++3m` | DPM-Solver++ multistep | 2, 3 | 1 |
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
pub mod multistep;
pub mod noise;
pub mod residual;
pub mod rk;
pub mod run;
pub mod singlestep;
pub mod stochastic;

use tch::Tensor;

pub use multistep::{DataMultistep, DeisTab, LowerOrderFinal, UniVariant, Warmup};
pub use noise::{BrownianTree, FixedNoise};
pub use residual::{RddmDeterministic, ResfusionAncestral};
pub use rk::{Dopri5, RungeKutta, Variable};
pub use run::{NoNoise, NoiseSource, Observer, Run, SeededNoise, StepInfo};
pub use singlestep::{AdaptiveDpm, Form, Singlestep};
pub use stochastic::{DdimEta, EdmChurn, EulerMaruyama, PcCorrector, PcPredictor, PredictorCorrector, SdeDpmPlusPlus};

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

    /// Runs from `x` at `grid[0]` along the grid; returns x at the last point.
    fn solve(&self, run: &mut Run<'_>, x: &Tensor, grid: &[Point], orders: &[u32]) -> Result<Tensor>;
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

/// Every solver by name, with one-line descriptions (`diffuse solvers list`).
pub fn solver_names() -> Vec<(String, String)> {
    DETERMINISTIC
        .iter()
        .chain(STOCHASTIC)
        .filter_map(|n| build_solver(n, &SolverOptions::default()).ok().map(|s| (n.to_string(), s.info().description)))
        .collect()
}

const STOCHASTIC: &[&str] =
    &["ddpm", "resfusion", "ddim-eta", "euler-maruyama", "pc", "sde-dpm++2m", "sde-dpm++3m", "edm-churn"];

/// `name:key=value,…` → (name, parameters).
fn split_params(spec: &str) -> Result<(&str, Vec<(String, String)>)> {
    let Some((name, rest)) = spec.split_once(':') else { return Ok((spec, Vec::new())) };
    let mut params = Vec::new();
    for item in rest.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| Error::invalid("solver", format!("'{item}' in '{spec}': parameters are key=value")))?;
        params.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((name, params))
}

/// Reads the parameters of a stochastic solver, rejecting unknown keys.
struct Params<'a> {
    spec: &'a str,
    items: Vec<(String, String)>,
}

impl Params<'_> {
    fn check_keys(&self, allowed: &[&str]) -> Result<()> {
        match self.items.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            Some((k, _)) => Err(Error::invalid(
                "solver",
                format!("unknown parameter '{k}' in '{}'; valid: {}", self.spec, allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }
    fn num(&self, key: &str, default: f64) -> Result<f64> {
        match self.items.iter().find(|(k, _)| k == key) {
            None => Ok(default),
            Some((_, v)) => {
                v.parse().map_err(|_| Error::invalid(key, format!("'{v}' is not a number (in '{}')", self.spec)))
            }
        }
    }
    fn text(&self, key: &str, default: &str) -> String {
        self.items.iter().find(|(k, _)| k == key).map_or(default.to_string(), |(_, v)| v.clone())
    }
}

fn build_stochastic(name: &str, params: &Params<'_>, opts: &SolverOptions) -> Result<Option<Box<dyn Solver>>> {
    let eta_of = |default: f64| -> Result<f64> {
        let eta = params.num("eta", default)?;
        if !(eta >= 0.0 && eta.is_finite()) {
            return Err(Error::invalid("eta", format!("must be ≥ 0, got {eta}")));
        }
        Ok(eta)
    };
    Ok(Some(match name {
        "ddpm" => {
            params.check_keys(&[])?;
            Box::new(DdimEta { eta: 1.0 })
        }
        "resfusion" => {
            params.check_keys(&[])?;
            Box::new(ResfusionAncestral)
        }
        "ddim-eta" => {
            params.check_keys(&["eta"])?;
            Box::new(DdimEta { eta: eta_of(opts.eta)? })
        }
        "euler-maruyama" => {
            params.check_keys(&[])?;
            Box::new(EulerMaruyama)
        }
        "sde-dpm++2m" | "sde-dpm++3m" => {
            params.check_keys(&["eta"])?;
            Box::new(SdeDpmPlusPlus { order: if name.contains('3') { 3 } else { 2 }, eta: eta_of(1.0)? })
        }
        "pc" => {
            params.check_keys(&["predictor", "corrector", "snr", "steps"])?;
            let predictor = match params.text("predictor", "reverse_diffusion").as_str() {
                "euler_maruyama" | "em" => PcPredictor::EulerMaruyama,
                "reverse_diffusion" | "rd" => PcPredictor::ReverseDiffusion { kernel: false },
                "reverse_diffusion_kernel" => PcPredictor::ReverseDiffusion { kernel: true },
                "ancestral" => PcPredictor::Ancestral,
                "none" => PcPredictor::None,
                other => {
                    return Err(Error::unknown(
                        "predictor",
                        other,
                        &["euler_maruyama", "reverse_diffusion", "reverse_diffusion_kernel", "ancestral", "none"],
                    ));
                }
            };
            let corrector = match params.text("corrector", "ald").as_str() {
                "langevin" => PcCorrector::Langevin,
                "ald" | "annealed_langevin" => PcCorrector::Ald,
                "none" => PcCorrector::None,
                other => return Err(Error::unknown("corrector", other, &["langevin", "ald", "none"])),
            };
            let steps = params.num("steps", opts.corrector_steps as f64)?;
            if !(steps >= 0.0 && steps.fract() == 0.0) {
                return Err(Error::invalid(
                    "steps",
                    format!("corrector steps must be a whole number ≥ 0, got {steps}"),
                ));
            }
            let pc = PredictorCorrector {
                predictor,
                corrector,
                snr: params.num("snr", opts.snr)?,
                corrector_steps: steps as usize,
            };
            pc.plan_steps(1, false)?; // validates snr and steps
            Box::new(pc)
        }
        "edm-churn" => {
            params.check_keys(&["churn", "tmin", "tmax", "noise"])?;
            let d = EdmChurn::default();
            let churn = EdmChurn {
                churn: params.num("churn", d.churn)?,
                s_min: params.num("tmin", d.s_min)?,
                s_max: params.num("tmax", d.s_max)?,
                s_noise: params.num("noise", d.s_noise)?,
            };
            if churn.churn < 0.0 || churn.s_noise < 0.0 {
                return Err(Error::invalid("edm-churn", "churn and noise must be ≥ 0"));
            }
            Box::new(churn)
        }
        _ => return Ok(None),
    }))
}

const DETERMINISTIC: &[&str] = &[
    "ddim",
    "euler",
    "heun",
    "rk4",
    "euler-t",
    "heun-t",
    "rk4-t",
    "dpm-solver-1",
    "dpm-solver-2",
    "dpm-solver-3",
    "dpm++2s",
    "dpm++3s",
    "dpm++2m",
    "dpm++3m",
    "dpm++3m-ref",
    "dpm++2m+unic",
    "dpm++3m+unic",
    "unipc-bh1",
    "unipc-bh2",
    "unipc-bh1-3",
    "unipc-bh2-3",
    "deis-1",
    "deis-2",
    "deis-3",
    "dopri5",
    "dpm-solver-12",
    "dpm-solver-23",
    "rddm",
];

/// Builds a solver from its registry name (`unipc-bh2-4` and similar name any UniPC order; stochastic solvers take
/// parameters as `name:key=value,…`, e.g. `pc:corrector=langevin,snr=0.16`, `ddim-eta:eta=0.3`).
pub fn build_solver(spec: &str, opts: &SolverOptions) -> Result<Box<dyn Solver>> {
    let (name, items) = split_params(spec)?;
    let params = Params { spec, items };
    if let Some(s) = build_stochastic(name, &params, opts)? {
        return Ok(s);
    }
    if !params.items.is_empty() {
        return Err(Error::invalid("solver", format!("'{name}' takes no parameters")));
    }
    let (lof, warm) = (opts.lower_order_final, opts.warmup);
    let unipc = |rest: &str, v: UniVariant| -> Option<Box<dyn Solver>> {
        let order =
            if rest.is_empty() { 2 } else { rest.strip_prefix('-')?.parse().ok().filter(|o| (1..=8).contains(o))? };
        Some(Box::new(DataMultistep::unipc(v, order, lof).with_warmup(warm)))
    };
    let solver: Option<Box<dyn Solver>> = match name {
        "ddim" | "dpm++1m" => Some(Box::new(DataMultistep::ddim())),
        "dpm-solver-1" => Some(Box::new(Singlestep::new(Form::Noise, 1))),
        "dpm++2m" => Some(Box::new(DataMultistep::dpmpp(2, None, lof).with_warmup(warm))),
        "dpm++3m" => Some(Box::new(DataMultistep::dpmpp(3, None, lof).with_warmup(warm))),
        "dpm++3m-ref" => Some(Box::new(DataMultistep::dpmpp3m_reference(lof).with_warmup(warm))),
        "dpm++2m+unic" => Some(Box::new(DataMultistep::dpmpp(2, Some(UniVariant::Bh2), lof).with_warmup(warm))),
        "dpm++3m+unic" => Some(Box::new(DataMultistep::dpmpp(3, Some(UniVariant::Bh2), lof).with_warmup(warm))),
        "dpm-solver-2" => Some(Box::new(Singlestep::new(Form::Noise, 2))),
        "dpm-solver-3" => Some(Box::new(Singlestep::new(Form::Noise, 3))),
        "dpm++2s" => Some(Box::new(Singlestep::new(Form::Data, 2))),
        "dpm++3s" => Some(Box::new(Singlestep::new(Form::Data, 3))),
        "euler" => Some(Box::new(RungeKutta::new(rk::EULER, Variable::SigmaBar))),
        "heun" => Some(Box::new(RungeKutta::new(rk::HEUN, Variable::SigmaBar))),
        "rk4" => Some(Box::new(RungeKutta::new(rk::RK4, Variable::SigmaBar))),
        "euler-t" => Some(Box::new(RungeKutta::new(rk::EULER, Variable::Time))),
        "heun-t" => Some(Box::new(RungeKutta::new(rk::HEUN, Variable::Time))),
        "rk4-t" => Some(Box::new(RungeKutta::new(rk::RK4, Variable::Time))),
        "deis-1" => Some(Box::new(DeisTab::new(1, lof).with_warmup(warm))),
        "deis-2" => Some(Box::new(DeisTab::new(2, lof).with_warmup(warm))),
        "deis-3" => Some(Box::new(DeisTab::new(3, lof).with_warmup(warm))),
        "dopri5" => Some(Box::new(Dopri5 { rtol: opts.rtol, atol: opts.atol })),
        "dpm-solver-12" => Some(Box::new(AdaptiveDpm::new(2, opts.rtol, opts.atol))),
        "dpm-solver-23" => Some(Box::new(AdaptiveDpm::new(3, opts.rtol, opts.atol))),
        "rddm" => Some(Box::new(RddmDeterministic)),
        other => {
            if let Some(rest) = other.strip_prefix("unipc-bh1") {
                unipc(rest, UniVariant::Bh1)
            } else if let Some(rest) = other.strip_prefix("unipc-bh2") {
                unipc(rest, UniVariant::Bh2)
            } else {
                None
            }
        }
    };
    solver.ok_or_else(|| Error::unknown("solver", name, &[DETERMINISTIC, STOCHASTIC].concat()))
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
    let out = if differentiable {
        solver.solve(&mut run, x, &points, &orders)?
    } else {
        // Plain sampling needs no gradients: no autograd graph is built, whatever the model.
        tch::no_grad(|| solver.solve(&mut run, x, &points, &orders))?
    };
    let nfe = run.nfe();
    if bool::try_from(out.f_isfinite()?.f_all()?.f_logical_not()?)? {
        return Err(Error::Numerical { op: "sample", reason: format!("{} produced NaN/Inf", solver.info().name) });
    }
    Ok(Sample { x: out, nfe, grid: points })
}
