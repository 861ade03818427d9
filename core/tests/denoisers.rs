//! The Denoiser adapters: TorchScript with a sidecar, classifier-free guidance, dynamic thresholding and the
//! x0-correction hook.

use std::path::PathBuf;
use std::sync::Arc;

use diffuse_core::Parameterization;
use diffuse_core::denoiser::{
    ClassifierFree, Conditioning, Corrected, Denoiser, FnDenoiser, Thresholded, TorchScriptDenoiser,
};
use diffuse_core::exact::GaussianMixture;
use diffuse_core::param::{At, Prediction};
use diffuse_core::path::{NoisePath, VpLinear};
use diffuse_core::seed::SampleSeeds;
use diffuse_core::solvers::{Budget, NoNoise, SolverOptions, build_solver, sample};
use diffuse_core::spacing::{End, GridSpec, Spacing};
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A TorchScript model behind its sidecar reproduces diffuse's exact denoiser and the same sampled trajectory.
#[test]
fn torchscript_model_matches_the_exact_denoiser() {
    let model = TorchScriptDenoiser::load(fixture("tiny_gaussian_eps.pt"), Device::Cpu).unwrap();
    assert_eq!(model.parameterization(), Parameterization::Eps);
    let path = model.path();
    let exact =
        GaussianMixture::gaussian(vec![0.5, -1.0, 2.0], 0.7, path.clone()).unwrap().with_output(Parameterization::Eps);
    let x = SampleSeeds::new(0, 0, 4).normal(0, &[3], Kind::Float, Device::Cpu);
    for t in [0.05, 0.4, 0.9] {
        let cond = Conditioning::none();
        let a = match model.predict(&x, t, &cond).unwrap() {
            Prediction::Eps(e) => e,
            p => panic!("{:?}", p.kind()),
        };
        let b = exact
            .predict(&x.to_kind(Kind::Double), t, &cond)
            .unwrap()
            .into_eps(&At::new(path.as_ref(), t, &x.to_kind(Kind::Double), None))
            .unwrap();
        let d = f64::try_from((a.to_kind(Kind::Double) - b).abs().max()).unwrap();
        assert!(d < 1e-5, "t={t}: {d}");
    }
    let start = path.point(1.0);
    let x = exact.sample_marginal(&start, &SampleSeeds::new(1, 0, 8), None).unwrap();
    let solver = build_solver("dpm++2m", &SolverOptions::default()).unwrap();
    let grid = GridSpec::new(Spacing::UniformLambda, End::Zero);
    let s1 = sample(
        solver.as_ref(),
        path.as_ref(),
        &model,
        &Conditioning::none(),
        &x.to_kind(Kind::Float),
        &grid,
        Budget::Steps(12),
        &mut NoNoise,
        &mut (),
    )
    .unwrap();
    let s2 = sample(
        solver.as_ref(),
        path.as_ref(),
        &exact,
        &Conditioning::none(),
        &x,
        &grid,
        Budget::Steps(12),
        &mut NoNoise,
        &mut (),
    )
    .unwrap();
    let d = f64::try_from((s1.x.to_kind(Kind::Double) - s2.x).abs().max()).unwrap();
    assert!(d < 1e-4, "{d}");
}

#[test]
fn torchscript_sidecar_errors_name_the_file() {
    let dir = tempdir();
    let pt = dir.join("m.pt");
    std::fs::copy(fixture("tiny_gaussian_eps.pt"), &pt).unwrap();
    let e = TorchScriptDenoiser::load(&pt, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("m.json") && e.contains("sidecar"), "{e}");
    let mut sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tiny_gaussian_eps.json")).unwrap()).unwrap();
    sidecar["sample_shape"] = serde_json::json!([5]);
    std::fs::write(dir.join("m.json"), sidecar.to_string()).unwrap();
    let e = TorchScriptDenoiser::load(&pt, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("m.pt") && e.contains("probe"), "{e}");
    sidecar["sample_shape"] = serde_json::json!([3]);
    sidecar["parameterization"] = serde_json::json!("epsilonn");
    std::fs::write(dir.join("m.json"), sidecar.to_string()).unwrap();
    let e = TorchScriptDenoiser::load(&pt, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("m.json") && e.contains("epsilonn"), "{e}");
    std::fs::write(&pt, b"not a model").unwrap();
    sidecar["parameterization"] = serde_json::json!("eps");
    std::fs::write(dir.join("m.json"), sidecar.to_string()).unwrap();
    let e = TorchScriptDenoiser::load(&pt, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("m.pt") && e.contains("TorchScript"), "{e}");
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("diffuse-core-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Guidance is `u + w(c − u)` in any parameterization; the context is dropped for the unconditional branch.
#[test]
fn classifier_free_guidance() {
    let model = FnDenoiser::new(Parameterization::Eps, |x: &Tensor, _t, c: &Conditioning| {
        Ok(match &c.context {
            Some(ctx) => x + ctx,
            None => x * 0.5,
        })
    });
    let x = Tensor::from_slice(&[1.0f64, 2.0]);
    let cond = Conditioning { anchor: None, context: Some(Tensor::from_slice(&[10.0f64, 20.0])) };
    let guided = ClassifierFree { model, scale: 3.0 };
    let Prediction::Eps(out) = guided.predict(&x, 0.5, &cond).unwrap() else { panic!() };
    let (c, u) = (Tensor::from_slice(&[11.0f64, 22.0]), Tensor::from_slice(&[0.5f64, 1.0]));
    let want = &u + (&c - &u) * 3.0;
    assert!(f64::try_from((out - want).abs().max()).unwrap() < 1e-12);
}

/// Dynamic thresholding clips x̂0 per sample to its quantile s ≥ 1 and divides by s; the hook sees every x̂0.
#[test]
fn thresholding_and_correction_hook() {
    let path: Arc<dyn NoisePath> = Arc::new(VpLinear::default());
    let model = FnDenoiser::new(Parameterization::Data, |x: &Tensor, _t, _c: &Conditioning| Ok(x.shallow_clone()));
    let x = Tensor::from_slice(&[0.5f64, -3.0, 2.0, 0.1, 0.2, 0.3, -0.1, 0.05]).view([2, 4]);
    let th = Thresholded { model, path: path.clone(), quantile: 0.75, max: 2.5 };
    let Prediction::Data(out) = th.predict(&x, 0.5, &Conditioning::none()).unwrap() else { panic!() };
    // Sample 0: |x| quantile 0.75 of [0.5, 3, 2, 0.1] (linear) = 2.25 → s = 2.25; sample 1: below 1 → s = 1.
    let s = 2.25;
    let want0 = [0.5 / s, -s / s, 2.0 / s, 0.1 / s];
    let got: Vec<f64> = Vec::try_from(out.get(0)).unwrap();
    for (g, w) in got.iter().zip(want0) {
        assert!((g - w).abs() < 1e-12, "{got:?}");
    }
    assert!(f64::try_from((out.get(1) - x.get(1)).abs().max()).unwrap() < 1e-12);
    let model = FnDenoiser::new(Parameterization::Data, |x: &Tensor, _t, _c: &Conditioning| Ok(x.shallow_clone()));
    let hooked = Corrected { model, path, hook: |x0: &Tensor, _t: f64, _c: &Conditioning| Ok(x0.clamp(-1.0, 1.0)) };
    let Prediction::Data(out) = hooked.predict(&x, 0.5, &Conditioning::none()).unwrap() else { panic!() };
    assert_eq!(f64::try_from(out.abs().max()).unwrap(), 1.0);
}
