//! Convergence order of every deterministic solver on every path, measured against the exact solution of the
//! Gaussian problem: the log–log slope of error vs NFE must equal the solver's order within ±0.3.
//!
//! The slope is taken between two step counts N and 2N, starting from N₀ and doubling while it is outside the
//! band (up to 4096 steps): on the linear Gaussian problem every sample's error is one scalar function e(h)
//! times a fixed vector, so e(h) = a·h^p + b·h^{p+1} + … can cross zero at a moderate h and give erratic slopes
//! before the asymptotic regime. A solver of the wrong order never enters the band (see the negative controls).
//!
//! Settings: uniform-λ grid from λ = max(λ(T), −4) to min(λ(t_min), 3), multistep warm-up by a singlestep
//! starter (`Warmup::Singlestep`; the reference warm-up's first-order first step limits order-3 methods to 2),
//! no lower-order final steps. Solvers that work in t (`*-t`, `deis-*`) are not run on tabulated paths
//! (`vp_table`, `ir_sde`, `resfusion`): their coefficients are piecewise linear in t, so the ODE is not smooth
//! in t there; every other solver works in λ or σ/α and converges at full order on them.

use diffuse_core::bench::{Problem, Setup, fixed_step_solvers, order_problem, rms_error};
use diffuse_core::solvers::{Budget, LowerOrderFinal, NoNoise, SolverOptions, Warmup, build_solver, sample};

const TABULATED: &[&str] = &["vp_table", "ir_sde", "resfusion"];

fn problem(kind: &str) -> Problem {
    order_problem(kind).unwrap()
}

/// (steps, nfe, error) ladder and the final slope for one solver on one problem.
fn measure(
    problem: &Problem,
    setup: &Setup,
    reference: &tch::Tensor,
    name: &str,
    order: f64,
    n0: usize,
) -> (f64, Vec<(usize, usize, f64)>) {
    let opts = SolverOptions {
        lower_order_final: LowerOrderFinal::Never,
        warmup: Warmup::Singlestep,
        ..SolverOptions::default()
    };
    let solver = build_solver(name, &opts).unwrap();
    let run = |steps: usize| -> (usize, usize, f64) {
        let s = sample(
            solver.as_ref(),
            setup.path.as_ref(),
            &setup.model,
            &setup.cond,
            &setup.x_start,
            &problem.grid(),
            Budget::Steps(steps),
            &mut NoNoise,
            &mut (),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        (steps, s.nfe, rms_error(&s.x, reference).unwrap())
    };
    let mut ladder = vec![run(n0), run(2 * n0)];
    loop {
        let (a, b) = (ladder[ladder.len() - 2], ladder[ladder.len() - 1]);
        let slope = -(b.2 / a.2).ln() / (b.1 as f64 / a.1 as f64).ln();
        if (slope - order).abs() <= 0.3 || b.0 >= 4096 || b.2 < 1e-12 {
            return (slope, ladder);
        }
        ladder.push(run(2 * b.0));
    }
}

fn check_path(kind: &str) {
    let problem = problem(kind);
    let setup = Setup::new(&problem).unwrap();
    let reference = setup.reference(problem.reference_rtol).unwrap();
    let mut failures = Vec::new();
    for name in &fixed_step_solvers() {
        let in_t = name.ends_with("-t") || name.starts_with("deis");
        if in_t && TABULATED.contains(&kind) {
            continue;
        }
        let order = build_solver(name, &SolverOptions::default()).unwrap().info().order as f64;
        let n0 = if order >= 4.0 { 16 } else { 32 };
        let (slope, ladder) = measure(&problem, &setup, &reference, name, order, n0);
        // On IR-SDE the h³ error term of DPM-Solver(3M) on ε̂ is tiny: the slope falls 3.93 → 3.49 along the
        // ladder and meets the 1e-12 floor before it reaches 3 (pre-asymptotic, not a higher order).
        let above = if kind == "ir_sde" && name.as_str() == "dpm-solver-3m" { 0.6 } else { 0.3 };
        if slope - order > above || order - slope > 0.3 {
            failures.push(format!("{name}: order {order}, measured {slope:.2}; (steps, nfe, error) {ladder:?}"));
        }
    }
    assert!(failures.is_empty(), "{kind}:\n{}", failures.join("\n"));
}

macro_rules! order_tests {
    ($($name:ident => $kind:literal),* $(,)?) => {
        $(#[test] fn $name() { check_path($kind); })*
    };
}

order_tests! {
    order_on_vp_linear => "vp_linear",
    order_on_vp_cosine => "vp_cosine",
    order_on_vp_table => "vp_table",
    order_on_sub_vp => "sub_vp",
    order_on_ve => "ve",
    order_on_edm => "edm",
    order_on_rectified_flow => "rectified_flow",
    order_on_ouve => "ouve",
    order_on_sbve => "sbve",
    order_on_ir_sde => "ir_sde",
    order_on_rddm => "rddm",
    order_on_resfusion => "resfusion",
}

/// Negative control and documented finding: the DPM-Solver++(3M) update of dpm-solver, diffusers and k-diffusion
/// weighs its second difference by φ3 instead of 2·φ3, which makes it a second-order method; ours is third order.
#[test]
fn reference_3m_is_second_order_and_ours_third() {
    let problem = problem("ouve");
    let setup = Setup::new(&problem).unwrap();
    let reference = setup.reference(1e-11).unwrap();
    let (slope_ref, ladder_ref) = measure(&problem, &setup, &reference, "dpm++3m-ref", 2.0, 128);
    assert!((slope_ref - 2.0).abs() < 0.15, "reference 3M slope {slope_ref}: {ladder_ref:?}");
    let (slope, ladder) = measure(&problem, &setup, &reference, "dpm++3m", 3.0, 128);
    assert!((slope - 3.0).abs() < 0.15, "3M slope {slope}: {ladder:?}");
    // Same NFE, 10x smaller error at 256 steps.
    assert!(ladder[1].2 * 10.0 < ladder_ref[1].2, "{ladder:?} vs {ladder_ref:?}");
}

/// Negative control: with the reference warm-up (first step first order) a third-order multistep method is
/// second order on a path that starts at moderate noise (OUVE starts at λ ≈ −0.5).
#[test]
fn first_order_warmup_costs_an_order() {
    let problem = problem("ouve");
    let setup = Setup::new(&problem).unwrap();
    let reference = setup.reference(1e-11).unwrap();
    let opts = SolverOptions {
        lower_order_final: LowerOrderFinal::Never,
        warmup: Warmup::LowerOrder,
        ..SolverOptions::default()
    };
    let solver = build_solver("dpm++3m", &opts).unwrap();
    let errs: Vec<(usize, f64)> = [256, 512]
        .iter()
        .map(|&n| {
            let s = sample(
                solver.as_ref(),
                setup.path.as_ref(),
                &setup.model,
                &setup.cond,
                &setup.x_start,
                &problem.grid(),
                Budget::Steps(n),
                &mut NoNoise,
                &mut (),
            )
            .unwrap();
            (s.nfe, rms_error(&s.x, &reference).unwrap())
        })
        .collect();
    let slope = -(errs[1].1 / errs[0].1).ln() / (errs[1].0 as f64 / errs[0].0 as f64).ln();
    assert!((slope - 2.0).abs() < 0.2, "{slope}: {errs:?}");
}
