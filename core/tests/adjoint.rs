//! AdjointDPM (issue 22): the adjoint of the probability-flow ODE gives the exact gradient of a Gaussian's flow
//! map, and on a small network it matches plain backpropagation through a fine sampler (relative error ≤ 1e-3)
//! for the starting point and every parameter, on a path with an anchor too.

use std::sync::Arc;

use diffuse_core::adjoint::adjoint_gradients;
use diffuse_core::denoiser::{Conditioning, FnDenoiser};
use diffuse_core::exact::GaussianMixture;
use diffuse_core::path::{NoisePath, PathSpec, Point};
use diffuse_core::seed::SampleSeeds;
use diffuse_core::solvers::{Budget, NoNoise, Run, SolverOptions, build_solver, sample_differentiable};
use diffuse_core::spacing::{End, GridSpec, Spacing};
use diffuse_core::{Parameterization, Result};
use tch::{Kind, Tensor};

fn path(kind: &str) -> Arc<dyn NoisePath> {
    PathSpec::default_of(kind).unwrap().build().unwrap()
}

fn ends(path: &dyn NoisePath, lo: f64, hi: f64) -> (Point, Point) {
    (path.point(path.t_of_lambda(lo)), path.point(path.t_of_lambda(hi)))
}

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let num = f64::try_from((a - b).square().sum(Kind::Double).sqrt()).unwrap();
    num / f64::try_from(b.square().sum(Kind::Double).sqrt()).unwrap().max(1e-300)
}

#[test]
fn the_gradient_of_a_gaussians_flow_map_is_exact() {
    let path = path("edm");
    let (mean, std) = (vec![0.7, -0.4, 1.2], 0.5);
    let model = GaussianMixture::gaussian(mean, std, path.clone()).unwrap();
    let (start, end) = ends(path.as_ref(), -3.0, 3.0);
    let x_start = model.sample_marginal(&start, &SampleSeeds::new(3, 0, 5), None).unwrap();
    let x_end = model.flow(&x_start, &start, &end, None, 1e-12).unwrap();
    let w = Tensor::from_slice(&[0.3, -1.1, 0.6]).to_kind(Kind::Double).expand([5, 3], false);
    let cond = Conditioning::none();
    let (mut noise, mut observer) = (NoNoise, ());
    let mut run = Run::new(path.as_ref(), &model, &cond, &mut noise, &mut observer);
    let got = adjoint_gradients(&mut run, &[], &x_end, &w, &start, &end, 80).unwrap();
    // EDM (α = 1): x_t = m + √(c + σ_t²)/√(c + σ_s²)·(x_s − m), so ∂(w·x_end)/∂x_start = w·√(c+σ_e²)/√(c+σ_s²).
    let c = std * std;
    let k = ((c + end.sigma * end.sigma) / (c + start.sigma * start.sigma)).sqrt();
    let exact = &w * k;
    assert!(rel(&got.x_start, &exact) < 1e-6, "{:.2e}", rel(&got.x_start, &exact));
    assert!(rel(&got.reconstructed_start, &x_start) < 1e-6, "{:.2e}", rel(&got.reconstructed_start, &x_start));
    assert_eq!(got.evaluations, 4 * 80);
    assert!(got.params.is_empty());
}

/// A two-layer network `out = W2·tanh(W1·x + b + t·c)` of the given parameterization.
struct Small {
    w1: Tensor,
    b: Tensor,
    c: Tensor,
    w2: Tensor,
}

impl Small {
    fn new(seed: i64) -> Small {
        let draw = |shape: &[i64], scale: f64, k: i64| {
            let g = SampleSeeds::new(seed as u64, k as u64, 1).normal(0, shape, Kind::Double, tch::Device::Cpu);
            (g.squeeze_dim(0) * scale).set_requires_grad(true)
        };
        Small { w1: draw(&[3, 8], 0.6, 0), b: draw(&[8], 0.3, 1), c: draw(&[8], 0.5, 2), w2: draw(&[8, 3], 0.4, 3) }
    }

    fn params(&self) -> Vec<Tensor> {
        [&self.w1, &self.b, &self.c, &self.w2].iter().map(|t| t.shallow_clone()).collect()
    }

    fn forward(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        let h = x.f_matmul(&self.w1)?.f_add(&self.b)?.f_add(&self.c.f_mul_scalar(t)?)?.f_tanh()?;
        Ok(h.f_matmul(&self.w2)?)
    }
}

fn compare_with_backprop(kind: &str, parameterization: Parameterization, anchor: Option<Tensor>) {
    let path = path(kind);
    let net = Small::new(11);
    let model = FnDenoiser::new(parameterization, |x: &Tensor, t, _c: &Conditioning| net.forward(x, t));
    let cond = match &anchor {
        Some(mu) => Conditioning::with_anchor(mu.shallow_clone()),
        None => Conditioning::none(),
    };
    let (start, end) = ends(path.as_ref(), -2.0, 2.5);
    let x_start = SampleSeeds::new(5, 0, 4).normal(0, &[3], Kind::Double, tch::Device::Cpu).set_requires_grad(true);
    let w = SampleSeeds::new(6, 0, 4).normal(0, &[3], Kind::Double, tch::Device::Cpu);

    // Backpropagation through a fine second-order sampler: the reference.
    let heun = build_solver("heun", &SolverOptions::default()).unwrap();
    let grid = GridSpec { t_start: Some(start.t), ..GridSpec::new(Spacing::UniformLambda, End::Time(end.t)) };
    let out = sample_differentiable(
        heun.as_ref(),
        path.as_ref(),
        &model,
        &cond,
        &x_start,
        &grid,
        Budget::Steps(400),
        &mut NoNoise,
        &mut (),
    )
    .unwrap()
    .x;
    // L = w·x + ½|x|²: ∂L/∂x = w + x.
    let loss = (&out * &w).sum(Kind::Double) + out.square().sum(Kind::Double) * 0.5;
    let mut inputs = vec![x_start.shallow_clone()];
    inputs.extend(net.params());
    let reference = Tensor::run_backward(&[loss], &inputs, false, false);

    let x_end = out.detach();
    let grad_end = &w + &x_end;
    let (mut noise, mut observer) = (NoNoise, ());
    let mut run = Run::new(path.as_ref(), &model, &cond, &mut noise, &mut observer);
    let got = adjoint_gradients(&mut run, &net.params(), &x_end, &grad_end, &start, &end, 60).unwrap();
    let mut report = vec![format!("x_start {:.2e}", rel(&got.x_start, &reference[0]))];
    for (name, (g, r)) in ["w1", "b", "c", "w2"].iter().zip(got.params.iter().zip(&reference[1..])) {
        report.push(format!("{name} {:.2e}", rel(g, r)));
    }
    let worst = std::iter::once(rel(&got.x_start, &reference[0]))
        .chain(got.params.iter().zip(&reference[1..]).map(|(g, r)| rel(g, r)))
        .fold(0.0, f64::max);
    assert!(worst < 1e-3, "{kind}: {}", report.join(", "));
    assert!(rel(&got.reconstructed_start, &x_start.detach()) < 1e-3);
    // The parameters' own gradients are left alone.
    assert!(!net.w1.grad().defined() || f64::try_from(net.w1.grad().abs().sum(Kind::Double)).unwrap() == 0.0);
}

#[test]
fn adjoint_gradients_match_backpropagation_on_a_small_network() {
    compare_with_backprop("vp", Parameterization::Eps, None);
}

#[test]
fn adjoint_gradients_match_backpropagation_with_an_anchor() {
    let mu = SampleSeeds::new(9, 0, 4).normal(0, &[3], Kind::Double, tch::Device::Cpu) * 0.5;
    compare_with_backprop("ouve", Parameterization::Data, Some(mu));
}

#[test]
fn bad_requests_are_refused() {
    let path = path("edm");
    let model = GaussianMixture::gaussian(vec![0.0], 1.0, path.clone()).unwrap();
    let cond = Conditioning::none();
    let (mut noise, mut observer) = (NoNoise, ());
    let mut run = Run::new(path.as_ref(), &model, &cond, &mut noise, &mut observer);
    let (start, end) = ends(path.as_ref(), -1.0, 1.0);
    let x = Tensor::zeros([2, 1], (Kind::Double, tch::Device::Cpu));
    assert!(adjoint_gradients(&mut run, &[], &x, &x, &end, &start, 4).is_err(), "reversed ends");
    assert!(adjoint_gradients(&mut run, &[], &x, &x, &start, &end, 0).is_err(), "no steps");
    let wrong = Tensor::zeros([3, 1], (Kind::Double, tch::Device::Cpu));
    assert!(adjoint_gradients(&mut run, &[], &x, &wrong, &start, &end, 4).is_err(), "shape");
}
