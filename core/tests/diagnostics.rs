//! Score diagnostics (issue 22): the exact score of a Gaussian mixture satisfies the score Fokker–Planck
//! equation (relative residual about 2e-7, the central difference's error) and has a symmetric Jacobian, on a
//! plain and on an anchored path; a score with the wrong time (residual 5e-2), the wrong noise variance (2e-2) or
//! a rotational part is caught, and Hutchinson's estimate tells a true score from a wrong
//! one by more than its own noise floor.

use std::sync::Arc;

use diffuse_core::denoiser::{Conditioning, Denoiser, FnDenoiser};
use diffuse_core::diagnostics::{DiagnosticSettings, Divergence, ScoreDiagnostics, score_diagnostics};
use diffuse_core::exact::GaussianMixture;
use diffuse_core::path::{NoisePath, PathSpec};
use diffuse_core::seed::SampleSeeds;
use diffuse_core::solvers::{NoNoise, Run};
use diffuse_core::{Parameterization, Prediction};
use tch::Tensor;

fn path(kind: &str) -> Arc<dyn NoisePath> {
    PathSpec::default_of(kind).unwrap().build().unwrap()
}

fn mixture(path: &Arc<dyn NoisePath>, dim: usize) -> GaussianMixture {
    let a: Vec<f64> = (0..dim).map(|d| 0.8 - 0.3 * d as f64).collect();
    let b: Vec<f64> = (0..dim).map(|d| -0.6 + 0.25 * d as f64).collect();
    GaussianMixture::new(vec![0.35, 0.65], vec![a, b], vec![0.3, 0.5], path.clone()).unwrap()
}

fn measure(
    model: &dyn Denoiser,
    path: &Arc<dyn NoisePath>,
    truth: &GaussianMixture,
    anchor: Option<Tensor>,
    t: f64,
    batch: usize,
    settings: &DiagnosticSettings,
) -> ScoreDiagnostics {
    let cond = anchor.as_ref().map(Tensor::shallow_clone).map_or_else(Conditioning::none, Conditioning::with_anchor);
    let p = path.point(t);
    let x = truth.sample_marginal(&p, &SampleSeeds::new(5, 0, batch), anchor.as_ref()).unwrap();
    let (mut noise, mut observer) = (NoNoise, ());
    let mut run = Run::new(path.as_ref(), model, &cond, &mut noise, &mut observer);
    score_diagnostics(&mut run, &x, &p, settings).unwrap()
}

fn exact(dt: f64) -> DiagnosticSettings {
    DiagnosticSettings { divergence: Divergence::Exact, asymmetry_probes: 4, dt, ..DiagnosticSettings::default() }
}

#[test]
fn the_exact_score_satisfies_the_fokker_planck_equation_and_is_conservative() {
    for kind in ["vp", "ouve"] {
        let path = path(kind);
        let truth = mixture(&path, 3);
        // OUVE mean-reverts to an anchor: give it one.
        let anchor = (kind == "ouve").then(|| Tensor::from_slice(&[0.2, -0.1, 0.4]).view([1, 3]).repeat([16, 1]));
        for t in [0.2, 0.5, 0.8] {
            let d = measure(&truth, &path, &truth, anchor.as_ref().map(Tensor::shallow_clone), t, 16, &exact(1e-4));
            assert!(d.relative_residual() < 1e-5, "{kind} t={t}: residual {:.2e}", d.relative_residual());
            assert!(d.asymmetry() < 1e-10, "{kind} t={t}: asymmetry {:.2e}", d.asymmetry());
            assert!(d.denoiser_asymmetry() < 1e-9, "{kind} t={t}: {:.2e}", d.denoiser_asymmetry());
            assert_eq!(d.residual_noise, 0.0);
            assert!(d.time_derivative > 0.0 && d.jacobian > 0.0);
        }
    }
}

#[test]
fn a_score_of_the_wrong_time_or_noise_variance_leaves_a_residual() {
    let path = path("vp");
    let truth = mixture(&path, 3);
    // The right denoiser evaluated 10 % later in time: a valid score field of another marginal at each t.
    let late = FnDenoiser::new(Parameterization::Data, |x: &Tensor, t: f64, c: &Conditioning| {
        match truth.predict(x, (1.1 * t).min(1.0), c)? {
            Prediction::Data(x0) => Ok(x0),
            _ => unreachable!("the mixture predicts data"),
        }
    });
    let d = measure(&late, &path, &truth, None, 0.5, 16, &exact(1e-4));
    assert!(d.relative_residual() > 5e-3, "{:.3e}", d.relative_residual());
    assert!(d.asymmetry() < 1e-10, "still conservative: {:.2e}", d.asymmetry());

    // The exact score read with the wrong noise variance (as if the noise were complex).
    let half = DiagnosticSettings { noise_variance: 0.5, ..exact(1e-4) };
    let d = measure(&truth, &path, &truth, None, 0.5, 16, &half);
    assert!(d.relative_residual() > 5e-3, "{:.3e}", d.relative_residual());
}

#[test]
fn a_rotational_part_is_measured_as_asymmetry() {
    let path = path("vp");
    let truth = mixture(&path, 2);
    // x̂0 + 0.3·A·x with A the quarter turn: not the gradient of anything.
    let rotated = FnDenoiser::new(Parameterization::Data, |x: &Tensor, t: f64, c: &Conditioning| {
        let Prediction::Data(x0) = truth.predict(x, t, c)? else { unreachable!("the mixture predicts data") };
        let turn = Tensor::from_slice(&[0.0, 1.0, -1.0, 0.0]).view([2, 2]).to_kind(x.kind());
        Ok(x0 + x.matmul(&turn) * 0.3)
    });
    let d = measure(&rotated, &path, &truth, None, 0.5, 16, &exact(1e-4));
    assert!(d.denoiser_asymmetry() > 0.1, "{:.3e}", d.denoiser_asymmetry());
    assert!(d.asymmetry() > 0.01, "{:.3e}", d.asymmetry());
    assert!(d.relative_residual() > 0.01, "{:.3e}", d.relative_residual());
}

#[test]
fn hutchinsons_estimate_separates_a_true_score_from_a_wrong_one() {
    let path = path("vp");
    let truth = mixture(&path, 8);
    let settings =
        DiagnosticSettings { divergence: Divergence::Hutchinson(8), dt: 1e-4, ..DiagnosticSettings::default() };
    let d = measure(&truth, &path, &truth, None, 0.4, 64, &settings);
    let (r, floor) = (d.relative_residual(), d.relative_residual_noise());
    assert!(floor > 0.0 && r < 4.0 * floor, "true score: residual {r:.3e}, noise floor {floor:.3e}");

    let late = FnDenoiser::new(Parameterization::Data, |x: &Tensor, t: f64, c: &Conditioning| {
        let Prediction::Data(x0) = truth.predict(x, (1.6 * t).min(1.0), c)? else { unreachable!() };
        Ok(x0)
    });
    let d = measure(&late, &path, &truth, None, 0.4, 64, &settings);
    let (r, floor) = (d.relative_residual(), d.relative_residual_noise());
    assert!(r > 4.0 * floor, "wrong score: residual {r:.3e}, noise floor {floor:.3e}");
}
