//! Optimal boundary condition for conditional ODE sampling (after "Solving Diffusion ODEs with Optimal Boundary
//! Conditions for Better Image Super-Resolution", Ma et al. 2024): the deterministic sampler maps the starting
//! noise to the output, so one well-chosen *shared* noise, found on a few calibration inputs, can be reused for
//! every input. Candidates are seeds, so the chosen boundary applies to inputs of any shape: the noise of an input
//! is the seed's stream (`shared_seeds`), identical for every input and reproducible.

use crate::seed::{SampleSeeds, mix64};
use crate::{Error, Result};

/// A search over candidate boundary seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundarySearch {
    /// Number of candidate seeds (≥ 1).
    pub candidates: usize,
    /// Seed from which the candidates are derived.
    pub seed: u64,
}

/// The result of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundaryChoice {
    /// The chosen seed: reuse it with [`shared_seeds`].
    pub seed: u64,
    /// Its mean score over the calibration inputs.
    pub score: f64,
    /// Every candidate's (seed, mean score), in search order.
    pub candidates: Vec<(u64, f64)>,
}

impl BoundarySearch {
    /// The candidate seeds.
    pub fn candidate_seeds(&self) -> Vec<u64> {
        (0..self.candidates as u64).map(|i| mix64(self.seed ^ mix64(i.wrapping_add(0x0BC0)))).collect()
    }

    /// Scores every candidate seed on every calibration input with `score(seed, input) → quality` (higher is
    /// better; e.g. −MSE to the clean signal, SI-SDR, PESQ) and keeps the best mean. Inputs whose score is not finite
    /// are an error naming the candidate and input.
    pub fn run(&self, inputs: usize, mut score: impl FnMut(u64, usize) -> Result<f64>) -> Result<BoundaryChoice> {
        if self.candidates == 0 || inputs == 0 {
            return Err(Error::invalid("boundary search", "needs at least one candidate and one calibration input"));
        }
        let mut all = Vec::with_capacity(self.candidates);
        for seed in self.candidate_seeds() {
            let mut total = 0.0;
            for j in 0..inputs {
                let q = score(seed, j)?;
                if !q.is_finite() {
                    return Err(Error::Numerical {
                        op: "boundary search",
                        reason: format!("score of seed {seed:#x} on input {j} is {q}"),
                    });
                }
                total += q;
            }
            all.push((seed, total / inputs as f64));
        }
        let (seed, score) =
            all.iter().copied().fold((0, f64::NEG_INFINITY), |best, c| if c.1 > best.1 { c } else { best });
        Ok(BoundaryChoice { seed, score, candidates: all })
    }
}

/// Per-sample seeds that give every one of `batch` inputs the same noise stream (the shared boundary).
pub fn shared_seeds(seed: u64, batch: usize) -> SampleSeeds {
    SampleSeeds::from_seeds(vec![seed; batch])
}
