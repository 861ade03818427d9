//! Issue 21, item 2: per-step strategies (USF). Every solver of the data-form multistep family is a constant
//! strategy, and a schedule of those strategies on the solver's own grid runs exactly that solver; mixed
//! strategies run, change the result and keep the cost at one model evaluation per step.

use std::sync::Arc;

use diffuse_core::denoiser::Conditioning;
use diffuse_core::exact::GaussianMixture;
use diffuse_core::path::{NoisePath, PathSpec};
use diffuse_core::search::Schedule;
use diffuse_core::seed::SampleSeeds;
use diffuse_core::solvers::{
    Budget, NoNoise, Predictor, SolverOptions, SolverSpec, StepStrategy, UniVariant, sample, sample_with_orders,
};
use diffuse_core::spacing::{End, GridSpec, Spacing};
use tch::Tensor;

fn mixture(path: Arc<dyn NoisePath>) -> GaussianMixture {
    let means = vec![vec![1.0, -0.5, 0.3, 0.8], vec![-1.0, 0.6, -0.2, 0.1]];
    GaussianMixture::new(vec![0.4, 0.6], means, vec![0.2, 0.4], path).unwrap()
}

/// The mixture on the EDM path, 16 draws of seed `seed` at its start, the Karras grid and its first `steps` times.
fn karras_setup(seed: u64, steps: usize) -> (Arc<dyn NoisePath>, GaussianMixture, Tensor, GridSpec, Vec<f64>) {
    let path = PathSpec::default_of("edm").unwrap().build().unwrap();
    let model = mixture(path.clone());
    let start = path.point(path.t_range().1);
    let x = model.sample_marginal(&start, &SampleSeeds::new(seed, 0, 16), None).unwrap();
    let grid = GridSpec::new(Spacing::Karras { rho: 7.0 }, End::Zero);
    let times: Vec<f64> = grid.build(path.as_ref(), steps).unwrap()[..steps].iter().map(|p| p.t).collect();
    (path, model, x, grid, times)
}

/// The named solver on the grid, and the schedule of its constant strategies at its own orders: (output, NFE) of
/// each. The schedule's strategies are checked to be singlestep where the solver is.
fn solver_and_its_schedule(
    name: &str,
    steps: usize,
    path: &Arc<dyn NoisePath>,
    model: &GaussianMixture,
    x: &Tensor,
    grid: &GridSpec,
    times: &[f64],
) -> ((Tensor, usize), (Tensor, usize)) {
    let spec: SolverSpec = name.parse().unwrap();
    let solver = spec.build(&SolverOptions::default()).unwrap();
    let cond = Conditioning::none();
    let plain =
        sample(solver.as_ref(), path.as_ref(), model, &cond, x, grid, Budget::Steps(steps), &mut NoNoise, &mut ())
            .unwrap();
    let plan = solver.plan_steps(steps, true).unwrap();
    let strategies: Vec<StepStrategy> = plan.iter().map(|&o| spec.strategy(o).unwrap()).collect();
    let single = name.ends_with('s') || name == "dpm-solver-2" || name == "dpm-solver-3";
    assert_eq!(strategies[0].singlestep, single, "{name}: {strategies:?}");
    let usf = run_schedule(&schedule(name, times.to_vec(), Some(strategies)), path.as_ref(), model, x);
    ((plain.x, plain.nfe), usf)
}

fn schedule(solver: &str, times: Vec<f64>, strategies: Option<Vec<StepStrategy>>) -> Schedule {
    Schedule {
        nfe: times.len(),
        solver: solver.into(),
        times,
        orders: None,
        strategies,
        search_error: 0.0,
        baseline_error: 0.0,
        objective: "rms".into(),
        evaluations: 0,
    }
}

fn run_schedule(s: &Schedule, path: &dyn NoisePath, model: &GaussianMixture, x: &Tensor) -> (Tensor, usize) {
    let solver = s.build_solver(&SolverOptions::default()).unwrap();
    let orders = s.orders(solver.as_ref()).unwrap();
    let cond = Conditioning::none();
    let out =
        sample_with_orders(solver.as_ref(), path, model, &cond, x, &s.grid(), &orders, &mut NoNoise, &mut ()).unwrap();
    (out.x, out.nfe)
}

#[test]
fn every_multistep_solver_is_a_constant_strategy_schedule() {
    let steps = 7;
    let (path, model, x, grid, times) = karras_setup(4, steps);
    let names = [
        "ddim",
        "dpm++2m",
        "dpm++3m",
        "dpm++2m+unic",
        "dpm++3m+unic",
        "unipc-bh1",
        "unipc-bh2",
        "unipc-bh2-3",
        "dpm-solver-2m",
        "dpm-solver-3m",
    ];
    let mut outputs = Vec::new();
    for name in names {
        let ((plain, plain_nfe), (usf, nfe)) = solver_and_its_schedule(name, steps, &path, &model, &x, &grid, &times);
        assert_eq!(nfe, plain_nfe, "{name}");
        assert!(usf.equal(&plain), "{name}: the constant-strategy schedule differs from the solver");
        outputs.push(plain);
    }
    // The family's members really differ, so the identities above are not vacuous.
    assert!(!outputs[1].equal(&outputs[3]) && !outputs[0].equal(&outputs[1]) && !outputs[5].equal(&outputs[6]));
    // The noise form is another method than the data form of the same order.
    assert!(!outputs[8].equal(&outputs[1]) && !outputs[9].equal(&outputs[2]));
    // Solvers outside the family have no strategy.
    for name in ["heun", "deis-2", "dpm++3m-ref", "rk4"] {
        assert!(name.parse::<SolverSpec>().unwrap().strategy(2).is_none(), "{name}");
    }

    // A mixed schedule (orders, predictors and correctors changing per step) costs the same and lands elsewhere.
    let s = |order, predictor, corrector| StepStrategy::multistep(order, predictor, corrector);
    let mixed = vec![
        s(1, Predictor::DpmPlusPlus, Some(UniVariant::Bh2)),
        s(2, Predictor::UniP(UniVariant::Bh1), None),
        s(3, Predictor::DpmPlusPlus, Some(UniVariant::Bh1)),
        s(2, Predictor::DpmPlusPlus, None),
        s(3, Predictor::UniP(UniVariant::Bh2), Some(UniVariant::Bh2)),
        s(3, Predictor::DpmNoise, Some(UniVariant::Bh1)),
        s(1, Predictor::DpmPlusPlus, None),
    ];
    let (x_mixed, nfe) = run_schedule(&schedule("dpm++2m", times.clone(), Some(mixed)), path.as_ref(), &model, &x);
    assert_eq!(nfe, steps);
    assert!(outputs.iter().all(|o| !o.equal(&x_mixed)));
    assert!(bool::try_from(x_mixed.isfinite().all()).unwrap());
}

#[test]
fn strategies_round_trip_through_json_and_bad_ones_are_refused() {
    let path = PathSpec::default_of("edm").unwrap().build().unwrap();
    let t0 = path.t_range().1;
    let step = StepStrategy::multistep(2, Predictor::UniP(UniVariant::Bh1), Some(UniVariant::Bh2));
    let text = serde_json::to_string(&step).unwrap();
    assert_eq!(text, r#"{"order":2,"predictor":{"unip":"bh1"},"corrector":"bh2"}"#);
    assert_eq!(serde_json::from_str::<StepStrategy>(&text).unwrap(), step);
    let plain: StepStrategy = serde_json::from_str(r#"{"order": 1, "predictor": "dpm++"}"#).unwrap();
    assert_eq!(plain.corrector, None);
    let times = vec![t0, t0 * 0.1, t0 * 0.01];
    schedule("ddim", times.clone(), Some(vec![plain, step, plain])).validate(path.as_ref(), t0).unwrap();
    let too_high = StepStrategy::multistep(4, Predictor::DpmPlusPlus, None);
    let cases = [
        (schedule("ddim", times.clone(), Some(vec![plain, step])), "2 strategies for 3 intervals"),
        (schedule("ddim", times.clone(), Some(vec![plain, too_high, plain])), "from 1 to 3"),
        (Schedule { orders: Some(vec![1, 1, 1]), ..schedule("ddim", times.clone(), Some(vec![plain; 3])) }, "not both"),
    ];
    for (s, why) in cases {
        let err = s.validate(path.as_ref(), t0).unwrap_err().to_string();
        assert!(err.contains(why), "{why}: {err}");
    }
}

/// The singlestep derivative estimate (item 2's "singlestep midpoint"): dpm++2s/3s and dpm-solver-2/3 are
/// constant singlestep strategies and run identically as schedules, at their cost of `order` evaluations a step;
/// singlestep and multistep steps mix in one schedule, and a singlestep step with a corrector or UniP is refused.
#[test]
fn singlestep_solvers_are_strategies_and_mix_with_multistep_steps() {
    let steps = 5;
    let (path, model, x, grid, times) = karras_setup(5, steps);
    for name in ["dpm++2s", "dpm++3s", "dpm-solver-2", "dpm-solver-3"] {
        let ((plain, plain_nfe), (usf, nfe)) = solver_and_its_schedule(name, steps, &path, &model, &x, &grid, &times);
        assert_eq!(nfe, plain_nfe, "{name}");
        // The noise form derives ε̂ from the cached x̂0 where the solver asks the model for ε̂: rounding only.
        let diff = f64::try_from((&usf - &plain).abs().max()).unwrap();
        assert!(diff < 1e-12, "{name}: the constant-strategy schedule differs from the solver by {diff}");
    }
    // A midpoint step between multistep steps costs one extra evaluation and changes the result.
    let m = |order| StepStrategy::multistep(order, Predictor::DpmPlusPlus, None);
    let mixed = vec![m(1), StepStrategy::singlestep(2, Predictor::DpmPlusPlus), m(2), m(2), m(1)];
    let (x_mixed, nfe) = run_schedule(&schedule("dpm++2m", times.clone(), Some(mixed)), path.as_ref(), &model, &x);
    assert_eq!(nfe, steps + 1);
    let (x_multi, _) = run_schedule(
        &schedule("dpm++2m", times.clone(), Some(vec![m(1), m(2), m(2), m(2), m(1)])),
        path.as_ref(),
        &model,
        &x,
    );
    assert!(!x_mixed.equal(&x_multi) && bool::try_from(x_mixed.isfinite().all()).unwrap());
    let t0 = path.t_range().1;
    let bad = [
        StepStrategy { corrector: Some(UniVariant::Bh2), ..StepStrategy::singlestep(2, Predictor::DpmPlusPlus) },
        StepStrategy::singlestep(2, Predictor::UniP(UniVariant::Bh1)),
        StepStrategy::singlestep(4, Predictor::DpmPlusPlus),
    ];
    for b in bad {
        let s = schedule("ddim", vec![t0, t0 * 0.1, t0 * 0.01], Some(vec![m(1), b, m(1)]));
        assert!(s.validate(path.as_ref(), t0).unwrap_err().to_string().contains("singlestep"), "{b:?}");
    }
    let json = serde_json::to_string(&StepStrategy::singlestep(2, Predictor::DpmNoise)).unwrap();
    assert_eq!(json, r#"{"order":2,"predictor":"dpm","singlestep":true}"#);
}
