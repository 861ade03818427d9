//! Why samplers disagree on a speech model: core's score diagnostics ([`diffuse_core::diagnostics`]) at states of
//! the forward process built from (clean, noisy) crops, and the samplers themselves run on the same crops from the
//! same prior draws. A true score satisfies the score Fokker–Planck equation and has a symmetric Jacobian; the
//! probability-flow ODE and the reverse SDE (the `pc` sampler) then sample the same law, and their outputs differ
//! only by the posterior's spread. Where the learned score breaks either property, the two follow different laws.

use std::path::PathBuf;

use diffuse_core::denoiser::Conditioning;
use diffuse_core::diagnostics::{DiagnosticSettings, Divergence, ScoreDiagnostics, score_diagnostics};
use diffuse_core::solvers::{NoNoise, Run};
use diffuse_core::{NoisePath, SampleSeeds};
use tch::{Kind, Tensor};

use crate::metrics::si_sdr;
use crate::pipeline::{EnhanceReport, StageTimes};
use crate::sampling::{SgmseDenoiser, build_sampler};
use crate::train::spectrogram_batch_torch;
use crate::{Chunking, Enhancer, Error, Result, ScoreModel};

/// SGMSE's complex noise carries variance ½ in each of its real and imaginary parts.
const COMPLEX_NOISE_VARIANCE: f64 = 0.5;

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnoseOptions {
    /// Length of the crop from the middle of each pair (rounded to whole network blocks of frames).
    pub crop_seconds: f64,
    /// Diffusion times, spread evenly over the path's range.
    pub times: usize,
    /// Hutchinson probes of the divergence (and of the Jacobian's asymmetry).
    pub probes: usize,
    /// Samplers compared on the crops (names of `audio enhance --sampler`, each with its default steps); the
    /// first is the reference of the gaps.
    pub samplers: Vec<String>,
    /// Seed of the forward draws, the probes and the samplers' priors.
    pub seed: u64,
}

/// The score's diagnostics at one diffusion time, pooled over the crops.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TimeRow {
    /// Diffusion time.
    pub t: f64,
    /// The path's σ(t).
    pub sigma: f64,
    /// `‖∂ₜs − ∇ₓΦ‖ / ‖∂ₜs‖`, the relative Fokker–Planck residual.
    pub fp_residual: f64,
    /// The residual's noise floor (standard error of the Hutchinson estimate) on the same scale.
    pub fp_noise_floor: f64,
    /// `‖J − Jᵀ‖ / (√2‖J‖)` of the score's Jacobian.
    pub score_asymmetry: f64,
    /// The same of the denoiser's Jacobian `∂x̂0/∂x`.
    pub denoiser_asymmetry: f64,
}

/// One sampler on the crops.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SamplerRow {
    /// The sampler's name.
    pub name: String,
    /// Network evaluations per crop.
    pub nfe: usize,
    /// Mean SI-SDR (dB) against the clean crops.
    pub si_sdr_db: f64,
    /// Mean SI-SDR (dB) of this sampler's output against the first sampler's: how far apart the two land
    /// (none for the first).
    pub agreement_db: Option<f64>,
}

/// The report of `diffuse audio diagnose`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DiagnoseReport {
    /// Crops measured.
    pub crops: usize,
    /// Their length in seconds.
    pub crop_seconds: f64,
    /// Mean SI-SDR of the noisy crops.
    pub input_si_sdr_db: f64,
    /// One row per diffusion time.
    pub times: Vec<TimeRow>,
    /// One row per sampler.
    pub samplers: Vec<SamplerRow>,
}

/// Diagnoses `model` on (clean, noisy) `pairs` at the model rate; `progress(stage, done, total)` hears of each
/// measurement.
pub fn diagnose(
    model: &ScoreModel,
    pairs: &[(Vec<f32>, Vec<f32>)],
    opts: &DiagnoseOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<DiagnoseReport> {
    let config = model.config();
    if pairs.is_empty() || opts.times == 0 || opts.samplers.is_empty() {
        return Err(Error::invalid("diagnose", "need at least one pair, one time and one sampler"));
    }
    if opts.probes < 2 {
        return Err(Error::invalid("probes", "need at least 2 (their spread is the residual's noise floor)"));
    }
    // Frames of a centred STFT of L samples: L/hop + 1, a whole number of the network's blocks.
    let hop = config.stft.hop;
    let block = config.pad.multiple.max(1);
    let want = opts.crop_seconds * f64::from(config.sample_rate) / hop as f64;
    let frames = ((want / block as f64).round() as usize).max(1) * block;
    let len = (frames - 1) * hop;
    let shortest = pairs.iter().map(|(c, y)| c.len().min(y.len())).min().unwrap_or(0);
    if len > shortest {
        return Err(Error::invalid(
            "crop",
            format!("{frames} frames ({len} samples) do not fit the shortest pair ({shortest} samples)"),
        ));
    }
    // The middle of each pair, both scaled by the noisy crop's peak as the pipeline and training do.
    let mut crops = Vec::with_capacity(pairs.len());
    for (i, (c, y)) in pairs.iter().enumerate() {
        let start = (y.len().min(c.len()) - len) / 2;
        let (c, y) = (&c[start..start + len], &y[start..start + len]);
        let peak = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if !(peak > 0.0) {
            return Err(Error::invalid("pairs", format!("pair {} is silent in its middle crop", i + 1)));
        }
        crops
            .push((c.iter().map(|v| v / peak).collect::<Vec<f32>>(), y.iter().map(|v| v / peak).collect::<Vec<f32>>()));
    }

    let times = score_rows(model, &crops, opts, progress)?;
    let samplers = sampler_rows(model, &crops, opts, progress)?;
    let input = crops.iter().map(|(c, y)| si_sdr(c, y)).sum::<f64>() / crops.len() as f64;
    Ok(DiagnoseReport {
        crops: crops.len(),
        crop_seconds: len as f64 / f64::from(config.sample_rate),
        input_si_sdr_db: input,
        times,
        samplers,
    })
}

/// The score's diagnostics at `opts.times` times, each pooled over the crops (one crop at a time: the
/// divergence's second derivatives hold the network's graph twice).
fn score_rows(
    model: &ScoreModel,
    crops: &[(Vec<f32>, Vec<f32>)],
    opts: &DiagnoseOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<TimeRow>> {
    let config = model.config();
    let path = config.noise_path()?;
    let (lo, hi) = path.t_range();
    let denoiser = SgmseDenoiser::differentiable(model);
    let settings = DiagnosticSettings {
        divergence: Divergence::Hutchinson(opts.probes),
        asymmetry_probes: opts.probes,
        dt: 1e-3 * (hi - lo),
        noise_variance: COMPLEX_NOISE_VARIANCE,
        seed: opts.seed,
    };
    let wave = |w: &[f32]| -> Result<Tensor> { Ok(Tensor::from_slice(w).f_unsqueeze(0)?.f_to_device(model.device())?) };
    let total = opts.times * crops.len();
    let mut rows = Vec::with_capacity(opts.times);
    for k in 0..opts.times {
        let t = lo + (hi - lo) * (k as f64 + 0.5) / opts.times as f64;
        let p = path.point(t);
        let mut pooled = ScoreDiagnostics::default();
        for (i, (c, y)) in crops.iter().enumerate() {
            progress("score", k * crops.len() + i, total);
            let x0 = spectrogram_batch_torch(&wave(c)?, config)?;
            let y = spectrogram_batch_torch(&wave(y)?, config)?;
            // x_t = α·x0 + γ·y + σ·z, z complex standard normal (variance ½ per part).
            let seeds = SampleSeeds::new(opts.seed, (k * crops.len() + i) as u64, 1);
            let z = seeds.normal(0, &x0.size()[1..], Kind::Float, x0.device());
            let x = x0
                .f_mul_scalar(p.alpha)?
                .f_add(&y.f_mul_scalar(p.gamma)?)?
                .f_add(&z.f_mul_scalar(p.sigma * COMPLEX_NOISE_VARIANCE.sqrt())?)?;
            let cond = Conditioning::with_anchor(y);
            let (mut noise, mut observer) = (NoNoise, ());
            let mut run = Run::new(path.as_ref() as &dyn NoisePath, &denoiser, &cond, &mut noise, &mut observer);
            pooled.add(&score_diagnostics(&mut run, &x, &p, &settings)?);
        }
        rows.push(TimeRow {
            t,
            sigma: p.sigma,
            fp_residual: pooled.relative_residual(),
            fp_noise_floor: pooled.relative_residual_noise(),
            score_asymmetry: pooled.asymmetry(),
            denoiser_asymmetry: pooled.denoiser_asymmetry(),
        });
    }
    progress("score", total, total);
    Ok(rows)
}

/// Each sampler on every noisy crop through the pipeline, from the same prior draws.
fn sampler_rows(
    model: &ScoreModel,
    crops: &[(Vec<f32>, Vec<f32>)],
    opts: &DiagnoseOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<SamplerRow>> {
    let config = model.config();
    let mut outputs: Vec<Vec<Vec<f32>>> = Vec::with_capacity(opts.samplers.len());
    let mut rows = Vec::with_capacity(opts.samplers.len());
    for (s, name) in opts.samplers.iter().enumerate() {
        let name = if name == "auto" { config.sampler.name.clone() } else { name.clone() };
        let sampler = build_sampler(&name, None, None, config)?;
        let enhancer = Enhancer::new(model, sampler.as_ref(), Chunking::default(), opts.seed)?;
        let mut outs = Vec::with_capacity(crops.len());
        let mut nfe = 0;
        for (i, (_, y)) in crops.iter().enumerate() {
            progress(&sampler.name(), s * crops.len() + i, opts.samplers.len() * crops.len());
            let (mut times, mut report) = (StageTimes::default(), EnhanceReport::default());
            let label = PathBuf::from(format!("diagnose crop {}", i + 1));
            let out = enhancer.enhance_channel(y, &label, 0, &mut times, &mut report, &mut || {})?;
            nfe = nfe.max(report.nfe);
            outs.push(out.unwrap_or_else(|| vec![0.0; y.len()]));
        }
        let mean = |f: &dyn Fn(usize) -> f64| (0..crops.len()).map(f).sum::<f64>() / crops.len() as f64;
        let si = mean(&|i| si_sdr(&crops[i].0, &outs[i]));
        let agreement = outputs.first().map(|first: &Vec<Vec<f32>>| mean(&|i| si_sdr(&first[i], &outs[i])));
        rows.push(SamplerRow { name: sampler.name(), nfe, si_sdr_db: si, agreement_db: agreement });
        outputs.push(outs);
    }
    Ok(rows)
}

#[cfg(all(test, feature = "default-model"))]
mod tests {
    use super::*;

    /// A tone and its copy in deterministic hiss.
    fn pair(n: usize, rate: f32) -> (Vec<f32>, Vec<f32>) {
        let mut state = 12_345u32;
        let clean: Vec<f32> = (0..n).map(|i| 0.3 * (std::f32::consts::TAU * 220.0 * i as f32 / rate).sin()).collect();
        let noisy = clean
            .iter()
            .map(|c| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                c + 0.2 * ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
            })
            .collect();
        (clean, noisy)
    }

    #[test]
    fn diagnoses_the_built_in_model_on_a_crop() {
        let model = crate::default_model::load(tch::Device::Cpu).unwrap();
        let rate = model.config().sample_rate;
        let pairs = vec![pair(rate as usize, rate as f32)];
        let opts = DiagnoseOptions {
            crop_seconds: 0.5,
            times: 2,
            probes: 2,
            samplers: vec!["ddim".into(), "dpm++2m".into()],
            seed: 1,
        };
        let mut calls = 0;
        let report = diagnose(&model, &pairs, &opts, &mut |_, _, _| calls += 1).unwrap();
        assert_eq!((report.crops, report.times.len(), report.samplers.len()), (1, 2, 2));
        assert!(calls >= 4);
        for row in &report.times {
            assert!(row.t > 0.0 && row.t < 1.0 && row.sigma > 0.0, "{row:?}");
            for v in [row.fp_residual, row.fp_noise_floor, row.score_asymmetry, row.denoiser_asymmetry] {
                assert!(v.is_finite() && v >= 0.0, "{row:?}");
            }
            // A network is never exactly conservative, and its Jacobian is far from antisymmetric.
            assert!(row.denoiser_asymmetry > 0.0 && row.denoiser_asymmetry < 1.5, "{row:?}");
        }
        assert_eq!(report.samplers[0].agreement_db, None);
        let second = &report.samplers[1];
        assert!(second.agreement_db.is_some_and(f64::is_finite) && second.si_sdr_db.is_finite(), "{second:?}");
        // The model's own sampler runs with its own steps, any other core solver with 10: one call per ddim step.
        let own = model.config().sampler.name == "ddim";
        assert_eq!(report.samplers[0].nfe, if own { model.config().sampler.steps } else { 10 });

        // A crop longer than the pairs is refused, naming the crop.
        let err = diagnose(&model, &pairs, &DiagnoseOptions { crop_seconds: 5.0, ..opts }, &mut |_, _, _| {});
        assert!(err.unwrap_err().to_string().contains("crop"));
    }
}
