//! `diffuse solvers list|bench|likelihood|search|dlg|ems`: the solver registry, benchmarks on exact problems and the
//! schedule search.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use diffuse_core::bench::{BenchReport, ExtraRuns, Problem, Setup, read_starts, run_setup, starts_json};
use diffuse_core::io::write_bytes_atomic;
use diffuse_core::search::{Reference, Schedule, ScheduleFile, SearchObjective, SearchOptions, SearchScope};
use diffuse_core::solvers::{SolverList, SolverOptions, SolverSpec, build_solver, solver_names};

use super::Context;
use crate::plot::{Plot, Series};

mod ems;

/// Solver subcommands.
#[derive(Debug, Subcommand)]
pub enum SolversCommand {
    /// List every solver with its order and a one-line description.
    List,
    /// Run solvers on an exact problem file: error to the exact solution (deterministic solvers) or MMD² to exact
    /// samples (stochastic solvers) vs NFE, observed order, time.
    Bench(BenchArgs),
    /// PF-ODE log-likelihood of exact samples of a problem's data, next to the exact log-density.
    Likelihood(LikelihoodArgs),
    /// Search solver schedules (base solver and time grid per NFE) on draws of a problem that the bench never
    /// scores, and write them for `solvers bench --schedule`.
    Search(SearchArgs),
    /// Denoising MCMC (DLG): Langevin–Gibbs chains in (x, t), then a solver from each chain's state; MMD² to exact
    /// samples against the same solver from the problem's start at the same NFE.
    Dlg(DlgArgs),
    /// DPM-Solver-v3's empirical model statistics of a problem's model, for `dpm-solver-v3:stats=FILE`.
    Ems(ems::EmsArgs),
}

/// Arguments of `diffuse solvers dlg`.
#[derive(Debug, Args)]
pub struct DlgArgs {
    /// Problem file (its path and mixture; no anchor).
    #[arg(long, value_name = "FILE")]
    pub problem: PathBuf,
    /// Times the chain moves between.
    #[arg(long, default_value_t = 16)]
    pub levels: usize,
    /// Gibbs rounds between two samples of a chain.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Rounds before a chain's first sample (once per chain, amortised over its samples).
    #[arg(long, default_value_t = 20)]
    pub burn_in: usize,
    /// Samples per chain.
    #[arg(long, default_value_t = 16)]
    pub emissions: usize,
    /// Langevin steps per round.
    #[arg(long, default_value_t = 2)]
    pub langevin: usize,
    /// Langevin step relative to σ_t².
    #[arg(long, default_value_t = 0.1)]
    pub step: f64,
    /// Solver from the chains' states.
    #[arg(long, default_value = "dpm++2m")]
    pub solver: String,
    /// Steps of that solver (a curve: one row each).
    #[arg(long, default_value = "2,3,4,6,8", value_delimiter = ',')]
    pub steps: Vec<usize>,
}

/// Arguments of `diffuse solvers search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Problem file (its path, mixture, grid and end; its solvers and draws are not used).
    #[arg(long, value_name = "FILE")]
    pub problem: PathBuf,
    /// NFE budgets: a list (4,5,6) or a range (4..10).
    #[arg(long, default_value = "4..10")]
    pub nfe: String,
    /// Base solvers tried at every budget.
    #[arg(long, default_value = "ddim,dpm++2m,dpm++3m,unipc-bh2,dpm++2m+unic,deis-3")]
    pub solvers: SolverList,
    /// Search draws (drawn with a seed the bench does not use).
    #[arg(long, default_value_t = 256)]
    pub draws: usize,
    /// Objective evaluations per schedule (deterministic: the same count gives the same schedules).
    #[arg(long, default_value_t = 2000)]
    pub evals: usize,
    /// Optional cap on the whole search's time: seconds, or minutes with an `m` (10m); results then depend on the
    /// machine's speed.
    #[arg(long)]
    pub budget: Option<String>,
    /// Fit the schedules to a teacher, SOLVER:NFE (for example dpm++3m+unic:200), instead of the exact solutions:
    /// how a trained model, which has none, is searched.
    #[arg(long, value_name = "SOLVER:NFE")]
    pub teacher: Option<String>,
    /// The statistic of the search draws' errors to minimise: rms, median (per-draw error) or rms+median.
    #[arg(long, default_value = "rms")]
    pub objective: SearchObjective,
    /// Output schedule file (JSON).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `diffuse solvers likelihood`.
#[derive(Debug, Args)]
pub struct LikelihoodArgs {
    /// Problem file (its path and mixture; solvers and NFE are ignored).
    #[arg(long, value_name = "FILE")]
    pub problem: PathBuf,
    /// Divergence estimator: exact, rademacher or gaussian (Hutchinson).
    #[arg(long, default_value = "rademacher")]
    pub estimator: String,
    /// Hutchinson probes per sample (their spread gives the standard error).
    #[arg(long, default_value_t = 8)]
    pub probes: usize,
    /// Number of data samples (default: the problem's, at most 64).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Relative and absolute tolerance of the ODE integration.
    #[arg(long, default_value_t = 1e-5)]
    pub rtol: f64,
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
    /// Start from these points (JSON: an array of `dim`-long arrays, at the grid's first time) instead of the
    /// problem's own draws, so that another library can be scored on the very same draws.
    #[arg(long, value_name = "FILE")]
    pub start: Option<PathBuf>,
    /// Write the starting points used (the same JSON) for another library to run from.
    #[arg(long, value_name = "FILE")]
    pub save_start: Option<PathBuf>,
    /// Also run the searched schedules of this file (`solvers search`), the best per NFE, as rows `s3:SOLVER`.
    #[arg(long, value_name = "FILE")]
    pub schedule: Option<PathBuf>,
    /// Also run the truncated 5-, 6- and 8-step schedules of "Hyperparameters are all you need" (rows `hyper-N`;
    /// their output is the state at the cut-off divided by α, compared with the data).
    #[arg(long)]
    pub recipe: bool,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
}

/// Runs a solvers subcommand.
pub fn run(ctx: &Context, cmd: &SolversCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SolversCommand::List => list(),
        SolversCommand::Bench(args) => bench(ctx, args),
        SolversCommand::Likelihood(args) => likelihood(ctx, args),
        SolversCommand::Search(args) => search(ctx, args),
        SolversCommand::Dlg(args) => dlg(ctx, args),
        SolversCommand::Ems(args) => ems::ems(ctx, args),
    }
}

fn list() -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    // Written, not printed: `diffuse solvers list | head` closes the pipe, which is an error here, not a panic.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<16} {:>5}  description", "solver", "order")?;
    for (name, description) in solver_names() {
        let order = build_solver(&name, &SolverOptions::default())?.info().order;
        writeln!(out, "{name:<16} {order:>5}  {description}")?;
    }
    writeln!(
        out,
        "{:<16} {:>5}  DPM-Solver-v3 on empirical model statistics (Zheng et al. 2023); needs :stats=FILE from \
         `diffuse solvers ems`, takes order=1..3, pseudo= and corrector= (auto|on|off), panel=",
        "dpm-solver-v3", 2
    )?;
    writeln!(out, "\nunipc-bh1-P / unipc-bh2-P select UniPC with predictor order P (order P + 1).")?;
    Ok(ExitCode::SUCCESS)
}

fn bench(ctx: &Context, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    diffuse_core::io::protect_input(&args.problem);
    let mut problem = Problem::load(&args.problem)?;
    if ctx.global.seed != 0 {
        problem.seed = ctx.global.seed;
    }
    // Every output is checked before the work: an existing file, an input (the problem itself) or a folder
    // that cannot be written fails now, not after the whole benchmark.
    for out in [&args.json, &args.plot, &args.save_start].into_iter().flatten() {
        diffuse_core::io::check_output(out, args.force)?;
        diffuse_core::io::check_writable_folder(out)?;
    }
    let fixed = problem
        .solvers
        .iter()
        .filter(|s| !s.build(&SolverOptions::default()).map(|b| b.info().adaptive).unwrap_or(false))
        .count();
    let runs = fixed * problem.nfe.len() + (problem.solvers.len() - fixed) * problem.tolerances.len();
    let bar = ctx.printer.progress(runs as u64, "solving");
    let setup = match &args.start {
        Some(file) => Setup::with_start(&problem, read_starts(file, problem.dim)?)
            .with_context(|| format!("starting points {}", file.display()))?,
        None => Setup::new(&problem).with_context(|| format!("setting up {}", args.problem.display()))?,
    };
    if let Some(path) = &args.save_start {
        write_bytes_atomic(path, args.force, (starts_json(&setup.x_start)? + "\n").as_bytes())?;
        ctx.printer.info(format!("wrote {}", path.display()));
    }
    let schedules: Vec<Schedule> = match &args.schedule {
        Some(file) => {
            let s = ScheduleFile::load(file)?;
            anyhow::ensure!(
                s.path == problem.path,
                "{}: its schedules were searched on another path than {}'s",
                file.display(),
                args.problem.display()
            );
            s.best().into_iter().cloned().collect()
        }
        None => Vec::new(),
    };
    let recipes: &[usize] = if args.recipe { &[5, 6, 8] } else { &[] };
    let extra = ExtraRuns { schedules: &schedules, recipes };
    let report = run_setup(&problem, setup, extra, |name, budget| {
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
        "{:<16} {:>9} {:>6} {:>6} {:>12} {:>10} {:>10} {:>8} {:>7} {:>9}",
        "solver", "budget", "nfe", "steps", "rms error", "median", "p90", "switched", "order", "ms"
    );
    for r in &report.rows {
        let budget = if r.budget.fract() == 0.0 { format!("{}", r.budget) } else { format!("{:.0e}", r.budget) };
        match (&r.error, r.rms_error) {
            (Some(e), _) => println!("{:<16} {:>9} {:>6} {:>6}  failed: {e}", r.solver, budget, r.nfe, r.steps),
            (None, None) if r.mmd2.is_some() => println!(
                "{:<16} {:>9} {:>6} {:>6} {:>12.3e} {:>10} {:>10} {:>8} {:>7} {:>9.1}",
                r.solver,
                budget,
                r.nfe,
                r.steps,
                r.mmd2.unwrap_or(f64::NAN),
                "",
                "",
                "",
                "(mmd²)",
                r.wall_ms
            ),
            (None, Some(err)) => println!(
                "{:<16} {:>9} {:>6} {:>6} {:>12.3e} {:>10.3e} {:>10.3e} {:>7.1}% {:>7} {:>9.1}",
                r.solver,
                budget,
                r.nfe,
                r.steps,
                err,
                r.median_error.unwrap_or(f64::NAN),
                r.p90_error.unwrap_or(f64::NAN),
                100.0 * r.switched.unwrap_or(f64::NAN),
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

fn likelihood(ctx: &Context, args: &LikelihoodArgs) -> anyhow::Result<ExitCode> {
    use diffuse_core::denoiser::Conditioning;
    use diffuse_core::likelihood::{LikelihoodConfig, TraceEstimator, log_likelihood};
    use diffuse_core::seed::SampleSeeds;
    use tch::{Kind, Tensor};

    let problem = Problem::load(&args.problem)?;
    anyhow::ensure!(args.probes >= 1, "--probes must be at least 1");
    let estimator = match args.estimator.as_str() {
        "exact" => TraceEstimator::Exact,
        "rademacher" => TraceEstimator::Rademacher { probes: args.probes },
        "gaussian" => TraceEstimator::Gaussian { probes: args.probes },
        other => anyhow::bail!("--estimator '{other}': expected exact, rademacher or gaussian"),
    };
    let n = args.samples.unwrap_or(problem.samples.min(64));
    diffuse_core::limits::between_one_and("--samples", n, diffuse_core::limits::MAX_BENCH_SAMPLES)?;
    diffuse_core::limits::at_most("--probes", args.probes, 1024)?;
    let path = problem.path.build()?;
    let m = &problem.mixture;
    let model =
        diffuse_core::exact::GaussianMixture::new(m.weights.clone(), m.means.clone(), m.stds.clone(), path.clone())?;
    let (t0, t1) = path.t_range();
    // Stop before α reaches 0 (rectified flow, RDDM, Resfusion): the velocity needs α > 0.
    let t1 = if path.alpha(t1) > 0.0 { t1 } else { path.t_of_lambda(path.lambda(t0).min(-6.0)) };
    let anchor = problem.anchor.clone().unwrap_or_else(|| vec![0.0; problem.dim]);
    let mu = Tensor::from_slice(&anchor)
        .view([1, problem.dim as i64])
        .expand([n as i64, problem.dim as i64], false)
        .contiguous();
    let x = model.sample_marginal(&path.point(t0), &SampleSeeds::new(problem.seed, 0, n), Some(&mu))?;
    let exact = model.log_prob_marginal(&x, &path.point(t0), Some(&mu))?;
    let end = path.point(t1);
    let prior = |xt: &Tensor| model.log_prob_marginal(xt, &end, Some(&mu));
    let cfg = LikelihoodConfig {
        estimator,
        rtol: args.rtol,
        atol: args.rtol,
        t_start: Some(t0),
        t_end: Some(t1),
        seed: ctx.global.seed,
        ..Default::default()
    };
    ctx.printer.info(format!("integrating the PF-ODE of {} from t = {t0} to {t1} for {n} samples…", path.name()));
    let out = log_likelihood(path.as_ref(), &model, &Conditioning::with_anchor(mu.shallow_clone()), &x, &prior, &cfg)?;
    let d = problem.dim as f64;
    let mean = |t: &Tensor| f64::try_from(t.mean(Kind::Double)).unwrap_or(f64::NAN);
    let (exact_m, est_m) = (mean(&exact), mean(&out.log_prob));
    println!(
        "path {}   samples {n}   dim {}   estimator {}   model evaluations {}",
        path.name(),
        problem.dim,
        args.estimator,
        out.nfe
    );
    println!("{:<28} {:>14} {:>12}", "", "nats/sample", "bits/dim");
    println!("{:<28} {:>14.5} {:>12.5}", "exact log p(x)", exact_m, -exact_m / (d * std::f64::consts::LN_2));
    println!("{:<28} {:>14.5} {:>12.5}", "PF-ODE estimate", est_m, mean(&out.bits_per_dim));
    if let Some(se) = &out.std_err {
        let se_mean = f64::try_from(se.square().mean(Kind::Double).sqrt()).unwrap_or(f64::NAN) / (n as f64).sqrt();
        println!("{:<28} {:>14.5}", "standard error of the mean", se_mean);
    }
    println!(
        "{:<28} {:>14.2e}",
        "max |estimate − exact|",
        f64::try_from((&out.log_prob - &exact).abs().max()).unwrap_or(f64::NAN)
    );
    Ok(ExitCode::SUCCESS)
}

/// `4..10` (inclusive) or `4,5,8`.
/// Prints a domain search's schedules, whose errors are negated quality scores (`label`: "SI-SDR", "PSNR"),
/// and writes the file.
pub(crate) fn write_scored_schedules(
    file: &ScheduleFile,
    label: &str,
    output: &Path,
    force: bool,
) -> anyhow::Result<()> {
    println!("{:<5} {:<14} {:>14} {:>14} {:>8}", "nfe", "solver", format!("search {label}"), "own grid", "evals");
    for s in &file.schedules {
        println!(
            "{:<5} {:<14} {:>14.2} {:>14.2} {:>8}",
            s.nfe, s.solver, -s.search_error, -s.baseline_error, s.evaluations
        );
    }
    write_bytes_atomic(output, force, (serde_json::to_string_pretty(file)? + "\n").as_bytes())?;
    Ok(())
}

/// The scope of a schedule search from its command-line arguments.
pub(crate) fn search_scope(
    nfe: &str,
    solvers: &[SolverSpec],
    evals: usize,
    budget: Option<&str>,
) -> anyhow::Result<SearchScope> {
    Ok(SearchScope {
        nfe: parse_budgets(nfe)?,
        solvers: solvers.to_vec(),
        evaluations: evals,
        time: budget.map(parse_duration).transpose()?,
    })
}

/// The progress callback of a schedule search: the bar names the (solver, budget) being searched.
pub(crate) fn search_progress(bar: &indicatif::ProgressBar) -> impl FnMut(usize, &str) + '_ {
    move |nfe, solver| {
        bar.set_message(format!("{solver} @ {nfe} NFE"));
        bar.inc(1);
    }
}

pub(crate) fn parse_budgets(text: &str) -> anyhow::Result<Vec<usize>> {
    let bad = || anyhow::anyhow!("--nfe: expected a list (4,5,8) or a range (4..10), got '{text}'");
    let list: Vec<usize> = match text.split_once("..") {
        Some((a, b)) => {
            let (a, b): (usize, usize) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
            (a..=b).collect()
        }
        None => text.split(',').map(|v| v.trim().parse().map_err(|_| bad())).collect::<anyhow::Result<_>>()?,
    };
    anyhow::ensure!(
        !list.is_empty() && list.iter().all(|&n| (1..=1000).contains(&n)),
        "--nfe: budgets from 1 to 1000, got '{text}'"
    );
    Ok(list)
}

/// `90` (seconds) or `10m` (minutes).
pub(crate) fn parse_duration(text: &str) -> anyhow::Result<std::time::Duration> {
    let (value, scale) = match text.strip_suffix('m') {
        Some(v) => (v, 60.0),
        None => (text.strip_suffix('s').unwrap_or(text), 1.0),
    };
    let v: f64 = value
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("--budget: expected seconds (90) or minutes (10m), got '{text}'"))?;
    anyhow::ensure!(
        v.is_finite() && v > 0.0 && v * scale <= 86_400.0,
        "--budget: between 0 and 24 hours, got '{text}'"
    );
    Ok(std::time::Duration::from_secs_f64(v * scale))
}

fn search(ctx: &Context, args: &SearchArgs) -> anyhow::Result<ExitCode> {
    let problem = Problem::load(&args.problem)?;
    diffuse_core::io::check_output(&args.output, args.force)?;
    diffuse_core::io::check_writable_folder(&args.output)?;
    anyhow::ensure!((1..=1 << 16).contains(&args.draws), "--draws: from 1 to 65536, got {}", args.draws);
    anyhow::ensure!((1..=10_000_000).contains(&args.evals), "--evals: from 1 to 10⁷, got {}", args.evals);
    let opts = SearchOptions {
        scope: search_scope(&args.nfe, &args.solvers.0, args.evals, args.budget.as_deref())?,
        draws: args.draws,
        // Never the problem's own draws (the bench's): another seed stream.
        seed: problem.seed ^ 0x5EA2_C4ED,
        objective: args.objective,
        reference: match &args.teacher {
            None => Reference::Exact,
            Some(spec) => {
                let bad = || anyhow::anyhow!("--teacher: expected SOLVER:NFE (dpm++3m+unic:200), got '{spec}'");
                let (solver, nfe) = spec.rsplit_once(':').ok_or_else(bad)?;
                let nfe: usize = nfe.parse().map_err(|_| bad())?;
                anyhow::ensure!((1..=100_000).contains(&nfe), "--teacher: NFE from 1 to 100000, got {nfe}");
                build_solver(solver, &SolverOptions::default()).context("--teacher")?;
                Reference::Teacher { solver: solver.into(), nfe }
            }
        },
    };
    let bar = ctx.printer.progress(opts.scope.runs() as u64, "searching");
    let file = diffuse_core::search::search(&problem, &opts, search_progress(&bar))
        .with_context(|| format!("searching schedules for {}", args.problem.display()))?;
    bar.finish_and_clear();
    let header = format!("search {}", opts.objective.name());
    println!("{:<5} {:<14} {:>12} {:>12} {:>8}", "nfe", "solver", header, "own grid", "evals");
    for s in &file.schedules {
        println!(
            "{:<5} {:<14} {:>12.4e} {:>12.4e} {:>8}",
            s.nfe, s.solver, s.search_error, s.baseline_error, s.evaluations
        );
    }
    let text = serde_json::to_string_pretty(&file)? + "\n";
    write_bytes_atomic(&args.output, args.force, text.as_bytes())?;
    ctx.printer.info(format!(
        "wrote {} (score it on the problem's own draws: solvers bench --schedule)",
        args.output.display()
    ));
    Ok(ExitCode::SUCCESS)
}

fn dlg(ctx: &Context, args: &DlgArgs) -> anyhow::Result<ExitCode> {
    use diffuse_core::bench::mmd2;
    use diffuse_core::mcmc::{DlgOptions, dlg};
    use diffuse_core::solvers::Budget;
    let mut problem = Problem::load(&args.problem)?;
    if ctx.global.seed != 0 {
        problem.seed = ctx.global.seed;
    }
    anyhow::ensure!(problem.anchor.is_none(), "{}: DLG runs on problems without an anchor", args.problem.display());
    anyhow::ensure!(
        problem.end == diffuse_core::End::Zero,
        "{}: DLG ends at the data (\"end\": \"zero\")",
        args.problem.display()
    );
    anyhow::ensure!(
        (1..=10_000).contains(&args.rounds) && args.langevin <= 10_000 && args.burn_in <= 100_000,
        "--rounds from 1 to 10000, --langevin at most 10000, --burn-in at most 100000"
    );
    anyhow::ensure!((1..=problem.samples).contains(&args.emissions), "--emissions: from 1 to the problem's samples");
    anyhow::ensure!((2..=1000).contains(&args.levels), "--levels: from 2 to 1000, got {}", args.levels);
    let setup = Setup::new(&problem)?;
    let n = problem.samples;
    let target = setup.model.sample_data(&diffuse_core::SampleSeeds::new(problem.seed ^ 0x005E_ED7A_26E7, 0, n));
    let solver = build_solver(&args.solver, &SolverOptions::default())?;
    println!(
        "path: {}   samples: {n} ({} chains × {})   levels: {}   rounds: {}   langevin: {}   step: {}   burn-in: {} \
         evaluations per chain",
        setup.path.name(),
        n.div_ceil(args.emissions),
        args.emissions,
        args.levels,
        args.rounds,
        args.langevin,
        args.step,
        args.burn_in * args.langevin
    );
    println!("{:<6} {:>9} {:>12} {:>11} {:>12}", "steps", "dlg nfe", "dlg mmd²", "plain nfe", "plain mmd²");
    for &steps in &args.steps {
        anyhow::ensure!((1..=10_000).contains(&steps), "--steps: from 1 to 10000, got {steps}");
        let opts = DlgOptions {
            levels: args.levels,
            rounds: args.rounds,
            burn_in: args.burn_in,
            emissions: args.emissions,
            langevin: args.langevin,
            step: args.step,
            solver: args.solver.clone(),
            solver_steps: steps,
            seed: problem.seed,
        };
        let out = dlg(&setup.model, n, &opts)?;
        let nfe = out.nfe_per_draw.round().max(1.0) as usize;
        let plain = setup.solve(solver.as_ref(), &problem.grid(), Budget::Nfe(nfe));
        let (plain_nfe, plain_mmd) = match plain {
            Ok(s) => (s.nfe.to_string(), format!("{:.3e}", mmd2(&s.x, &target, None)?)),
            Err(e) => ("-".into(), format!("failed: {e}")),
        };
        println!(
            "{:<6} {:>9.1} {:>12.3e} {:>11} {:>12}",
            steps,
            out.nfe_per_draw,
            mmd2(&out.x, &target, None)?,
            plain_nfe,
            plain_mmd
        );
    }
    Ok(ExitCode::SUCCESS)
}
