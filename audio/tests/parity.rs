//! Parity with libtorch's own STFT and with fixtures made by the reference implementation (sp-uhh/sgmse) through
//! tools/make_audio_fixtures.py; see tests/fixtures/audio/README.md.

use std::collections::HashMap;
use std::path::PathBuf;

use diffuse_audio::ScoreModel;
use diffuse_audio::config::ModelConfig;
use diffuse_audio::stft::{Spectrogram, Stft, Window};
use diffuse_audio::transform::{PadMode, SpecTransform, pad_frames};
use diffuse_core::path::PathSpec;
use tch::{Device, Kind, Tensor};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/audio")
}

fn load(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture_dir().join(name)).unwrap().into_iter().collect()
}

fn vec_f32(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to_kind(Kind::Float).contiguous().view([-1])).unwrap()
}

/// max |a − b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let diff = a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max);
    let scale = b.iter().map(|y| f64::from(y.abs())).fold(0.0, f64::max);
    diff / scale.max(1e-30)
}

fn rel_err_t(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    rel_err(&vec_f32(a), &vec_f32(b))
}

fn random_signal(len: usize, seed: i64) -> Vec<f32> {
    tch::manual_seed(seed);
    vec_f32(&Tensor::randn([len as i64], (Kind::Float, Device::Cpu)))
}

/// libtorch's `stft`, called exactly as sgmse calls `torch.stft`, as `[2, F, T]`.
fn torch_stft(x: &[f32], n_fft: i64, hop: i64, window: &Tensor) -> Tensor {
    // center=True is reflect padding by n_fft/2 followed by the uncentred transform; tch's stft_center insists
    // on passing align_to_window, which libtorch refuses together with center, so the two steps are explicit.
    let padded =
        Tensor::from_slice(x).view([1, 1, -1]).f_pad([n_fft / 2, n_fft / 2], "reflect", None).unwrap().view([-1]);
    let z = padded.f_stft(n_fft, hop, n_fft, Some(window), false, true, true, false).unwrap();
    Tensor::stack(&[z.real(), z.imag()], 0)
}

fn torch_window(n: i64, w: Window) -> Tensor {
    let hann = Tensor::hann_window_periodic(n, true, (Kind::Float, Device::Cpu));
    if w == Window::SqrtHann { hann.sqrt() } else { hann }
}

#[test]
fn stft_matches_libtorch_on_random_signals() {
    for (n_fft, hop) in [(510usize, 128usize), (1534, 384)] {
        for window in [Window::Hann, Window::SqrtHann] {
            let stft = Stft::new(n_fft, hop, window).unwrap();
            let w = torch_window(n_fft as i64, window);
            for (k, len) in [n_fft / 2 + 1, 5000, 12345].into_iter().enumerate() {
                let x = random_signal(len, k as i64 + 10);
                let ours = stft.forward(&x).unwrap();
                let theirs = torch_stft(&x, n_fft as i64, hop as i64, &w);
                let err = rel_err(&ours.data, &vec_f32(&theirs));
                assert!(err < 1e-5, "stft {n_fft}/{hop} {window:?} len {len}: relative error {err}");

                // torch.istft of an arbitrary (inconsistent) spectrogram: the overlap-add itself must agree.
                tch::manual_seed(k as i64 + 100);
                let spec = Tensor::randn(ours.shape(), (Kind::Float, Device::Cpu));
                let complex = Tensor::complex(&spec.get(0), &spec.get(1));
                let theirs = complex
                    .f_istft(n_fft as i64, hop as i64, n_fft as i64, Some(&w), true, false, true, len as i64, false)
                    .unwrap();
                let ours = stft.inverse(&Spectrogram::from_tensor(&spec).unwrap(), len).unwrap();
                let err = rel_err(&ours, &vec_f32(&theirs));
                assert!(err < 1e-5, "istft {n_fft}/{hop} {window:?} len {len}: relative error {err}");
            }
        }
    }
}

#[test]
fn stft_matches_the_reference_data_module() {
    let f = load("stft.safetensors");
    for (name, n_fft, hop, window) in
        [("h510", 510, 128, Window::Hann), ("s510", 510, 128, Window::SqrtHann), ("h1534", 1534, 384, Window::Hann)]
    {
        let stft = Stft::new(n_fft, hop, window).unwrap();
        let x = vec_f32(&f[&format!("{name}.signal")]);
        let ours = stft.forward(&x).unwrap();
        let err = rel_err(&ours.data, &vec_f32(&f[&format!("{name}.stft")]));
        assert!(err < 1e-5, "{name}: stft relative error {err}");
        let spec = Spectrogram::from_tensor(&f[&format!("{name}.random_spec")]).unwrap();
        let ours = stft.inverse(&spec, x.len()).unwrap();
        let err = rel_err(&ours, &vec_f32(&f[&format!("{name}.istft_random_spec")]));
        assert!(err < 1e-5, "{name}: istft relative error {err}");
    }
}

#[test]
fn transform_normalisation_and_padding_match_the_reference() {
    let f = load("transform.safetensors");
    let wave = vec_f32(&f["wave"]);
    let norm = diffuse_audio::transform::norm_factor(&wave).unwrap();
    assert_eq!(norm, vec_f32(&f["norm"])[0]);
    let normalised: Vec<f32> = wave.iter().map(|s| s / norm).collect();
    let stft = Stft::new(510, 128, Window::Hann).unwrap();
    let spec = stft.forward(&normalised).unwrap();
    assert!(rel_err(&spec.data, &vec_f32(&f["stft"])) < 1e-5);

    let mut fwd = spec.clone();
    SpecTransform::SGMSE_16K.forward(&mut fwd);
    let err = rel_err(&fwd.data, &vec_f32(&f["fwd_16k"]));
    assert!(err < 1e-5, "α 0.5 β 0.15: {err}");
    let mut fwd48 = spec.clone();
    SpecTransform::Exponent { alpha: 0.667, beta: 0.065 }.forward(&mut fwd48);
    let err = rel_err(&fwd48.data, &vec_f32(&f["fwd_48k_params"]));
    assert!(err < 1e-5, "α 0.667 β 0.065: {err}");

    for (mode, key) in [(PadMode::Zero, "padded_zero"), (PadMode::Reflection, "padded_reflection")] {
        let padded = pad_frames(&fwd, 64, mode);
        assert_eq!(padded.shape(), <[i64; 3]>::try_from(f[key].size()).unwrap());
        let err = rel_err(&padded.data, &vec_f32(&f[key]));
        assert!(err < 1e-5, "{mode:?}: {err}");
    }
}

fn tiny_model() -> ScoreModel {
    ScoreModel::load(&fixture_dir().join("tiny_ncsnpp.pt"), Device::Cpu).unwrap()
}

#[test]
fn one_model_call_matches_the_reference_score_model() {
    let f = load("model_call.safetensors");
    let model = tiny_model();
    assert_eq!(
        model.config().path,
        PathSpec::Ouve { theta: 1.5, sigma_min: 0.05, sigma_max: 0.5, t_eps: 0.03, t_max: 1.0 }
    );
    let score = model.score(&f["x_t"], &f["y"], &f["t"]).unwrap();
    let err = rel_err_t(&score, &f["score"]);
    assert!(err < 1e-4, "score relative error {err}");
    // The output depends on its inputs (a constant network would pass a parity test trivially).
    let other = model.score(&f["y"], &f["y"], &f["t"]).unwrap();
    assert!(rel_err_t(&other, &f["score"]) > 0.1, "the score hardly depends on x_t");
}

/// σ(t) of the OUVE SDE (sgmse `OUVESDE._std`), for the executable specification below.
fn ouve_sigma(t: f64, theta: f64, smin: f64, smax: f64) -> f64 {
    let l = (smax / smin).ln();
    (smin * smin * ((smax / smin).powf(2.0 * t) - (-2.0 * theta * t).exp()) * l / (theta + l)).sqrt()
}

/// g(t) of the OUVE SDE (sgmse `OUVESDE.sde`).
fn ouve_g(t: f64, smin: f64, smax: f64) -> f64 {
    smin * (smax / smin).powf(t) * (2.0 * (smax / smin).ln()).sqrt()
}

#[test]
fn ouve_check_values() {
    assert!((ouve_sigma(1.0, 1.5, 0.05, 0.5) - 0.388983).abs() < 5e-7);
    assert!((ouve_sigma(0.03, 1.5, 0.05, 0.5) - 0.018830).abs() < 5e-7);
    assert!((ouve_sigma(1.0, 2.0, 0.1, 1.0) - 0.73148).abs() < 5e-6);
}

/// A denoiser that records every network input (x_t and t) of the wrapped one.
struct Recording<'a> {
    inner: diffuse_audio::sampling::SgmseDenoiser<'a>,
    calls: std::cell::RefCell<Vec<(Tensor, f64)>>,
}

impl diffuse_core::Denoiser for Recording<'_> {
    fn parameterization(&self) -> diffuse_core::Parameterization {
        self.inner.parameterization()
    }
    fn predict(
        &self,
        x: &Tensor,
        t: f64,
        cond: &diffuse_core::Conditioning,
    ) -> diffuse_core::Result<diffuse_core::Prediction> {
        self.calls.borrow_mut().push((x.copy(), t));
        self.inner.predict(x, t, cond)
    }
}

/// The reference PC sampler (reverse-diffusion predictor + annealed Langevin corrector, N 10, snr 0.5) is
/// diffuse-core's predictor–corrector sampler: replaying the reference's recorded noise (prior x_T = y + σ(1)·z
/// from draw 0, then the corrector and predictor draws of each step in order), every network input and the
/// returned mean agree with the reference run.
#[test]
fn core_pc_sampler_reproduces_the_reference_pc_sampler() {
    use diffuse_audio::sampling::{CoreSampler, SgmseDenoiser};
    use diffuse_core::solvers::FixedNoise;
    let f = load("pc_sampler.safetensors");
    let calls = load("pc_calls.safetensors");
    let model = tiny_model();
    let pc = CoreSampler::pc(10, 0.5, 1, model.config()).unwrap();
    let y = f["y"].shallow_clone();
    let noise = &f["noise"];
    // The recorded draws are already the reference's complex noise (variance ½ per part): replayed as they are.
    let x_t = pc.prior_with(&y, &noise.get(0)).unwrap();
    let mut replay = FixedNoise::new((1..noise.size()[0]).map(|i| noise.get(i)).collect());
    let recording = Recording { inner: SgmseDenoiser::new(&model), calls: Default::default() };
    let out = pc.solve(&recording, &y, &x_t, &mut replay, &mut ()).unwrap();
    assert_eq!(out.nfe, 20, "10 steps × (corrector + predictor)");
    let t_calls = vec_f32(&f["t_calls"]);
    let seen = recording.calls.borrow();
    assert_eq!(seen.len(), 20);
    for (k, (x, t)) in seen.iter().enumerate() {
        assert!((f64::from(t_calls[k]) - t).abs() < 1e-6, "time of call {k}: {t} vs {}", t_calls[k]);
        let err = rel_err_t(x, &calls["x"].get(k as i64));
        assert!(err < 1e-4, "network input of call {k} differs by {err}");
    }
    let err = rel_err_t(&out.x, &f["result"]);
    assert!(err < 1e-4, "PC result relative error {err}");
    // The noise matters: other draws give another result.
    let mut other = FixedNoise::new((1..noise.size()[0]).map(|i| noise.get(i).flip([3])).collect());
    let out2 = pc.solve(&SgmseDenoiser::new(&model), &y, &x_t, &mut other, &mut ()).unwrap();
    assert!(rel_err_t(&out2.x, &f["result"]) > 1e-2);
}

#[test]
fn probability_flow_drift_matches_the_reference() {
    // The PF-ODE drift θ(y − x) − ½g(t)²·score at (x_T, t = 0.5), which core's derived SDE form must give.
    let f = load("ode_sampler.safetensors");
    let model = tiny_model();
    let (y, x) = (f["y"].shallow_clone(), f["x_T"].shallow_clone());
    let t = 0.5;
    let score = model.score(&x, &y, &Tensor::from_slice(&[t as f32])).unwrap();
    let g = ouve_g(t, 0.05, 0.5);
    let drift = (&y - &x) * 1.5 - score * (0.5 * g * g);
    let err = rel_err_t(&drift, &f["pf_drift_at_x_T_t0.5"]);
    assert!(err < 1e-4, "drift relative error {err}");
    // x_T = y + σ(1)·z with the recorded complex prior noise (variance ½ per part).
    let x_t = &y + &f["prior_noise"] * ouve_sigma(1.0, 1.5, 0.05, 0.5);
    assert!(rel_err_t(&x_t, &x) < 1e-6);
    // The reference ODE results at the default and at a tight tolerance differ by the default's global error
    // (2e-3 relative for this random network): parity of a solver is judged against the tight one.
    let loose_vs_tight = rel_err_t(&f["result_rtol1e-5"], &f["result_rtol1e-8"]);
    assert!(loose_vs_tight > 0.0 && loose_vs_tight < 1e-2, "{loose_vs_tight}");
}

/// Core's solvers on core's OUVE path with the model as a core denoiser reproduce the reference's
/// probability-flow ODE solution from the same x_T.
#[test]
fn core_ode_solvers_reproduce_the_reference_ode_sampler() {
    use diffuse_audio::sampling::SgmseDenoiser;
    use diffuse_core::solvers::{self, Budget, NoNoise, SolverOptions};
    use diffuse_core::spacing::{End, GridSpec, Spacing};
    let f = load("ode_sampler.safetensors");
    let model = tiny_model();
    let path = model.config().noise_path().unwrap();
    let denoiser = SgmseDenoiser::new(&model);
    let cond = diffuse_core::Conditioning::with_anchor(f["y"].shallow_clone());
    let grid = GridSpec::new(Spacing::UniformT, End::Time(0.03));
    let opts = SolverOptions { rtol: 1e-7, atol: 1e-7, ..SolverOptions::default() };
    let run = |name: &str, budget: Budget| {
        let solver = solvers::build_solver(name, &opts).unwrap();
        solvers::sample(
            solver.as_ref(),
            path.as_ref(),
            &denoiser,
            &cond,
            &f["x_T"],
            &grid,
            budget,
            &mut NoNoise,
            &mut (),
        )
        .unwrap()
    };
    let tight = &f["result_rtol1e-8"];
    let adaptive = run("dopri5", Budget::Steps(1));
    let err = rel_err_t(&adaptive.x, tight);
    assert!(err < 1e-4, "dopri5 (rtol 1e-7, {} NFE) vs reference RK45 (rtol 1e-8): {err}", adaptive.nfe);
    let fixed = run("dpm++2m", Budget::Steps(200));
    let err = rel_err_t(&fixed.x, tight);
    assert!(err < 1e-3, "dpm++2m, 200 steps: {err}");
}

#[test]
fn mismatched_sidecars_are_rejected_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("m.pt");
    std::fs::copy(fixture_dir().join("tiny_ncsnpp.pt"), &module).unwrap();
    let sidecar = diffuse_audio::config::sidecar_path(&module);

    // A 48 kHz STFT: the tensors no longer fit, either the embedded copy or the probe call says so.
    let mut c = ModelConfig::read(&fixture_dir().join("tiny_ncsnpp.json")).unwrap();
    c.stft.n_fft = 1534;
    c.stft.hop = 384;
    c.write(&sidecar).unwrap();
    let err = ScoreModel::load(&module, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("m.pt") && err.contains("does not match"), "{err}");

    // Different SDE parameters cannot be seen in the tensors; the embedded sidecar catches them.
    let mut c = ModelConfig::read(&fixture_dir().join("tiny_ncsnpp.json")).unwrap();
    c.path = PathSpec::Ouve { theta: 2.0, sigma_min: 0.1, sigma_max: 1.0, t_eps: 0.03, t_max: 1.0 };
    c.write(&sidecar).unwrap();
    let err = ScoreModel::load(&module, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("m.pt") && err.contains("path"), "{err}");

    // The same mismatch without the embedded copy (a module written by other tools): the probe call fails.
    let mut c = ModelConfig::read(&fixture_dir().join("tiny_ncsnpp.json")).unwrap();
    c.stft.n_fft = 1534;
    let err = ScoreModel::load_with_config(&module, c, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("m.pt"), "{err}");

    std::fs::remove_file(&sidecar).unwrap();
    let err = ScoreModel::load(&module, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("m.json") && err.contains("sidecar is missing"), "{err}");

    std::fs::write(dir.path().join("junk.pt"), b"not a torchscript archive").unwrap();
    ModelConfig::read(&fixture_dir().join("tiny_ncsnpp.json")).unwrap().write(&dir.path().join("junk.json")).unwrap();
    let err = ScoreModel::load(&dir.path().join("junk.pt"), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("junk.pt") && err.contains("not a loadable TorchScript module"), "{err}");
}
