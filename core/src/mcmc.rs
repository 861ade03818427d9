//! Denoising MCMC (Kim & Ye 2022, "DLG": Langevin–Gibbs): a Markov chain in the product space of the data and the
//! diffusion time, whose stationary law is `p(t)·p_t(x)` on a grid of times; then a solver from each chain's state
//! `(x, t)` down to the data. The chain moves the starting point of the solver closer to the data manifold, so the
//! solver needs fewer steps from a smaller t.
//!
//! Per round: a Gibbs draw of the time from `p(t_k | x) ∝ p(t_k)·p_{t_k}(x)`, then `langevin` unadjusted Langevin
//! steps in x at that time, `x ← x + (ε/2)·∇log p_t(x) + √ε·z` with `ε = step·σ_t²` (one model evaluation each; the
//! score comes from the model's data prediction). The time's conditional needs the marginal density `p_t(x)`: the
//! paper learns a noise-level estimator for it; here it is exact ([`GaussianMixture::log_prob_marginal`]), so DLG
//! runs on the exact problems only (no trained model has a density).

use rand::Rng;
use tch::{Kind, Tensor};

use crate::denoiser::Conditioning;
use crate::exact::GaussianMixture;
use crate::path::{NoisePath, Point};
use crate::seed::SampleSeeds;
use crate::solvers::{Budget, NoNoise, SolverOptions, build_solver, sample};
use crate::spacing::{End, GridSpec, Spacing};
use crate::{Error, Result};

/// Settings of a DLG run.
#[derive(Debug, Clone, PartialEq)]
pub struct DlgOptions {
    /// Number of times the chain moves between (uniform in λ from the path's start to its smallest time).
    pub levels: usize,
    /// Gibbs rounds (a time draw, then `langevin` steps in x) between two emitted samples of a chain.
    pub rounds: usize,
    /// Rounds run once per chain before its first sample (amortised over its samples, as in the paper's long
    /// chains; reported apart from the per-sample cost).
    pub burn_in: usize,
    /// Samples emitted per chain (one every `rounds` rounds after the burn-in).
    pub emissions: usize,
    /// Langevin steps per round (one evaluation each).
    pub langevin: usize,
    /// Langevin step size relative to σ_t²: ε = step·σ_t².
    pub step: f64,
    /// The solver run from each chain's state to the data, and its steps.
    pub solver: String,
    /// Intervals of that solver.
    pub solver_steps: usize,
    /// Seed of the chain's draws.
    pub seed: u64,
}

/// The emitted samples at the data, the time each solver started from, and the evaluations.
#[derive(Debug)]
pub struct DlgOutput {
    /// Samples `[n, dim]` at the data.
    pub x: Tensor,
    /// Index of each sample's starting time among [`DlgOutput::levels`].
    pub level: Vec<usize>,
    /// The chain's times.
    pub levels: Vec<Point>,
    /// Model evaluations per sample: the Langevin steps between two samples of a chain, plus the solver's
    /// evaluations averaged over the samples.
    pub nfe_per_draw: f64,
    /// Langevin evaluations of each chain's burn-in (once per chain).
    pub burn_in_nfe: usize,
}

/// The chain's times: `levels` points uniform in λ from the path's start to its smallest time.
pub fn levels(path: &dyn NoisePath, levels: usize) -> Result<Vec<Point>> {
    if levels < 2 {
        return Err(Error::invalid("levels", "need at least 2 times"));
    }
    let (t_min, _) = path.t_range();
    GridSpec::new(Spacing::UniformLambda, End::Time(t_min)).build(path, levels - 1)
}

/// Runs DLG on the exact model `mixture` (no anchor) for `n` samples: `⌈n / emissions⌉` chains, each emitting a
/// sample (the solver from its current state to the data) every `rounds` rounds after its burn-in.
pub fn dlg(mixture: &GaussianMixture, n: usize, opts: &DlgOptions) -> Result<DlgOutput> {
    if n == 0 || opts.rounds == 0 || opts.emissions == 0 || !(opts.step > 0.0 && opts.step.is_finite()) {
        return Err(Error::invalid("dlg", "need draws, at least one round and one emission, and a positive step"));
    }
    let path = mixture.path().clone();
    let grid = levels(path.as_ref(), opts.levels)?;
    let chains = n.div_ceil(opts.emissions);
    let seeds = SampleSeeds::new(opts.seed, 0, chains);
    let mut chain = Chain { x: mixture.sample_marginal(&grid[0], &seeds, None)?, level: vec![0; chains], draw: 0 };
    let solver = build_solver(&opts.solver, &SolverOptions::default())?;
    chain.rounds(mixture, &grid, &seeds, opts, opts.burn_in)?;
    let burn_in_nfe = opts.burn_in * opts.langevin;
    let (mut samples, mut level, mut solver_nfe) = (Vec::new(), Vec::new(), 0usize);
    for _ in 0..opts.emissions {
        chain.rounds(mixture, &grid, &seeds, opts, opts.rounds)?;
        let (x0, nfe) = solve_from(mixture, &grid, &chain.x, &chain.level, solver.as_ref(), opts.solver_steps)?;
        samples.push(x0);
        level.extend_from_slice(&chain.level);
        solver_nfe += nfe;
    }
    let x = Tensor::f_cat(&samples, 0)?.f_narrow(0, 0, n as i64)?;
    level.truncate(n);
    let emitted = (chains * opts.emissions) as f64;
    Ok(DlgOutput {
        x,
        level,
        levels: grid,
        nfe_per_draw: (opts.rounds * opts.langevin) as f64 + solver_nfe as f64 / emitted,
        burn_in_nfe,
    })
}

/// The chains' state: x, the index of each chain's time, and the next noise draw.
struct Chain {
    x: Tensor,
    level: Vec<usize>,
    draw: u64,
}

impl Chain {
    /// `count` Gibbs rounds: a time draw from p(t_k | x) (uniform prior), then the Langevin steps at that time.
    fn rounds(
        &mut self,
        mixture: &GaussianMixture,
        grid: &[Point],
        seeds: &SampleSeeds,
        opts: &DlgOptions,
        count: usize,
    ) -> Result<()> {
        for _ in 0..count {
            let logits = Tensor::f_stack(
                &grid.iter().map(|p| mixture.log_prob_marginal(&self.x, p, None)).collect::<Result<Vec<_>>>()?,
                1,
            )?;
            let probs = Vec::<f64>::try_from(logits.f_softmax(1, Kind::Double)?.f_flatten(0, -1)?)?;
            let round = self.draw;
            for (i, l) in self.level.iter_mut().enumerate() {
                let u: f64 = seeds.rng(i, 1_000_000 + round).random();
                let row = &probs[i * grid.len()..(i + 1) * grid.len()];
                let mut acc = 0.0;
                *l = row
                    .iter()
                    .position(|p| {
                        acc += p;
                        u < acc
                    })
                    .unwrap_or(grid.len() - 1);
            }
            for _ in 0..opts.langevin {
                let z = seeds.normal(2 + self.draw, &[mixture.dim() as i64], Kind::Double, tch::Device::Cpu);
                self.draw += 1;
                let mut next = self.x.shallow_clone();
                for (k, p) in grid.iter().enumerate() {
                    let Some(index) = at_level(&self.level, k) else { continue };
                    let xs = self.x.f_index_select(0, &index)?;
                    let x0 = mixture.denoise(&xs, p)?.f_view_as(&xs)?;
                    let score = x0.f_mul_scalar(p.alpha)?.f_sub(&xs)?.f_div_scalar(p.sigma * p.sigma)?;
                    let eps = opts.step * p.sigma * p.sigma;
                    let moved = xs
                        .f_add(&score.f_mul_scalar(eps / 2.0)?)?
                        .f_add(&z.f_index_select(0, &index)?.f_mul_scalar(eps.sqrt())?)?;
                    next = next.f_index_copy(0, &index, &moved)?;
                }
                self.x = next;
            }
            self.draw += 1;
        }
        Ok(())
    }
}

/// The indices of the chains at time `k`, if any.
fn at_level(level: &[usize], k: usize) -> Option<Tensor> {
    let idx: Vec<i64> = (0..level.len()).filter(|&i| level[i] == k).map(|i| i as i64).collect();
    (!idx.is_empty()).then(|| Tensor::from_slice(&idx))
}

/// The solver from each state (grouped by time) to the data; returns the samples and the evaluations spent.
fn solve_from(
    mixture: &GaussianMixture,
    grid: &[Point],
    x: &Tensor,
    level: &[usize],
    solver: &dyn crate::solvers::Solver,
    steps: usize,
) -> Result<(Tensor, usize)> {
    let path = mixture.path();
    let cond = Conditioning::none();
    let mut out = Tensor::f_zeros_like(x)?;
    let mut nfe = 0usize;
    for (k, p) in grid.iter().enumerate() {
        let Some(index) = at_level(level, k) else { continue };
        let count = index.size()[0] as usize;
        let xs = x.f_index_select(0, &index)?;
        let done = if p.t <= path.t_range().0 {
            // At the smallest time the solver's only step is the jump to the data.
            nfe += count;
            mixture.denoise(&xs, p)?.f_view_as(&xs)?
        } else {
            let spec = GridSpec { t_start: Some(p.t), ..GridSpec::new(Spacing::UniformLambda, End::Zero) };
            let s =
                sample(solver, path.as_ref(), mixture, &cond, &xs, &spec, Budget::Steps(steps), &mut NoNoise, &mut ())?;
            nfe += s.nfe * count;
            s.x
        };
        out = out.f_index_copy(0, &index, &done.f_to_kind(Kind::Double)?)?;
    }
    Ok((out, nfe))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::PathSpec;

    fn mixture() -> GaussianMixture {
        let path: PathSpec = serde_json::from_str(r#"{"kind": "edm", "sigma_min": 0.02, "sigma_max": 4.0}"#).unwrap();
        GaussianMixture::new(
            vec![0.3, 0.7],
            vec![vec![1.5, 0.0], vec![-1.0, 0.5]],
            vec![0.2, 0.4],
            path.build().unwrap(),
        )
        .unwrap()
    }

    /// The chain's stationary law is p(t)·p_t(x) with a uniform p(t): after enough rounds every time is visited
    /// equally often, and x at each time has the exact second moment of p_t.
    #[test]
    fn the_chain_reaches_the_joint_law_of_time_and_state() {
        let m = mixture();
        let opts = DlgOptions {
            levels: 6,
            rounds: 100,
            burn_in: 0,
            emissions: 1,
            langevin: 5,
            step: 0.1,
            solver: "ddim".into(),
            solver_steps: 1,
            seed: 3,
        };
        let n = 4000;
        let out = dlg(&m, n, &opts).unwrap();
        assert_eq!(out.levels.len(), 6);
        for (k, p) in out.levels.iter().enumerate() {
            let count = out.level.iter().filter(|&&l| l == k).count() as f64 / n as f64;
            assert!((count - 1.0 / 6.0).abs() < 0.03, "time {k} (σ {:.3}) visited {count:.3}", p.sigma);
        }
        assert!(out.nfe_per_draw >= 500.0);
    }

    /// Langevin steps at a fixed time keep p_t: chains started at exact draws of p_t keep its second moment.
    #[test]
    fn langevin_at_a_fixed_time_keeps_the_marginal() {
        let m = mixture();
        let grid = levels(m.path().as_ref(), 4).unwrap();
        let p = grid[2];
        let seeds = SampleSeeds::new(5, 0, 4000);
        let exact = m.sample_marginal(&p, &seeds, None).unwrap();
        let moment = |x: &Tensor| f64::try_from(x.square().mean(Kind::Double)).unwrap();
        let mut x = m.sample_marginal(&p, &SampleSeeds::new(6, 0, 4000), None).unwrap();
        for step in 0..200u64 {
            let x0 = m.denoise(&x, &p).unwrap().view_as(&x);
            let score = (x0 * p.alpha - &x) / (p.sigma * p.sigma);
            let eps = 0.05 * p.sigma * p.sigma;
            x = &x + score * (eps / 2.0) + seeds.normal(10 + step, &[2], Kind::Double, tch::Device::Cpu) * eps.sqrt();
        }
        let (got, want) = (moment(&x), moment(&exact));
        assert!((got / want - 1.0).abs() < 0.05, "E|x|²/d at σ {:.3}: chain {got:.4}, exact {want:.4}", p.sigma);
    }

    /// End to end: the solver from the chains' states lands on the data distribution (MMD² to exact samples near
    /// that of exact samples themselves), and the evaluations are counted per draw.
    #[test]
    fn dlg_samples_the_data() {
        let m = mixture();
        let opts = DlgOptions {
            levels: 8,
            rounds: 2,
            burn_in: 20,
            emissions: 4,
            langevin: 2,
            step: 0.1,
            solver: "dpm++2m".into(),
            solver_steps: 6,
            seed: 7,
        };
        let out = dlg(&m, 1000, &opts).unwrap();
        let target = m.sample_data(&SampleSeeds::new(99, 0, 1000));
        let mmd = crate::bench::mmd2(&out.x, &target, None).unwrap();
        assert!(mmd < 0.01, "MMD² {mmd}");
        assert_eq!(out.x.size(), [1000, 2]);
        assert!(out.nfe_per_draw > 4.0 && out.nfe_per_draw <= 4.0 + 7.0, "{}", out.nfe_per_draw);
        assert_eq!(out.burn_in_nfe, 40);
    }
}
