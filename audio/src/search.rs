//! Solver schedules for a speech model: core's schedule search ([`diffuse_core::search::search_schedule`]) with
//! an audio objective. Each candidate schedule enhances short crops of (clean, noisy) pairs through the whole
//! pipeline, and the objective is the negated mean SI-SDR (dB) of the results against the clean crops, or against
//! a teacher sampler's outputs on the same crops (S³'s way, when no clean reference should steer the search).
//! Search on validation pairs; score the result on other pairs (`diffuse audio bench --schedule`).

use std::path::PathBuf;

use diffuse_core::search::{FORMAT, Schedule, ScheduleFile, SearchScope};
use diffuse_core::solvers::SolverOptions;

use crate::metrics::si_sdr;
use crate::pipeline::{EnhanceReport, StageTimes};
use crate::sampling::{CoreSampler, build_sampler, default_grid};
use crate::{Chunking, Enhancer, Error, Result, ScoreModel, SpectrogramSampler};

/// What the enhanced crops are compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Fit {
    /// The clean references.
    Clean,
    /// A sampler's outputs (a name `audio enhance --sampler` takes, with this many steps).
    Teacher {
        /// Sampler name.
        sampler: String,
        /// Its steps.
        steps: usize,
    },
}

impl std::str::FromStr for Fit {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "clean" {
            return Ok(Fit::Clean);
        }
        let bad = || Error::invalid("fit", format!("'{s}': give 'clean' or SAMPLER:STEPS (for example dpm++2m:30)"));
        let (sampler, steps) = s.rsplit_once(':').ok_or_else(bad)?;
        let steps: usize = steps.parse().map_err(|_| bad())?;
        if sampler.is_empty() || steps == 0 {
            return Err(bad());
        }
        Ok(Fit::Teacher { sampler: sampler.into(), steps })
    }
}

/// What to search.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Budgets (network evaluations per chunk), base solvers, objective evaluations per schedule (each enhances
    /// every crop once) and time.
    pub scope: SearchScope,
    /// Length of the crop taken from the middle of each pair (shorter pairs are used whole).
    pub crop_seconds: f64,
    /// The target of the comparison.
    pub fit: Fit,
    /// Seed of the prior draws (the same for every candidate, so candidates are compared on paired noise).
    pub seed: u64,
}

/// Searches schedules for `model` on `pairs` (clean, noisy at the model rate), calling `progress(nfe, solver)`
/// before each. The result runs with `diffuse audio enhance --schedule` or as a sidecar's `sampler.schedule`.
pub fn search(
    model: &ScoreModel,
    pairs: &[(Vec<f32>, Vec<f32>)],
    opts: &SearchOptions,
    mut progress: impl FnMut(usize, &str),
) -> Result<ScheduleFile> {
    let config = model.config();
    if pairs.is_empty() {
        return Err(Error::invalid("search", "need at least one pair"));
    }
    if !(opts.crop_seconds > 0.0) {
        return Err(Error::invalid("crop", format!("need a positive crop length, got {} s", opts.crop_seconds)));
    }
    let crop = (opts.crop_seconds * f64::from(config.sample_rate)).round() as usize;
    let crops: Vec<(&[f32], &[f32])> = pairs
        .iter()
        .map(|(c, y)| {
            let len = crop.min(y.len());
            let start = (y.len() - len) / 2;
            (&c[start..start + len], &y[start..start + len])
        })
        .collect();
    let enhance = |sampler: &dyn SpectrogramSampler| -> Result<Vec<Vec<f32>>> {
        let enhancer = Enhancer::new(model, sampler, Chunking::default(), opts.seed)?;
        crops
            .iter()
            .enumerate()
            .map(|(i, (_, y))| {
                let (mut times, mut report) = (StageTimes::default(), EnhanceReport::default());
                let name = PathBuf::from(format!("search pair {i}"));
                let out = enhancer.enhance_channel(y, &name, 0, &mut times, &mut report, &mut || {})?;
                Ok(out.unwrap_or_else(|| vec![0.0; y.len()]))
            })
            .collect()
    };
    let references: Vec<Vec<f32>> = match &opts.fit {
        Fit::Clean => crops.iter().map(|(c, _)| c.to_vec()).collect(),
        Fit::Teacher { sampler, steps } => enhance(build_sampler(sampler, Some(*steps), None, config)?.as_ref())?,
    };
    let path = config.noise_path()?;
    let t_start = path.t_range().1;
    let grid = default_grid(path.as_ref());
    let mut objective = |candidate: &Schedule| {
        let to_core = |e: Error| diffuse_core::Error::invalid("schedule", e.to_string());
        let sampler = CoreSampler::from_schedule(candidate, config).map_err(to_core)?;
        let outs = enhance(&sampler).map_err(to_core)?;
        let total: f64 = outs.iter().zip(&references).map(|(o, r)| si_sdr(r, o)).sum();
        Ok(-total / outs.len() as f64)
    };
    let options = SolverOptions::default();
    let schedules =
        opts.scope.search_each(path.as_ref(), &grid, t_start, &options, "-si_sdr_db", &mut objective, &mut progress)?;
    let fitted_to = match &opts.fit {
        Fit::Clean => format!("clean references of {} crops of {} s", crops.len(), opts.crop_seconds),
        Fit::Teacher { sampler, steps } => {
            format!("teacher {sampler} with {steps} steps on {} crops of {} s", crops.len(), opts.crop_seconds)
        }
    };
    Ok(ScheduleFile {
        format: FORMAT.into(),
        path: config.path.clone(),
        search_draws: crops.len(),
        search_seed: opts.seed,
        fitted_to,
        schedules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_parses_clean_and_teachers_and_refuses_the_rest() {
        assert_eq!("clean".parse::<Fit>().unwrap(), Fit::Clean);
        assert_eq!("dpm++2m:30".parse::<Fit>().unwrap(), Fit::Teacher { sampler: "dpm++2m".into(), steps: 30 });
        for bad in ["", "dpm++2m", "dpm++2m:0", ":5", "x:y"] {
            assert!(bad.parse::<Fit>().is_err(), "{bad}");
        }
    }
}
