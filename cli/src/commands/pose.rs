//! `diffuse pose`: object pose from point clouds (SE(3) diffusion registration) and its synthetic benchmark.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use diffuse_core::threads::ThreadPolicy;
use diffuse_pose::registration::{Dof, EstimateConfig};

use super::Context;

mod bench;
mod estimate;
mod plots;
mod train;

pub use bench::BenchArgs;
use bench::run_bench;
pub use estimate::EstimateArgs;
use estimate::estimate;
pub use train::TrainArgs;

/// Surface samples taken from a mesh object model.
pub(super) const MODEL_SAMPLES: usize = 4000;

/// The pose subcommands.
#[derive(Debug, Subcommand)]
pub enum PoseCommand {
    /// Estimate the pose of a known object in a scan (object → scene).
    Estimate(EstimateArgs),
    /// Run the synthetic benchmark: random full rotations, partial views, noise and outliers.
    Bench(BenchArgs),
    /// Train the category-level pose-and-size model on procedural scans.
    Train(TrainArgs),
}

/// Settings of the reverse process shared by `estimate` and `bench`.
#[derive(Debug, Args, Clone)]
pub struct ProcessArgs {
    /// Hypotheses run through the reverse process in parallel (default: 24 initial rotations with --object; the
    /// category model's own, 4 headings, with --category).
    #[arg(long, value_name = "N")]
    pub hypotheses: Option<usize>,
    /// Reverse-process steps per hypothesis (default: 10 surrogate calls with --object; the category model's
    /// own, 3 network calls, with --category).
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,
    /// Degrees of freedom: 6 (rigid), 7 (rigid and one uniform scale of the model) or 9 (a scale per axis of
    /// the model's own frame): scene ≈ R·diag(s)·model + t.
    #[arg(long, default_value = "6", value_name = "6|7|9")]
    pub dof: Dof,
}

pub(super) fn parse_point(s: &str) -> Result<[f64; 3], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>().map_err(|_| format!("'{x}' is not a number")))
        .collect::<Result<_, _>>()?;
    match v[..] {
        [x, y, z] if v.iter().all(|c| c.is_finite()) => Ok([x, y, z]),
        _ => Err(format!("expected three finite numbers X,Y,Z, got '{s}'")),
    }
}

/// Runs a pose subcommand.
pub fn run(ctx: &Context, cmd: &PoseCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PoseCommand::Estimate(a) => estimate(ctx, a),
        PoseCommand::Bench(a) => run_bench(ctx, a),
        PoseCommand::Train(a) => train::run(ctx, a),
    }
}

/// `base` with the process flags and global seed/threads applied.
pub(super) fn estimate_config(ctx: &Context, p: &ProcessArgs, base: EstimateConfig) -> anyhow::Result<EstimateConfig> {
    anyhow::ensure!(p.hypotheses != Some(0), "--hypotheses must be at least 1");
    anyhow::ensure!(p.steps != Some(0), "--steps must be at least 1");
    Ok(EstimateConfig {
        hypotheses: p.hypotheses.unwrap_or(base.hypotheses),
        steps: p.steps.unwrap_or(base.steps),
        dof: p.dof,
        seed: ctx.global.seed,
        threads: match ctx.global.threads {
            ThreadPolicy::Fixed(n) => n,
            ThreadPolicy::Auto => 0,
        },
        ..base
    })
}

/// The category model's sampler settings from the process flags and the global seed.
pub(super) fn category_options(
    ctx: &Context,
    p: &ProcessArgs,
) -> anyhow::Result<diffuse_pose::category::estimate::CategoryOptions> {
    anyhow::ensure!(p.hypotheses != Some(0), "--hypotheses must be at least 1");
    anyhow::ensure!(p.steps != Some(0), "--steps must be at least 1");
    Ok(diffuse_pose::category::estimate::CategoryOptions {
        steps: p.steps,
        hypotheses: p.hypotheses,
        seed: ctx.global.seed,
        ..Default::default()
    })
}

/// The category-level model: `path` (weights with their `.json` sidecar beside them) or the built-in one.
pub(super) fn load_category_model(
    ctx: &Context,
    path: Option<&Path>,
) -> anyhow::Result<diffuse_pose::category::model::CategoryModel> {
    use anyhow::Context as _;
    let device = ctx.device()?;
    Ok(match path {
        Some(p) => diffuse_pose::category::model::CategoryModel::load(p, device)
            .with_context(|| format!("loading the category model {}", p.display()))?,
        None => diffuse_pose::category::default_model::load(device)?,
    })
}

/// `all` or a comma-separated list of category names.
pub(super) fn parse_categories(list: &str) -> anyhow::Result<Vec<diffuse_pose::category::Category>> {
    use anyhow::Context as _;
    if list.trim() == "all" {
        return Ok(diffuse_pose::category::CATEGORIES.to_vec());
    }
    let mut out: Vec<diffuse_pose::category::Category> =
        list.split(',').map(|c| c.parse()).collect::<Result<_, _>>().context("--category")?;
    out.dedup();
    Ok(out)
}

pub(super) fn refuse_overwrite(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!("{} exists; pass --force to overwrite it", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewpoint_parses_three_numbers() {
        assert_eq!(parse_point("0,0,0").unwrap(), [0.0, 0.0, 0.0]);
        assert_eq!(parse_point("-1.5, 2,3e-2").unwrap(), [-1.5, 2.0, 0.03]);
        assert!(parse_point("1,2").unwrap_err().contains("three"));
        assert!(parse_point("1,x,2").unwrap_err().contains("'x'"));
        assert!(parse_point("1,2,inf").is_err());
    }
}
