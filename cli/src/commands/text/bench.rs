//! `diffuse text bench`: sample quality vs steps (generative bits/byte under an autoregressive judge, unigram
//! entropy, throughput) for several samplers, with a table, JSON and an SVG plot.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use diffuse_discrete::sampler::{SamplerKind, Unmasking};
use diffuse_discrete::text::TextModel;
use diffuse_discrete::text::bench::{sample_quality, unigram_entropy};
use diffuse_discrete::text::corpus::read_text_file;

use super::super::Context;
use super::load_model;
use crate::plot::{Plot, Series};

/// Arguments of `diffuse text bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The diffusion model (default: the built-in masked model).
    #[arg(long, value_name = "M.safetensors")]
    pub model: Option<PathBuf>,
    /// The autoregressive judge (trained on the same data: `text train --objective ar`).
    #[arg(long, value_name = "AR.safetensors")]
    pub judge: PathBuf,
    /// Samplers, comma-separated.
    #[arg(long, default_value = "ancestral", value_delimiter = ',', value_parser = super::parse::<SamplerKind>)]
    pub samplers: Vec<SamplerKind>,
    /// Which masked bytes a step reveals, for every sampler: random or confident[:TAU] (`text sample --unmask`).
    #[arg(long, default_value = "random", value_parser = super::parse::<Unmasking>)]
    pub unmask: Unmasking,
    /// Step counts, comma-separated.
    #[arg(long, default_value = "8,16,32,64,128", value_delimiter = ',')]
    pub steps: Vec<usize>,
    /// Samples per point.
    #[arg(long, default_value_t = 32)]
    pub num: usize,
    /// Bytes per sample (at most the judge's and the model's context).
    #[arg(long, default_value_t = 128)]
    pub length: usize,
    /// Real text to compare with: its bits/byte under the judge and its unigram entropy (first samples × length
    /// bytes, cut into samples).
    #[arg(long, value_name = "FILE")]
    pub reference: Option<PathBuf>,
    /// Write the points as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write judge bits/byte vs steps as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Overwrite --json / --plot.
    #[arg(long)]
    pub force: bool,
}

/// Runs `diffuse text bench`.
pub fn run(ctx: &Context, a: &BenchArgs) -> anyhow::Result<ExitCode> {
    diffuse_core::limits::between_one_and("--num", a.num, 4096)?;
    diffuse_core::limits::between_one_and("--length", a.length, 8192)?;
    for &n in &a.steps {
        diffuse_core::limits::between_one_and("--steps", n, diffuse_core::limits::MAX_NFE)?;
    }
    for out in a.json.iter().chain(&a.plot) {
        diffuse_core::io::check_output(out, a.force)?;
    }
    let device = ctx.device()?;
    let (model, name) = load_model(a.model.as_deref(), device)?;
    let judge = TextModel::load(&a.judge, device)?;
    let reference = match &a.reference {
        Some(file) => {
            let bytes = read_text_file(file, 64 << 20)?;
            let texts: Vec<Vec<u8>> = bytes.chunks_exact(a.length).take(a.num).map(<[u8]>::to_vec).collect();
            anyhow::ensure!(!texts.is_empty(), "{}: shorter than one sample of {} bytes", file.display(), a.length);
            let bits = diffuse_discrete::text::bench::judge_bits(&judge, &texts)?;
            Some((bits, unigram_entropy(&texts.concat())))
        }
        None => None,
    };
    let bar = ctx.printer.progress((a.samplers.len() * a.steps.len()) as u64, "benchmark");
    let points =
        sample_quality(&model, &judge, &a.samplers, a.unmask, &a.steps, a.num, a.length, ctx.global.seed, &mut || {
            bar.inc(1)
        })?;
    bar.finish_and_clear();
    println!("| sampler | steps | judge bits/byte | unigram entropy (bits) | bytes/s |\n|---|---|---|---|---|");
    if let Some((bits, h)) = reference {
        println!("| real text | – | {bits:.3} | {h:.3} | – |");
    }
    for p in &points {
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.0} |",
            p.sampler, p.steps, p.judge_bits_per_byte, p.unigram_entropy, p.tokens_per_second
        );
    }
    if let Some(path) = &a.json {
        let j = serde_json::json!({
            "model": name, "judge": a.judge.display().to_string(), "num": a.num, "length": a.length,
            "unmask": a.unmask.to_string(),
            "reference": reference.map(|(b, h)| serde_json::json!({"judge_bits_per_byte": b, "unigram_entropy": h})),
            "points": points,
        });
        diffuse_core::io::write_bytes_atomic(path, a.force, (serde_json::to_string_pretty(&j)? + "\n").as_bytes())?;
    }
    if let Some(path) = &a.plot {
        let mut series: Vec<Series> = a
            .samplers
            .iter()
            .map(|s| Series {
                name: s.to_string(),
                points: points
                    .iter()
                    .filter(|p| p.sampler == s.to_string())
                    .map(|p| (p.steps as f64, p.judge_bits_per_byte))
                    .collect(),
            })
            .collect();
        if let Some((bits, _)) = reference {
            let max = a.steps.iter().copied().max().unwrap_or(2).max(2) as f64;
            series.push(Series { name: "real text".into(), points: vec![(1.0, bits), (max, bits)] });
        }
        let plot = Plot {
            title: format!("sample quality vs steps ({name})"),
            x_label: "sampler steps".into(),
            y_label: "bits/byte under the AR judge".into(),
            x_log: true,
            y_log: false,
            series,
        };
        diffuse_core::io::write_bytes_atomic(path, a.force, plot.to_svg().as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
