//! Prints error vs NFE and observed orders for every solver on every path (Gaussian problem): the data behind
//! the convergence-order tests. `cargo run --release -p diffuse-core --example order_table [solver…]`.

use diffuse_core::bench::{MixtureSpec, Problem, run_problem};
use diffuse_core::path::PathSpec;
use diffuse_core::spacing::{End, Spacing};

fn main() {
    let solvers: Vec<String> = std::env::args().skip(1).collect();
    let solvers = if solvers.is_empty() {
        ["ddim", "euler", "heun", "rk4", "euler-t", "heun-t", "rk4-t", "dpm-solver-2", "dpm-solver-3", "dpm++2s", "dpm++3s", "dpm++2m", "dpm++3m", "dpm++2m+unic", "unipc-bh1", "unipc-bh2", "unipc-bh2-3", "deis-2", "deis-3"]
            .iter().map(|s| s.to_string()).collect()
    } else {
        solvers
    };
    for kind in PathSpec::KINDS {
        let spec = PathSpec::default_of(kind).unwrap();
        let path = spec.build().unwrap();
        let (lo, hi) = path.t_range();
        let t_start = path.t_of_lambda(path.lambda(hi).max(-4.0));
        let t_end = path.t_of_lambda(path.lambda(lo).min(3.0));
        let problem = Problem {
            dim: 4,
            mixture: MixtureSpec { weights: vec![1.0], means: vec![vec![0.5, -0.3, 0.2, 1.0]], stds: vec![0.5] },
            path: spec,
            spacing: Spacing::UniformLambda,
            end: End::Time(t_end),
            solvers: solvers.clone(),
            nfe: vec![12, 24, 48, 96],
            tolerances: vec![1e-3],
            samples: 32,
            seed: 0,
            t_start: Some(t_start),
            lambda_min: None,
            anchor: Some(vec![0.3, 0.1, -0.2, 0.4]),
            parameterization: diffuse_core::Parameterization::Data,
            reference_rtol: 1e-11,
        };
        let report = run_problem(&problem, |_, _| {}).unwrap();
        println!("== {} (t {t_start:.4} → {t_end:.4})", report.path);
        let mut line = String::new();
        let mut current = String::new();
        for r in &report.rows {
            if r.solver != current {
                if !line.is_empty() {
                    println!("{line}");
                }
                current = r.solver.clone();
                line = format!("{:>14}", r.solver);
            }
            match (&r.error, r.rms_error) {
                (Some(e), _) => line += &format!("  ERR {}", &e[..e.len().min(40)]),
                (None, Some(err)) => line += &format!("  {:4} {:8.2e} ({})", r.nfe, err, r.observed_order.map_or("  - ".into(), |o| format!("{o:4.2}"))),
                _ => {}
            }
        }
        println!("{line}");
    }
}
