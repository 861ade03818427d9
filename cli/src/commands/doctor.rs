//! `diffuse doctor`: what this installation can run on, and where it looks for models.

use std::process::ExitCode;

use diffuse_core::{DeviceSpec, RuntimeReport};

use super::Context;
use crate::cli::DoctorArgs;

/// Prints the report; fails when the requested device is missing.
pub fn doctor(ctx: &Context, args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let report = RuntimeReport::collect();
    let model_dirs: Vec<String> =
        diffuse_core::models::model_dirs().iter().map(|p| p.display().to_string()).collect();
    let requested = ctx.global.device;
    let resolved = requested.resolve();

    if args.json {
        let json = serde_json::json!({
            "diffuse_version": env!("CARGO_PKG_VERSION"),
            "runtime": report,
            "tch_version": "0.24.0",
            "requested_device": requested.to_string(),
            "device": resolved.as_ref().ok().map(|d| diffuse_core::device::device_name(*d)),
            "model_dirs": model_dirs,
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
        println!("threads      {}", report.threads);
        match &resolved {
            Ok(d) => println!("device       {} (--device {requested})", diffuse_core::device::device_name(*d)),
            Err(_) => println!("device       missing (--device {requested})"),
        }
        println!("models       embedded defaults, then:");
        for dir in &model_dirs {
            let state = if std::path::Path::new(dir).is_dir() { "" } else { " (does not exist)" };
            println!("  {dir}{state}");
        }
        if model_dirs.is_empty() {
            println!("  (no folders: set {} or HOME)", diffuse_core::models::MODEL_PATH_VAR);
        }
    }
    match resolved {
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
