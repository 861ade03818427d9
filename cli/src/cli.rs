//! Command-line definitions (clap). Global flags apply to every subcommand.

use clap::{Args, Parser, Subcommand};
use diffuse_core::DeviceSpec;
use diffuse_core::threads::ThreadPolicy;

/// Diffusion models for signals, robotics and language, on libtorch.
#[derive(Debug, Parser)]
#[command(name = "diffuse", version, about, propagate_version = true, max_term_width = 110)]
pub struct Cli {
    /// Options every subcommand honours.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by all subcommands.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Device: auto (CUDA when available), cpu, cuda or cuda:N. Asking for CUDA without it is an error.
    #[arg(long, global = true, default_value = "auto", value_parser = parse_device)]
    pub device: DeviceSpec,
    /// CPU threads for libtorch: a count, or auto (the cores other programs leave free, re-measured as the model
    /// runs; training commands use libtorch's default count, so that a rerun is bit-identical).
    #[arg(long, global = true, default_value = "auto", value_name = "N|auto", value_parser = parse_threads)]
    pub threads: ThreadPolicy,
    /// Seed for every random choice; the same seed gives the same result.
    #[arg(long, global = true, default_value_t = 0, value_name = "N")]
    pub seed: u64,
    /// Print only results and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Say more (repeat for more detail).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse().map_err(|e: diffuse_core::Error| e.to_string())
}

fn parse_threads(s: &str) -> Result<ThreadPolicy, String> {
    s.parse().map_err(|e: diffuse_core::Error| e.to_string())
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the installation: versions, libtorch, CUDA, threads, model folders.
    Doctor(DoctorArgs),
    /// Object pose from point clouds: SE(3) diffusion registration and its benchmark.
    #[command(subcommand)]
    Pose(crate::commands::pose::PoseCommand),
    /// Diffusion ODE/SDE solvers: list them, benchmark them on exact problems.
    #[command(subcommand)]
    Solvers(crate::commands::solvers::SolversCommand),
    /// Speech enhancement with score-based models (SGMSE+).
    #[command(subcommand)]
    Audio(crate::commands::audio::AudioCommand),
    /// Image restoration: restore with a model (denoise, deblur, lowlight), train, bench, degraded test pairs, PSNR/SSIM.
    #[command(subcommand)]
    Restore(crate::commands::restore::RestoreCommand),
    /// Discrete diffusion on token sequences (masked and uniform): exact sampler checks.
    #[command(subcommand)]
    Text(crate::commands::text::TextCommand),
    /// Batch manifests of sharded runs: merge them and check every input was done exactly once.
    #[command(subcommand)]
    Manifest(crate::commands::manifest::ManifestCommand),
}

/// Arguments of `diffuse doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also time a few tensor operations on the CPU and on the selected device.
    #[arg(long)]
    pub bench: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from(["diffuse", "doctor", "--device", "cpu", "--seed", "5", "-vv"]).unwrap();
        assert_eq!(cli.global.device, DeviceSpec::Cpu);
        assert_eq!(cli.global.seed, 5);
        assert_eq!(cli.global.verbose, 2);
    }

    #[test]
    fn bad_device_is_rejected_at_parse_time() {
        let err = Cli::try_parse_from(["diffuse", "--device", "tpu", "doctor"]).unwrap_err().to_string();
        assert!(err.contains("expected auto, cpu, cuda or cuda:N"), "{err}");
    }

    #[test]
    fn quiet_and_verbose_conflict() {
        assert!(Cli::try_parse_from(["diffuse", "-q", "-v", "doctor"]).is_err());
    }
}
