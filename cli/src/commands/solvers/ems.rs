//! `diffuse solvers ems`: DPM-Solver-v3's empirical model statistics of an exact problem's model, written for
//! `dpm-solver-v3:stats=FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use diffuse_core::bench::{Problem, Setup};
use diffuse_core::solvers::ems::estimate;
use diffuse_core::solvers::{EmsSettings, NoNoise, Pooling, Run};
use diffuse_core::spacing::End;

use crate::commands::Context;

/// Added to the problem's seed for the statistics' draws, so they never coincide with the draws the bench scores
/// (the problem's seed) or the schedule search's.
const STATS_SEED_OFFSET: u64 = 0x5EED_0E35;

/// Arguments of `diffuse solvers ems`.
#[derive(Debug, Args)]
pub struct EmsArgs {
    /// Problem file (its path, mixture, grid start and end).
    #[arg(long, value_name = "FILE")]
    pub problem: PathBuf,
    /// Trajectories the statistics are averaged over (drawn with a seed the bench does not use).
    #[arg(long, default_value_t = 1024)]
    pub samples: usize,
    /// Intervals of the uniform λ grid the statistics live on.
    #[arg(long, default_value_t = 250)]
    pub intervals: usize,
    /// Rademacher probes per node for the Jacobian diagonal.
    #[arg(long, default_value_t = 4)]
    pub probes: usize,
    /// One value per λ shared by all coordinates (for data of varying size) instead of one per coordinate.
    #[arg(long)]
    pub shared: bool,
    /// Output statistics file (safetensors).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

/// Runs `diffuse solvers ems`.
pub fn ems(ctx: &Context, args: &EmsArgs) -> anyhow::Result<ExitCode> {
    diffuse_core::io::protect_input(&args.problem);
    diffuse_core::io::check_output(&args.output, args.force)?;
    diffuse_core::io::check_writable_folder(&args.output)?;
    anyhow::ensure!(args.samples >= 2, "--samples: need at least 2 trajectories");
    let problem = Problem::load(&args.problem)?;
    let seed = problem.seed.wrapping_add(STATS_SEED_OFFSET);
    let setup = Setup::new(&Problem { samples: args.samples, seed, ..problem.clone() })
        .with_context(|| format!("setting up {}", args.problem.display()))?;
    let path = setup.path.clone();
    // The statistics span the grid from its start to its last point before any jump onto the data.
    let end = match problem.end {
        End::Zero => path.point(path.t_range().0),
        End::Time(t) => path.point(t),
    };
    let settings = EmsSettings {
        intervals: args.intervals,
        probes: args.probes,
        pooling: if args.shared { Pooling::All } else { Pooling::PerCoordinate },
        seed: problem.seed,
    };
    let bar = ctx.printer.progress(args.intervals as u64 + 1, "statistics");
    let x = setup.x_start.shallow_clone();
    let (mut noise, mut observer) = (NoNoise, ());
    let mut run = Run::new(path.as_ref(), &setup.model, &setup.cond, &mut noise, &mut observer);
    let x_tilde = run.to_tilde(&x, &setup.start)?;
    let stats =
        estimate(&mut run, &x_tilde, &setup.start, &end, &settings, &mut |done, _| bar.set_position(done as u64))
            .with_context(|| format!("statistics of {}", args.problem.display()))?
            .with_metadata("problem", args.problem.display().to_string())
            .with_metadata("path", serde_json::to_string(&problem.path)?)
            .with_metadata("command", std::env::args().collect::<Vec<_>>().join(" "));
    bar.finish_and_clear();
    stats.write(&args.output, args.force)?;
    let lams = stats.lambdas();
    println!(
        "statistics of {} trajectories on {} λ nodes ({:.3} to {:.3}), {}: {}",
        args.samples,
        lams.len(),
        lams[0],
        lams[lams.len() - 1],
        if args.shared { "shared by all coordinates" } else { "per coordinate" },
        args.output.display()
    );
    println!("use them as the solver dpm-solver-v3:stats={}", args.output.display());
    Ok(ExitCode::SUCCESS)
}
