//! Sampling on the residual paths with an exact denoiser (a Gaussian prior, core's `exact::GaussianMixture`): every
//! deterministic core solver the restoration models use converges to the exact answer as steps grow, from the
//! restoration start `x_T = (α_T + γ_T)·y + σ_T·ε`; and the MR sampler's first-order step (IR-SDE) is core's `ddim`.

use std::sync::Arc;

use diffuse_core::denoiser::{Conditioning, Denoiser};
use diffuse_core::exact::GaussianMixture;
use diffuse_core::path::{NoisePath, PathSpec, Point};
use diffuse_core::seed::SampleSeeds;
use diffuse_core::spacing::Spacing;
use diffuse_restoration::sample::{SampleOptions, solve, start_state};
use tch::{Kind, Tensor};

const MEAN: [f64; 4] = [0.2, -0.3, 0.5, 0.0];
const STD: f64 = 0.3;

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

/// The exact answer of a grid ending with a jump to x̂0 from t_min: the closed-form Gaussian PF-ODE from the start
/// to t_min (valid from α = 0 too), then the exact posterior mean there.
fn exact(path: &dyn NoisePath, x: &Tensor, y: &Tensor) -> Tensor {
    let (lo, hi) = path.t_range();
    let (s, e) = (path.point(hi), path.point(lo));
    let m = Tensor::from_slice(&MEAN).view([1, 4]);
    let spread = |p: &Point| (p.alpha * p.alpha * STD * STD + p.sigma * p.sigma).sqrt();
    let xt = x - y * s.gamma;
    let xe = (&xt - &m * s.alpha) * (spread(&e) / spread(&s)) + &m * e.alpha;
    let gain = e.alpha * STD * STD / spread(&e).powi(2);
    &m + (xe - &m * e.alpha) * gain
}

fn problem(kind: &str) -> (Arc<dyn NoisePath>, Tensor, Tensor) {
    let path = PathSpec::default_of(kind).unwrap().build().unwrap();
    let y = Tensor::from_slice(&[0.5, -0.1, 0.9, 0.3, 0.0, 0.2, 0.4, -0.6]).view([2, 4]);
    let x = start_state(path.as_ref(), &y, &SampleSeeds::new(4, 0, 2)).unwrap();
    (path, x, y)
}

/// On `rddm`, `resfusion` and `ir_sde`, each solver's error to the exact answer falls as steps grow and is small at
/// 160 steps, for models in the paths' own parameterizations (residual, resnoise, ε).
#[test]
fn every_solver_converges_to_the_exact_answer() {
    let solvers = ["ddim", "rddm", "dpm++2m", "dpm++3m", "unipc-bh2", "dpm++2m+unic", "dpm++2s"];
    for (kind, param) in [
        ("rddm", diffuse_core::Parameterization::Residual),
        ("resfusion", diffuse_core::Parameterization::Resnoise),
        ("ir_sde", diffuse_core::Parameterization::Eps),
    ] {
        let (path, x, y) = problem(kind);
        let model = GaussianMixture::gaussian(MEAN.to_vec(), STD, path.clone()).unwrap().with_output(param);
        let want = exact(path.as_ref(), &x, &y);
        let extra: &[&str] = if kind == "ir_sde" { &["heun", "dpm-solver-2", "euler", "deis-2"] } else { &[] };
        for solver in solvers.iter().chain(extra) {
            let errs: Vec<f64> = [5usize, 10, 20, 40, 160]
                .iter()
                .map(|&steps| {
                    let opts = SampleOptions {
                        solver: solver.to_string(),
                        steps,
                        spacing: Spacing::UniformT,
                        seed: 0,
                        first_index: 0,
                        schedule: None,
                    };
                    match solve(&model, path.as_ref(), &y, &x, &opts) {
                        Ok(out) => max_diff(&out, &want),
                        Err(e) => panic!("{kind}/{solver}/{steps}: {e}"),
                    }
                })
                .collect();
            // First-order solvers gain ~32× from 5 to 160 steps, higher orders far more.
            assert!(errs[4] < 1e-2 && errs[4] < errs[0] / 10.0, "{kind}/{solver}: {errs:?}");
            assert!(errs.windows(2).skip(1).all(|w| w[1] < w[0]), "{kind}/{solver}: error does not fall {errs:?}");
        }
    }
}

/// The MR sampler's first-order data-form step (references.md: `x_t = (σ_t/σ_s)x_s − α_t(e^{−h} − 1)x̂0 +
/// μ(1 − σ_t/σ_s + (σ_t/σ_s)α_s − α_t)`), transcribed here, is core's `ddim` (DPM-Solver++(1) on x − μ) on IR-SDE.
#[test]
fn mr_sampler_first_order_step_is_ddim() {
    let (path, _, y) = problem("ir_sde");
    let model = GaussianMixture::gaussian(MEAN.to_vec(), STD, path.clone()).unwrap();
    let (s, t) = (path.point(0.8), path.point(0.5));
    let x = &y * 0.7 + Tensor::from_slice(&[0.1, -0.2, 0.3, 0.05]).view([1, 4]);
    let cond = Conditioning::with_anchor(y.shallow_clone());
    let x0 = match model.predict(&x, s.t, &cond).unwrap() {
        diffuse_core::Prediction::Data(x0) => x0,
        other => panic!("{other:?}"),
    };
    let h = t.lambda() - s.lambda();
    let r = t.sigma / s.sigma;
    let want = &x * r - &x0 * (t.alpha * ((-h).exp() - 1.0)) + &y * (1.0 - r + r * s.alpha - t.alpha);
    let opts = SampleOptions {
        solver: "ddim".into(),
        steps: 1,
        spacing: Spacing::Custom { times: vec![s.t] },
        seed: 0,
        first_index: 0,
        schedule: None,
    };
    // One interval s → t: a custom two-point grid ending at t (not the data).
    let solver = diffuse_core::solvers::build_solver(&opts.solver, &Default::default()).unwrap();
    let mut grid = diffuse_core::spacing::GridSpec::new(Spacing::UniformT, diffuse_core::spacing::End::Time(t.t));
    grid.t_start = Some(s.t);
    let out = diffuse_core::solvers::sample(
        solver.as_ref(),
        path.as_ref(),
        &model,
        &cond,
        &x,
        &grid,
        diffuse_core::solvers::Budget::Steps(1),
        &mut diffuse_core::solvers::NoNoise,
        &mut (),
    )
    .unwrap();
    assert!(max_diff(&out.x, &want) < 1e-12, "MR step ≠ ddim: {}", max_diff(&out.x, &want));
    let _ = Kind::Double;
}
