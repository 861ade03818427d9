//! `diffuse doctor`: what this installation can run on, and where it looks for models.

use std::process::ExitCode;

use diffuse_core::threads::ThreadPolicy;
use diffuse_core::{DeviceSpec, RuntimeReport};

use super::Context;
use crate::cli::DoctorArgs;

/// Prints the report; fails when the requested device is missing.
pub fn doctor(ctx: &Context, args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let report = RuntimeReport::collect();
    let model_dirs: Vec<String> = diffuse_core::models::model_dirs().iter().map(|p| p.display().to_string()).collect();
    let mut builtin = vec![diffuse_audio::default_model::NAME.to_string()];
    builtin.extend(diffuse_restoration::degrade::Task::ALL.map(diffuse_restoration::default_models::name));
    builtin.push(diffuse_discrete::default_model::NAME.to_string());
    let requested = ctx.global.device;
    let resolved = requested.resolve();

    if args.json {
        let json = serde_json::json!({
            "diffuse_version": env!("CARGO_PKG_VERSION"),
            "runtime": report,
            "tch_version": "0.24.0",
            "requested_device": requested.to_string(),
            "thread_policy": ctx.global.threads.to_string(),
            "device": resolved.as_ref().ok().map(|d| diffuse_core::device::device_name(*d)),
            "model_dirs": model_dirs,
            "builtin_models": builtin,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let na = || "unknown".to_string();
        println!("diffuse      {}", env!("CARGO_PKG_VERSION"));
        println!("libtorch     {} (tch 0.24.0)", report.libtorch_version.clone().unwrap_or_else(na));
        println!("  loaded from {}", report.libtorch_path.clone().unwrap_or_else(na));
        if let Some(built) = option_env!("DIFFUSE_LIBTORCH_BUILD_LIB") {
            let same = |a: &str, b: &str| std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok();
            if !report.libtorch_path.as_deref().is_some_and(|p| same(p, built)) {
                println!("  built against {built}");
            }
        }
        println!("CUDA         {}", if report.cuda_available { "available" } else { "not available" });
        println!("  devices    {}", report.cuda_devices);
        println!("cuDNN        {}", if report.cudnn_available { "available" } else { "not available" });
        match ctx.global.threads {
            ThreadPolicy::Auto => println!(
                "threads      {} now (--threads auto: fewer while other programs keep cores busy)",
                report.threads
            ),
            ThreadPolicy::Fixed(n) => println!("threads      {n} (--threads {n})"),
        }
        match &resolved {
            Ok(d) => println!("device       {} (--device {requested})", diffuse_core::device::device_name(*d)),
            Err(_) => println!("device       missing (--device {requested})"),
        }
        println!("models       built in: {}; then these folders:", builtin.join(", "));
        for dir in &model_dirs {
            let state = if std::path::Path::new(dir).is_dir() { "" } else { " (does not exist)" };
            println!("  {dir}{state}");
        }
        if model_dirs.is_empty() {
            println!("  (no folders: set {} or HOME)", diffuse_core::models::MODEL_PATH_VAR);
        }
    }
    // A binary moved to another machine may run against another libtorch (LD_LIBRARY_PATH): tch 0.24 needs 2.11.
    let version_ok = report.libtorch_version.as_deref().is_none_or(|v| v.starts_with("2.11."));
    if !version_ok {
        ctx.printer.warn(format!(
            "this libtorch is {}, but diffuse is built for PyTorch 2.11.0 (tch 0.24.0); install torch==2.11.0 or rebuild",
            report.libtorch_version.as_deref().unwrap_or("unknown")
        ));
    }
    if args.bench
        && let Ok(device) = &resolved
    {
        bench(*device)?;
    }
    match resolved {
        Ok(_) if !version_ok => Ok(ExitCode::from(1)),
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(err) => {
            let hint = match requested {
                DeviceSpec::Cuda(_) => "\nhint: run `diffuse doctor` without --device to see what this machine has",
                _ => "",
            };
            Err(anyhow::anyhow!("{err}{hint}"))
        }
    }
}

/// Times `f` (after one warm-up call), in milliseconds per call.
fn time_ms(device: tch::Device, reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    if let tch::Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
    let start = std::time::Instant::now();
    for _ in 0..reps {
        f()?;
    }
    if let tch::Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
    Ok(start.elapsed().as_secs_f64() * 1e3 / reps as f64)
}

/// A small CPU-vs-device table: element-wise update, matrix product, and a 20-step DPM-Solver++(2M) run with a
/// zero-cost model (solver overhead only).
fn bench(device: tch::Device) -> anyhow::Result<()> {
    use diffuse_core::denoiser::{Conditioning, FnDenoiser};
    use diffuse_core::solvers::{Budget, NoNoise, SolverOptions, build_solver, sample};
    use diffuse_core::spacing::{End, GridSpec, Spacing};
    use tch::{Kind, Tensor};

    let devices: Vec<tch::Device> =
        if device == tch::Device::Cpu { vec![device] } else { vec![tch::Device::Cpu, device] };
    let path = diffuse_core::path::Edm::default();
    let model =
        FnDenoiser::new(
            diffuse_core::Parameterization::Data,
            |x: &Tensor, _t, _c: &Conditioning| Ok(x.shallow_clone()),
        );
    let solver = build_solver("dpm++2m", &SolverOptions::default())?;
    let grid = GridSpec::new(Spacing::Karras { rho: 7.0 }, End::Zero);
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("axpy 4x2x256x256 f32", vec![]),
        ("matmul 1024^2 f32", vec![]),
        ("dpm++2m 20 steps, 4x2x256x256", vec![]),
    ];
    for d in &devices {
        let x = Tensor::randn([4, 2, 256, 256], (Kind::Float, *d));
        let y = Tensor::randn([4, 2, 256, 256], (Kind::Float, *d));
        rows[0].1.push(time_ms(*d, 50, || {
            let _ = x.f_mul_scalar(0.5)?.f_add_(&y)?;
            Ok(())
        })?);
        let a = Tensor::randn([1024, 1024], (Kind::Float, *d));
        rows[1].1.push(time_ms(*d, 10, || {
            let _ = a.f_matmul(&a)?;
            Ok(())
        })?);
        rows[2].1.push(time_ms(*d, 3, || {
            sample(
                solver.as_ref(),
                &path,
                &model,
                &Conditioning::none(),
                &x,
                &grid,
                Budget::Steps(20),
                &mut NoNoise,
                &mut (),
            )?;
            Ok(())
        })?);
    }
    println!();
    let names: Vec<String> = devices.iter().map(|d| diffuse_core::device::device_name(*d)).collect();
    print!("{:<32}", "operation (ms per call)");
    for n in &names {
        print!(" {n:>10}");
    }
    if devices.len() == 2 {
        print!(" {:>9}", "speed-up");
    }
    println!();
    for (name, times) in &rows {
        print!("{name:<32}");
        for t in times {
            print!(" {t:>10.3}");
        }
        if times.len() == 2 {
            print!(" {:>8.1}x", times[0] / times[1]);
        }
        println!();
    }
    Ok(())
}
