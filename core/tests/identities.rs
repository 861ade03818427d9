//! Identities between solvers and parameterizations, anchors, mixtures, adaptive tolerances, robustness at every
//! step count, and bad input.

use std::sync::Arc;

use diffuse_core::Parameterization;
use diffuse_core::bench::{MixtureSpec, Problem, rms_error, run_problem};
use diffuse_core::denoiser::Conditioning;
use diffuse_core::exact::GaussianMixture;
use diffuse_core::path::{NoisePath, PathSpec, Point};
use diffuse_core::seed::SampleSeeds;
use diffuse_core::solvers::{Budget, NoNoise, SolverOptions, build_solver, sample, solver_names};
use diffuse_core::spacing::{End, GridSpec, Spacing};
use tch::{Kind, Tensor};

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

fn mixture(path: Arc<dyn NoisePath>, dim: usize) -> GaussianMixture {
    let means =
        vec![(0..dim).map(|i| 1.0 - 0.3 * i as f64).collect(), (0..dim).map(|i| -1.0 + 0.2 * i as f64).collect()];
    GaussianMixture::new(vec![0.3, 0.7], means, vec![0.1, 0.3], path).unwrap()
}

fn run(
    name: &str,
    path: &dyn NoisePath,
    model: &GaussianMixture,
    cond: &Conditioning,
    x: &Tensor,
    grid: &GridSpec,
    steps: usize,
) -> Tensor {
    let solver = build_solver(name, &SolverOptions::default()).unwrap();
    sample(solver.as_ref(), path, model, cond, x, grid, Budget::Steps(steps), &mut NoNoise, &mut ()).unwrap().x
}

/// DDIM = DPM-Solver-1 (noise form) = Euler in σ/α, on a nonlinear (mixture) problem and several paths.
#[test]
fn ddim_equals_dpm_solver_1_equals_euler() {
    for kind in ["vp_linear", "edm", "ouve", "vp_cosine"] {
        let path = PathSpec::default_of(kind).unwrap().build().unwrap();
        let model = mixture(path.clone(), 3);
        let mu = Tensor::from_slice(&[0.2, -0.1, 0.4]).view([1, 3]).expand([8, 3], false).contiguous();
        let cond = Conditioning::with_anchor(mu.shallow_clone());
        let start = path.point(path.t_range().1);
        let x = model.sample_marginal(&start, &SampleSeeds::new(1, 0, 8), Some(&mu)).unwrap();
        let grid = GridSpec::new(Spacing::UniformT, End::Time(path.t_range().0));
        let a = run("ddim", path.as_ref(), &model, &cond, &x, &grid, 13);
        let b = run("dpm-solver-1", path.as_ref(), &model, &cond, &x, &grid, 13);
        let c = run("euler", path.as_ref(), &model, &cond, &x, &grid, 13);
        assert!(
            max_diff(&a, &b) < 1e-10 && max_diff(&a, &c) < 1e-10,
            "{kind}: {} {}",
            max_diff(&a, &b),
            max_diff(&a, &c)
        );
    }
}

/// Independent check of the corrected DPM-Solver++(3M): the third-order exponential Adams–Bashforth step through
/// three points is unique, so it must coincide with UniPC's UniP-3 predictor with B(h) = e^h − 1 (as DPM-Solver++(2M)
/// coincides with UniP-2); with UniC after both, whole trajectories agree. The reference 3M formula does not.
#[test]
fn corrected_3m_equals_unipc_bh2() {
    let path = PathSpec::default_of("vp_linear").unwrap().build().unwrap();
    let model = mixture(path.clone(), 3);
    let start = path.point(path.t_range().1);
    let x = model.sample_marginal(&start, &SampleSeeds::new(8, 0, 8), None).unwrap();
    let grid = GridSpec::new(Spacing::UniformLambda, End::Time(path.t_range().0));
    let cond = Conditioning::none();
    for (a, b) in [("dpm++3m+unic", "unipc-bh2-3"), ("dpm++2m+unic", "unipc-bh2")] {
        let (xa, xb) =
            (run(a, path.as_ref(), &model, &cond, &x, &grid, 17), run(b, path.as_ref(), &model, &cond, &x, &grid, 17));
        assert!(max_diff(&xa, &xb) < 1e-10, "{a} vs {b}: {}", max_diff(&xa, &xb));
    }
    let solver = build_solver("dpm++3m-ref", &SolverOptions::default()).unwrap();
    let r = sample(solver.as_ref(), path.as_ref(), &model, &cond, &x, &grid, Budget::Steps(17), &mut NoNoise, &mut ())
        .unwrap()
        .x;
    let ours = run("dpm++3m", path.as_ref(), &model, &cond, &x, &grid, 17);
    assert!(max_diff(&r, &ours) > 1e-6, "the reference formula differs");
}

/// The path with the same α and σ but no anchor term.
#[derive(Debug)]
struct WithoutAnchor(Arc<dyn NoisePath>);

impl NoisePath for WithoutAnchor {
    fn name(&self) -> String {
        format!("{} without anchor", self.0.name())
    }
    fn alpha(&self, t: f64) -> f64 {
        self.0.alpha(t)
    }
    fn sigma(&self, t: f64) -> f64 {
        self.0.sigma(t)
    }
    fn d_alpha(&self, t: f64) -> f64 {
        self.0.d_alpha(t)
    }
    fn d_sigma(&self, t: f64) -> f64 {
        self.0.d_sigma(t)
    }
    fn t_range(&self) -> (f64, f64) {
        self.0.t_range()
    }
}

/// A solver on a γ ≠ 0 path with anchor μ equals the plain solver on x − γμ.
#[test]
fn anchored_paths_reduce_to_plain_paths() {
    for kind in ["ouve", "ir_sde", "rddm", "sbve"] {
        let path = PathSpec::default_of(kind).unwrap().build().unwrap();
        let plain: Arc<dyn NoisePath> = Arc::new(WithoutAnchor(path.clone()));
        let (model, model_plain) = (mixture(path.clone(), 2), mixture(plain.clone(), 2));
        let mu = Tensor::from_slice(&[0.7, -0.4]).view([1, 2]).expand([6, 2], false).contiguous();
        let (lo, hi) = path.t_range();
        let t0 = path.t_of_lambda(path.lambda(hi).max(-3.0));
        let start = path.point(t0);
        let x = model.sample_marginal(&start, &SampleSeeds::new(2, 0, 6), Some(&mu)).unwrap();
        let t_end = 0.5 * (lo + t0);
        let mut grid = GridSpec::new(Spacing::UniformLambda, End::Time(t_end));
        grid.t_start = Some(t0);
        for solver in ["dpm++2m", "unipc-bh2", "heun", "dpm-solver-3"] {
            let anchored =
                run(solver, path.as_ref(), &model, &Conditioning::with_anchor(mu.shallow_clone()), &x, &grid, 9);
            let x_plain = &x - &mu * start.gamma;
            let plain_out = run(solver, plain.as_ref(), &model_plain, &Conditioning::none(), &x_plain, &grid, 9);
            let back = &plain_out + &mu * path.gamma(t_end);
            assert!(max_diff(&anchored, &back) < 1e-10, "{kind}/{solver}: {}", max_diff(&anchored, &back));
        }
    }
}

/// x0-, ε-, v-, score-, velocity- and residual-parameterized exact models give the same trajectory.
#[test]
fn parameterizations_give_the_same_trajectory() {
    for kind in ["vp_linear", "ouve", "rectified_flow"] {
        let path = PathSpec::default_of(kind).unwrap().build().unwrap();
        let mu = Tensor::from_slice(&[0.3, 0.1, -0.2]).view([1, 3]).expand([5, 3], false).contiguous();
        let cond = Conditioning::with_anchor(mu.shallow_clone());
        let base = mixture(path.clone(), 3);
        let (lo, hi) = path.t_range();
        let t0 = path.t_of_lambda(path.lambda(hi).max(-3.0));
        let x = base.sample_marginal(&path.point(t0), &SampleSeeds::new(3, 0, 5), Some(&mu)).unwrap();
        let mut grid = GridSpec::new(Spacing::UniformLambda, End::Time(lo));
        grid.t_start = Some(t0);
        for solver in ["dpm++2m", "heun", "dpm-solver-2"] {
            let want = run(solver, path.as_ref(), &base, &cond, &x, &grid, 10);
            for p in Parameterization::ALL {
                let model = mixture(path.clone(), 3).with_output(p);
                let got = run(solver, path.as_ref(), &model, &cond, &x, &grid, 10);
                assert!(max_diff(&got, &want) < 1e-9, "{kind}/{solver}/{p:?}: {}", max_diff(&got, &want));
            }
        }
    }
}

fn edm_mixture_problem(solvers: &[&str], nfe: Vec<usize>) -> Problem {
    Problem {
        dim: 8,
        mixture: MixtureSpec {
            weights: vec![0.3, 0.7],
            means: vec![vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], vec![-1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]],
            stds: vec![0.1, 0.3],
        },
        path: PathSpec::Edm { sigma_min: 0.002, sigma_max: 80.0 },
        spacing: Spacing::Karras { rho: 7.0 },
        end: End::Zero,
        solvers: solvers.iter().map(|s| s.parse().unwrap()).collect(),
        nfe,
        tolerances: vec![1e-2, 1e-3, 1e-4, 1e-5],
        samples: 64,
        seed: 0,
        t_start: None,
        lambda_min: None,
        anchor: None,
        parameterization: Parameterization::Data,
        reference_rtol: 1e-11,
        warmup: Default::default(),
        lower_order_final: Default::default(),
    }
}

/// On the example mixture, every fixed-step solver's error falls as NFE grows.
#[test]
fn mixture_errors_decrease_with_nfe() {
    let names: Vec<String> = solver_names().into_iter().map(|(n, _)| n).collect();
    let fixed: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| {
            build_solver(n, &SolverOptions::default()).is_ok_and(|s| !s.info().stochastic && !s.info().adaptive)
        })
        .collect();
    let report = run_problem(&edm_mixture_problem(&fixed, vec![10, 20, 40, 80]), |_, _| {}).unwrap();
    for name in &fixed {
        let errs: Vec<f64> =
            report.rows.iter().filter(|r| r.solver == *name).map(|r| r.rms_error.unwrap_or(f64::NAN)).collect();
        assert!(errs.iter().all(|e| e.is_finite()), "{name}: {errs:?}");
        assert!(errs.windows(2).all(|w| w[1] < w[0]), "{name}: errors do not fall: {errs:?}");
    }
}

/// Adaptive solvers meet their tolerance: the global error is within a small multiple of atol + rtol·|x| and falls
/// as the tolerance tightens.
#[test]
fn adaptive_solvers_meet_their_tolerance() {
    let problem = edm_mixture_problem(&["dopri5", "dpm-solver-12", "dpm-solver-23"], vec![1]);
    let report = run_problem(&problem, |_, _| {}).unwrap();
    for name in ["dopri5", "dpm-solver-12", "dpm-solver-23"] {
        let rows: Vec<_> = report.rows.iter().filter(|r| r.solver == name).collect();
        for r in &rows {
            let err = r.rms_error.unwrap_or_else(|| panic!("{name}: {:?}", r.error));
            // |x| ~ 1 here: allow 20× the per-step tolerance for accumulation over the run.
            assert!(err < 20.0 * (r.budget * 0.1 + r.budget), "{name} at rtol {}: error {err}", r.budget);
        }
        assert!(
            rows.last().unwrap().rms_error < rows.first().unwrap().rms_error,
            "{name}: tighter tolerance must help"
        );
        assert!(rows.windows(2).all(|w| w[1].nfe >= w[0].nfe), "{name}: NFE must grow as the tolerance tightens");
    }
}

/// No NaN or Inf for any step count ≥ 1, at σ = 0, from α = 0 starts and from a bridge start (σ = α = 0).
#[test]
fn finite_for_every_step_count_and_end() {
    let names: Vec<String> = solver_names().into_iter().map(|(n, _)| n).collect();
    for kind in ["edm", "vp_cosine", "rectified_flow", "rddm", "resfusion", "sbve"] {
        let path = PathSpec::default_of(kind).unwrap().build().unwrap();
        let model = mixture(path.clone(), 2);
        let mu = Tensor::from_slice(&[0.5, -0.5]).view([1, 2]).expand([4, 2], false).contiguous();
        let cond = Conditioning::with_anchor(mu.shallow_clone());
        let start = path.point(path.t_range().1);
        // At α = σ = 0 (bridge start) the state is the anchor itself.
        let x = if start.sigma == 0.0 && start.alpha == 0.0 {
            &mu * start.gamma
        } else {
            &model.sample_data(&SampleSeeds::new(4, 0, 4)) * start.alpha
                + &mu * start.gamma
                + SampleSeeds::new(4, 0, 4).normal(1, &[2], Kind::Double, tch::Device::Cpu) * start.sigma
        };
        let grid =
            GridSpec::new(if start.alpha > 1e-3 { Spacing::Karras { rho: 7.0 } } else { Spacing::UniformT }, End::Zero);
        for name in &names {
            let solver = build_solver(name, &SolverOptions::default()).unwrap();
            let adaptive = solver.info().adaptive;
            for nfe in 1..=20usize {
                let mut seeded = diffuse_core::solvers::SeededNoise::new(SampleSeeds::new(8, 0, 4));
                let noise: &mut dyn diffuse_core::solvers::NoiseSource =
                    if solver.info().stochastic { &mut seeded } else { &mut NoNoise };
                match sample(solver.as_ref(), path.as_ref(), &model, &cond, &x, &grid, Budget::Nfe(nfe), noise, &mut ())
                {
                    Ok(s) => {
                        assert!(bool::try_from(s.x.isfinite().all()).unwrap(), "{kind}/{name}/nfe {nfe}: non-finite");
                        assert!(adaptive || s.nfe <= nfe, "{kind}/{name}: spent {} of {nfe}", s.nfe);
                    }
                    Err(e) => {
                        // Allowed failures say why: too few evaluations, or a solver that needs α > 0 at the start.
                        let msg = e.to_string();
                        assert!(
                            msg.contains("too few")
                                || msg.contains("needs")
                                || msg.contains("α")
                                || msg.contains("does not determine"),
                            "{kind}/{name}/nfe {nfe}: {msg}"
                        );
                    }
                }
            }
        }
    }
}

/// The singlestep order-3 split with 3n − 1 evaluations (a NaN report in diffusers #9007) is finite and accurate.
#[test]
fn dpm_solver_3_with_3n_minus_1_steps() {
    let problem = edm_mixture_problem(&["dpm-solver-3", "dpm++3s"], vec![5, 8, 11, 14, 17, 20]);
    let report = run_problem(&problem, |_, _| {}).unwrap();
    for r in &report.rows {
        let e = r.rms_error.unwrap_or_else(|| panic!("{}: {:?}", r.solver, r.error));
        assert!(e.is_finite() && e < 0.5, "{} at {}: {e}", r.solver, r.nfe);
    }
}

/// Data-form solvers start exactly at α = 0 (rectified flow at t = 1, RDDM, Resfusion's acceleration point) and
/// converge to the exact flow from there.
#[test]
fn data_form_solvers_start_at_alpha_zero() {
    for kind in ["rectified_flow", "rddm", "resfusion"] {
        let path = PathSpec::default_of(kind).unwrap().build().unwrap();
        let model = GaussianMixture::gaussian(vec![0.4, -0.2], 0.5, path.clone()).unwrap();
        let mu = Tensor::from_slice(&[0.5, -0.5]).view([1, 2]).expand([8, 2], false).contiguous();
        let cond = Conditioning::with_anchor(mu.shallow_clone());
        let (lo, hi) = path.t_range();
        let start = path.point(hi);
        assert!(start.alpha.abs() < 1e-9, "{kind}: α(T) = {}", start.alpha);
        let seeds = SampleSeeds::new(5, 0, 8);
        let x = &mu * start.gamma + seeds.normal(1, &[2], Kind::Double, tch::Device::Cpu) * start.sigma;
        // Exact: at α = 0 the flow is x̃/σ = ε fixed; from just below T the closed form applies.
        let end = path.point(lo);
        let near = path.point(hi - 1e-9);
        let exact = model.flow(&x, &near, &end, Some(&mu), 1e-11).unwrap();
        let grid = GridSpec::new(Spacing::UniformT, End::Time(lo));
        let mut prev = f64::INFINITY;
        // The first step from α = 0 is a first-order jump over a large λ range; from 20 steps on the error falls.
        for steps in [20, 40, 80, 160] {
            let got = run("dpm++2m", path.as_ref(), &model, &cond, &x, &grid, steps);
            let e = rms_error(&got, &exact).unwrap();
            assert!(e < prev, "{kind}: error {e} at {steps} steps (previous {prev})");
            prev = e;
        }
        assert!(prev < 1e-2, "{kind}: {prev}");
    }
}

#[test]
fn bad_input_gives_clear_errors() {
    let e = build_solver("dpm++4m", &SolverOptions::default()).err().unwrap().to_string();
    assert!(e.contains("unknown solver") && e.contains("dpm++2m"), "{e}");
    let mut problem = edm_mixture_problem(&["rk4"], vec![3]);
    problem.end = End::Time(0.01);
    let report = run_problem(&problem, |_, _| {}).unwrap();
    assert!(report.rows[0].error.as_deref().unwrap_or("").contains("too few"), "{:?}", report.rows[0]);
    let mut bad = edm_mixture_problem(&["heun"], vec![5]);
    bad.mixture.means[1].pop();
    assert!(bad.validate().unwrap_err().to_string().contains("mixture.means"));
    let mut bad = edm_mixture_problem(&["heun"], vec![0]);
    assert!(bad.validate().unwrap_err().to_string().contains("nfe"));
    bad.nfe = vec![4];
    // An unknown solver cannot be put in a problem: its name is refused when parsed, naming the valid ones.
    let e = "heunn".parse::<diffuse_core::solvers::SolverSpec>().unwrap_err().to_string();
    assert!(e.contains("heunn") && e.contains("heun"), "{e}");
    let path = PathSpec::default_of("vp_linear").unwrap().build().unwrap();
    let model = mixture(path.clone(), 2);
    let x = Tensor::zeros([2, 2], (Kind::Double, tch::Device::Cpu));
    let grid = GridSpec::new(Spacing::Custom { times: vec![0.9, 0.95, 0.1] }, End::Zero);
    let solver = build_solver("ddim", &SolverOptions::default()).unwrap();
    let e = sample(
        solver.as_ref(),
        path.as_ref(),
        &model,
        &Conditioning::none(),
        &x,
        &grid,
        Budget::Steps(3),
        &mut NoNoise,
        &mut (),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("strictly decreasing"), "{e}");
    let _ = Point::DATA;
}

/// A data-prediction model with one trainable scale: x̂0 = w·tanh(x_t) + (1 − w)·μ.
struct Scaled {
    w: Tensor,
}

impl diffuse_core::denoiser::Denoiser for Scaled {
    fn parameterization(&self) -> Parameterization {
        Parameterization::Data
    }
    fn predict(
        &self,
        x: &Tensor,
        _t: f64,
        cond: &Conditioning,
    ) -> diffuse_core::Result<diffuse_core::param::Prediction> {
        let mu = cond.anchor.as_ref().unwrap();
        let out = x.tanh() * &self.w + mu * (1.0 - &self.w);
        Ok(diffuse_core::param::Prediction::Data(out))
    }
}

/// `sample_differentiable` gives the gradient of a loss on the sample with respect to the model's parameters
/// (checked against central differences of plain `sample`), and plain `sample` builds no graph.
#[test]
fn gradients_flow_through_the_sampler() {
    use diffuse_core::solvers::sample_differentiable;
    let path = PathSpec::default_of("ouve").unwrap().build().unwrap();
    let x = Tensor::from_slice(&[0.3, -0.7, 1.1, 0.05, -0.4, 0.9]).view([2, 3]);
    let mu = Tensor::from_slice(&[0.2, -0.1, 0.4]).view([1, 3]).expand([2, 3], false).contiguous();
    let cond = Conditioning::with_anchor(mu);
    let grid = GridSpec::new(Spacing::UniformLambda, End::Zero);
    for name in ["ddim", "dpm++2m", "unipc-bh2"] {
        let solver = build_solver(name, &SolverOptions::default()).unwrap();
        let loss_at = |w: f64| -> f64 {
            let model = Scaled { w: Tensor::from(w) };
            let out = sample(
                solver.as_ref(),
                path.as_ref(),
                &model,
                &cond,
                &x,
                &grid,
                Budget::Steps(6),
                &mut NoNoise,
                &mut (),
            )
            .unwrap()
            .x;
            assert!(!out.requires_grad());
            f64::try_from(out.square().sum(Kind::Double)).unwrap()
        };
        let w = Tensor::from(0.8f64).set_requires_grad(true);
        let model = Scaled { w: w.shallow_clone() };
        let out = sample_differentiable(
            solver.as_ref(),
            path.as_ref(),
            &model,
            &cond,
            &x,
            &grid,
            Budget::Steps(6),
            &mut NoNoise,
            &mut (),
        )
        .unwrap()
        .x;
        out.square().sum(Kind::Double).backward();
        let grad = f64::try_from(w.grad()).unwrap();
        let h = 1e-5;
        let numeric = (loss_at(0.8 + h) - loss_at(0.8 - h)) / (2.0 * h);
        assert!((grad - numeric).abs() < 1e-6 * (1.0 + numeric.abs()), "{name}: autograd {grad}, numeric {numeric}");
        assert!(grad.abs() > 1e-3, "{name}: the loss depends on w");
    }
}
