//! Prints the measured convergence order of every solver on every path (the numbers asserted by
//! `core/tests/solver_order.rs`) as a markdown table: `cargo run --release -p diffuse-core --example order_table`.

use diffuse_core::bench::{MixtureSpec, Problem, Setup, rms_error};
use diffuse_core::path::PathSpec;
use diffuse_core::solvers::{Budget, LowerOrderFinal, NoNoise, SolverOptions, Warmup, build_solver, sample};
use diffuse_core::spacing::{End, Spacing};

const SOLVERS: &[&str] = &[
    "ddim",
    "euler",
    "heun",
    "rk4",
    "euler-t",
    "heun-t",
    "rk4-t",
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
    "unipc-bh2-3",
    "deis-2",
    "deis-3",
];

fn main() {
    let kinds = PathSpec::KINDS;
    println!("| solver | order | {} |", kinds.join(" | "));
    println!("|---|---|{}|", vec!["---"; kinds.len()].join("|"));
    let mut rows: Vec<Vec<String>> = SOLVERS.iter().map(|_| Vec::new()).collect();
    for kind in kinds {
        let spec = PathSpec::default_of(kind).unwrap();
        let path = spec.build().unwrap();
        let (lo, hi) = path.t_range();
        let problem = Problem {
            dim: 4,
            mixture: MixtureSpec { weights: vec![1.0], means: vec![vec![0.5, -0.3, 0.2, 1.0]], stds: vec![0.5] },
            path: spec,
            spacing: Spacing::UniformLambda,
            end: End::Time(path.t_of_lambda(path.lambda(lo).min(3.0))),
            solvers: vec!["ddim".into()],
            nfe: vec![1],
            tolerances: vec![1e-3],
            samples: 16,
            seed: 0,
            t_start: Some(path.t_of_lambda(path.lambda(hi).max(-4.0))),
            lambda_min: None,
            anchor: Some(vec![0.3, 0.1, -0.2, 0.4]),
            parameterization: diffuse_core::Parameterization::Data,
            reference_rtol: 1e-11,
            warmup: Warmup::Singlestep,
            lower_order_final: LowerOrderFinal::Never,
        };
        let setup = Setup::new(&problem).unwrap();
        let reference = setup.reference(1e-11).unwrap();
        for (row, name) in rows.iter_mut().zip(SOLVERS) {
            let opts = SolverOptions {
                lower_order_final: LowerOrderFinal::Never,
                warmup: Warmup::Singlestep,
                ..Default::default()
            };
            let solver = build_solver(name, &opts).unwrap();
            let run = |steps: usize| {
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
                .unwrap();
                (s.nfe as f64, rms_error(&s.x, &reference).unwrap())
            };
            let (a, b) = (run(256), run(512));
            row.push(format!("{:.2}", -(b.1 / a.1).ln() / (b.0 / a.0).ln()));
        }
    }
    for (row, name) in rows.iter().zip(SOLVERS) {
        let order = build_solver(name, &SolverOptions::default()).unwrap().info().order;
        println!("| {name} | {order} | {} |", row.join(" | "));
    }
}
