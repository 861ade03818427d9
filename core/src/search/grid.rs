//! One schedule's search ([`search_schedule`]): the grid's times by Nelder–Mead in a coordinate that makes every
//! parameter vector a valid grid, then each step's strategy, then merges into singlestep steps, then the times again.

use std::time::{Duration, Instant};

use super::Schedule;
use super::nelder_mead::nelder_mead;
use crate::path::NoisePath;
use crate::solvers::{Predictor, SolverOptions, SolverSpec, StepStrategy, UniVariant};
use crate::spacing::GridSpec;
use crate::{Error, Result};

/// The coordinate the search places times in: ln σ̄ = −λ where α > 0 at the start (equal steps there are
/// uniform-λ steps), else the path's own time (paths that start at α = 0: RDDM, bridges, rectified flow from its
/// noise end).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Coord {
    LogSigmaBar,
    Time,
}

impl Coord {
    fn for_start(path: &dyn NoisePath, t_start: f64) -> Self {
        if (-path.lambda(t_start)).is_finite() { Coord::LogSigmaBar } else { Coord::Time }
    }

    fn u(self, path: &dyn NoisePath, t: f64) -> f64 {
        match self {
            Coord::LogSigmaBar => -path.lambda(t),
            Coord::Time => t,
        }
    }

    fn t(self, path: &dyn NoisePath, u: f64) -> f64 {
        match self {
            Coord::LogSigmaBar => path.t_of_lambda(-u),
            Coord::Time => u,
        }
    }
}

/// The time grid of θ: the start, then `θ.len() − 1` points in the search coordinate (see the module doc).
fn times_of(theta: &[f64], path: &dyn NoisePath, t_start: f64) -> Vec<f64> {
    let c = Coord::for_start(path, t_start);
    let (u_hi, u_lo) = (c.u(path, t_start), c.u(path, path.t_range().0));
    let m = theta.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = theta.iter().map(|v| (v - m).exp()).collect();
    let total: f64 = e.iter().sum();
    let mut times = vec![t_start];
    let mut acc = 0.0;
    for w in &e[..e.len() - 1] {
        acc += w / total;
        times.push(c.t(path, u_hi - (u_hi - u_lo) * acc));
    }
    times
}

/// θ reproducing a given grid (its points after the start), the inverse of [`times_of`].
fn theta_of(times: &[f64], path: &dyn NoisePath) -> Vec<f64> {
    let c = Coord::for_start(path, times[0]);
    let (u_hi, u_lo) = (c.u(path, times[0]), c.u(path, path.t_range().0));
    let mut u: Vec<f64> = times.iter().map(|&t| c.u(path, t)).collect();
    u.push(u_lo);
    u.windows(2).map(|w| ((w[0] - w[1]) / (u_hi - u_lo)).max(1e-12).ln()).collect()
}

/// Where a schedule search runs: the path, the grid a solver uses by default there (the baseline, which also
/// fixes the start time) and the budget in model evaluations.
pub struct GridTarget<'a> {
    /// The path.
    pub path: &'a dyn NoisePath,
    /// The default grid (ending at the data); the search starts from it and must beat it.
    pub default_grid: &'a GridSpec,
    /// The start time of every grid.
    pub t_start: f64,
    /// Model evaluations.
    pub nfe: usize,
}

/// How long one schedule's search may run.
#[derive(Debug, Clone, Copy)]
pub struct SearchBudget {
    /// Objective evaluations (deterministic for a given count).
    pub evaluations: usize,
    /// Optional wall-clock cap.
    pub time: Option<Duration>,
}

/// Searches one schedule of `spec` for `target.nfe` evaluations, minimising `objective(candidate)` (any measure of
/// the candidate schedule's output, for example the rms error against reference solutions or a negated quality
/// score; `objective_name` says which). The grid's times in ln σ̄ are searched by Nelder–Mead; for solvers of
/// one evaluation per step, each step's order too; and for the data-form multistep family each step's predictor
/// and corrector (USF's per-step strategies, all at the same cost), then merges of two steps into one singlestep
/// step (the same cost). Returns the default grid when nothing beats
/// it; the objective's errors count as an infinitely bad value.
pub fn search_schedule(
    spec: &SolverSpec,
    options: &SolverOptions,
    target: &GridTarget<'_>,
    budget: &SearchBudget,
    objective_name: &str,
    objective: &mut dyn FnMut(&Schedule) -> Result<f64>,
) -> Result<Schedule> {
    let name = spec.to_string();
    let solver = spec.build(options)?;
    if solver.info().stochastic || solver.info().adaptive {
        return Err(Error::invalid("solvers", format!("'{name}': schedules are for fixed-step deterministic solvers")));
    }
    let (path, t_start) = (target.path, target.t_start);
    let own_orders = solver.plan_nfe(target.nfe, true)?;
    let intervals = own_orders.len();
    // Orders (and strategies) are searched where they do not change the cost: one evaluation per step.
    let free_orders = intervals > 2 && (1..=3).all(|o| solver.cost(1, o, false) == 1);
    let own_strategies: Option<Vec<StepStrategy>> = own_orders.iter().map(|&o| spec.strategy(o)).collect();
    let candidate = |times: Vec<f64>, plan: &Plan| Schedule {
        nfe: target.nfe,
        solver: name.clone(),
        times,
        orders: match plan {
            Plan::Orders(o) if *o != own_orders => Some(o.clone()),
            _ => None,
        },
        strategies: match plan {
            Plan::Strategies(s) if Some(s) != own_strategies.as_ref() => Some(s.clone()),
            _ => None,
        },
        search_error: f64::NAN,
        baseline_error: f64::NAN,
        objective: objective_name.into(),
        evaluations: 0,
    };
    let mut score =
        |times: Vec<f64>, plan: &Plan| -> f64 { objective(&candidate(times, plan)).unwrap_or(f64::INFINITY) };
    let start_times: Vec<f64> = target.default_grid.build(path, intervals)?.iter().map(|p| p.t).collect();
    let start_times = start_times[..intervals].to_vec();
    let own_plan = match &own_strategies {
        Some(s) if free_orders => Plan::Strategies(s.clone()),
        _ => Plan::Orders(own_orders.clone()),
    };
    let baseline = score(start_times.clone(), &own_plan);
    let mut theta = theta_of(&start_times, path);
    let mut plan = own_plan.clone();
    let mut value = baseline;
    let mut evaluations = 0;
    let clock = Instant::now();
    // Times first (60 % of the budget), then one pass over each step's strategy, one over merging two steps into
    // a singlestep one (the same NFE), then the times again.
    let phases: &[Phase] = if free_orders {
        &[Phase::Times(0.6), Phase::Strategies, Phase::Singlestep, Phase::Times(1.0)]
    } else {
        &[Phase::Times(1.0)]
    };
    for phase in phases {
        let until = match *phase {
            Phase::Times(until) => until,
            Phase::Strategies => {
                let times = times_of(&theta, path, t_start);
                // The last step is the jump to the data (first order, no corrector): nothing to choose there.
                for i in 0..intervals - 1 {
                    for trial in plan.alternatives(i, i == 0) {
                        evaluations += 1;
                        let v = score(times.clone(), &trial);
                        if v < value {
                            (value, plan) = (v, trial);
                        }
                    }
                }
                continue;
            }
            Phase::Singlestep => {
                let mut times = times_of(&theta, path, t_start);
                let mut i = 0;
                // Steps i and i + 1 (never the jump to the data) become one singlestep step over both.
                while i + 2 < times.len() {
                    let mut best = None;
                    for predictor in [Predictor::DpmPlusPlus, Predictor::DpmNoise] {
                        let Some((t, trial)) = plan.merged(&times, i, predictor) else { continue };
                        evaluations += 1;
                        let v = score(t.clone(), &trial);
                        if v < value {
                            (value, best) = (v, Some((t, trial)));
                        }
                    }
                    if let Some((t, trial)) = best {
                        (times, plan) = (t, trial);
                        theta = theta_of(&times, path);
                    }
                    i += 1;
                }
                continue;
            }
        };
        let deadline = budget.time.map(|t| t.mul_f64(until));
        let limit = (budget.evaluations as f64 * until) as usize;
        let spent = evaluations;
        let mut f = |th: &[f64]| score(times_of(th, path, t_start), &plan);
        let mut stop = |n: usize| spent + n >= limit || deadline.is_some_and(|d| clock.elapsed() >= d);
        let (th, v, n) = nelder_mead(&mut f, &theta, 0.5, &mut stop);
        evaluations += n;
        if v < value {
            (theta, value) = (th, v);
        }
    }
    let (times, search_error) = if value < baseline {
        (times_of(&theta, path, t_start), value)
    } else {
        plan = own_plan;
        (start_times, baseline)
    };
    Ok(Schedule { search_error, baseline_error: baseline, evaluations, ..candidate(times, &plan) })
}

/// One phase of a schedule search.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Nelder–Mead over the times, until this share of the budget is spent.
    Times(f64),
    /// One pass over each step's strategy (same cost).
    Strategies,
    /// One pass over merging two neighbouring steps into a singlestep step (same cost).
    Singlestep,
}

/// The per-step choices of a searched schedule.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    /// An order per step (solvers outside the multistep family).
    Orders(Vec<u32>),
    /// A strategy per step (the data-form multistep family).
    Strategies(Vec<StepStrategy>),
}

impl Plan {
    /// Steps `i` and `i + 1` of a strategy plan merged into one second-order singlestep step of `predictor` over
    /// both (the midpoint costs the evaluation the second step had), with the time between them removed; `None`
    /// for order plans, or where either step is singlestep already or has a corrector.
    fn merged(&self, times: &[f64], i: usize, predictor: Predictor) -> Option<(Vec<f64>, Plan)> {
        let Plan::Strategies(s) = self else { return None };
        if i + 1 >= s.len() || s[i].cost() + s[i + 1].cost() != 2 || s[i].corrector.is_some() {
            return None;
        }
        let mut t = s.clone();
        t[i] = StepStrategy::singlestep(2, predictor);
        t.remove(i + 1);
        let mut tm = times.to_vec();
        tm.remove(i + 1);
        Some((tm, Plan::Strategies(t)))
    }

    /// Every plan that differs from this one at step `i` only (orders 1–3; predictors and correctors). The first
    /// step has no history, so there only its corrector is a choice.
    fn alternatives(&self, i: usize, first: bool) -> Vec<Plan> {
        match self {
            Plan::Orders(_) if first => Vec::new(),
            Plan::Orders(o) => (1..=3)
                .filter(|&k| k != o[i])
                .map(|k| {
                    let mut t = o.clone();
                    t[i] = k;
                    Plan::Orders(t)
                })
                .collect(),
            Plan::Strategies(s) => {
                let predictors = [
                    Predictor::DpmPlusPlus,
                    Predictor::UniP(UniVariant::Bh1),
                    Predictor::UniP(UniVariant::Bh2),
                    Predictor::DpmNoise,
                ];
                let correctors = [None, Some(UniVariant::Bh1), Some(UniVariant::Bh2)];
                let mut out = Vec::new();
                for order in 1..=3 {
                    for predictor in predictors {
                        // At order 1 every predictor is DDIM's step; the first step is always order 1.
                        let fixed = first && (order != s[i].order || predictor != s[i].predictor);
                        if fixed || (order == 1 && predictor != Predictor::DpmPlusPlus && !first) {
                            continue;
                        }
                        for corrector in correctors {
                            let step = StepStrategy::multistep(order, predictor, corrector);
                            if step != s[i] {
                                let mut t = s.clone();
                                t[i] = step;
                                out.push(Plan::Strategies(t));
                            }
                        }
                    }
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::PathSpec;
    use crate::spacing::{End, Spacing};

    /// Merging two steps into a singlestep one keeps the cost and drops the time between them; the jump to the
    /// data, corrected steps and order plans are not merged.
    #[test]
    fn merging_two_steps_into_a_singlestep_one_keeps_the_cost() {
        let m = |o| StepStrategy::multistep(o, Predictor::DpmPlusPlus, None);
        let plan = Plan::Strategies(vec![m(1), m(2), m(2), m(1)]);
        let times = [10.0, 5.0, 1.0, 0.1];
        let (t, merged) = plan.merged(&times, 1, Predictor::DpmNoise).unwrap();
        assert_eq!(t, vec![10.0, 5.0, 0.1]);
        let Plan::Strategies(st) = &merged else { panic!() };
        assert_eq!(st.iter().map(StepStrategy::cost).sum::<usize>(), 4);
        assert!(st[1].singlestep && st[1].predictor == Predictor::DpmNoise);
        assert!(merged.merged(&t, 1, Predictor::DpmPlusPlus).is_none(), "a singlestep step is not merged again");
        let corrected = Plan::Strategies(vec![
            m(1),
            StepStrategy::multistep(2, Predictor::DpmPlusPlus, Some(UniVariant::Bh1)),
            m(2),
            m(1),
        ]);
        assert!(corrected.merged(&times, 1, Predictor::DpmPlusPlus).is_none());
        assert!(Plan::Orders(vec![1, 2, 2, 1]).merged(&times, 1, Predictor::DpmPlusPlus).is_none());
    }

    /// On a path starting at α > 0 the search coordinate is ln σ̄; on RDDM's, which starts at α = 0, the time.
    #[test]
    fn theta_and_times_are_inverse_and_grids_stay_decreasing() {
        for (kind, spacing, coord) in
            [("edm", Spacing::Karras { rho: 7.0 }, Coord::LogSigmaBar), ("rddm", Spacing::UniformT, Coord::Time)]
        {
            let path = PathSpec::default_of(kind).unwrap().build().unwrap();
            let grid = GridSpec::new(spacing, End::Zero).build(path.as_ref(), 6).unwrap();
            let times: Vec<f64> = grid[..6].iter().map(|p| p.t).collect();
            assert_eq!(Coord::for_start(path.as_ref(), times[0]), coord, "{kind}");
            let back = times_of(&theta_of(&times, path.as_ref()), path.as_ref(), times[0]);
            for (a, b) in times.iter().zip(&back).take(5) {
                assert!((a - b).abs() <= 1e-9 * a.abs().max(1e-3), "{kind}: {times:?} vs {back:?}");
            }
            for theta in [vec![3.0, -4.0, 0.0, 9.0], vec![-3.0, 3.0, 0.0, 0.0]] {
                let t = times_of(&theta, path.as_ref(), times[0]);
                assert!(t.windows(2).all(|w| w[0] > w[1]) && *t.last().unwrap() >= path.t_range().0, "{kind}: {t:?}");
            }
        }
    }
}
