//! Training (issue 6): determinism with a seed, exact resumption, and the bad-input cases (empty and unreadable
//! folders, short clips, other sample rates, a non-finite loss). A tiny network on short synthetic clips.

use std::path::{Path, PathBuf};

use diffuse_audio::net::NetConfig;
use diffuse_audio::train::{TrainEvent, TrainOptions, train};
use diffuse_audio::wav::{Audio, SampleFormat, write_wav};

fn tone_clip(seconds: f64, rate: u32, f0: f64, seed: u64) -> Vec<f32> {
    let n = (seconds * f64::from(rate)) as usize;
    let mut s = seed;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let env = (std::f64::consts::PI * 3.0 * t).sin().abs();
            let v: f64 = (1..6).map(|k| (2.0 * std::f64::consts::PI * f0 * k as f64 * t).sin() / k as f64).sum();
            (0.3 * env * v + 0.001 * ((s >> 40) as f64 / (1u64 << 24) as f64 - 0.5)) as f32
        })
        .collect()
}

fn noise_clip(seconds: f64, rate: u32, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..(seconds * f64::from(rate)) as usize)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f64 / (1u64 << 24) as f64 - 0.5) as f32 * 0.5
        })
        .collect()
}

fn write(path: &Path, rate: u32, x: Vec<f32>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_wav(
        path,
        &Audio { sample_rate: rate, channels: vec![x], format: SampleFormat::Int(16) },
        SampleFormat::Int(16),
    )
    .unwrap();
}

/// A small corpus: four clean clips (one shorter than the crop, one at 8 kHz) and two noise clips.
fn corpus(dir: &Path) -> (PathBuf, PathBuf) {
    let (clean, noise) = (dir.join("clean"), dir.join("noise"));
    write(&clean.join("a.wav"), 16000, tone_clip(0.5, 16000, 140.0, 1));
    write(&clean.join("sub/b.wav"), 16000, tone_clip(0.4, 16000, 210.0, 2));
    write(&clean.join("short.wav"), 16000, tone_clip(0.05, 16000, 180.0, 3));
    write(&clean.join("c8k.wav"), 8000, tone_clip(0.5, 8000, 120.0, 4));
    write(&noise.join("n1.wav"), 16000, noise_clip(0.7, 16000, 5));
    write(&noise.join("n2.wav"), 16000, noise_clip(0.1, 16000, 6));
    (clean, noise)
}

fn options(clean: &Path, noise: &Path, out: &Path, steps: u64) -> TrainOptions {
    let mut o = TrainOptions::new(vec![clean.to_path_buf()], vec![noise.to_path_buf()], out.to_path_buf());
    o.model.network = Some(NetConfig::tiny());
    o.crop_frames = 16;
    o.batch = 2;
    o.steps = steps;
    o.checkpoint_every = 2;
    o.seed = 11;
    o
}

/// Training draws its noise from libtorch's global generator, so runs in one process take turns (the test harness
/// runs tests on parallel threads).
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(o: &TrainOptions) -> (diffuse_audio::Result<diffuse_audio::train::TrainSummary>, Vec<String>) {
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let mut notes = Vec::new();
    let r = train(o, &mut |e| {
        if let TrainEvent::Data { notes: n, .. } = e {
            notes = n
        }
    });
    (r, notes)
}

/// A 2-step data-prediction model trained in `dir/base`, to start fine-tuning runs from.
fn data_model(dir: &Path, clean: &Path, noise: &Path) -> PathBuf {
    let base = dir.join("base");
    let mut o = options(clean, noise, &base, 2);
    o.objective = diffuse_audio::train::Objective::Data;
    run(&o).0.unwrap();
    base.join("model.safetensors")
}

/// The two models' networks agree (to 1e-4) on a fixed input: `after` started from `before`'s weights.
fn assert_same_network(before: &diffuse_audio::ScoreModel, after: &diffuse_audio::ScoreModel, what: &str) {
    tch::manual_seed(3);
    let x = tch::Tensor::randn([1, 2, 256, 16], (tch::Kind::Float, tch::Device::Cpu)) * 0.1;
    let y = tch::Tensor::randn([1, 2, 256, 16], (tch::Kind::Float, tch::Device::Cpu)) * 0.1;
    let t = tch::Tensor::from_slice(&[0.5f32]);
    let a = before.forward(&x, &y, &t).unwrap();
    let b = after.forward(&x, &y, &t).unwrap();
    let diff = f64::try_from((&a - &b).abs().max()).unwrap();
    assert!(diff < 1e-4, "the {what} run did not start from --init: {diff}");
}

#[test]
fn the_same_seed_gives_the_same_model_and_resuming_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, noise) = corpus(dir.path());
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));

    let (r, notes) = run(&options(&clean, &noise, &a, 4));
    let summary = r.unwrap();
    assert_eq!((summary.steps_run, summary.step), (4, 4));
    // Short clips and other rates are explained, not refused.
    assert!(notes.iter().any(|n| n.contains("8000 Hz resampled")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("shorter than") && n.contains("zero-padded")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("noise clip(s) shorter than the crop are repeated")), "{notes:?}");

    // Two steps, then --resume to four: the same weights as four steps in one go.
    run(&options(&clean, &noise, &b, 2)).0.unwrap();
    let mut resume = options(&clean, &noise, &b, 4);
    resume.resume = true;
    let s = run(&resume).0.unwrap();
    assert_eq!((s.steps_run, s.step), (2, 4));
    let model_a = std::fs::read(a.join("model.safetensors")).unwrap();
    assert_eq!(model_a, std::fs::read(b.join("model.safetensors")).unwrap(), "resumed run differs");
    // The checkpoints hold the same tensors (weights, Adam moments, EMA) and metadata, apart from the wall time.
    let load = |dir: &Path| {
        let path = dir.join("checkpoint.safetensors");
        let (tensors, mut meta) = diffuse_audio::weights::from_bytes(&std::fs::read(&path).unwrap(), &path).unwrap();
        meta.remove("seconds");
        (tensors, meta)
    };
    let ((ta, ma), (tb, mb)) = (load(&a), load(&b));
    assert_eq!(ma, mb);
    assert_eq!(ta.len(), tb.len());
    for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        assert!(xa.equal(xb), "{na} differs after resuming");
    }

    // Resuming with options that change the draws is refused, naming them, and leaves the run as it was.
    let before = std::fs::read(b.join("checkpoint.safetensors")).unwrap();
    type Change = fn(&mut TrainOptions);
    let changes: [(Change, &str); 3] = [
        (|o| o.spectral_shaping = true, "\"spectral_shaping\":true"),
        (|o| o.snr_db = (0.0, 5.0), "\"snr_db\":[0.0,5.0]"),
        (|o| o.batch = 3, "batch: checkpoint 2, now 3"),
    ];
    for (change, named) in changes {
        let mut changed = options(&clean, &noise, &b, 6);
        changed.resume = true;
        change(&mut changed);
        let err = run(&changed).0.unwrap_err().to_string();
        assert!(err.contains("checkpoint.safetensors") && err.contains("--init") && err.contains(named), "{err}");
    }
    assert_eq!(before, std::fs::read(b.join("checkpoint.safetensors")).unwrap());

    // Another seed, another model; the model loads through the same adapter as TorchScript ones.
    let mut other = options(&clean, &noise, &c, 4);
    other.seed = 12;
    run(&other).0.unwrap();
    assert_ne!(model_a, std::fs::read(c.join("model.safetensors")).unwrap());
    let model = diffuse_audio::ScoreModel::load(&a.join("model.safetensors"), tch::Device::Cpu).unwrap();
    assert_eq!(model.config().network, Some(NetConfig::tiny()));
    assert_eq!(model.config().source.as_ref().unwrap()["step"], 4);

    // A finished run is not silently overwritten.
    let err = run(&options(&clean, &noise, &a, 4)).0.unwrap_err().to_string();
    assert!(err.contains("--resume") && err.contains("checkpoint.safetensors"), "{err}");
}

#[test]
fn bad_folders_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, noise) = corpus(dir.path());
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = dir.path().join("out");
    let err = run(&options(&empty, &noise, &out, 1)).0.unwrap_err().to_string();
    assert!(err.contains("empty") && err.contains("no .wav files"), "{err}");
    let err = run(&options(&dir.path().join("missing"), &noise, &out, 1)).0.unwrap_err().to_string();
    assert!(err.contains("missing") && err.contains("does not exist"), "{err}");
    let junk = dir.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("x.wav"), b"not audio").unwrap();
    let err = run(&options(&clean, &junk, &out, 1)).0.unwrap_err().to_string();
    assert!(err.contains("no usable noise clip") && err.contains("1 files skipped"), "{err}");
    assert!(!out.join("checkpoint.safetensors").exists());
}

#[test]
fn a_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, noise) = corpus(dir.path());
    let out = dir.path().join("out");
    let mut o = options(&clean, &noise, &out, 50);
    o.checkpoint_every = 1;
    // An absurd learning rate: the first update makes the weights overflow, the next loss is not finite.
    o.lr = 1e36;
    let err = run(&o).0.unwrap_err();
    let msg = err.to_string();
    let step = match err {
        diffuse_audio::Error::Training { step, .. } => step,
        other => panic!("unexpected error {other}"),
    };
    assert!((2..50).contains(&step), "{msg}");
    assert!(msg.contains(&format!("checkpoint (step {})", step - 1)), "{msg}");
    let bytes = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    let (_, meta) = diffuse_audio::weights::from_bytes(&bytes, Path::new("c")).unwrap();
    assert_eq!(meta["step"], (step - 1).to_string());
}

#[test]
fn the_training_spectrograms_equal_the_pipeline_stft() {
    // Training computes spectrograms with libtorch's STFT (on the training device); they must be the crate's STFT,
    // which the parity fixtures tie to the reference.
    let config = TrainOptions::new(vec![], vec![], PathBuf::from("unused")).model;
    let pairs: Vec<(Vec<f32>, Vec<f32>)> =
        (0..3).map(|k| (tone_clip(0.3, 16000, 130.0 + 40.0 * k as f64, k), noise_clip(0.3, 16000, 9 + k))).collect();
    let stft = diffuse_audio::stft::Stft::new(config.stft.n_fft, config.stft.hop, config.stft.window).unwrap();
    let ours = |clean: bool| {
        let specs: Vec<tch::Tensor> = pairs
            .iter()
            .map(|p| {
                let mut s = stft.forward(if clean { &p.0 } else { &p.1 }).unwrap();
                config.transform.forward(&mut s);
                s.to_tensor()
            })
            .collect();
        tch::Tensor::stack(&specs, 0)
    };
    let waves = |clean: bool| {
        let flat: Vec<f32> = pairs.iter().flat_map(|p| if clean { &p.0 } else { &p.1 }.iter().copied()).collect();
        tch::Tensor::from_slice(&flat).view([pairs.len() as i64, -1])
    };
    for (ours, w) in [(ours(true), waves(true)), (ours(false), waves(false))] {
        let torch = diffuse_audio::train::spectrogram_batch_torch(&w, &config).unwrap();
        assert_eq!(torch.size(), ours.size());
        let err = f64::try_from((&torch - &ours).abs().max()).unwrap();
        let scale = f64::try_from(ours.abs().max()).unwrap();
        assert!(err <= 1e-4 * scale, "max difference {err} (scale {scale})");
    }
}

#[test]
fn a_data_prediction_run_records_its_preconditioning_and_enhances() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, noise) = corpus(dir.path());
    let out = dir.path().join("data");
    let mut o = options(&clean, &noise, &out, 2);
    o.objective = diffuse_audio::train::Objective::Data;
    let (r, notes) = run(&o);
    r.unwrap();
    assert!(notes.iter().any(|n| n.contains("sigma_data")), "{notes:?}");
    let model = diffuse_audio::ScoreModel::load(&out.join("model.safetensors"), tch::Device::Cpu).unwrap();
    assert_eq!(model.config().output.kind, diffuse_audio::config::OutputKind::DataPrediction);
    let sd = model.config().network.as_ref().unwrap().sigma_data.expect("sigma_data in the sidecar");
    assert!(sd.is_finite() && sd > 0.0);

    // Resuming keeps the preconditioning even when another σ_d is asked for.
    let mut resume = options(&clean, &noise, &out, 3);
    resume.objective = diffuse_audio::train::Objective::Data;
    resume.resume = true;
    resume.sigma_data = Some(sd * 3.0);
    run(&resume).0.unwrap();
    let again = diffuse_audio::ScoreModel::load(&out.join("model.safetensors"), tch::Device::Cpu).unwrap();
    assert_eq!(again.config().network.as_ref().unwrap().sigma_data, Some(sd));

    // The model enhances through the ordinary pipeline (core's solvers take x̂0 directly).
    let clean_set = diffuse_audio::train::ClipSet::load(&[clean], 16000, "clean").unwrap();
    let noise_set = diffuse_audio::train::ClipSet::load(&[noise], 16000, "noise").unwrap();
    let set = diffuse_audio::train::validation_set(&clean_set, &noise_set, None, 2, 16000, 1);
    let v = diffuse_audio::train::validate(&again, &set, 3).unwrap();
    assert!(v.si_sdr.is_finite() && v.estoi.is_finite(), "{v:?}");
}

/// The crp objective: it needs a data-prediction model to start from, starts from its weights, and records the
/// sampler it trained through as the model's default.
#[test]
fn a_crp_run_fine_tunes_a_data_model_through_its_sampler() {
    use diffuse_audio::train::Objective;
    let dir = tempfile::tempdir().unwrap();
    let (clean, noise) = corpus(dir.path());
    let init = data_model(dir.path(), &clean, &noise);

    let out = dir.path().join("crp");
    let mut c = options(&clean, &noise, &out, 1);
    c.objective = Objective::Crp;
    let err = run(&c).0.unwrap_err().to_string();
    assert!(err.contains("--init"), "{err}");

    let score_dir = dir.path().join("score");
    run(&options(&clean, &noise, &score_dir, 1)).0.unwrap();
    c.init = Some(score_dir.join("model.safetensors"));
    let err = run(&c).0.unwrap_err().to_string();
    assert!(err.contains("data-prediction") && err.contains("score"), "{err}");

    // A vanishing learning rate: the fine-tuned model must still be the initial one (its weights were loaded).
    c.init = Some(init.clone());
    c.crp_steps = 3;
    c.lr = 1e-12;
    run(&c).0.unwrap();
    let before = diffuse_audio::ScoreModel::load(&init, tch::Device::Cpu).unwrap();
    let after = diffuse_audio::ScoreModel::load(&out.join("model.safetensors"), tch::Device::Cpu).unwrap();
    assert_eq!(after.config().sampler.name, "dpm++2m");
    assert_eq!(after.config().sampler.steps, 3);
    assert_eq!(after.config().network, before.config().network);
    assert_eq!(after.config().source.as_ref().unwrap()["objective"], "crp");
    assert_same_network(&before, &after, "crp");
}

/// The crp losses are differentiable through the sampler: Adam on each lowers it on a fixed batch and noise.
#[test]
fn the_crp_losses_fall_when_optimised_through_the_sampler() {
    use diffuse_audio::train::CrpLoss;
    use tch::nn::OptimizerConfig;
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = TrainOptions::new(vec![], vec![], PathBuf::from("unused")).model;
    let mut net_cfg = NetConfig::tiny();
    net_cfg.sigma_data = Some(0.1);
    cfg.network = Some(net_cfg.clone());
    cfg.output.kind = diffuse_audio::config::OutputKind::DataPrediction;
    let sampler = diffuse_audio::sampling::CoreSampler::new("dpm++2m", 3, &cfg).unwrap();
    let x0 = tch::Tensor::randn([2, 2, 256, 16], (tch::Kind::Float, tch::Device::Cpu)) * 0.1;
    let y = &x0 + tch::Tensor::randn([2, 2, 256, 16], (tch::Kind::Float, tch::Device::Cpu)) * 0.1;
    for loss_kind in [CrpLoss::Spec, CrpLoss::Snr] {
        tch::manual_seed(5);
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let net = diffuse_audio::net::ScoreNet::new(&vs.root(), &net_cfg).unwrap();
        let mut opt = tch::nn::Adam::default().build(&vs, 3e-3).unwrap();
        let mut losses = Vec::new();
        for _ in 0..12 {
            tch::manual_seed(9); // the same prior noise every step
            let x_t = diffuse_audio::train::crp_prior(&sampler, &x0, &y).unwrap();
            let crp = diffuse_audio::train::Crp { net: &net, config: &cfg, sampler: &sampler, loss: loss_kind };
            let loss = crp.loss(&x0, &y, &x_t).unwrap();
            losses.push(f64::try_from(&loss).unwrap());
            opt.backward_step(&loss);
        }
        assert!(losses.iter().all(|l| l.is_finite()), "{loss_kind}: {losses:?}");
        assert!(losses.windows(2).all(|w| w[1] < w[0]), "{loss_kind}: {losses:?}");
        match loss_kind {
            CrpLoss::Spec => assert!(losses[11] < 0.9 * losses[0], "{losses:?}"),
            // dB of error over signal: at least 1 dB better.
            CrpLoss::Snr => assert!(losses[11] < losses[0] - 1.0, "{losses:?}"),
        }
    }
}

/// The waveform loss sees the crop itself: the inverse of the training spectrogram returns the waveform.
#[test]
fn the_training_spectrogram_inverts_to_the_waveform() {
    let cfg = TrainOptions::new(vec![], vec![], PathBuf::from("unused")).model;
    let hop = cfg.stft.hop;
    let wave: Vec<f32> = tone_clip(1.1, 16_000, 220.0, 3)[..127 * hop].to_vec();
    let w = tch::Tensor::from_slice(&wave).view([1, -1]);
    let spec = diffuse_audio::train::spectrogram_batch_torch(&w, &cfg).unwrap();
    assert_eq!(spec.size(), [1, 2, 256, 128]);
    let back = diffuse_audio::train::waveform_batch_torch(&spec, &cfg).unwrap();
    assert_eq!(back.size(), w.size());
    let err = f64::try_from((&back - &w).abs().max()).unwrap();
    let peak = f64::try_from(w.abs().max()).unwrap();
    assert!(err < 1e-4 * peak, "max error {err} (peak {peak})");
}

/// Low-band over high-band energy in dB (first difference against first sum: 0 dB for white noise).
fn tilt_db(x: &[f32]) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for w in x.windows(2) {
        let (a, b) = (f64::from(w[0]), f64::from(w[1]));
        lo += (a + b) * (a + b);
        hi += (b - a) * (b - a);
    }
    10.0 * (lo / hi).log10()
}

#[test]
fn spectral_shaping_colours_speech_and_noise_and_keeps_the_drawn_snr() {
    use diffuse_audio::train::{ClipSet, Draws, Mixing, mix, shape_spectrum};
    let set = |clip: Vec<f32>| ClipSet { clips: vec![clip], ..Default::default() };
    let (clean, noise) = (set(tone_clip(1.0, 16000, 150.0, 7)), set(noise_clip(2.0, 16000, 8)));
    let snr_db = |c: &[f32], y: &[f32]| {
        let e: f64 = c.iter().map(|&v| f64::from(v).powi(2)).sum();
        let r: f64 = c.iter().zip(y).map(|(&a, &b)| f64::from(b - a).powi(2)).sum();
        10.0 * (e / r).log10()
    };
    let plain_mix = Mixing { snr_db: (3.0, 3.0), gain_jitter_db: 0.0, spectral_shaping: false };
    let shaped_mix = Mixing { spectral_shaping: true, ..plain_mix };
    let (mut plain, mut shaped) = (Vec::new(), Vec::new());
    for k in 0..40u64 {
        let (c0, y0) = mix(&clean, &noise, None, 8000, plain_mix, &mut Draws::new(k));
        let (c1, y1) = mix(&clean, &noise, None, 8000, shaped_mix, &mut Draws::new(k));
        // The SNR is set after shaping, and the target is the shaped speech inside the mixture.
        assert!((snr_db(&c1, &y1) - 3.0).abs() < 1e-3, "draw {k}: SNR {}", snr_db(&c1, &y1));
        assert!(c0 != c1, "draw {k}: shaping left the speech as it was");
        let n0: Vec<f32> = c0.iter().zip(&y0).map(|(a, b)| b - a).collect();
        let n1: Vec<f32> = c1.iter().zip(&y1).map(|(a, b)| b - a).collect();
        plain.push(tilt_db(&n0));
        shaped.push(tilt_db(&n1));
    }
    let spread = |v: &[f64]| v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min);
    // White noise stays white without shaping; with it the noise colour varies by many dB between mixtures.
    assert!(spread(&plain) < 1.0, "unshaped tilt spread {:.2} dB", spread(&plain));
    assert!(spread(&shaped) > 10.0, "shaped tilt spread {:.2} dB", spread(&shaped));

    // Every draw is a stable filter: bounded output from bounded input (|H| ≤ 7 at every frequency).
    let peak = |x: &[f32]| x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let x = noise_clip(1.0, 16000, 9);
    for k in 0..500u64 {
        let mut y = x.clone();
        shape_spectrum(&mut y, &mut Draws::new(k));
        assert!(peak(&y).is_finite() && peak(&y) < 30.0 * peak(&x), "draw {k}: peak {}", peak(&y));
    }
}

#[test]
fn reverberation_keeps_the_direct_path_as_the_target_and_the_whole_room_in_the_input() {
    use diffuse_audio::train::{ClipSet, DIRECT_PATH_HALF_WIDTH, Draws, Mixing, Rooms, mix, reverberate};
    // A room of a direct path (peak at tap 3, with a fractional-delay side tap) and one echo past the window.
    let mut rir = vec![0.0f32; 600];
    rir[3] = 1.0;
    rir[4] = 0.25;
    let echo = 3 + DIRECT_PATH_HALF_WIDTH + 200;
    rir[echo] = -0.5;
    let speech = noise_clip(0.2, 16000, 12);
    let pre = rir.len() - 1;
    let (dry, wet) = reverberate(&speech, &rir, pre, 0);
    assert_eq!((dry.len(), wet.len()), (speech.len() - pre, speech.len() - pre));
    for n in 0..dry.len() {
        let s = |k: usize| speech[pre + n - k];
        let want_dry = s(3) + 0.25 * s(4);
        assert!((dry[n] - want_dry).abs() < 1e-5, "dry sample {n}: {} vs {want_dry}", dry[n]);
        assert!((wet[n] - want_dry + 0.5 * s(echo)).abs() < 1e-5, "wet sample {n}");
    }
    // Keeping the early reflections up to the echo: the target is the whole room.
    let (early, wet_again) = reverberate(&speech, &rir, pre, echo - 3);
    assert_eq!(wet, wet_again);
    assert!(early.iter().zip(&wet).all(|(a, b)| (a - b).abs() < 1e-5));

    // In a mixture the input hears the room and the noise; the target is the direct path alone.
    let set = |clip: Vec<f32>| ClipSet { clips: vec![clip], ..Default::default() };
    let (clean, noise, rooms) = (set(noise_clip(1.0, 16000, 13)), set(noise_clip(1.0, 16000, 14)), set(rir));
    let quiet = Mixing { snr_db: (80.0, 80.0), gain_jitter_db: 0.0, spectral_shaping: false };
    let (target, noisy) = mix(&clean, &noise, Some(Rooms { set: &rooms, keep: 0 }), 4000, quiet, &mut Draws::new(5));
    let energy = |x: &[f32]| x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>();
    let residual: Vec<f32> = noisy.iter().zip(&target).map(|(y, x)| y - x).collect();
    // White speech: the echo carries 0.25 / (1 + 0.0625) of the direct path's energy (−6.3 dB).
    let ratio_db = 10.0 * (energy(&residual) / energy(&target)).log10();
    let want_db = 10.0 * (0.25f64 / 1.0625).log10();
    assert!((ratio_db - want_db).abs() < 0.5, "echo at {ratio_db:.2} dB, want {want_db:.2}");
    let (plain, _) = mix(&clean, &noise, None, 4000, quiet, &mut Draws::new(5));
    assert!(energy(&plain) > 0.0 && plain != target);
}

#[test]
fn a_dereverb_run_records_its_rooms() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, noise) = corpus(dir.path());
    let rooms = dir.path().join("rooms");
    let decay: Vec<f32> = (0..800)
        .map(|k| if k == 5 { 0.9 } else { 0.2 * (-(k as f32) / 200.0).exp() * ((k * 7919 % 13) as f32 / 6.0 - 1.0) })
        .collect();
    write(&rooms.join("r1.wav"), 16000, decay);
    let out = dir.path().join("dereverb");
    let mut o = options(&clean, &noise, &out, 1);
    o.rirs = vec![rooms.clone()];
    o.early_ms = 20.0;
    run(&o).0.unwrap();
    let model = diffuse_audio::ScoreModel::load(&out.join("model.safetensors"), tch::Device::Cpu).unwrap();
    let data = &model.config().source.as_ref().unwrap()["data"];
    assert_eq!(data["task"], "dereverb");
    assert_eq!(data["rir_count"], 1);
    assert!(data["dereverb_target"].as_str().unwrap().contains("20 ms"), "{data}");

    o.rirs = vec![dir.path().join("no-such-rooms")];
    o.force = true;
    let err = run(&o).0.unwrap_err().to_string();
    assert!(err.contains("no-such-rooms") && err.contains("room impulse response"), "{err}");
}

#[test]
fn an_nft_run_starts_from_its_initial_model_and_records_its_reward() {
    use diffuse_audio::train::{Objective, Reward};
    let dir = tempfile::tempdir().unwrap();
    let (clean, noise) = corpus(dir.path());
    let init = data_model(dir.path(), &clean, &noise);

    let out = dir.path().join("nft");
    let mut c = options(&clean, &noise, &out, 1);
    c.objective = Objective::Nft;
    let err = run(&c).0.unwrap_err().to_string();
    assert!(err.contains("--init"), "{err}");
    c.init = Some(init.clone());
    c.nft_group = 1;
    let err = run(&c).0.unwrap_err().to_string();
    assert!(err.contains("at least 2 generations"), "{err}");

    // A vanishing learning rate: the fine-tuned model is still the initial one.
    c.nft_group = 2;
    c.nft_reward = Reward::Estoi;
    c.pair_steps = 2;
    c.crp_steps = 2;
    c.lr = 1e-12;
    run(&c).0.unwrap();
    let before = diffuse_audio::ScoreModel::load(&init, tch::Device::Cpu).unwrap();
    let after = diffuse_audio::ScoreModel::load(&out.join("model.safetensors"), tch::Device::Cpu).unwrap();
    let source = after.config().source.as_ref().unwrap();
    assert_eq!(source["objective"], "nft");
    assert!(source["loss"].as_str().unwrap().contains("DiffusionNFT"), "{source}");
    assert_eq!(after.config().sampler.steps, 2);
    assert_same_network(&before, &after, "nft");
}
