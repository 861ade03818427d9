//! `diffuse audio bench`: quality vs NFE and real-time factor of samplers.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use diffuse_core::solvers::split_solver_list;

use super::super::Context;
use super::load_model;

/// Arguments of `diffuse audio bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Folder of clean references.
    #[arg(long, value_name = "DIR")]
    pub clean: PathBuf,
    /// Folder of noisy inputs (same relative paths).
    #[arg(long, value_name = "DIR")]
    pub noisy: PathBuf,
    /// Model (default: the built-in model).
    #[arg(long, value_name = "PATH|NAME")]
    pub model: Option<String>,
    /// Samplers: pc (2 NFE per step), ode (Heun on the probability-flow ODE, 2 NFE per step), or core solvers.
    #[arg(long, default_value = "pc,ode,dpm++2m,unipc-bh2")]
    pub samplers: Vec<String>,
    /// Step counts.
    #[arg(long, default_value = "5,10,20,30", value_delimiter = ',')]
    pub steps: Vec<usize>,
    /// Also run the searched schedules of this file (`diffuse audio search`), the best per NFE, as rows
    /// `schedule:SOLVER`.
    #[arg(long, value_name = "FILE")]
    pub schedule: Option<PathBuf>,
    /// Use at most this many pairs.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a Markdown table.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write an SVG plot of SI-SDR vs NFE.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
}

pub(super) fn bench(ctx: &Context, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    use crate::plot::{Plot, Series};
    let p = &ctx.printer;
    for out in [&args.json, &args.markdown, &args.plot].into_iter().flatten() {
        anyhow::ensure!(!out.exists() || args.force, "{}: already exists (use --force to overwrite)", out.display());
    }
    let device = ctx.device()?;
    let (model, model_name) = load_model(args.model.as_deref(), device)?;
    let rate = model.config().sample_rate;
    let pairs = diffuse_audio::eval::read_pairs(&args.clean, &args.noisy, rate, args.limit)?;
    let audio_s: f64 = pairs.iter().map(|(_, c, _)| c.len() as f64).sum::<f64>() / f64::from(rate);
    p.info(format!("{} pairs ({audio_s:.1} s of audio), model {model_name}", pairs.len()));
    let noisy = {
        let (mut si, mut es, mut pq) = (0.0, 0.0, 0.0);
        for (_, c, y) in &pairs {
            let s = diffuse_audio::eval::score(c, y, rate);
            si += s.si_sdr;
            es += s.estoi;
            pq += s.pesq.unwrap_or(f64::NAN);
        }
        let k = pairs.len() as f64;
        (si / k, es / k, pq / k)
    };
    let data: Vec<(Vec<f32>, Vec<f32>)> = pairs.into_iter().map(|(_, c, y)| (c, y)).collect();
    let schedules = match &args.schedule {
        Some(file) => {
            let f = diffuse_core::search::ScheduleFile::load(file)?;
            anyhow::ensure!(
                f.path == model.config().path,
                "{}: its schedules were searched on another path than the model's",
                file.display()
            );
            f.best().into_iter().cloned().collect()
        }
        None => Vec::new(),
    };
    // Each spec keeps its own `key=value` parameters (`dpm-solver-v3:stats=F,order=1`).
    let samplers: Vec<String> = args.samplers.iter().flat_map(|s| split_solver_list(s)).collect();
    let total = ((samplers.len() * args.steps.len() + schedules.len()) * data.len()) as u64;
    let bar = p.progress(total, "benchmark");
    let mut points = Vec::new();
    for name in &samplers {
        // `ode` at a fixed step count: Heun on the probability-flow ODE (the reference's own ODE sampler is
        // adaptive; `diffuse audio enhance --sampler ode` runs that one).
        let solver = if name == "ode" { "heun" } else { name.as_str() };
        bar.set_message(name.clone());
        let mut pts =
            diffuse_audio::eval::bench_sampler(&model, &data, solver, &args.steps, ctx.global.seed, &mut || {
                bar.inc(1)
            })?;
        for pt in &mut pts {
            pt.sampler = name.clone();
        }
        points.extend(pts);
    }
    let mut series_names = samplers.clone();
    for s in &schedules {
        let label = format!("schedule:{}", s.solver);
        bar.set_message(label.clone());
        let file = args.schedule.as_deref().unwrap_or(std::path::Path::new("schedule"));
        let sampler = diffuse_audio::sampling::CoreSampler::from_schedule(s, model.config())
            .with_context(|| file.display().to_string())?;
        let pt = diffuse_audio::eval::bench_built(
            &model,
            &data,
            &sampler,
            &label,
            s.times.len(),
            ctx.global.seed,
            &mut || bar.inc(1),
        )?;
        if !series_names.contains(&label) {
            series_names.push(label);
        }
        points.push(pt);
    }
    bar.finish_and_clear();
    let mut md = format!(
        "| sampler | steps | NFE | SI-SDR (dB) | ΔSI-SDR (dB) | ESTOI | ΔESTOI | PESQ-WB | RTF |\n|---|---|---|---|---|---|---|---|---|\n| noisy input | – | 0 | {:.2} | – | {:.3} | – | {:.2} | – |\n",
        noisy.0, noisy.1, noisy.2
    );
    for pt in &points {
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:+.2} | {:.3} | {:+.3} | {} | {:.3} |\n",
            pt.sampler,
            pt.steps,
            pt.nfe,
            pt.scores.si_sdr,
            pt.scores.si_sdr - noisy.0,
            pt.scores.estoi,
            pt.scores.estoi - noisy.1,
            pt.scores.pesq.map_or("–".to_string(), |p| format!("{p:.2}")),
            pt.rtf
        ));
    }
    print!("{md}");
    if let Some(path) = &args.markdown {
        diffuse_core::io::write_bytes_atomic(path, args.force, md.as_bytes())?;
    }
    if let Some(path) = &args.json {
        let j = serde_json::json!({
            "model": model_name, "noisy": {"si_sdr": noisy.0, "estoi": noisy.1, "pesq_wb": noisy.2}, "points": points
        });
        diffuse_core::io::write_bytes_atomic(path, args.force, serde_json::to_string_pretty(&j)?.as_bytes())?;
    }
    if let Some(path) = &args.plot {
        let mut series: Vec<Series> = series_names
            .iter()
            .map(|s| Series {
                name: s.clone(),
                points: points.iter().filter(|pt| &pt.sampler == s).map(|pt| (pt.nfe, pt.scores.si_sdr)).collect(),
            })
            .collect();
        let max_nfe = points.iter().map(|pt| pt.nfe).fold(1.0, f64::max);
        series.push(Series { name: "noisy input".into(), points: vec![(1.0, noisy.0), (max_nfe, noisy.0)] });
        let plot = Plot {
            title: format!("SI-SDR vs model evaluations ({model_name})"),
            x_label: "network evaluations (NFE)".into(),
            y_label: "SI-SDR (dB)".into(),
            x_log: true,
            y_log: false,
            series,
        };
        diffuse_core::io::write_bytes_atomic(path, args.force, plot.to_svg().as_bytes())?;
        p.info(format!("plot written to {}", path.display()));
    }
    Ok(ExitCode::SUCCESS)
}
