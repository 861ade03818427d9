//! `diffuse manifest …` (merging the manifests of a sharded batch) and the batch flags that write them
//! (`--shard`, `--manifest`, `--resume`, `--list`), shared by `audio enhance` and `pose estimate`. The rules
//! (which inputs a shard takes, when an input counts as done, what a merge checks) are in
//! `diffuse_core::batch`; docs/scale-out.md explains the workflow.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use diffuse_core::batch::{self, Expected, Manifest, ManifestWriter, Progress, Record, Shard, Status};

use super::Context;

/// Manifest subcommands.
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Merge the manifests of a sharded batch and check that every input was done exactly once, without error.
    Merge(MergeArgs),
}

/// Arguments of `diffuse manifest merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shards' manifests (JSON lines).
    #[arg(required = true, value_name = "MANIFEST")]
    pub manifests: Vec<PathBuf>,
    /// The batch's inputs as a list file (one path per line, relative to the list's folder): names the missing.
    #[arg(long, value_name = "LISTFILE", conflicts_with = "expect_count")]
    pub inputs: Option<PathBuf>,
    /// How many inputs the batch has (when there is no list): counts the missing.
    #[arg(long, value_name = "N")]
    pub expect_count: Option<usize>,
    /// Write the merged manifest (one record per input, sorted by input).
    #[arg(short, long, value_name = "merged.jsonl")]
    pub output: Option<PathBuf>,
    /// Overwrite the merged manifest if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Flags that turn a command into one shard of a resumable batch.
#[derive(Debug, Args, Clone, Default)]
pub struct BatchArgs {
    /// Inputs listed in a file, one per line, relative to the list file's folder (blank lines and lines starting
    /// with # are skipped). Outputs keep each line's relative path under the output folder.
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// Process only shard I of N (I from 0): item k of the sorted, de-duplicated inputs goes to shard k mod N.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Record every input's outcome in this JSON-lines manifest (default with --shard or --resume:
    /// OUTDIR/manifest-I-of-N.jsonl, N = 1 without --shard).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Continue a batch: skip inputs the manifest records as ok whose output is unchanged (same checksum).
    #[arg(long)]
    pub resume: bool,
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse().map_err(|e: diffuse_core::Error| e.to_string())
}

impl BatchArgs {
    /// Whether any flag asks for batch behaviour beyond a plain run (a shard, a manifest or a resume).
    pub fn is_batch(&self) -> bool {
        self.list.is_some() || self.shard.is_some() || self.manifest.is_some() || self.resume
    }

    /// The list file's entries, or none without --list.
    pub fn listed(&self) -> anyhow::Result<Vec<batch::ListEntry>> {
        match &self.list {
            Some(l) => Ok(batch::read_list(l).context("--list")?),
            None => Ok(Vec::new()),
        }
    }
}

/// A shard's run: which items it takes, which are done already, and the manifest it appends to.
pub struct BatchRun {
    shard: Shard,
    resume: bool,
    done: HashMap<PathBuf, Record>,
    writer: Option<ManifestWriter>,
}

impl BatchRun {
    /// Opens the manifest (`--manifest`, or the default in `out_dir` with --shard/--resume). Without --resume an
    /// existing manifest is kept unless `force` (which starts it over), so a finished shard is not forgotten.
    pub fn open(ctx: &Context, args: &BatchArgs, out_dir: &Path, force: bool) -> anyhow::Result<Self> {
        let shard = args.shard.unwrap_or(Shard::ALL);
        let path = args.manifest.clone().or_else(|| {
            (args.shard.is_some() || args.resume)
                .then(|| out_dir.join(format!("manifest-{}-of-{}.jsonl", shard.index, shard.count)))
        });
        let mut done = HashMap::new();
        let writer = match &path {
            None => None,
            Some(path) => {
                let existing = Manifest::read(path).context("--manifest")?;
                if args.resume {
                    if existing.torn_tail {
                        ctx.printer.warn(format!("{}: ignoring a torn last line (killed run)", path.display()));
                    }
                    done = existing.latest().into_iter().map(|(k, r)| (k, r.clone())).collect();
                } else if !existing.records.is_empty() && !force {
                    bail!(
                        "{}: the manifest already records {} input(s); pass --resume to continue that batch or \
                         --force to start it over",
                        path.display(),
                        existing.records.len()
                    );
                }
                ctx.printer.verbose(format!("manifest {}", path.display()));
                Some(ManifestWriter::open(path, !args.resume).context("--manifest")?)
            }
        };
        Ok(BatchRun { shard, resume: args.resume, done, writer })
    }

    /// This shard's items of the batch (sorted, de-duplicated, round-robin).
    pub fn select<T: Ord>(&self, items: Vec<T>) -> Vec<T> {
        self.shard.select(items)
    }

    /// The shard, `i/n`.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Whether `input` → `output` is done already (only with --resume).
    pub fn is_done(&self, input: &Path, output: &Path) -> Progress {
        if !self.resume {
            return Progress::Todo("not resuming".into());
        }
        batch::progress(self.done.get(&batch::normalize(input)), output)
    }

    /// Appends an input's outcome to the manifest, if there is one (with the output's checksum when ok).
    pub fn record(
        &mut self,
        input: &Path,
        output: &Path,
        status: Status,
        error: Option<String>,
        seconds: f64,
    ) -> anyhow::Result<()> {
        let Some(writer) = &mut self.writer else { return Ok(()) };
        let checksum = match status {
            Status::Ok => Some(batch::sha256_file(output)?),
            _ => None,
        };
        let record = Record {
            input: batch::normalize(input),
            output: batch::normalize(output),
            status,
            error,
            seconds,
            checksum,
            shard: self.shard.to_string(),
        };
        writer.append(&record)?;
        Ok(())
    }
}

/// Runs `diffuse manifest …`.
pub fn run(ctx: &Context, cmd: &ManifestCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ManifestCommand::Merge(args) => merge(ctx, args),
    }
}

/// How many problem names to print per kind.
const SHOWN: usize = 5;

fn merge(ctx: &Context, args: &MergeArgs) -> anyhow::Result<ExitCode> {
    let mut manifests = Vec::new();
    for path in &args.manifests {
        if !path.is_file() {
            bail!("{}: no such manifest", path.display());
        }
        manifests.push(Manifest::read(path)?);
    }
    let expected = match (&args.inputs, args.expect_count) {
        (Some(list), _) => {
            Expected::Inputs(batch::read_list(list).context("--inputs")?.into_iter().map(|e| e.path).collect())
        }
        (None, Some(n)) => Expected::Count(n),
        (None, None) => {
            ctx.printer.warn("without --inputs or --expect-count, inputs missing from every manifest go unnoticed");
            Expected::Count(0)
        }
    };
    let report = batch::merge(&manifests, &expected);
    for t in &report.torn {
        ctx.printer.warn(format!("{}: ignored a torn last line (a killed run)", t.display()));
    }
    let missing = report.missing.len() + report.missing_count;
    println!(
        "{} manifest{}: {} input{} recorded; {} ok, {} failed, {} skipped, {} missing, {} duplicated, {} unexpected",
        manifests.len(),
        if manifests.len() == 1 { "" } else { "s" },
        report.records.len(),
        if report.records.len() == 1 { "" } else { "s" },
        report.ok,
        report.failed.len(),
        report.skipped.len(),
        missing,
        report.duplicated.len(),
        report.unexpected.len()
    );
    let show = |what: &str, items: Vec<String>| {
        if items.is_empty() {
            return;
        }
        eprintln!("{what} ({}):", items.len());
        for item in items.iter().take(SHOWN) {
            eprintln!("  {item}");
        }
        if items.len() > SHOWN {
            eprintln!("  … and {} more", items.len() - SHOWN);
        }
    };
    let with_why = |v: &[(PathBuf, String)]| v.iter().map(|(p, why)| format!("{}: {why}", p.display())).collect();
    show("missing", report.missing.iter().map(|p| p.display().to_string()).collect());
    if report.missing_count > 0 {
        eprintln!("missing: {} input(s) fewer than --expect-count", report.missing_count);
    }
    show("failed", with_why(&report.failed));
    show("skipped", with_why(&report.skipped));
    show(
        "duplicated",
        report
            .duplicated
            .iter()
            .map(|(p, files)| {
                let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                format!("{} (in {})", p.display(), files.join(", "))
            })
            .collect(),
    );
    show("unexpected (not in --inputs)", report.unexpected.iter().map(|p| p.display().to_string()).collect());
    if let Some(out) = &args.output {
        batch::write_manifest(out, &report.records, args.force)?;
        ctx.printer.info(format!("merged manifest written to {}", out.display()));
    }
    Ok(if report.is_complete() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn merge_takes_either_a_list_or_a_count() {
        let cli =
            Cli::try_parse_from(["diffuse", "manifest", "merge", "a.jsonl", "b.jsonl", "--expect-count", "4"]).unwrap();
        let Command::Manifest(super::ManifestCommand::Merge(args)) = cli.command else { panic!("merge") };
        assert_eq!(args.manifests.len(), 2);
        assert_eq!(args.expect_count, Some(4));
        assert!(
            Cli::try_parse_from(["diffuse", "manifest", "merge", "a", "--inputs", "l", "--expect-count", "1"]).is_err()
        );
        assert!(Cli::try_parse_from(["diffuse", "manifest", "merge"]).is_err());
    }

    #[test]
    fn a_bad_shard_is_refused_at_parse_time_naming_the_flag() {
        let err = Cli::try_parse_from(["diffuse", "audio", "enhance", "in", "--shard", "3/3"]).unwrap_err().to_string();
        assert!(err.contains("--shard") && err.contains("0 to 2"), "{err}");
    }
}
