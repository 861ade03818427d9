//! The `diffuse` binary: argument parsing, progress and output; the work lives in the library crates.

mod cli;
mod commands;
mod output;
mod plot;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    remove_unfinished_outputs_on_signals();
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Interrupted or terminated runs leave no half-written outputs: on SIGINT, SIGTERM or SIGHUP a watcher thread
/// removes the temporary files being written, then the process dies of that signal by its default action, as
/// if it had not been caught (exit status 128 + signal in a shell). Failing to install the watcher only loses the
/// clean-up (the next write of the same output sweeps what a dead run left), so it is not fatal.
fn remove_unfinished_outputs_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else { return };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            diffuse_core::io::remove_temp_files();
            eprintln!("interrupted; unfinished outputs removed");
            let _ = signal_hook::low_level::emulate_default_handler(signal);
            std::process::exit(128 + signal);
        }
    });
}

/// `diffuse … | head` closing the pipe is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
