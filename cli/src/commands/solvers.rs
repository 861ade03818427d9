//! `diffuse solvers list|bench`: the solver registry and benchmarks on exact problems.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use diffuse_core::bench::{BenchReport, Problem, run_problem};
use diffuse_core::io::write_bytes_atomic;
use diffuse_core::solvers::{SolverOptions, build_solver, solver_names};

use super::Context;
use crate::plot::{Plot, Series};

/// Solver subcommands.
#[derive(Debug, Subcommand)]
pub enum SolversCommand {
    /// List every solver with its order and a one-line description.
    List,
    /// Run solvers on an exact problem file: error to the exact solution vs NFE, observed order, time.
    Bench(BenchArgs),
}

/// Arguments of `diffuse solvers bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Problem file (JSON; see docs/solvers.md).
    #[arg(long, value_name = "FILE")]
    pub problem: PathBuf,
    /// Also write the full results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also draw error vs NFE (log–log) as SVG.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
}

/// Runs a solvers subcommand.
pub fn run(ctx: &Context, cmd: &SolversCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SolversCommand::List => list(),
        SolversCommand::Bench(args) => bench(ctx, args),
    }
}

fn list() -> anyhow::Result<ExitCode> {
    println!("{:<16} {:>5}  description", "solver", "order");
    for (name, description) in solver_names() {
        let order = build_solver(&name, &SolverOptions::default())?.info().order;
        println!("{name:<16} {order:>5}  {description}");
    }
    println!("\nunipc-bh1-P / unipc-bh2-P select UniPC with predictor order P (order P + 1).");
    Ok(ExitCode::SUCCESS)
}

fn bench(ctx: &Context, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let mut problem = Problem::load(&args.problem)?;
    if ctx.global.seed != 0 {
        problem.seed = ctx.global.seed;
    }
    for out in [&args.json, &args.plot].into_iter().flatten() {
        anyhow::ensure!(args.force || !out.exists(), "{}: already exists (use --force to overwrite)", out.display());
    }
    let fixed = problem
        .solvers
        .iter()
        .filter(|s| !build_solver(s, &SolverOptions::default()).map(|b| b.info().adaptive).unwrap_or(false))
        .count();
    let runs = fixed * problem.nfe.len() + (problem.solvers.len() - fixed) * problem.tolerances.len();
    let bar = ctx.printer.progress(runs as u64, "solving");
    let report = run_problem(&problem, |name, budget| {
        bar.set_message(format!("{name} @ {budget}"));
        bar.inc(1);
    })
    .with_context(|| format!("running {}", args.problem.display()))?;
    bar.finish_and_clear();
    print_table(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)? + "\n";
        write_bytes_atomic(path, args.force, text.as_bytes())?;
        ctx.printer.info(format!("wrote {}", path.display()));
    }
    if let Some(path) = &args.plot {
        write_bytes_atomic(path, args.force, error_plot(&report).to_svg().as_bytes())?;
        ctx.printer.info(format!("wrote {}", path.display()));
    }
    Ok(if report.rows.iter().any(|r| r.error.is_some()) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn print_table(report: &BenchReport) {
    println!("path: {}   samples: {}   dim: {}", report.path, report.samples, report.dim);
    println!(
        "{:<16} {:>9} {:>6} {:>6} {:>12} {:>7} {:>9}",
        "solver", "budget", "nfe", "steps", "rms error", "order", "ms"
    );
    for r in &report.rows {
        let budget = if r.budget.fract() == 0.0 { format!("{}", r.budget) } else { format!("{:.0e}", r.budget) };
        match (&r.error, r.rms_error) {
            (Some(e), _) => println!("{:<16} {:>9} {:>6} {:>6}  failed: {e}", r.solver, budget, r.nfe, r.steps),
            (None, Some(err)) => println!(
                "{:<16} {:>9} {:>6} {:>6} {:>12.3e} {:>7} {:>9.1}",
                r.solver,
                budget,
                r.nfe,
                r.steps,
                err,
                r.observed_order.map_or("-".to_string(), |o| format!("{o:.2}")),
                r.wall_ms
            ),
            _ => {}
        }
    }
}

fn error_plot(report: &BenchReport) -> Plot {
    let mut series: Vec<Series> = Vec::new();
    for r in &report.rows {
        let Some(err) = r.rms_error else { continue };
        match series.last_mut() {
            Some(s) if s.name == r.solver => s.points.push((r.nfe as f64, err)),
            _ => series.push(Series { name: r.solver.clone(), points: vec![(r.nfe as f64, err)] }),
        }
    }
    Plot {
        title: format!("error vs NFE — {}", report.path),
        x_label: "model evaluations (NFE)".into(),
        y_label: "RMS error per coordinate".into(),
        x_log: true,
        y_log: true,
        series,
    }
}
