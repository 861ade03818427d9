//! One module per subcommand; each exposes one function taking validated arguments and the shared context.

pub mod audio;
mod doctor;
pub mod manifest;
pub mod pose;
pub mod restore;
pub mod solvers;
pub mod text;

use std::process::ExitCode;

use anyhow::Context as _;
use diffuse_core::threads::ThreadPolicy;
use tch::Device;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::output::Printer;

/// What every command gets from the global flags.
pub struct Context {
    /// Verbosity-aware output.
    pub printer: Printer,
    /// The global flags as given.
    pub global: GlobalArgs,
}

impl Context {
    /// The device the user asked for, or a clear error; says which one was picked at `-v`.
    #[allow(dead_code)] // used by the model-running subcommands
    pub fn device(&self) -> anyhow::Result<Device> {
        let device = self.global.device.resolve().context("--device")?;
        self.printer.verbose(format!(
            "device: {} (asked: {})",
            diffuse_core::device::device_name(device),
            self.global.device
        ));
        Ok(device)
    }

    /// The machine a model is trained on, for its sidecar: CPU model, core count and torch device.
    pub fn machine(&self) -> String {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let device = self.device().map(diffuse_core::device::device_name).unwrap_or_default();
        format!("{cpu}, {cores} cores, {device}")
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let printer = Printer::new(cli.global.quiet, cli.global.verbose);
    // Training keeps one thread count from start to end: results differ in the last bits between counts.
    if !(cli.global.threads == ThreadPolicy::Auto && trains(&cli.command)) {
        diffuse_core::threads::apply(cli.global.threads);
    }
    let ctx = Context { printer, global: cli.global };
    // Every command that computes honours --device: one that runs on the CPU only still refuses an absent device
    // rather than ignoring it. Doctor reports on devices; listing solvers and merging manifests compute nothing.
    let computes = !matches!(
        cli.command,
        Command::Doctor(_) | Command::Solvers(solvers::SolversCommand::List) | Command::Manifest(_)
    );
    if computes {
        ctx.global.device.resolve().context("--device")?;
    }
    match cli.command {
        Command::Doctor(args) => doctor::doctor(&ctx, &args),
        Command::Pose(cmd) => pose::run(&ctx, &cmd),
        Command::Solvers(cmd) => solvers::run(&ctx, &cmd),
        Command::Audio(cmd) => audio::run(&ctx, &cmd),
        Command::Restore(cmd) => restore::run(&ctx, &cmd),
        Command::Text(cmd) => text::text(&ctx, &cmd),
        Command::Manifest(cmd) => manifest::run(&ctx, &cmd),
    }
}

/// Whether the command trains a model.
fn trains(command: &Command) -> bool {
    matches!(
        command,
        Command::Audio(audio::AudioCommand::Train(_))
            | Command::Restore(restore::RestoreCommand::Train(_))
            | Command::Text(text::TextCommand::Train(_))
            | Command::Pose(pose::PoseCommand::Train(_))
    )
}

/// The options every training command shares.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Write a checkpoint every N steps.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub checkpoint_every: u64,
    /// Stop (with a checkpoint and the model) after this many minutes.
    #[arg(long, value_name = "MIN")]
    pub time_limit: Option<f64>,
    /// Continue the run in --out from its checkpoint (the recipe must be the same).
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Start over even if --out holds a run.
    #[arg(long)]
    pub force: bool,
}

impl RunArgs {
    /// Checks the output folder `out` (holding `model` and `checkpoint.safetensors`): with --resume the
    /// checkpoint must be there; otherwise an earlier run is only replaced with --force. Returns the time limit.
    pub fn check(&self, out: &std::path::Path, model: &str) -> anyhow::Result<Option<std::time::Duration>> {
        let (model_file, ckpt) = (out.join(model), out.join(diffuse_core::optim::CHECKPOINT));
        if self.resume {
            anyhow::ensure!(ckpt.is_file(), "{}: no checkpoint to resume from", ckpt.display());
        } else if (model_file.exists() || ckpt.exists()) && !self.force {
            anyhow::bail!(
                "{}: already holds a training run; pass --resume to continue it or --force to start over",
                out.display()
            );
        }
        match self.time_limit {
            Some(m) => {
                anyhow::ensure!(m.is_finite() && m > 0.0, "--time-limit: need a positive number of minutes, got {m}");
                Ok(Some(std::time::Duration::from_secs_f64(m * 60.0)))
            }
            None => Ok(None),
        }
    }
}

/// The last line of a training command.
pub(crate) fn print_trained(
    report: &diffuse_core::optim::DriveReport,
    seconds: f64,
    validation: &str,
    model: &std::path::Path,
) {
    println!(
        "trained to step {} in {seconds:.1} s{}, last loss {:.4}{validation}; model written to {}",
        report.step,
        if report.stopped_by_time { " (time limit)" } else { "" },
        report.last_loss,
        model.display()
    );
}
