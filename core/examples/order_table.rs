//! Prints the measured convergence order of every fixed-step solver on every path (the numbers asserted by
//! `core/tests/solver_order.rs`, slope between 256 and 512 steps) as a markdown table:
//! `cargo run --release -p diffuse-core --example order_table`.

use diffuse_core::bench::{Setup, fixed_step_solvers, order_problem, rms_error};
use diffuse_core::path::PathSpec;
use diffuse_core::solvers::{Budget, LowerOrderFinal, NoNoise, SolverOptions, Warmup, build_solver, sample};

fn main() -> Result<(), diffuse_core::Error> {
    let kinds = PathSpec::KINDS;
    let solvers = fixed_step_solvers();
    println!("| solver | order | {} |", kinds.join(" | "));
    println!("|---|---|{}|", vec!["---"; kinds.len()].join("|"));
    let mut rows: Vec<Vec<String>> = solvers.iter().map(|_| Vec::new()).collect();
    let opts =
        SolverOptions { lower_order_final: LowerOrderFinal::Never, warmup: Warmup::Singlestep, ..Default::default() };
    for kind in kinds {
        let problem = order_problem(kind)?;
        let setup = Setup::new(&problem)?;
        let reference = setup.reference(1e-11)?;
        for (row, name) in rows.iter_mut().zip(&solvers) {
            let solver = build_solver(name, &opts)?;
            let run = |steps: usize| -> Result<(f64, f64), diffuse_core::Error> {
                let (path, model, cond, x) = (setup.path.as_ref(), &setup.model, &setup.cond, &setup.x_start);
                let s = sample(
                    solver.as_ref(),
                    path,
                    model,
                    cond,
                    x,
                    &problem.grid(),
                    Budget::Steps(steps),
                    &mut NoNoise,
                    &mut (),
                )?;
                Ok((s.nfe as f64, rms_error(&s.x, &reference)?))
            };
            let (a, b) = (run(256)?, run(512)?);
            row.push(format!("{:.2}", -(b.1 / a.1).ln() / (b.0 / a.0).ln()));
        }
    }
    for (row, name) in rows.iter().zip(&solvers) {
        let order = build_solver(name, &SolverOptions::default())?.info().order;
        println!("| {name} | {order} | {} |", row.join(" | "));
    }
    Ok(())
}
