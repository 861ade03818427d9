//! PF-ODE likelihood against exact Gaussian densities, and the optimal-boundary search on an exact conditional
//! problem.

use std::sync::Arc;

use diffuse_core::denoiser::Conditioning;
use diffuse_core::exact::GaussianMixture;
use diffuse_core::likelihood::{LikelihoodConfig, TraceEstimator, gaussian_prior, log_likelihood};
use diffuse_core::obc::{BoundarySearch, shared_seeds};
use diffuse_core::path::{NoisePath, PathSpec};
use diffuse_core::seed::SampleSeeds;
use diffuse_core::solvers::{Budget, NoNoise, SolverOptions, build_solver, sample};
use diffuse_core::spacing::{End, GridSpec, Spacing};
use tch::{Device, Kind, Tensor};

fn mixture(path: Arc<dyn NoisePath>) -> GaussianMixture {
    GaussianMixture::new(vec![0.4, 0.6], vec![vec![1.0, 0.0, 0.5], vec![-0.5, 0.5, 0.0]], vec![0.3, 0.5], path).unwrap()
}

/// With the exact marginal at T as prior, the PF-ODE log-likelihood equals the exact log-density of p_{t0}: to
/// integration accuracy with the exact trace, within a few standard errors with Hutchinson's estimator (both
/// kinds of probes), and the two agree.
#[test]
fn likelihood_matches_the_exact_density() {
    for kind in ["vp_linear", "ouve"] {
        let path = PathSpec::default_of(kind).unwrap().build().unwrap();
        let model = mixture(path.clone());
        let n = 6;
        let mu = Tensor::from_slice(&[0.2, -0.3, 0.1]).view([1, 3]).expand([n, 3], false).contiguous();
        let cond = Conditioning::with_anchor(mu.shallow_clone());
        let (t0, t1) = (path.t_range().0, 0.9 * path.t_range().1);
        let x = model.sample_marginal(&path.point(t0), &SampleSeeds::new(1, 0, n as usize), Some(&mu)).unwrap();
        let exact = model.log_prob_marginal(&x, &path.point(t0), Some(&mu)).unwrap();
        let end = path.point(t1);
        let prior = |xt: &Tensor| model.log_prob_marginal(xt, &end, Some(&mu));
        let base =
            LikelihoodConfig { rtol: 1e-7, atol: 1e-7, t_start: Some(t0), t_end: Some(t1), ..Default::default() };
        let ex = log_likelihood(
            path.as_ref(),
            &model,
            &cond,
            &x,
            &prior,
            &LikelihoodConfig { estimator: TraceEstimator::Exact, ..base.clone() },
        )
        .unwrap();
        let d = f64::try_from((&ex.log_prob - &exact).abs().max()).unwrap();
        assert!(d < 1e-4, "{kind}: exact trace off by {d}");
        for estimator in [TraceEstimator::Rademacher { probes: 16 }, TraceEstimator::Gaussian { probes: 16 }] {
            let h = log_likelihood(
                path.as_ref(),
                &model,
                &cond,
                &x,
                &prior,
                &LikelihoodConfig { estimator, seed: 4, ..base.clone() },
            )
            .unwrap();
            let se = h.std_err.as_ref().unwrap();
            let z = (&h.log_prob - &exact).abs() / (se + 1e-9);
            let zmax = f64::try_from(z.max()).unwrap();
            assert!(zmax < 4.5, "{kind}/{estimator:?}: {zmax} standard errors off");
            let agree = f64::try_from((&h.log_prob - &ex.log_prob).abs().max()).unwrap();
            assert!(
                agree < 5.0 * f64::try_from(se.max()).unwrap() + 1e-4,
                "{kind}/{estimator:?}: exact vs Hutchinson {agree}"
            );
        }
        // bits/dim consistency: bpd = −log p/(D ln 2) without a bin width.
        let bpd = f64::try_from(ex.bits_per_dim.get(0)).unwrap();
        let lp = f64::try_from(ex.log_prob.get(0)).unwrap();
        assert!((bpd + lp / (3.0 * std::f64::consts::LN_2)).abs() < 1e-12);
    }
}

/// The default Gaussian prior at the end of a VP path is close to the exact marginal, so the likelihood with it is
/// close too; a wrong model gives a clearly lower likelihood.
#[test]
fn default_prior_and_a_wrong_model() {
    let path = PathSpec::default_of("vp_linear").unwrap().build().unwrap();
    let model = mixture(path.clone());
    let n = 32;
    let x = model.sample_data(&SampleSeeds::new(2, 0, n));
    let cond = Conditioning::none();
    let cfg = LikelihoodConfig { estimator: TraceEstimator::Exact, rtol: 1e-6, atol: 1e-6, ..Default::default() };
    let prior = gaussian_prior(path.as_ref(), 1.0, None);
    let good = log_likelihood(path.as_ref(), &model, &cond, &x, &prior, &cfg).unwrap();
    let exact = model.log_prob_marginal(&x, &path.point(path.t_range().0), None).unwrap();
    let gap = f64::try_from((&good.log_prob - &exact).mean(Kind::Double)).unwrap();
    assert!(gap.abs() < 0.05, "default prior costs {gap} nats");
    let wrong = GaussianMixture::gaussian(vec![0.0, 0.0, 0.0], 1.5, path.clone()).unwrap();
    let bad = log_likelihood(path.as_ref(), &wrong, &cond, &x, &prior, &cfg).unwrap();
    let drop = f64::try_from((&good.log_prob - &bad.log_prob).mean(Kind::Double)).unwrap();
    assert!(drop > 0.5, "a wrong model must score lower: {drop}");
}

#[test]
fn likelihood_bad_input() {
    let path = PathSpec::default_of("vp_linear").unwrap().build().unwrap();
    let model = mixture(path.clone());
    let x = Tensor::zeros([2, 3], (Kind::Double, Device::Cpu));
    let prior = gaussian_prior(path.as_ref(), 1.0, None);
    let zero = LikelihoodConfig { estimator: TraceEstimator::Rademacher { probes: 0 }, ..Default::default() };
    assert!(
        log_likelihood(path.as_ref(), &model, &Conditioning::none(), &x, &prior, &zero)
            .unwrap_err()
            .to_string()
            .contains("probe")
    );
    let wrong_dim = Tensor::zeros([2, 4], (Kind::Double, Device::Cpu));
    let e =
        log_likelihood(path.as_ref(), &model, &Conditioning::none(), &wrong_dim, &prior, &LikelihoodConfig::default())
            .unwrap_err()
            .to_string();
    assert!(e.contains("shape") || e.contains("values per sample"), "{e}");
}

/// On a conditional problem (OUVE, the anchor is the degraded observation), the boundary seed chosen on 4
/// calibration inputs beats the average random seed on 64 held-out inputs, with a deterministic ODE sampler.
#[test]
fn optimal_boundary_generalizes() {
    let path = PathSpec::default_of("ouve").unwrap().build().unwrap();
    let dim = 16;
    let model = GaussianMixture::gaussian(vec![0.0; dim], 0.5, path.clone()).unwrap();
    let solver = build_solver("dpm++2m", &SolverOptions::default()).unwrap();
    let grid = GridSpec::new(Spacing::UniformT, End::Zero);
    let start = path.point(path.t_range().1);
    // Input j: clean x0_j, anchor y_j = x0_j + observation noise; the sampler starts at y·γ_T + σ_T·(boundary noise).
    let clean = |j: usize| model.sample_data(&SampleSeeds::new(77, j as u64, 1));
    let observed = |j: usize| {
        &clean(j) + SampleSeeds::new(78, j as u64, 1).normal(0, &[dim as i64], Kind::Double, Device::Cpu) * 0.3
    };
    let mse = |seed: u64, j: usize| -> f64 {
        let y = observed(j);
        let z = shared_seeds(seed, 1).normal(0, &[dim as i64], Kind::Double, Device::Cpu);
        let x_t = &y * start.gamma + z * start.sigma;
        let cond = Conditioning::with_anchor(y);
        let out = sample(
            solver.as_ref(),
            path.as_ref(),
            &model,
            &cond,
            &x_t,
            &grid,
            Budget::Steps(10),
            &mut NoNoise,
            &mut (),
        )
        .unwrap()
        .x;
        f64::try_from((out - clean(j)).square().mean(Kind::Double)).unwrap()
    };
    let search = BoundarySearch { candidates: 16, seed: 5 };
    let choice = search.run(4, |seed, j| Ok(-mse(seed, j))).unwrap();
    assert_eq!(choice.candidates.len(), 16);
    assert!(choice.candidates.iter().all(|c| c.1 <= choice.score));
    let held_out = |seed: u64| (100..164).map(|j| mse(seed, j)).sum::<f64>() / 64.0;
    let chosen = held_out(choice.seed);
    let average = search.candidate_seeds().iter().map(|s| held_out(*s)).sum::<f64>() / 16.0;
    assert!(chosen < average, "chosen boundary {chosen} vs average seed {average}");
    // Reused deterministically: the same seed gives the same output.
    assert_eq!(mse(choice.seed, 3), mse(choice.seed, 3));
    assert!(BoundarySearch { candidates: 0, seed: 0 }.run(1, |_, _| Ok(0.0)).is_err());
}
