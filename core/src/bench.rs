//! Solver benchmarks on exact problems: every listed solver at every NFE from the same seeded starting points,
//! error to the exact solution, observed order between consecutive NFEs, and wall time. Backs
//! `diffuse solvers bench --problem problem.json` and the convergence-order tests.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::denoiser::Conditioning;
use crate::exact::GaussianMixture;
use crate::param::Parameterization;
use crate::path::{NoisePath, PathSpec, Point};
use crate::seed::SampleSeeds;
use crate::solvers::{
    Budget, LowerOrderFinal, NoNoise, Sample, SeededNoise, SolverOptions, SolverSpec, Warmup, build_solver, plan_cost,
    sample,
};
use crate::spacing::{End, GridSpec, Spacing};
use crate::{Error, Result, limits};

/// Largest problem file read.
pub const MAX_PROBLEM_FILE_BYTES: u64 = 64 << 20;
/// Smallest tolerance an adaptive solver is run at.
pub const MIN_TOLERANCE: f64 = 1e-13;

/// The data distribution of a problem file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureSpec {
    /// Component weights (sum to 1).
    pub weights: Vec<f64>,
    /// Component means, each of `dim` values.
    pub means: Vec<Vec<f64>>,
    /// Component standard deviations.
    pub stds: Vec<f64>,
}

/// A benchmark problem (`problem.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    /// Data dimension.
    pub dim: usize,
    /// The data: an isotropic Gaussian mixture.
    pub mixture: MixtureSpec,
    /// The noise path.
    pub path: PathSpec,
    /// Time spacing.
    #[serde(default = "default_spacing")]
    pub spacing: Spacing,
    /// "zero" (to the data) or the time at which solutions are compared.
    #[serde(default = "default_end")]
    pub end: End,
    /// Solvers (`diffuse solvers list`), parsed and checked when the file is read.
    pub solvers: Vec<SolverSpec>,
    /// Model-evaluation budgets for fixed-step solvers.
    pub nfe: Vec<usize>,
    /// Tolerances (rtol; atol = rtol/10) for adaptive solvers.
    #[serde(default = "default_tolerances")]
    pub tolerances: Vec<f64>,
    /// Number of samples (trajectories).
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Seed of the starting points.
    #[serde(default)]
    pub seed: u64,
    /// Start time (default: the path's t_max).
    #[serde(default)]
    pub t_start: Option<f64>,
    /// Clip the start to λ ≥ this.
    #[serde(default)]
    pub lambda_min: Option<f64>,
    /// Anchor μ (one value per coordinate) for paths with γ ≠ 0; default all zeros.
    #[serde(default)]
    pub anchor: Option<Vec<f64>>,
    /// How the exact model presents its output (to exercise conversions); default x0.
    #[serde(default = "default_param")]
    pub parameterization: Parameterization,
    /// Relative tolerance of the reference integrator for mixtures.
    #[serde(default = "default_reference_rtol")]
    pub reference_rtol: f64,
    /// How multistep solvers start (`lower_order` as the references, or `singlestep`).
    #[serde(default)]
    pub warmup: Warmup,
    /// Lower-order final steps of multistep solvers (`auto`: below 15 steps).
    #[serde(default)]
    pub lower_order_final: LowerOrderFinal,
}

fn default_spacing() -> Spacing {
    Spacing::UniformLambda
}
fn default_end() -> End {
    End::Zero
}
fn default_tolerances() -> Vec<f64> {
    vec![1e-2, 1e-3, 1e-4, 1e-5]
}
fn default_samples() -> usize {
    256
}
fn default_param() -> Parameterization {
    Parameterization::Data
}
fn default_reference_rtol() -> f64 {
    1e-11
}

impl Problem {
    /// Reads and validates a problem file (errors name the file and the field).
    pub fn load(path: &FsPath) -> Result<Problem> {
        let bytes = crate::io::read_input(path, MAX_PROBLEM_FILE_BYTES)?;
        let text = String::from_utf8(bytes).map_err(|_| Error::file(path, "is not UTF-8 text (a JSON problem is)"))?;
        let p: Problem = serde_json::from_str(&text).map_err(|e| Error::file(path, e))?;
        p.validate().map_err(|e| Error::file(path, e))?;
        Ok(p)
    }

    /// Checks dimensions, names and ranges.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 {
            return Err(Error::invalid("dim", "must be ≥ 1"));
        }
        if let Some(i) = self.mixture.means.iter().position(|m| m.len() != self.dim) {
            return Err(Error::invalid(
                "mixture.means",
                format!("mean {i} has {} values, dim is {}", self.mixture.means[i].len(), self.dim),
            ));
        }
        if let Some(a) = &self.anchor
            && a.len() != self.dim
        {
            return Err(Error::invalid("anchor", format!("{} values, dim is {}", a.len(), self.dim)));
        }
        if self.samples == 0 {
            return Err(Error::invalid("samples", "must be ≥ 1"));
        }
        limits::at_most("samples", self.samples, limits::MAX_BENCH_SAMPLES)?;
        limits::product_at_most("samples × dim", self.samples, self.dim, limits::MAX_BENCH_ELEMENTS)?;
        limits::product_at_most(
            "mixture components × dim",
            self.mixture.means.len(),
            self.dim,
            limits::MAX_BENCH_ELEMENTS,
        )?;
        limits::at_most("nfe (entries)", self.nfe.len(), limits::MAX_BUDGETS)?;
        limits::at_most("tolerances (entries)", self.tolerances.len(), limits::MAX_BUDGETS)?;
        if let Some(n) = self.nfe.iter().find(|n| **n > limits::MAX_NFE) {
            limits::at_most("nfe", *n, limits::MAX_NFE)?;
        }
        // Smallest tolerance: an adaptive solver's step count grows like rtol^(-1/5); 1e-12 is already ~300 steps
        // per unit of λ, and below it f64 round-off makes the control loop stall.
        if let Some(t) = self.tolerances.iter().find(|t| **t < MIN_TOLERANCE) {
            return Err(Error::invalid("tolerances", format!("{t} is below the smallest supported {MIN_TOLERANCE}")));
        }
        if self.solvers.is_empty() {
            return Err(Error::invalid("solvers", "list at least one solver"));
        }
        let mut fixed_step = false;
        let mut adaptive = false;
        for spec in &self.solvers {
            let solver = spec.build(&SolverOptions::default()).map_err(|e| Error::invalid("solvers", e.to_string()))?;
            if solver.info().adaptive { adaptive = true } else { fixed_step = true }
        }
        if fixed_step && self.nfe.is_empty() {
            return Err(Error::invalid("nfe", "list at least one budget for the fixed-step solvers"));
        }
        if adaptive && self.tolerances.is_empty() {
            return Err(Error::invalid("tolerances", "list at least one tolerance for the adaptive solvers"));
        }
        if self.samples < 2
            && self.solvers.iter().any(|spec| spec.build(&SolverOptions::default()).is_ok_and(|s| s.info().stochastic))
        {
            return Err(Error::invalid("samples", "stochastic solvers are scored by MMD, which needs ≥ 2 samples"));
        }
        if let Some(n) = self.nfe.iter().find(|n| **n == 0) {
            return Err(Error::invalid("nfe", format!("budgets must be ≥ 1, got {n}")));
        }
        if let Some(t) = self.tolerances.iter().find(|t| !(**t > 0.0 && **t < 1.0)) {
            return Err(Error::invalid("tolerances", format!("must be in (0, 1), got {t}")));
        }
        let path = self.path.build().map_err(|e| Error::invalid("path", e.to_string()))?;
        self.mixture(path).map(|_| ())
    }

    fn mixture(&self, path: Arc<dyn NoisePath>) -> Result<GaussianMixture> {
        let m = &self.mixture;
        Ok(GaussianMixture::new(m.weights.clone(), m.means.clone(), m.stds.clone(), path)?
            .with_output(self.parameterization))
    }

    /// The grid spec of the problem.
    pub fn grid(&self) -> GridSpec {
        GridSpec { spacing: self.spacing.clone(), end: self.end, t_start: self.t_start, lambda_min: self.lambda_min }
    }
}

/// The problem of the convergence-order measurements (`tests/solver_order.rs`, `examples/order_table.rs`): a
/// 4-dimensional Gaussian with an anchor on the default path of `kind`, a uniform-λ grid from λ = max(λ(T), −4) to
/// min(λ(t_min), 3), singlestep warm-up and no lower-order final steps.
pub fn order_problem(kind: &str) -> Result<Problem> {
    let spec = PathSpec::default_of(kind)?;
    let path = spec.build()?;
    let (lo, hi) = path.t_range();
    Ok(Problem {
        dim: 4,
        mixture: MixtureSpec { weights: vec![1.0], means: vec![vec![0.5, -0.3, 0.2, 1.0]], stds: vec![0.5] },
        path: spec,
        spacing: Spacing::UniformLambda,
        end: End::Time(path.t_of_lambda(path.lambda(lo).min(3.0))),
        solvers: vec!["ddim".parse()?],
        nfe: vec![1],
        tolerances: vec![1e-3],
        samples: 16,
        seed: 0,
        t_start: Some(path.t_of_lambda(path.lambda(hi).max(-4.0))),
        lambda_min: None,
        anchor: Some(vec![0.3, 0.1, -0.2, 0.4]),
        parameterization: Parameterization::Data,
        reference_rtol: 1e-11,
        warmup: Warmup::Singlestep,
        lower_order_final: LowerOrderFinal::Never,
    })
}

/// The fixed-step deterministic solvers of the registry (the ones with a measurable order on a grid).
pub fn fixed_step_solvers() -> Vec<String> {
    crate::solvers::solver_names()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| {
            build_solver(n, &SolverOptions::default()).is_ok_and(|s| !s.info().stochastic && !s.info().adaptive)
        })
        .collect()
}

/// One row of a benchmark: a solver at one budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchRow {
    /// Solver name.
    pub solver: String,
    /// Requested NFE (fixed-step) or rtol (adaptive).
    pub budget: f64,
    /// Model evaluations actually spent per sample batch.
    pub nfe: usize,
    /// Grid intervals.
    pub steps: usize,
    /// RMS error per coordinate: `sqrt(mean over samples of ‖x − x_ref‖²/dim)` (deterministic solvers).
    pub rms_error: Option<f64>,
    /// Median over the draws of the per-draw error `‖x − x_ref‖/√dim` (robust to the few draws that switch mode).
    pub median_error: Option<f64>,
    /// 90th percentile of the per-draw error.
    pub p90_error: Option<f64>,
    /// Share of the draws that end in another mixture component than their exact solution (the most likely
    /// component at the end point).
    pub switched: Option<f64>,
    /// Stochastic solvers: unbiased MMD² to exact samples of the target (Gaussian kernel, see [`mmd2`]).
    pub mmd2: Option<f64>,
    /// `−Δlog(error)/Δlog(NFE)` against the previous row of the same solver.
    pub observed_order: Option<f64>,
    /// Wall time of the solve, milliseconds.
    pub wall_ms: f64,
    /// Error message when the run failed.
    pub error: Option<String>,
}

/// Everything a benchmark produced.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The path's description.
    pub path: String,
    /// Number of samples.
    pub samples: usize,
    /// Data dimension.
    pub dim: usize,
    /// The rows, grouped by solver in input order.
    pub rows: Vec<BenchRow>,
}

/// The exact setup of a problem: model, starting points, anchor and the end point of the reference.
pub struct Setup {
    /// The exact denoiser.
    pub model: GaussianMixture,
    /// The path.
    pub path: Arc<dyn NoisePath>,
    /// The conditioning (anchor).
    pub cond: Conditioning,
    /// Starting points at `start`.
    pub x_start: Tensor,
    /// Start point.
    pub start: Point,
    /// End point (the data for `end: zero`).
    pub end: Point,
}

impl Setup {
    /// Builds the model, draws the starting points from the exact marginal at the grid's start.
    pub fn new(problem: &Problem) -> Result<Setup> {
        let path = problem.path.build()?;
        let model = problem.mixture(path.clone())?;
        let grid = problem.grid().build(path.as_ref(), 1)?;
        let start = grid[0];
        let end = match problem.end {
            End::Zero => Point::DATA,
            End::Time(t) => path.point(t),
        };
        let n = problem.samples as i64;
        let anchor = problem.anchor.clone().unwrap_or_else(|| vec![0.0; problem.dim]);
        let mu = Tensor::from_slice(&anchor)
            .view([1, problem.dim as i64])
            .f_expand([n, problem.dim as i64], false)?
            .f_contiguous()?;
        let seeds = SampleSeeds::new(problem.seed, 0, problem.samples);
        let x_start = model.sample_marginal(&start, &seeds, Some(&mu))?;
        Ok(Setup { model, path, cond: Conditioning::with_anchor(mu), x_start, start, end })
    }

    /// The same setup started from given points `[n, dim]` at the grid's first time (another library's draws, or
    /// draws saved from an earlier run), instead of drawing them.
    pub fn with_start(problem: &Problem, x_start: Tensor) -> Result<Setup> {
        let mut setup = Setup::new(&Problem { samples: 1, ..problem.clone() })?;
        let size = x_start.size();
        if size.len() != 2 || size[1] != problem.dim as i64 || size[0] < 1 {
            return Err(Error::invalid("start", format!("need [n, {}] starting points, got {size:?}", problem.dim)));
        }
        let n = size[0];
        let anchor =
            setup.cond.anchor.as_ref().map(|a| a.f_narrow(0, 0, 1)?.f_expand([n, size[1]], false)?.f_contiguous());
        if let Some(a) = anchor {
            setup.cond = Conditioning::with_anchor(a?);
        }
        setup.x_start = x_start.f_to_kind(Kind::Double)?;
        Ok(setup)
    }

    /// A deterministic solver from the setup's starting points with its own plan for `budget`.
    pub fn solve(&self, solver: &dyn crate::solvers::Solver, grid: &GridSpec, budget: Budget) -> Result<Sample> {
        sample(solver, self.path.as_ref(), &self.model, &self.cond, &self.x_start, grid, budget, &mut NoNoise, &mut ())
    }

    /// The exact solution at the end point for every starting point.
    pub fn reference(&self, rtol: f64) -> Result<Tensor> {
        self.model.flow(&self.x_start, &self.start, &self.end, self.cond.anchor.as_ref(), rtol)
    }
}

/// Per-draw errors `‖x − x_ref‖/√dim` of two `[B, dim]` tensors: (median, 90th percentile), each the sorted
/// draw at rank ⌈qB⌉.
pub fn error_quantiles(x: &Tensor, reference: &Tensor) -> Result<(f64, f64)> {
    let d = x.f_to_kind(Kind::Double)?.f_sub(&reference.f_to_kind(Kind::Double)?)?;
    let dim = d.size().last().copied().unwrap_or(1).max(1) as f64;
    let per_draw =
        d.f_square()?.f_sum_dim_intlist(Some(&[-1i64][..]), false, Kind::Double)?.f_div_scalar(dim)?.f_sqrt()?;
    let mut e = Vec::<f64>::try_from(per_draw.f_flatten(0, -1)?)?;
    if e.is_empty() {
        return Err(Error::invalid("samples", "no draws to take quantiles of"));
    }
    e.sort_by(f64::total_cmp);
    let at = |q: f64| e[((q * e.len() as f64).ceil() as usize).clamp(1, e.len()) - 1];
    Ok((at(0.5), at(0.9)))
}

/// RMS error per coordinate between two `[B, dim]` tensors.
pub fn rms_error(x: &Tensor, reference: &Tensor) -> Result<f64> {
    let d = x.f_to_kind(Kind::Double)?.f_sub(&reference.f_to_kind(Kind::Double)?)?;
    Ok(f64::try_from(d.f_square()?.f_mean(Kind::Double)?.f_sqrt()?)?)
}

/// Unbiased estimate of the squared maximum mean discrepancy between samples `x` `[n, d]` and `y` `[m, d]` with the
/// Gaussian kernel `k(a, b) = exp(−‖a − b‖²/(2ℓ²))`; `bandwidth` ℓ defaults to the median distance between the
/// points of `y` (the median heuristic). 0 in expectation when both come from one distribution.
pub fn mmd2(x: &Tensor, y: &Tensor, bandwidth: Option<f64>) -> Result<f64> {
    let (x, y) = (x.f_to_kind(Kind::Double)?, y.f_to_kind(Kind::Double)?);
    let (n, m) = (x.size()[0] as f64, y.size()[0] as f64);
    if n < 2.0 || m < 2.0 {
        return Err(Error::invalid("samples", "MMD needs at least 2 samples on each side"));
    }
    let dyy = Tensor::f_cdist(&y, &y, 2.0, None)?;
    let ell = match bandwidth {
        Some(l) => l,
        None => f64::try_from(dyy.f_flatten(0, -1)?.f_median()?)?.max(1e-12),
    };
    let k = |d: Tensor| -> Result<Tensor> { Ok(d.f_square()?.f_div_scalar(-2.0 * ell * ell)?.f_exp()?) };
    let sum_off_diag = |kk: Tensor, count: f64| -> Result<f64> {
        let total = f64::try_from(kk.f_sum(Kind::Double)?)?;
        Ok((total - count) / (count * (count - 1.0)))
    };
    let kxx = sum_off_diag(k(Tensor::f_cdist(&x, &x, 2.0, None)?)?, n)?;
    let kyy = sum_off_diag(k(dyy)?, m)?;
    let kxy = f64::try_from(k(Tensor::f_cdist(&x, &y, 2.0, None)?)?.f_mean(Kind::Double)?)?;
    Ok(kxx + kyy - 2.0 * kxy)
}

/// Starting points from a JSON file: an array of `dim`-long arrays of numbers (at the grid's first time).
pub fn read_starts(path: &FsPath, dim: usize) -> Result<Tensor> {
    let bytes = crate::io::read_input(path, MAX_START_FILE_BYTES)?;
    let rows: Vec<Vec<f64>> = serde_json::from_slice(&bytes).map_err(|e| Error::file(path, e))?;
    if rows.is_empty() {
        return Err(Error::file(path, "no starting points (an array of arrays of numbers)"));
    }
    limits::at_most("starting points", rows.len(), limits::MAX_BENCH_SAMPLES).map_err(|e| Error::file(path, e))?;
    if let Some(i) = rows.iter().position(|r| r.len() != dim) {
        return Err(Error::file(path, format!("point {i} has {} coordinates, the problem has {dim}", rows[i].len())));
    }
    if rows.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::file(path, "starting points must be finite"));
    }
    Ok(Tensor::from_slice(&rows.concat()).view([rows.len() as i64, dim as i64]))
}

/// Writes starting points `[n, dim]` as the JSON [`read_starts`] reads.
pub fn starts_json(x: &Tensor) -> Result<String> {
    let dim = x.size().last().copied().unwrap_or(1);
    let flat = Vec::<f64>::try_from(x.f_to_kind(Kind::Double)?.f_flatten(0, -1)?)?;
    let rows: Vec<&[f64]> = flat.chunks(dim.max(1) as usize).collect();
    serde_json::to_string(&rows).map_err(|e| Error::invalid("start", e.to_string()))
}

/// Largest starting-points file read (2²⁰ points of 16 coordinates fit with room to spare).
const MAX_START_FILE_BYTES: u64 = 1 << 30;

/// Runs a problem; `progress` is told (solver, budget) before each run.
pub fn run_problem(problem: &Problem, progress: impl FnMut(&str, f64)) -> Result<BenchReport> {
    problem.validate()?;
    run_setup(problem, Setup::new(problem)?, ExtraRuns::default(), progress)
}

/// Runs beyond the problem's own solvers, on the same draws.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExtraRuns<'a> {
    /// Searched schedules (rows `s3:SOLVER`).
    pub schedules: &'a [crate::search::Schedule],
    /// Step counts of the "Hyperparameters are all you need" recipe (rows `hyper-N`; 5, 6 or 8).
    pub recipes: &'a [usize],
}

/// One row to run: a solver on a grid with a budget.
struct BenchRun {
    label: String,
    solver: SolverSpec,
    budget: f64,
    grid: GridSpec,
    /// A fixed number of intervals instead of the NFE budget.
    steps: Option<usize>,
    /// A searched schedule (its solver, orders or strategies).
    schedule: Option<crate::search::Schedule>,
    lower_order_final: Option<crate::solvers::LowerOrderFinal>,
}

impl BenchRun {
    fn plain(solver: SolverSpec, budget: f64, grid: GridSpec) -> Self {
        BenchRun {
            label: solver.to_string(),
            solver,
            budget,
            grid,
            steps: None,
            schedule: None,
            lower_order_final: None,
        }
    }
}

/// Runs a problem from its setup (for example [`Setup::with_start`]), then `extra` runs on the same draws.
pub fn run_setup(
    problem: &Problem,
    setup: Setup,
    extra: ExtraRuns<'_>,
    mut progress: impl FnMut(&str, f64),
) -> Result<BenchReport> {
    problem.validate()?;
    let samples = setup.x_start.size()[0] as usize;
    let reference = setup.reference(problem.reference_rtol)?;
    let anchor = setup.cond.anchor.as_ref();
    let reference_component = setup.model.component(&reference, &setup.end, anchor)?;
    // Exact samples of the target, independent of the starting points (another seed stream).
    let target = {
        let seeds = SampleSeeds::new(problem.seed ^ 0x005E_ED7A_26E7, 0, samples);
        let x0 = setup.model.sample_data(&seeds);
        if setup.end.is_data() {
            x0
        } else {
            setup.model.sample_marginal(&setup.end, &seeds, setup.cond.anchor.as_ref())?
        }
    };
    let to_data = problem.end == End::Zero;
    // Every run: the problem's solvers on its grid, then the schedules, then the recipes.
    let mut runs: Vec<BenchRun> = Vec::new();
    for spec in &problem.solvers {
        let adaptive = spec.build(&SolverOptions::default())?.info().adaptive;
        let budgets: Vec<f64> =
            if adaptive { problem.tolerances.clone() } else { problem.nfe.iter().map(|&n| n as f64).collect() };
        runs.extend(budgets.into_iter().map(|b| BenchRun::plain(spec.clone(), b, problem.grid())));
    }
    for s in extra.schedules {
        let grid = s.grid();
        runs.push(BenchRun {
            label: format!("s3:{}", s.solver),
            schedule: Some(s.clone()),
            ..BenchRun::plain(s.solver.parse()?, s.nfe as f64, grid)
        });
    }
    for &steps in extra.recipes {
        if !to_data {
            return Err(Error::invalid(
                "recipe",
                "the recipes' output is compared with the data: use \"end\": \"zero\"",
            ));
        }
        let r = crate::search::Recipe::new(setup.path.as_ref(), steps, problem.t_start)?;
        runs.push(BenchRun {
            label: format!("hyper-{steps}"),
            steps: Some(steps),
            lower_order_final: Some(r.lower_order_final),
            ..BenchRun::plain(r.solver.parse()?, steps as f64, r.grid)
        });
    }
    let mut rows = Vec::new();
    let mut prev: Option<(String, usize, f64)> = None;
    for BenchRun { label, solver: spec, budget, grid, steps: fixed_steps, schedule, lower_order_final } in runs {
        let probe = spec.build(&SolverOptions::default())?;
        let adaptive = probe.info().adaptive;
        if prev.as_ref().is_some_and(|p| p.0 != label) {
            prev = None;
        }
        progress(&label, budget);
        let opts = SolverOptions {
            rtol: if adaptive { budget } else { 1e-3 },
            atol: if adaptive { budget * 0.1 } else { 1e-4 },
            lower_order_final: lower_order_final.unwrap_or(problem.lower_order_final),
            warmup: problem.warmup,
            ..SolverOptions::default()
        };
        let solver = match &schedule {
            Some(s) => s.build_solver(&opts)?,
            None => spec.build(&opts)?,
        };
        let orders = schedule.as_ref().map(|s| s.orders(solver.as_ref())).transpose()?;
        let b = match fixed_steps {
            Some(n) => Budget::Steps(n),
            None if adaptive => Budget::Steps(1),
            None => Budget::Nfe(budget as usize),
        };
        let steps = match b {
            Budget::Nfe(n) => {
                solver.plan_nfe(n, to_data).map(|p| (p.len(), plan_cost(solver.as_ref(), &p, to_data))).ok()
            }
            Budget::Steps(_) => Some((0, 0)),
        };
        let stochastic = solver.info().stochastic;
        let mut seeded = SeededNoise::new(SampleSeeds::new(problem.seed ^ 0xD1FF_05E5, 0, samples));
        let noise: &mut dyn crate::solvers::NoiseSource = if stochastic { &mut seeded } else { &mut NoNoise };
        let clock = Instant::now();
        let (path, model, cond, x) = (setup.path.as_ref(), &setup.model, &setup.cond, &setup.x_start);
        let result = match &orders {
            Some(o) => {
                crate::solvers::sample_with_orders(solver.as_ref(), path, model, cond, x, &grid, o, noise, &mut ())
            }
            None => sample(solver.as_ref(), path, model, cond, x, &grid, b, noise, &mut ()),
        };
        let wall_ms = clock.elapsed().as_secs_f64() * 1e3;
        // A grid that stops short of the data (a recipe) hands over x/α at its last point, as a decoder sees it.
        let result = result.and_then(|mut s| {
            let last = *s.grid.last().expect("a grid has points");
            if to_data && !last.is_data() {
                s.x = s.x.f_div_scalar(last.alpha)?;
            }
            Ok(s)
        });
        let row = match result {
            Ok(s) if stochastic => BenchRow {
                solver: label.clone(),
                budget,
                nfe: s.nfe,
                steps: s.grid.len() - 1,
                rms_error: None,
                median_error: None,
                p90_error: None,
                switched: None,
                mmd2: Some(mmd2(&s.x, &target, None)?),
                observed_order: None,
                wall_ms,
                error: None,
            },
            Ok(s) => {
                let err = rms_error(&s.x, &reference)?;
                let observed = prev.as_ref().and_then(|&(_, n0, e0)| {
                    (s.nfe != n0 && e0 > 0.0 && err > 0.0).then(|| -(err / e0).ln() / (s.nfe as f64 / n0 as f64).ln())
                });
                prev = Some((label.clone(), s.nfe, err));
                let (median, p90) = error_quantiles(&s.x, &reference)?;
                let component = setup.model.component(&s.x, &setup.end, anchor)?;
                let moved = f64::try_from(component.f_ne_tensor(&reference_component)?.f_mean(Kind::Double)?)?;
                BenchRow {
                    solver: label.clone(),
                    budget,
                    nfe: s.nfe,
                    steps: if adaptive { 0 } else { s.grid.len() - 1 },
                    rms_error: Some(err),
                    median_error: Some(median),
                    p90_error: Some(p90),
                    switched: Some(moved),
                    mmd2: None,
                    observed_order: observed,
                    wall_ms,
                    error: None,
                }
            }
            Err(e) => BenchRow {
                solver: label.clone(),
                budget,
                nfe: steps.map_or(0, |s| s.1),
                steps: steps.map_or(0, |s| s.0),
                rms_error: None,
                median_error: None,
                p90_error: None,
                switched: None,
                mmd2: None,
                observed_order: None,
                wall_ms,
                error: Some(e.to_string()),
            },
        };
        rows.push(row);
    }
    Ok(BenchReport { path: setup.path.name(), samples, dim: problem.dim, rows })
}

#[cfg(test)]
mod robust_tests {
    use super::*;

    /// The quantiles are the sorted per-draw errors at ranks ⌈B/2⌉ and ⌈0.9B⌉; one wild draw moves the rms, not
    /// the median.
    #[test]
    fn quantiles_of_per_draw_errors() {
        let reference = Tensor::zeros([10, 4], (Kind::Double, tch::Device::Cpu));
        let per_draw: Vec<f64> = (1..=10).map(|i| if i == 10 { 1000.0 } else { i as f64 }).collect();
        // Row i has error per_draw[i] in every coordinate, so ‖·‖/√dim is per_draw[i].
        let x = Tensor::from_slice(&per_draw).view([10, 1]).expand([10, 4], false);
        let (median, p90) = error_quantiles(&x, &reference).unwrap();
        assert_eq!((median, p90), (5.0, 9.0));
        assert!(rms_error(&x, &reference).unwrap() > 300.0);
    }

    /// On a two-component mixture, draws moved to the other mode are counted as switched.
    #[test]
    fn switches_are_counted_against_the_exact_component() {
        let path = crate::path::PathSpec::default_of("edm").unwrap().build().unwrap();
        let m = GaussianMixture::new(vec![0.5, 0.5], vec![vec![-2.0], vec![2.0]], vec![0.3, 0.3], path).unwrap();
        let exact = Tensor::from_slice(&[-2.1, -1.9, 2.0, 2.2]).view([4, 1]);
        let moved = Tensor::from_slice(&[-2.0, 1.9, 2.1, -0.2]).view([4, 1]);
        let a = m.component(&exact, &Point::DATA, None).unwrap();
        let b = m.component(&moved, &Point::DATA, None).unwrap();
        assert_eq!(Vec::<i64>::try_from(&a).unwrap(), vec![0, 0, 1, 1]);
        assert_eq!(f64::try_from(b.ne_tensor(&a).mean(Kind::Double)).unwrap(), 0.5);
    }
}
