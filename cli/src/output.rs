//! Output helpers: verbosity-aware messages on stderr and progress bars that hide under `-q`.

use indicatif::{ProgressBar, ProgressStyle};

/// Where messages go and how many of them: results on stdout, everything else on stderr.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// -1 quiet, 0 normal, 1+ verbose.
    level: i8,
}

impl Printer {
    /// A printer for the global `-q` / `-v` flags.
    pub fn new(quiet: bool, verbose: u8) -> Self {
        Printer { level: if quiet { -1 } else { verbose.min(5) as i8 } }
    }

    /// A status line on stderr, hidden by `-q`.
    pub fn info(&self, msg: impl AsRef<str>) {
        if self.level >= 0 {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// A detail on stderr, shown with `-v`.
    pub fn verbose(&self, msg: impl AsRef<str>) {
        if self.level >= 1 {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// A warning on stderr, always shown.
    #[allow(dead_code)] // used by the domain subcommands
    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("warning: {}", msg.as_ref());
    }

    /// A progress bar of `len` steps labelled `what`, hidden under `-q` or when stderr is not a terminal.
    #[allow(dead_code)] // used by the long-running subcommands
    pub fn progress(&self, len: u64, what: &str) -> ProgressBar {
        if self.level < 0 {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}")
                .expect("constant template is valid")
                .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        bar
    }
}
