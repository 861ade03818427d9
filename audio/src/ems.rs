//! DPM-Solver-v3's empirical model statistics of a speech model: core's estimator
//! ([`diffuse_core::solvers::ems::estimate`]) on the model's own path, from the prior of noisy crops, pooled over
//! time frames (one value per channel and frequency bin) so that they apply to inputs of any length. The file runs
//! as `diffuse audio enhance --sampler dpm-solver-v3:stats=FILE`.

use std::cell::RefCell;
use std::path::PathBuf;

use diffuse_core::denoiser::Conditioning;
use diffuse_core::solvers::ems::estimate;
use diffuse_core::solvers::{EmpiricalStats, EmsSettings, NoNoise, Pooling, Run};
use diffuse_core::{NoisePath, SampleSeeds};
use tch::Tensor;

use crate::pipeline::{EnhanceReport, FrameNoise, StageTimes};
use crate::sampling::{CoreSampler, SgmseDenoiser};
use crate::{Chunking, Enhancer, Error, Result, ScoreModel, SpectrogramSampler};

/// Spectrogram frames are the last axis of a sample `[2, F, T]`: the statistics are pooled over them.
const FRAME_AXIS: usize = 2;

/// What the statistics are computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct EmsOptions {
    /// Length of the crop taken from the middle of each input (one chunk of the pipeline at most).
    pub crop_seconds: f64,
    /// Intervals of the uniform λ grid.
    pub intervals: usize,
    /// Rademacher probes per node for the Jacobian diagonal.
    pub probes: usize,
    /// Seed of the prior draws and the probes.
    pub seed: u64,
}

/// A sampler that only keeps the model inputs the pipeline hands it (the transformed, padded noisy spectrogram of
/// each chunk), so that the statistics see exactly what enhancement sees.
struct Collector {
    inputs: RefCell<Vec<Tensor>>,
}

impl SpectrogramSampler for Collector {
    fn name(&self) -> String {
        "collector".into()
    }
    fn nfe(&self) -> usize {
        0
    }
    fn sample(&self, _: &ScoreModel, y: &Tensor, _: FrameNoise, _: &mut dyn FnMut()) -> Result<(Tensor, usize)> {
        self.inputs.borrow_mut().push(y.shallow_clone());
        Ok((y.shallow_clone(), 0))
    }
}

/// The statistics of `model` from the middle `crop_seconds` of each noisy signal (at the model rate), followed
/// from the path's start to its last point before the data; `progress(done, total)` hears of every λ node.
pub fn statistics(
    model: &ScoreModel,
    noisy: &[Vec<f32>],
    opts: &EmsOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EmpiricalStats> {
    let config = model.config();
    if noisy.len() < 2 {
        return Err(Error::invalid("statistics", "need at least 2 noisy signals"));
    }
    let crop = (opts.crop_seconds * f64::from(config.sample_rate)).round() as usize;
    let shortest = noisy.iter().map(Vec::len).min().unwrap_or(0);
    if crop == 0 || crop > shortest {
        return Err(Error::invalid(
            "crop",
            format!("{} s is not within the shortest input ({} samples)", opts.crop_seconds, shortest),
        ));
    }
    let collector = Collector { inputs: RefCell::new(Vec::new()) };
    let enhancer = Enhancer::new(model, &collector, Chunking::default(), opts.seed)?;
    for (i, y) in noisy.iter().enumerate() {
        let start = (y.len() - crop) / 2;
        let (mut times, mut report) = (StageTimes::default(), EnhanceReport::default());
        let name = PathBuf::from(format!("statistics input {i}"));
        enhancer.enhance_channel(&y[start..start + crop], &name, 0, &mut times, &mut report, &mut || {})?;
    }
    // Every crop has the same length, so the same chunks: batch the chunks of the first crop's shape.
    let inputs = collector.inputs.into_inner();
    let shape = inputs.first().map(Tensor::size).ok_or_else(|| Error::invalid("statistics", "silent inputs"))?;
    let same: Vec<Tensor> = inputs.into_iter().filter(|y| y.size() == shape).collect();
    if same.len() < 2 {
        return Err(Error::invalid("statistics", "need at least 2 non-silent inputs"));
    }
    let y = Tensor::f_cat(&same, 0)?;
    let sampler = CoreSampler::new("dpm++2m", 10, config)?;
    let path: &dyn NoisePath = sampler.path();
    let (start, end) = (path.point(path.t_range().1), path.point(path.t_range().0));
    // The prior's complex noise (variance ½ per part), one stream per crop.
    let seeds = SampleSeeds::new(opts.seed, 0, same.len());
    let z = seeds.normal(0, &shape[1..], y.kind(), y.device()).f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?;
    let x = sampler.prior_with(&y, &z)?;
    let denoiser = SgmseDenoiser::new(model);
    let cond = Conditioning::with_anchor(y.shallow_clone());
    let (mut noise, mut observer) = (NoNoise, ());
    let mut run = Run::new(path, &denoiser, &cond, &mut noise, &mut observer);
    let x_tilde = run.to_tilde(&x, &start)?;
    let settings = EmsSettings {
        intervals: opts.intervals,
        probes: opts.probes,
        pooling: Pooling::Axes(vec![FRAME_AXIS]),
        seed: opts.seed,
    };
    let stats = estimate(&mut run, &x_tilde, &start, &end, &settings, progress)?;
    Ok(stats
        .with_metadata("crops", format!("{} crops of {} s, {} frames each", same.len(), opts.crop_seconds, shape[3]))
        .with_metadata("path", serde_json::to_string(&config.path).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::build_sampler;

    /// A tone in deterministic hiss.
    fn noisy(n: usize, f0: f32, seed: u32, rate: f32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|i| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let hiss = (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                0.3 * (std::f32::consts::TAU * f0 * i as f32 / rate).sin() + 0.2 * hiss
            })
            .collect()
    }

    #[test]
    fn statistics_are_pooled_over_frames_and_run_the_v3_solver_on_any_length() {
        let model = crate::default_model::load(tch::Device::Cpu).unwrap();
        let config = model.config().clone();
        let rate = config.sample_rate as f32;
        let inputs: Vec<Vec<f32>> =
            (0..2).map(|k| noisy(config.sample_rate as usize / 2, 220.0 + 90.0 * k as f32, k, rate)).collect();
        let opts = EmsOptions { crop_seconds: 0.25, intervals: 3, probes: 1, seed: 0 };
        let stats = statistics(&model, &inputs, &opts, &mut |_, _| {}).unwrap();
        let shape = stats.shape();
        assert_eq!((shape.len(), shape[0], shape[2]), (3, 2, 1), "{shape:?}");
        assert_eq!(stats.lambdas().len(), 4);

        // Written, read back by the solver, and run on an input longer than the crops.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stats.st");
        stats.write(&file, false).unwrap();
        let sampler =
            build_sampler(&format!("dpm-solver-v3:stats={}", file.display()), Some(3), None, &config).unwrap();
        let enhancer = Enhancer::new(&model, sampler.as_ref(), Chunking::default(), 0).unwrap();
        let long = noisy(config.sample_rate as usize, 300.0, 7, rate);
        let (mut times, mut report) = (StageTimes::default(), EnhanceReport::default());
        let out = enhancer
            .enhance_channel(&long, std::path::Path::new("long"), 0, &mut times, &mut report, &mut || {})
            .unwrap()
            .unwrap();
        assert_eq!(out.len(), long.len());
        assert!(out.iter().all(|v| v.is_finite()));
        assert_eq!(report.nfe, 3 * report.chunks);

        // A crop longer than an input is refused, naming the crop.
        let opts = EmsOptions { crop_seconds: 5.0, ..opts };
        let err = statistics(&model, &inputs, &opts, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("crop"), "{err}");
    }
}
