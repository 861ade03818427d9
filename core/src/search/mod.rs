//! Solver schedules and their search: a schedule is a solver and an explicit time grid for one NFE budget, a value
//! (JSON) that core's driver runs like any other grid. The search (S³/USF-style: the time steps, the base solver
//! and, for the multistep family, each step's strategy — order, predictor, corrector) minimises a statistic of the
//! error against reference solutions on *search* draws ([`SearchObjective`]), and each result is then scored on
//! other draws.
//!
//! The grid's free points are placed in u = ln σ̄ (σ̄ = σ/α; the path's own time t on paths that start at α = 0,
//! as RDDM) between the start and the path's smallest time:
//! `u_j = u_start − (u_start − u_min)·(w_1 + … + w_j)` with `w = softmax(θ)`, so every θ gives a valid,
//! strictly decreasing grid. θ starts at the problem's own grid and is improved by Nelder–Mead with restarts.

mod grid;
mod nelder_mead;

pub use grid::{GridTarget, SearchBudget, search_schedule};
pub use nelder_mead::nelder_mead;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bench::{Problem, Setup, error_quantiles, rms_error};
use crate::path::{NoisePath, PathSpec};
use crate::solvers::{
    DataMultistep, NoNoise, Solver, SolverOptions, SolverSpec, StepStrategy, build_solver, sample_with_orders,
};
use crate::spacing::{End, GridSpec, Spacing};
use crate::{Error, Result};

/// The value of a schedule file's `format` field.
pub const FORMAT: &str = "diffuse-solver-schedules";

/// One searched schedule: run `solver` on `times` (then to the data) with at most `nfe` evaluations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// NFE budget.
    pub nfe: usize,
    /// Base solver (a registry name).
    pub solver: String,
    /// The grid's times on the path, strictly decreasing, starting at the problem's start; the data follows.
    pub times: Vec<f64>,
    /// The order of each step where the search changed the solver's own plan (multistep solvers: per-step
    /// strategies at no extra evaluations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orders: Option<Vec<u32>>,
    /// Per-step strategies (order, predictor, corrector; USF) where the search changed the base solver's own, for
    /// solvers of the data-form multistep family. They replace `orders`, which is then absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategies: Option<Vec<StepStrategy>>,
    /// The objective on the search draws (see [`Schedule::objective`]; smaller is better).
    #[serde(alias = "search_rms")]
    pub search_error: f64,
    /// The same solver on the default grid, on the search draws.
    #[serde(alias = "baseline_rms")]
    pub baseline_error: f64,
    /// What the errors measure: `rms` (of the output against the reference) unless a domain says otherwise, for
    /// example `-si_sdr_db` (the negated mean SI-SDR of enhanced speech, in dB).
    #[serde(default = "rms_objective")]
    pub objective: String,
    /// Objective evaluations spent.
    pub evaluations: usize,
}

fn rms_objective() -> String {
    "rms".into()
}

impl Schedule {
    /// The schedule's grid (its times, then the data).
    pub fn grid(&self) -> GridSpec {
        GridSpec::new(Spacing::Custom { times: self.times.clone() }, End::Zero)
    }

    /// The solver that runs the schedule: its per-step strategies, or the base solver.
    pub fn build_solver(&self, options: &SolverOptions) -> Result<Box<dyn Solver>> {
        match &self.strategies {
            Some(st) => Ok(Box::new(DataMultistep::with_strategies(st.clone(), options.warmup)?)),
            None => self.solver.parse::<SolverSpec>()?.build(options),
        }
    }

    /// The order of each interval: the schedule's own, or `solver`'s plan for the grid.
    pub fn orders(&self, solver: &dyn Solver) -> Result<Vec<u32>> {
        match &self.orders {
            Some(o) if o.len() == self.times.len() => Ok(o.clone()),
            Some(o) => {
                Err(Error::invalid("schedule", format!("{} orders for {} intervals", o.len(), self.times.len())))
            }
            None => solver.plan_steps(self.times.len(), true),
        }
    }

    /// Checks the schedule against the path it will run on: times strictly decreasing inside the path's range,
    /// starting at `t_start`, and a known deterministic base solver.
    pub fn validate(&self, path: &dyn NoisePath, t_start: f64) -> Result<()> {
        let (t_min, t_max) = path.t_range();
        let bad = |why: String| Err(Error::invalid("schedule", why));
        if self.times.is_empty() {
            return bad("no times".into());
        }
        if (self.times[0] - t_start).abs() > 1e-9 * t_start.abs().max(1.0) {
            return bad(format!("starts at t = {}, the sampler at {t_start}", self.times[0]));
        }
        if !self.times.windows(2).all(|w| w[0] > w[1]) || self.times.iter().any(|&t| !(t >= t_min && t <= t_max)) {
            return bad(format!("times must decrease strictly inside [{t_min}, {t_max}]: {:?}", self.times));
        }
        if self.orders.is_some() && self.strategies.is_some() {
            return bad("give orders or strategies, not both".into());
        }
        if let Some(st) = &self.strategies
            && st.len() != self.times.len()
        {
            return bad(format!("{} strategies for {} intervals", st.len(), self.times.len()));
        }
        let base = self.solver.parse::<SolverSpec>()?.build(&SolverOptions::default())?;
        if base.info().stochastic || base.info().adaptive {
            return bad(format!("'{}': schedules are for fixed-step deterministic solvers", self.solver));
        }
        let solver = self.build_solver(&SolverOptions::default())?;
        let orders = self.orders(solver.as_ref())?;
        if orders.iter().any(|&o| !(1..=4).contains(&o)) {
            return bad(format!("orders must be 1 to 4: {orders:?}"));
        }
        Ok(())
    }
}

/// A schedule file: the path the times belong to and one schedule per budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// The path (schedules only run on it).
    pub path: PathSpec,
    /// Search draws and their seed (never the draws results are reported on).
    pub search_draws: usize,
    /// Seed of the search draws.
    pub search_seed: u64,
    /// What the schedules were fitted to: `exact`, or `teacher SOLVER at N NFE`.
    #[serde(default)]
    pub fitted_to: String,
    /// The schedules, one per (budget, solver) searched; [`ScheduleFile::best`] picks per budget.
    pub schedules: Vec<Schedule>,
}

impl ScheduleFile {
    /// Reads a schedule file (errors name it).
    pub fn load(file: &std::path::Path) -> Result<Self> {
        let bytes = crate::io::read_input(file, 64 << 20)?;
        let s: ScheduleFile = serde_json::from_slice(&bytes).map_err(|e| Error::file(file, e))?;
        if s.format != FORMAT {
            return Err(Error::file(file, format!("format is '{}', expected '{FORMAT}'", s.format)));
        }
        Ok(s)
    }

    /// The best schedule of `nfe` evaluations, or of the fewest when `nfe` is `None`.
    pub fn pick(&self, nfe: Option<usize>) -> Result<&Schedule> {
        let best = self.best();
        let found = match nfe {
            Some(n) => best.into_iter().find(|s| s.nfe == n),
            None => best.into_iter().next(),
        };
        found.ok_or_else(|| {
            let have: Vec<usize> = self.best().iter().map(|s| s.nfe).collect();
            Error::invalid("schedule", format!("no schedule of {} NFE (the file has {have:?})", nfe.unwrap_or(0)))
        })
    }

    /// The schedule with the smallest search error for each budget, in increasing NFE.
    pub fn best(&self) -> Vec<&Schedule> {
        let mut nfes: Vec<usize> = self.schedules.iter().map(|s| s.nfe).collect();
        nfes.sort_unstable();
        nfes.dedup();
        nfes.iter()
            .filter_map(|&n| {
                self.schedules.iter().filter(|s| s.nfe == n).min_by(|a, b| a.search_error.total_cmp(&b.search_error))
            })
            .collect()
    }
}

/// The truncated schedules of "Hyperparameters are all you need" (Zilai Li 2025, arXiv 2510.02390; the author's
/// `txt2img.py`): `steps` ∈ {5, 6, 8} intervals on Karras's ramp in time (ρ = 1.2) from the start down to a cut-off
/// time, first-order steps (ddim) for 5 and 6, DPM-Solver++(2M) without a lower-order last step for 8, and no
/// final denoising: the state at the cut-off, divided by α there, is the output (the paper hands it to an image
/// decoder). The cut-off is the point `k` of an auxiliary Karras ramp in σ̄ with `n` points and exponent ρ′ over
/// the whole path: (n, ρ′, k) = (8, 5, 6) for 5 and 6 steps, (12, 7, 9) for 8 (Stable Diffusion's "full trick").
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// Intervals (= NFE: one evaluation each).
    pub steps: usize,
    /// The grid (ends at the cut-off time).
    pub grid: GridSpec,
    /// Base solver.
    pub solver: &'static str,
    /// Lower-order last steps of the multistep solver (never, as the author's code).
    pub lower_order_final: crate::solvers::LowerOrderFinal,
}

impl Recipe {
    /// The recipe with `steps` ∈ {5, 6, 8} on `path`, starting at `t_start` (default: the path's end).
    pub fn new(path: &dyn NoisePath, steps: usize, t_start: Option<f64>) -> Result<Recipe> {
        let (n, rho, k, solver) = match steps {
            5 | 6 => (8usize, 5.0f64, 6usize, "ddim"),
            8 => (12, 7.0, 9, "dpm++2m"),
            other => return Err(Error::invalid("recipe", format!("the recipe has 5, 6 and 8 steps, not {other}"))),
        };
        let (t_min, t_max) = path.t_range();
        let (hi, lo) = (path.point(t_max).sigma_bar(), path.point(t_min).sigma_bar());
        if !(hi.is_finite() && lo > 0.0) {
            return Err(Error::invalid("recipe", format!("needs 0 < σ/α < ∞ at both ends of {}", path.name())));
        }
        let cut =
            (hi.powf(1.0 / rho) + k as f64 / (n - 1) as f64 * (lo.powf(1.0 / rho) - hi.powf(1.0 / rho))).powf(rho);
        let t_end = path.t_of_lambda(-cut.ln());
        let grid =
            GridSpec { spacing: Spacing::KarrasTime { rho: 1.2 }, end: End::Time(t_end), t_start, lambda_min: None };
        Ok(Recipe { steps, grid, solver, lower_order_final: crate::solvers::LowerOrderFinal::Never })
    }
}

/// Which schedules a search looks for, in every domain: one per (budget, base solver).
#[derive(Debug, Clone)]
pub struct SearchScope {
    /// Budgets (model evaluations).
    pub nfe: Vec<usize>,
    /// Base solvers tried at every budget (deterministic, fixed-step).
    pub solvers: Vec<SolverSpec>,
    /// Objective evaluations per schedule: the search is deterministic for a given count.
    pub evaluations: usize,
    /// Optional wall-clock cap of the whole search (split evenly over budgets × solvers); results then depend on
    /// the machine's speed.
    pub time: Option<Duration>,
}

impl SearchScope {
    /// How many schedules the search makes.
    pub fn runs(&self) -> usize {
        self.nfe.len() * self.solvers.len()
    }

    /// Searches one schedule per (budget, solver) on `path` from `t_start` (baseline: `default_grid`), minimising
    /// `objective` (named `objective_name`), calling `progress(nfe, solver)` before each.
    #[allow(clippy::too_many_arguments)]
    pub fn search_each(
        &self,
        path: &dyn NoisePath,
        default_grid: &GridSpec,
        t_start: f64,
        options: &SolverOptions,
        objective_name: &str,
        objective: &mut dyn FnMut(&Schedule) -> Result<f64>,
        progress: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<Schedule>> {
        if self.nfe.is_empty() || self.solvers.is_empty() {
            return Err(Error::invalid("search", "need at least one budget and one solver"));
        }
        let budget =
            SearchBudget { evaluations: self.evaluations, time: self.time.map(|t| t.div_f64(self.runs() as f64)) };
        let mut schedules = Vec::new();
        for &nfe in &self.nfe {
            for spec in &self.solvers {
                progress(nfe, &spec.to_string());
                let target = GridTarget { path, default_grid, t_start, nfe };
                schedules.push(search_schedule(spec, options, &target, &budget, objective_name, objective)?);
            }
        }
        Ok(schedules)
    }
}

/// What to search on an exact problem.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Budgets, base solvers, evaluations and time.
    pub scope: SearchScope,
    /// Draws to search on.
    pub draws: usize,
    /// Their seed (choose one the reported draws do not use).
    pub seed: u64,
    /// What the schedules are fitted to: the exact solutions, or a teacher (a solver at a high NFE from the same
    /// draws, S³'s way for a trained model, where no exact solution exists).
    pub reference: Reference,
    /// The statistic of the per-draw errors the search minimises.
    pub objective: SearchObjective,
}

/// The statistic of the search draws' errors that a problem search minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchObjective {
    /// The rms error over all draws and coordinates (dominated by the few draws that end in another mixture
    /// component when there are any).
    #[default]
    Rms,
    /// The median per-draw error `‖x − x_ref‖/√dim` (the typical draw).
    Median,
    /// Their sum: both statistics at once, for targets that hold each of them.
    RmsPlusMedian,
}

impl SearchObjective {
    /// Its name, as parsed and as stored in a schedule's `objective`.
    pub fn name(self) -> &'static str {
        match self {
            SearchObjective::Rms => "rms",
            SearchObjective::Median => "median",
            SearchObjective::RmsPlusMedian => "rms+median",
        }
    }

    /// The statistic of output `x` against `reference` (`[B, dim]`).
    pub fn measure(self, x: &tch::Tensor, reference: &tch::Tensor) -> Result<f64> {
        Ok(match self {
            SearchObjective::Rms => rms_error(x, reference)?,
            SearchObjective::Median => error_quantiles(x, reference)?.0,
            SearchObjective::RmsPlusMedian => rms_error(x, reference)? + error_quantiles(x, reference)?.0,
        })
    }
}

impl std::str::FromStr for SearchObjective {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        [SearchObjective::Rms, SearchObjective::Median, SearchObjective::RmsPlusMedian]
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| Error::invalid("objective", format!("unknown '{s}': rms, median or rms+median")))
    }
}

/// The target of the search.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Reference {
    /// The exact solution of the problem's ODE.
    #[default]
    Exact,
    /// A solver's output at this NFE, from the same draws.
    Teacher {
        /// Registry name.
        solver: String,
        /// Its evaluations.
        nfe: usize,
    },
}

/// Searches a schedule for every (budget, solver) of `opts` on `problem` (which must end at the data), calling
/// `progress(nfe, solver)` before each.
pub fn search(problem: &Problem, opts: &SearchOptions, mut progress: impl FnMut(usize, &str)) -> Result<ScheduleFile> {
    problem.validate()?;
    if problem.end != End::Zero {
        return Err(Error::invalid("end", "schedules end at the data: use \"end\": \"zero\""));
    }
    if opts.draws == 0 {
        return Err(Error::invalid("search", "need at least one draw"));
    }
    let search_problem = Problem { samples: opts.draws, seed: opts.seed, ..problem.clone() };
    let setup = Setup::new(&search_problem)?;
    let reference = match &opts.reference {
        Reference::Exact => setup.reference(problem.reference_rtol)?,
        Reference::Teacher { solver, nfe } => {
            let teacher = build_solver(solver, &SolverOptions::default())?;
            let grid = GridSpec { t_start: Some(setup.start.t), ..problem.grid() };
            setup.solve(teacher.as_ref(), &grid, crate::solvers::Budget::Nfe(*nfe))?.x
        }
    };
    let path = setup.path.clone();
    let t_start = setup.start.t;
    let options = SolverOptions {
        lower_order_final: problem.lower_order_final,
        warmup: problem.warmup,
        ..SolverOptions::default()
    };
    let default_grid = GridSpec { t_start: Some(t_start), ..problem.grid() };
    let mut objective = |candidate: &Schedule| -> Result<f64> {
        let solver = candidate.build_solver(&options)?;
        let orders = candidate.orders(solver.as_ref())?;
        let s = sample_with_orders(
            solver.as_ref(),
            path.as_ref(),
            &setup.model,
            &setup.cond,
            &setup.x_start,
            &candidate.grid(),
            &orders,
            &mut NoNoise,
            &mut (),
        )?;
        opts.objective.measure(&s.x, &reference)
    };
    let name = opts.objective.name();
    let schedules =
        opts.scope.search_each(path.as_ref(), &default_grid, t_start, &options, name, &mut objective, &mut progress)?;
    Ok(ScheduleFile {
        format: FORMAT.into(),
        path: problem.path.clone(),
        search_draws: opts.draws,
        search_seed: opts.seed,
        fitted_to: match &opts.reference {
            Reference::Exact => "exact".into(),
            Reference::Teacher { solver, nfe } => format!("teacher {solver} at {nfe} NFE"),
        },
        schedules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objectives_parse_and_measure_their_statistic() {
        // Draw i has error e_i in every coordinate: rms = √(mean e²), median = the 5th of 10 sorted.
        let e: Vec<f64> = (1..=10).map(|i| if i == 10 { 100.0 } else { i as f64 }).collect();
        let x = tch::Tensor::from_slice(&e).view([10, 1]).expand([10, 3], false);
        let zero = x.zeros_like();
        let rms = (e.iter().map(|v| v * v).sum::<f64>() / 10.0).sqrt();
        let got = |o: &str| o.parse::<SearchObjective>().unwrap().measure(&x, &zero).unwrap();
        assert!((got("rms") - rms).abs() < 1e-9);
        assert_eq!(got("median"), 5.0);
        assert!((got("rms+median") - rms - 5.0).abs() < 1e-9);
        assert_eq!(SearchObjective::default(), SearchObjective::Rms);
        let err = "mean".parse::<SearchObjective>().unwrap_err().to_string();
        assert!(err.contains("rms, median or rms+median"), "{err}");
    }

    /// The recipe's cut-off and grid on Stable Diffusion's table reproduce the author's schedule: steps 999 →
    /// 18.32 for 5 steps (σ̄ 14.6146 → 0.1320) and → 22.68 for 8 (σ̄ 0.1472); ρ = 1.2 ramp on the step index.
    #[test]
    fn the_recipe_reproduces_the_published_schedules() {
        let spec: PathSpec =
            serde_json::from_str(r#"{"kind": "vp_table", "schedule": {"kind": "scaled_linear"}}"#).unwrap();
        let path = spec.build().unwrap();
        let step = |t: f64| 1000.0 * t - 1.0;
        for (steps, t_end, sigma_end, second) in
            [(5, 18.32, 0.1320, 772.51), (6, 18.32, 0.1320, 809.57), (8, 22.68, 0.1472, 857.32)]
        {
            let r = Recipe::new(path.as_ref(), steps, None).unwrap();
            let points = r.grid.build(path.as_ref(), steps).unwrap();
            assert_eq!(points.len(), steps + 1);
            let last = points.last().unwrap();
            assert!((step(last.t) - t_end).abs() < 0.05, "{steps}: cut-off step {}", step(last.t));
            assert!((last.sigma_bar() - sigma_end).abs() < 2e-3, "{steps}: σ̄ {}", last.sigma_bar());
            assert!((step(points[1].t) - second).abs() < 0.3, "{steps}: second step {}", step(points[1].t));
            assert!((points[0].sigma_bar() - 14.6146).abs() < 2e-3);
        }
        assert!(Recipe::new(path.as_ref(), 7, None).unwrap_err().to_string().contains("5, 6 and 8"));
    }
}
