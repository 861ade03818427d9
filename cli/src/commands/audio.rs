//! `diffuse audio …`: speech enhancement with SGMSE-family score models (argument handling, file planning,
//! progress and the summary; the work is in diffuse-audio).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use diffuse_audio::ScoreModel;

use super::Context;

mod bench;
mod diagnose;
mod ems;
mod enhance;
mod eval;
mod search;
mod train;

pub use bench::BenchArgs;
use bench::bench;
pub use diagnose::DiagnoseArgs;
pub use ems::EmsArgs;
use ems::ems;
pub use enhance::EnhanceArgs;
use enhance::enhance;
pub use eval::EvalArgs;
use eval::eval;
pub use search::SearchArgs;
use search::search;
pub use train::TrainArgs;
use train::train;

/// Audio subcommands.
#[derive(Debug, Subcommand)]
pub enum AudioCommand {
    /// Enhance noisy speech with a score-based model (SGMSE+): one file, several files or folders.
    Enhance(EnhanceArgs),
    /// Train a native score network on clean speech and noise mixed on the fly.
    Train(Box<TrainArgs>),
    /// Score enhanced files against clean references (SI-SDR, ESTOI), matched by relative path.
    Eval(EvalArgs),
    /// Quality vs NFE and real-time factor of samplers on (clean, noisy) pairs.
    Bench(BenchArgs),
    /// Search solver schedules (base solver and time grid per NFE) for a model on validation pairs.
    Search(SearchArgs),
    /// DPM-Solver-v3's empirical model statistics of a model, from noisy validation inputs.
    Ems(EmsArgs),
    /// The score's Fokker–Planck residual and Jacobian asymmetry against t, and how far its samplers disagree.
    Diagnose(DiagnoseArgs),
}

/// Runs `diffuse audio …`.
pub fn run(ctx: &Context, cmd: &AudioCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AudioCommand::Enhance(args) => enhance(ctx, args),
        AudioCommand::Train(args) => train(ctx, args),
        AudioCommand::Eval(args) => eval(ctx, args),
        AudioCommand::Bench(args) => bench(ctx, args),
        AudioCommand::Search(args) => search(ctx, args),
        AudioCommand::Ems(args) => ems(ctx, args),
        AudioCommand::Diagnose(args) => diagnose::run(ctx, args),
    }
}

/// Loads the model `spec` (a path or an installed name), or the built-in model for `None`/`builtin`; returns it
/// with its name for messages.
fn load_model(spec: Option<&str>, device: tch::Device) -> anyhow::Result<(ScoreModel, String)> {
    match spec {
        None | Some("builtin") | Some("default") | Some(diffuse_audio::default_model::NAME) => {
            Ok((diffuse_audio::default_model::load(device)?, diffuse_audio::default_model::NAME.to_string()))
        }
        Some(spec) => {
            let path = resolve_model(spec)?;
            let model = ScoreModel::load(&path, device)?;
            Ok((model, path.display().to_string()))
        }
    }
}

/// Finds a model by path or by name in the model folders.
fn resolve_model(spec: &str) -> anyhow::Result<PathBuf> {
    let as_path = PathBuf::from(spec);
    if as_path.is_file() {
        return Ok(as_path);
    }
    if spec.contains('/') || spec.ends_with(".pt") || spec.ends_with(".safetensors") {
        bail!("model {spec}: no such file");
    }
    let dirs = diffuse_core::models::model_dirs();
    for dir in &dirs {
        for ext in ["pt", "safetensors"] {
            for candidate in [dir.join(format!("{spec}.{ext}")), dir.join(spec).join(format!("{spec}.{ext}"))] {
                if candidate.is_file() {
                    return Ok(candidate);
                }
            }
        }
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "no model named '{spec}' is installed (searched {}); pass --model PATH to a TorchScript model with its .json \
         sidecar (docs/models.md explains how to export a published SGMSE+ checkpoint)",
        if searched.is_empty() { "no folders".into() } else { searched.join(", ") }
    )
}
