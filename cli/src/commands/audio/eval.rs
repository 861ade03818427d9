//! `diffuse audio eval`: SI-SDR and ESTOI of enhanced files against clean references.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::super::Context;

/// Arguments of `diffuse audio eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Folder of clean references.
    #[arg(long, value_name = "DIR")]
    pub clean: PathBuf,
    /// Folder of enhanced files (same relative paths as the clean ones).
    #[arg(long, value_name = "DIR")]
    pub enhanced: PathBuf,
    /// Folder of the noisy inputs: adds their scores and the improvement.
    #[arg(long, value_name = "DIR")]
    pub noisy: Option<PathBuf>,
    /// Also write the per-file table as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Overwrite an existing CSV file.
    #[arg(long)]
    pub force: bool,
}

pub(super) fn eval(ctx: &Context, args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let p = &ctx.printer;
    let report = diffuse_audio::eval::evaluate(&args.clean, &args.enhanced, args.noisy.as_deref())?;
    let has_noisy = args.noisy.is_some();
    let mut table = String::new();
    let mut csv = String::from("file,si_sdr_db,estoi,pesq_wb");
    if has_noisy {
        csv.push_str(",noisy_si_sdr_db,noisy_estoi,noisy_pesq_wb,si_sdr_improvement_db,estoi_improvement");
    }
    csv.push('\n');
    for r in &report.rows {
        let f = r.file.display().to_string();
        let pesq = |s: &diffuse_audio::eval::Scores| s.pesq.map_or("-".to_string(), |p| format!("{p:.2}"));
        let mut line = format!("{f:<40} {:>8.2} {:>7.3} {:>6}", r.enhanced.si_sdr, r.enhanced.estoi, pesq(&r.enhanced));
        csv.push_str(&format!(
            "{},{:.4},{:.5},{}",
            f.replace(',', "_"),
            r.enhanced.si_sdr,
            r.enhanced.estoi,
            r.enhanced.pesq.map_or(String::new(), |p| format!("{p:.4}"))
        ));
        if let Some(n) = r.noisy {
            line.push_str(&format!(
                " {:>8.2} {:>7.3} {:>6} {:>+8.2} {:>+7.3}",
                n.si_sdr,
                n.estoi,
                pesq(&n),
                r.enhanced.si_sdr - n.si_sdr,
                r.enhanced.estoi - n.estoi
            ));
            csv.push_str(&format!(
                ",{:.4},{:.5},{},{:.4},{:.5}",
                n.si_sdr,
                n.estoi,
                n.pesq.map_or(String::new(), |p| format!("{p:.4}")),
                r.enhanced.si_sdr - n.si_sdr,
                r.enhanced.estoi - n.estoi
            ));
        }
        csv.push('\n');
        table.push_str(&line);
        table.push('\n');
    }
    let header = if has_noisy {
        format!(
            "{:<40} {:>8} {:>7} {:>6} {:>8} {:>7} {:>6} {:>8} {:>7}",
            "file", "SI-SDR", "ESTOI", "PESQ", "noisy", "noisy", "noisy", "ΔSI-SDR", "ΔESTOI"
        )
    } else {
        format!("{:<40} {:>8} {:>7} {:>6}", "file", "SI-SDR", "ESTOI", "PESQ")
    };
    if ctx.global.verbose > 0 || report.rows.len() <= 50 {
        println!("{header}\n{table}");
    }
    if let Some((e, n)) = report.means() {
        match n {
            Some(n) => println!(
                "mean of {} files: SI-SDR {:.2} dB (noisy {:.2}, improvement {:+.2} dB), ESTOI {:.3} (noisy {:.3}, improvement {:+.3}){}",
                report.rows.len(),
                e.si_sdr,
                n.si_sdr,
                e.si_sdr - n.si_sdr,
                e.estoi,
                n.estoi,
                e.estoi - n.estoi,
                match (e.pesq, n.pesq) {
                    (Some(a), Some(b)) => format!(", PESQ-WB {a:.2} (noisy {b:.2})"),
                    _ => String::new(),
                }
            ),
            None => println!(
                "mean of {} files: SI-SDR {:.2} dB, ESTOI {:.3}{}",
                report.rows.len(),
                e.si_sdr,
                e.estoi,
                e.pesq.map_or(String::new(), |p| format!(", PESQ-WB {p:.2}"))
            ),
        }
    }
    if let Some(path) = &args.csv {
        diffuse_core::io::write_bytes_atomic(path, args.force, csv.as_bytes())?;
        p.info(format!("per-file table written to {}", path.display()));
    }
    if report.failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{} file{} could not be scored:",
        report.failures.len(),
        if report.failures.len() == 1 { "" } else { "s" }
    );
    for (f, why) in &report.failures {
        let shown = f.display().to_string();
        if why.contains(&shown) { eprintln!("  {why}") } else { eprintln!("  {shown}: {why}") }
    }
    Ok(ExitCode::from(1))
}
