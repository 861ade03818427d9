//! The `diffuse` binary: argument parsing, progress and output; the work lives in the library crates.

mod cli;
mod commands;
mod output;
mod plot;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Interrupted or terminated runs leave no half-written outputs: remove the temporary files being written.
    // (Failing to install the handler only loses that clean-up, so it is not fatal.)
    let _ = ctrlc::set_handler(|| {
        diffuse_core::io::remove_temp_files();
        eprintln!("interrupted; unfinished outputs removed");
        std::process::exit(130);
    });
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

/// `diffuse … | head` closing the pipe is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
