//! Solver schedules for a restoration model: core's schedule search ([`search_schedule`]) with an image
//! objective. Each candidate restores centre crops of (clean, degraded) validation pairs in one batch, and the
//! objective is the negated mean PSNR (dB) against the clean crops. Search on validation images; score the result
//! on others (`diffuse restore bench --schedule`).

use diffuse_core::search::{FORMAT, Schedule, ScheduleFile, SearchScope};
use diffuse_core::solvers::SolverOptions;
use diffuse_core::spacing::{End, GridSpec};
use tch::Tensor;

use crate::metrics::psnr;
use crate::model::RestorationModel;
use crate::pipeline::Pair;
use crate::planes::Planes;
use crate::sample::{SampleOptions, restore};
use crate::{Error, Result};

/// What to search.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Budgets (network evaluations per image), base solvers, objective evaluations per schedule (each restores
    /// every crop once) and time.
    pub scope: SearchScope,
    /// Side of the square crop taken from the centre of each pair (smaller images give a smaller crop for all).
    pub crop: usize,
    /// Seed of the starting noise (the same for every candidate, so candidates are compared on paired noise).
    pub seed: u64,
}

/// Searches schedules for `model` on `pairs`, calling `progress(nfe, solver)` before each. The result runs with
/// `diffuse restore … --schedule` or as a sidecar's `sampler.schedule`.
pub fn search(
    model: &RestorationModel,
    pairs: &[Pair],
    opts: &SearchOptions,
    mut progress: impl FnMut(usize, &str),
) -> Result<ScheduleFile> {
    if pairs.is_empty() {
        return Err(Error::invalid("search", "need at least one pair"));
    }
    let side = pairs.iter().map(|p| p.clean.height.min(p.clean.width)).min().unwrap_or(0).min(opts.crop);
    if side < 8 {
        return Err(Error::invalid("crop", format!("crops of {side} px are too small (need ≥ 8)")));
    }
    let centre = |p: &Planes| p.crop((p.height - side) / 2, (p.width - side) / 2, side, side);
    let clean: Vec<Planes> = pairs.iter().map(|p| centre(&p.clean)).collect::<Result<_>>()?;
    let degraded: Vec<Tensor> =
        pairs.iter().map(|p| Ok(centre(&p.degraded)?.to_tensor())).collect::<Result<Vec<Tensor>>>()?;
    let batch = Tensor::f_stack(&degraded, 0)?;
    let config = model.config();
    let path = model.path();
    let t_start = path.t_range().1;
    let grid = GridSpec::new(config.sampler.spacing.clone(), End::Zero);
    let base = SampleOptions { seed: opts.seed, schedule: None, ..SampleOptions::defaults_of(model) };
    let mut objective = |candidate: &Schedule| -> diffuse_core::Result<f64> {
        let to_core = |e: Error| diffuse_core::Error::invalid("schedule", e.to_string());
        let sample = SampleOptions { schedule: Some(candidate.clone()), ..base.clone() };
        let out = restore(model, &batch, &sample).map_err(to_core)?;
        let mut total = 0.0;
        for (i, c) in clean.iter().enumerate() {
            let restored = Planes::from_tensor(&out.get(i as i64)).map_err(to_core)?;
            total += psnr(c, &restored).map_err(to_core)?;
        }
        Ok(-total / clean.len() as f64)
    };
    let options = SolverOptions::default();
    let schedules =
        opts.scope.search_each(path.as_ref(), &grid, t_start, &options, "-psnr_db", &mut objective, &mut progress)?;
    Ok(ScheduleFile {
        format: FORMAT.into(),
        path: config.path.clone(),
        search_draws: clean.len(),
        search_seed: opts.seed,
        fitted_to: format!("clean centre crops of {side} px of {} {} pairs", clean.len(), config.task),
        schedules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelConfig, NetConfig};
    use diffuse_core::Parameterization;
    use diffuse_core::path::PathSpec;
    use std::path::PathBuf;
    use tch::Device;

    /// The search never returns a schedule worse than the model's own grid on its crops, and the schedule it
    /// returns restores through `SampleOptions::schedule` with its own NFE.
    #[test]
    fn searched_schedules_are_no_worse_than_the_default_grid() {
        let config = ModelConfig::new(
            "denoise",
            PathSpec::default_of("rddm").unwrap(),
            Parameterization::Residual,
            NetConfig::tiny(3, 1),
        );
        let model = RestorationModel::new(config, Device::Cpu).unwrap();
        let pairs: Vec<Pair> = (0..2)
            .map(|k| {
                let clean: Vec<f32> = (0..3 * 24 * 20).map(|i| ((i * (k + 3)) % 11) as f32 / 11.0).collect();
                let degraded =
                    clean.iter().enumerate().map(|(i, v)| (v + 0.1 * ((i % 5) as f32 - 2.0)).clamp(0.0, 1.0));
                Pair {
                    file: PathBuf::from(format!("{k}.png")),
                    clean: Planes::new(3, 24, 20, clean.clone()).unwrap(),
                    degraded: Planes::new(3, 24, 20, degraded.collect()).unwrap(),
                }
            })
            .collect();
        let opts = SearchOptions {
            scope: SearchScope { nfe: vec![3], solvers: vec!["dpm++2m".parse().unwrap()], evaluations: 12, time: None },
            crop: 16,
            seed: 0,
        };
        let file = search(&model, &pairs, &opts, |_, _| {}).unwrap();
        let s = &file.schedules[0];
        assert!(s.search_error <= s.baseline_error, "{s:?}");
        // Three network calls: three steps, or fewer where the search made a step singlestep (two calls).
        assert_eq!(s.nfe, 3);
        assert!((2..=3).contains(&s.times.len()) && s.times.windows(2).all(|w| w[1] < w[0]), "{s:?}");
        let singlestep = s.strategies.iter().flatten().filter(|st| st.singlestep).count();
        assert_eq!(s.times.len() + singlestep, 3, "{s:?}");
        assert!(file.fitted_to.contains("16 px"));
    }
}
