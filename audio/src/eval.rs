//! Evaluation of enhanced speech against clean references (`diffuse audio eval`) and the quality-vs-NFE
//! benchmark of samplers (`diffuse audio bench`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::metrics::{estoi, si_sdr};
use crate::wav::read_wav;
use crate::{Error, Result};

/// Metrics of one file.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Scores {
    /// SI-SDR in dB.
    pub si_sdr: f64,
    /// ESTOI.
    pub estoi: f64,
    /// Wide-band PESQ (MOS-LQO), where defined.
    pub pesq: Option<f64>,
}

/// One evaluated file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalRow {
    /// Path relative to the folders.
    pub file: PathBuf,
    /// Enhanced vs clean.
    pub enhanced: Scores,
    /// Noisy vs clean, when a noisy folder was given.
    pub noisy: Option<Scores>,
}

/// Per-file rows, failures and means.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EvalReport {
    /// Files evaluated.
    pub rows: Vec<EvalRow>,
    /// Files that could not be evaluated, with the reason.
    pub failures: Vec<(PathBuf, String)>,
}

impl EvalReport {
    /// Mean scores of the enhanced files and (when all rows have one) of the noisy files.
    pub fn means(&self) -> Option<(Scores, Option<Scores>)> {
        if self.rows.is_empty() {
            return None;
        }
        let n = self.rows.len() as f64;
        let mean = |f: &dyn Fn(&EvalRow) -> Option<Scores>| -> Option<Scores> {
            let all: Option<Vec<Scores>> = self.rows.iter().map(f).collect();
            all.map(|v| Scores {
                si_sdr: v.iter().map(|s| s.si_sdr).sum::<f64>() / n,
                estoi: v.iter().map(|s| s.estoi).sum::<f64>() / n,
                pesq: v.iter().map(|s| s.pesq).sum::<Option<f64>>().map(|p| p / n),
            })
        };
        Some((mean(&|r| Some(r.enhanced))?, mean(&|r| r.noisy)))
    }
}

/// The .wav files under `dir`, relative to it, sorted.
pub fn relative_wavs(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::data(dir, format!("cannot list the folder: {e}")))?;
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if p.is_dir() {
                walk(root, &p, out)?;
            } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")) {
                out.push(p.strip_prefix(root).map(Path::to_path_buf).unwrap_or(p));
            }
        }
        Ok(())
    }
    if !dir.is_dir() {
        return Err(Error::data(dir, "not a folder"));
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// Scores of `estimate` against `clean` (first channels; same rate and length required, naming the files).
pub fn score_files(clean: &Path, estimate: &Path) -> Result<Scores> {
    let c = read_wav(clean)?;
    let e = read_wav(estimate)?;
    if c.sample_rate != e.sample_rate {
        return Err(Error::bad_audio(
            estimate,
            format!(
                "sample rate {} Hz differs from the clean file's {} Hz ({})",
                e.sample_rate,
                c.sample_rate,
                clean.display()
            ),
        ));
    }
    if c.len() != e.len() {
        return Err(Error::bad_audio(
            estimate,
            format!("{} samples, the clean file {} has {}", e.len(), clean.display(), c.len()),
        ));
    }
    Ok(score(&c.channels[0], &e.channels[0], c.sample_rate))
}

/// SI-SDR and ESTOI of `estimate` against `clean` at `rate`.
pub fn score(clean: &[f32], estimate: &[f32], rate: u32) -> Scores {
    Scores {
        si_sdr: si_sdr(clean, estimate),
        estoi: estoi(clean, estimate, rate),
        pesq: crate::metrics::pesq_wb(clean, estimate, rate),
    }
}

/// Scores every .wav of `enhanced` against the file with the same relative path in `clean` (and in `noisy`).
/// Files that cannot be scored (missing counterpart, different rate or length, unreadable) are listed as
/// failures; the others are still scored.
pub fn evaluate(clean: &Path, enhanced: &Path, noisy: Option<&Path>) -> Result<EvalReport> {
    let files = relative_wavs(enhanced)?;
    if files.is_empty() {
        return Err(Error::data(enhanced, "no .wav files to evaluate"));
    }
    if !clean.is_dir() {
        return Err(Error::data(clean, "not a folder"));
    }
    let mut report = EvalReport::default();
    for rel in files {
        let c = clean.join(&rel);
        if !c.is_file() {
            report.failures.push((enhanced.join(&rel), format!("no clean reference {}", c.display())));
            continue;
        }
        let row = (|| -> Result<EvalRow> {
            let enhanced = score_files(&c, &enhanced.join(&rel))?;
            let noisy = match noisy {
                Some(n) => Some(score_files(&c, &n.join(&rel))?),
                None => None,
            };
            Ok(EvalRow { file: rel.clone(), enhanced, noisy })
        })();
        match row {
            Ok(r) => report.rows.push(r),
            Err(e) => report.failures.push((enhanced.join(&rel), e.to_string())),
        }
    }
    Ok(report)
}

/// One (sampler, steps) point of the benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchPoint {
    /// Sampler name as given.
    pub sampler: String,
    /// Steps asked for.
    pub steps: usize,
    /// Network evaluations per file (mean).
    pub nfe: f64,
    /// Mean scores of the enhanced files.
    pub scores: Scores,
    /// Real-time factor of the sampling (whole pipeline time / audio duration).
    pub rtf: f64,
}

/// Runs `sampler` at each step count over the (clean, noisy) pairs and scores the results. `progress` is called
/// after every file.
pub fn bench_sampler(
    model: &crate::ScoreModel,
    pairs: &[(Vec<f32>, Vec<f32>)],
    sampler: &str,
    steps: &[usize],
    seed: u64,
    progress: &mut dyn FnMut(),
) -> Result<Vec<BenchPoint>> {
    steps
        .iter()
        .map(|&n| {
            let s = crate::sampling::build_sampler(sampler, Some(n), None, model.config())?;
            bench_built(model, pairs, s.as_ref(), sampler, n, seed, progress)
        })
        .collect()
}

/// Runs a built sampler (for example a searched schedule) over the (clean, noisy) pairs and scores the results,
/// reporting it as `label` with `steps` steps.
pub fn bench_built(
    model: &crate::ScoreModel,
    pairs: &[(Vec<f32>, Vec<f32>)],
    sampler: &dyn crate::SpectrogramSampler,
    label: &str,
    steps: usize,
    seed: u64,
    progress: &mut dyn FnMut(),
) -> Result<BenchPoint> {
    let rate = model.config().sample_rate;
    let enhancer = crate::Enhancer::new(model, sampler, crate::Chunking::default(), seed)?;
    let (mut si, mut es, mut nfe, mut secs, mut dur) = (0.0, 0.0, 0usize, 0.0, 0.0);
    let mut pq: Option<f64> = Some(0.0);
    for (i, (c, y)) in pairs.iter().enumerate() {
        let mut times = crate::pipeline::StageTimes::default();
        let mut report = crate::EnhanceReport::default();
        let t = Instant::now();
        let name = PathBuf::from(format!("pair {i}"));
        let out = enhancer.enhance_channel(y, &name, 0, &mut times, &mut report, &mut || {})?.unwrap_or_default();
        secs += t.elapsed().as_secs_f64();
        dur += y.len() as f64 / f64::from(rate);
        nfe += report.nfe;
        let sc = score(c, &out, rate);
        si += sc.si_sdr;
        es += sc.estoi;
        pq = pq.zip(sc.pesq).map(|(a, b)| a + b);
        progress();
    }
    let k = pairs.len().max(1) as f64;
    Ok(BenchPoint {
        sampler: label.to_string(),
        steps,
        nfe: nfe as f64 / k,
        scores: Scores { si_sdr: si / k, estoi: es / k, pesq: pq.map(|p| p / k) },
        rtf: secs / dur.max(1e-9),
    })
}

/// A file's relative path with its clean and noisy samples.
pub type Pair = (PathBuf, Vec<f32>, Vec<f32>);

/// Reads (clean, noisy) pairs with the same relative paths from two folders, at the model rate `rate`
/// (resampled if needed), first channel.
pub fn read_pairs(clean: &Path, noisy: &Path, rate: u32, limit: Option<usize>) -> Result<Vec<Pair>> {
    let mut out = Vec::new();
    for rel in relative_wavs(noisy)?.into_iter().take(limit.unwrap_or(usize::MAX)) {
        let c = read_wav(&clean.join(&rel))?;
        let y = read_wav(&noisy.join(&rel))?;
        if c.len() != y.len() || c.sample_rate != y.sample_rate {
            return Err(Error::bad_audio(noisy.join(&rel), "length or sample rate differs from the clean file"));
        }
        let to = |s: &[f32], from: u32| crate::resample::resample(s, from, rate);
        out.push((rel, to(&c.channels[0], c.sample_rate)?, to(&y.channels[0], y.sample_rate)?));
    }
    if out.is_empty() {
        return Err(Error::data(noisy, "no .wav files"));
    }
    Ok(out)
}
