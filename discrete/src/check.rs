//! `diffuse text check`: run a sampler with the exact denoiser of a known target and compare its samples with
//! the target in total variation, against a bound made of the sampler's exact discretisation error and the
//! sampling noise of the number of samples drawn.

use std::sync::Arc;

use diffuse_core::SampleSeeds;
use serde::Serialize;
use tch::Device;

use crate::exact::{ExactDenoiser, Target, empirical, tv, tv_sampling_bound};
use crate::param::Output;
use crate::process::Process;
use crate::sampler::{self, SamplerConfig};
use crate::schedule::Schedule;
use crate::{Error, Result};

/// Most samples one check draws (`--samples`).
pub const MAX_SAMPLES: usize = 100_000_000;
/// Most tokens held for the drawn samples (`samples × length`): 2^28 tokens are 2 GiB.
pub const MAX_SAMPLED_TOKENS: usize = 1 << 28;
/// Largest batch of sequences per model call (`--batch`).
pub const MAX_BATCH: usize = 1 << 20;
/// Largest cap on the sampler states enumerated for the exact law (`--max-states`).
pub const MAX_STATES: usize = 10_000_000;

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    /// The target distribution.
    pub target: Arc<Target>,
    /// Process (its vocabulary must be the target's).
    pub process: Process,
    /// Parameterization of the exact denoiser.
    pub output: Output,
    /// Schedule.
    pub schedule: Arc<dyn Schedule>,
    /// Sampler.
    pub sampler: SamplerConfig,
    /// Number of samples (≥ 1).
    pub samples: usize,
    /// Run seed.
    pub seed: u64,
    /// Sequences per batch (does not change the result).
    pub batch: usize,
    /// Probability that the sampling bound fails by chance.
    pub delta: f64,
    /// Largest number of sampler states for the exact law.
    pub max_states: usize,
}

/// The result of [`check`].
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// TV(empirical distribution of the samples, target).
    pub tv: f64,
    /// TV(exact output law of the sampler, target): the discretisation error; None when too large to enumerate.
    pub discretisation: Option<f64>,
    /// TV(empirical, exact law): the sampling noise, when the law is known.
    pub sampling_noise: Option<f64>,
    /// `√(S/(4n)) + √(ln(1/δ)/(2n))`.
    pub sampling_bound: f64,
    /// Support size S used in the sampling bound.
    pub support: usize,
    /// discretisation (or 0 when unknown) + sampling bound.
    pub bound: f64,
    /// tv ≤ bound.
    pub pass: bool,
    /// Entropy of the target (nats).
    pub target_entropy: f64,
    /// Entropy of the empirical distribution of the samples (nats).
    pub sample_entropy: f64,
    /// Batched model calls.
    pub model_calls: usize,
    /// Sequence evaluations.
    pub evaluations: usize,
}

/// Runs the check; `progress` is called with the number of samples drawn so far.
pub fn check(spec: &CheckSpec, progress: &mut dyn FnMut(usize)) -> Result<CheckReport> {
    if spec.samples < 1 {
        return Err(Error::invalid("samples", "must be at least 1"));
    }
    if spec.batch < 1 {
        return Err(Error::invalid("batch", "must be at least 1"));
    }
    diffuse_core::limits::at_most("samples", spec.samples, MAX_SAMPLES)?;
    diffuse_core::limits::product_at_most("samples × length", spec.samples, spec.target.len(), MAX_SAMPLED_TOKENS)?;
    diffuse_core::limits::at_most("batch", spec.batch, MAX_BATCH)?;
    diffuse_core::limits::at_most("max_states", spec.max_states, MAX_STATES)?;
    if !(spec.delta > 0.0 && spec.delta < 1.0) {
        return Err(Error::invalid("delta", format!("{} must lie in (0, 1)", spec.delta)));
    }
    if spec.process.vocab() != spec.target.vocab() {
        return Err(Error::invalid(
            "vocab",
            format!("the target has {} tokens but the process {}", spec.target.vocab(), spec.process.vocab()),
        ));
    }
    spec.sampler.applies_to(spec.process.kind())?;
    let den = ExactDenoiser::new(spec.target.clone(), spec.process, spec.output, spec.schedule.clone())?;
    let len = spec.target.len();
    spec.sampler.validate(&den, len)?;
    let law = match sampler::exact_law(&den, spec.schedule.as_ref(), &spec.sampler, len, spec.max_states) {
        Ok(l) => Some(l),
        Err(Error::TooLarge(_)) => None,
        Err(e) => return Err(e),
    };
    let mut tokens = Vec::with_capacity(spec.samples * len);
    let (mut calls, mut evals) = (0, 0);
    let mut first = 0;
    while first < spec.samples {
        let n = spec.batch.min(spec.samples - first);
        let seeds = SampleSeeds::new(spec.seed, first as u64, n);
        let out = sampler::sample(&den, spec.schedule.as_ref(), &spec.sampler, len, &seeds, Device::Cpu)?;
        tokens.extend(out.tokens);
        calls += out.model_calls;
        evals += out.evaluations;
        first += n;
        progress(first);
    }
    let emp = empirical(&tokens, len);
    let all_sequences = spec.target.vocab().pow(len as u32);
    let support = law.as_ref().map_or(all_sequences, |l| l.values().filter(|&&p| p > 0.0).count().max(1));
    let sampling_bound = tv_sampling_bound(support, spec.samples, spec.delta);
    let discretisation = law.as_ref().map(|l| spec.target.tv(l));
    let tv_target = spec.target.tv(&emp);
    let bound = discretisation.unwrap_or(0.0) + sampling_bound;
    let probs: Vec<f64> = emp.values().copied().collect();
    Ok(CheckReport {
        tv: tv_target,
        discretisation,
        sampling_noise: law.as_ref().map(|l| tv(&emp, l)),
        sampling_bound,
        support,
        bound,
        pass: tv_target <= bound,
        target_entropy: spec.target.entropy(),
        sample_entropy: crate::categorical::entropy(&probs),
        model_calls: calls,
        evaluations: evals,
    })
}
