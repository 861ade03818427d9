//! Where along the path a data-prediction model is good, and what a sampler's trajectory makes of it.
//!
//! `cargo run --release -p diffuse-audio --example trajectory -- MODEL.safetensors CLEAN_DIR NOISY_DIR [N]`
//! (pairs matched by file name; the first N, default 8). Prints mean SI-SDR of
//! - `true-marg t`: the model's x̂0 from states drawn from the true marginal `x_t = αx0 + γy + σz` (needs x0);
//! - `prior t=1`: x̂0 from the sampler's prior `y + σ(1)z` (the one-step estimate);
//! - `SOLVER from prior/oracle/est, steps`: DPM-Solver++(2M) (or `SOLVER=name`) runs from the prior, from the
//!   true marginal at t_s (oracle) and from the marginal around the one-step estimate at t_s.
//!
//! Used for docs/audio.md ("Why more steps were worse").
use diffuse_audio::sampling::SgmseDenoiser;
use diffuse_audio::stft::{Spectrogram, Stft, Window};
use diffuse_audio::transform::{crop_frames, norm_factor, pad_frames};
use diffuse_audio::{metrics, wav};
use diffuse_core::denoiser::{Conditioning, Denoiser};
use diffuse_core::param::Prediction;
use diffuse_core::solvers::{self, Budget, NoNoise, SolverOptions, StepInfo};
use diffuse_core::spacing::{End, GridSpec, Spacing};
use tch::{Device, Kind, Tensor};

fn main() {
    tch::set_num_threads(2);
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: trajectory MODEL.safetensors CLEAN_DIR NOISY_DIR [N]");
        std::process::exit(2);
    }
    let model = diffuse_audio::ScoreModel::load(std::path::Path::new(&args[1]), Device::Cpu).expect("model");
    let cfg = model.config().clone();
    let stft = Stft::new(cfg.stft.n_fft, cfg.stft.hop, Window::Hann).unwrap();
    let path = cfg.noise_path().unwrap();
    let den = SgmseDenoiser::new(&model);
    let (clean_dir, noisy_dir) = (std::path::PathBuf::from(&args[2]), std::path::PathBuf::from(&args[3]));
    let mut files: Vec<_> = std::fs::read_dir(&clean_dir).expect("clean dir").map(|e| e.unwrap().file_name()).collect();
    files.sort();
    let nfiles: usize = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(8);
    let mut acc: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
    for f in files.iter().take(nfiles) {
        let clean = wav::read_wav(&clean_dir.join(f)).expect("clean file").channels.remove(0);
        let noisy = wav::read_wav(&noisy_dir.join(f)).expect("noisy file").channels.remove(0);
        let norm = norm_factor(&noisy).unwrap();
        let spec = |s: &[f32]| {
            let n: Vec<f32> = s.iter().map(|v| v / norm).collect();
            let mut sp = stft.forward(&n).unwrap();
            cfg.transform.forward(&mut sp);
            let frames = sp.frames;
            (pad_frames(&sp, cfg.pad.multiple, cfg.pad.mode).to_tensor().unsqueeze(0), frames)
        };
        let (y, frames) = spec(&noisy);
        let (x0, _) = spec(&clean);
        let back = |x: &Tensor| -> Vec<f32> {
            let mut s = crop_frames(&Spectrogram::from_tensor(&x.squeeze_dim(0).to_kind(Kind::Float)).unwrap(), frames)
                .unwrap();
            cfg.transform.backward(&mut s);
            stft.inverse(&s, noisy.len()).unwrap().iter().map(|v| v * norm).collect()
        };
        let mut rec = |k: String, x: &Tensor| {
            let v = metrics::si_sdr(&clean, &back(x));
            let e = acc.entry(k).or_insert((0.0, 0));
            e.0 += v;
            e.1 += 1;
        };
        rec("noisy".into(), &y);
        tch::manual_seed(1);
        let z = Tensor::randn(y.size(), (Kind::Float, Device::Cpu)) * std::f64::consts::FRAC_1_SQRT_2;
        let cond = Conditioning::with_anchor(y.shallow_clone());
        let marg = |x0: &Tensor, t: f64| -> Tensor { x0 * path.alpha(t) + &y * path.gamma(t) + &z * path.sigma(t) };
        let pred = |x: &Tensor, t: f64| -> Tensor {
            match den.predict(x, t, &cond).unwrap() {
                Prediction::Data(d) => d,
                _ => panic!(),
            }
        };
        {
            for &t in &[1.0, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1, 0.05] {
                rec(format!("true-marg t={t:.2}"), &pred(&marg(&x0, t), t));
            }
            // The sampler's prior y + σ(1)z: the one-step estimate.
            let prior = &y + &z * path.sigma(1.0);
            rec("prior t=1".into(), &pred(&prior, 1.0));
        }
        {
            let solver_name = std::env::var("SOLVER").unwrap_or("dpm++2m".into());
            let spacing = match std::env::var("SPACING").as_deref() {
                Ok("t") => Spacing::UniformT,
                _ => Spacing::UniformLambda,
            };
            let solver = solvers::build_solver(&solver_name, &SolverOptions::default()).unwrap();
            let xhat1 = pred(&(&y + &z * path.sigma(1.0)), 1.0);
            rec("1-step".into(), &xhat1);
            for &steps in &[2usize, 4, 10] {
                for &ts in &[1.0, 0.8, 0.6, 0.4] {
                    for (start_name, start) in
                        [("prior", &y + &z * path.sigma(ts)), ("oracle", marg(&x0, ts)), ("est", marg(&xhat1, ts))]
                    {
                        if start_name == "prior" && ts < 1.0 {
                            continue;
                        }
                        let mut grid = GridSpec::new(spacing.clone(), End::Zero);
                        grid.t_start = Some(ts);
                        let mut obs = |_: &StepInfo<'_>| -> diffuse_core::Result<()> { Ok(()) };
                        let out = solvers::sample(
                            solver.as_ref(),
                            path.as_ref(),
                            &den,
                            &cond,
                            &start,
                            &grid,
                            Budget::Steps(steps),
                            &mut NoNoise,
                            &mut obs,
                        )
                        .unwrap();
                        rec(format!("{start_name} ts={ts:.1} steps={steps} nfe={}", out.nfe), &out.x);
                    }
                }
            }
        }
        eprint!(".");
    }
    eprintln!();
    let base = acc["noisy"].0 / acc["noisy"].1 as f64;
    for (k, (s, n)) in &acc {
        println!("{k:40} {:7.2} dB  Δ {:+.2}", s / *n as f64, s / *n as f64 - base);
    }
}
