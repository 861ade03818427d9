//! Long files: chunked enhancement must sound like whole-file enhancement (issue 5, item 7).
//!
//! A 30 s speech-like file at 5 dB SNR is enhanced by a small random NCSN++ (tests/fixtures/audio/seam_ncsnpp.pt:
//! the published architecture at nf 4, five levels, attention at 16 frequency rows like the published network)
//! with a deterministic sampler (diffuse-core's DPM-Solver++(2M), 4 steps), once as a whole and once in the
//! default chunks (256 frames, 32 overlap: 17 chunks). The model is untrained, so "enhancement" is arbitrary;
//! what is measured is how much chunking changes the result.

use std::path::PathBuf;

use diffuse_audio::metrics::si_sdr;
use diffuse_audio::pipeline::{EnhanceReport, StageTimes};
use diffuse_audio::sampling::CoreSampler;
use diffuse_audio::{Chunking, Enhancer, ScoreModel};
use tch::Device;

fn speechlike(n: usize, rate: f64) -> Vec<f32> {
    // Gliding harmonic "vowels" with a 4 Hz syllable envelope and pauses.
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / rate;
            let f0 = 120.0 + 30.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            phase += 2.0 * std::f64::consts::PI * f0 / rate;
            let env = (2.0 * std::f64::consts::PI * 4.0 * t).sin().max(0.0) * if (t % 3.0) < 2.4 { 1.0 } else { 0.0 };
            let v: f64 = (1..12)
                .map(|k| (-((k as f64 * 120.0 - 500.0) / 700.0).powi(2)).exp() * (k as f64 * phase).sin() / k as f64)
                .sum();
            (0.4 * env * v) as f32
        })
        .collect()
}

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            // Sum of 4 uniforms: roughly Gaussian.
            (0..4)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .sum::<f32>()
        })
        .collect()
}

#[test]
fn chunked_enhancement_of_30_seconds_matches_whole_file_enhancement() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/audio");
    let model = ScoreModel::load(&dir.join("seam_ncsnpp.pt"), Device::Cpu).unwrap();
    let sampler = CoreSampler::new("dpm++2m", 4, model.config()).unwrap();
    let rate = 16000usize;
    let clean = speechlike(30 * rate, rate as f64);
    let n = noise(clean.len(), 7);
    let (ps, pn) = (clean.iter().map(|x| x * x).sum::<f32>(), n.iter().map(|x| x * x).sum::<f32>());
    let k = (ps / pn / 10f32.powf(0.5)).sqrt(); // 5 dB SNR
    let noisy: Vec<f32> = clean.iter().zip(&n).map(|(c, e)| c + k * e).collect();

    let run = |chunking: Chunking| {
        let enhancer = Enhancer::new(&model, &sampler, chunking, 3).unwrap();
        let (mut times, mut report) = (StageTimes::default(), EnhanceReport::default());
        let out = enhancer
            .enhance_channel(&noisy, "30s.wav".as_ref(), 0, &mut times, &mut report, &mut || {})
            .unwrap()
            .unwrap();
        (out, report.chunks)
    };
    let (whole, one) = run(Chunking::WHOLE);
    let (chunked, chunks) = run(Chunking::default());
    assert_eq!((one, chunks), (1, 17));
    let (si_noisy, si_whole, si_chunked) = (si_sdr(&clean, &noisy), si_sdr(&clean, &whole), si_sdr(&clean, &chunked));
    let agreement = si_sdr(&whole, &chunked);
    eprintln!(
        "SI-SDR vs clean: noisy {si_noisy:.2} dB, whole {si_whole:.2} dB, chunked {si_chunked:.2} dB; chunked vs whole {agreement:.2} dB"
    );
    assert!((si_whole - si_chunked).abs() < 0.5, "chunking changes SI-SDR by {:.2} dB", si_whole - si_chunked);
    assert!(agreement > 20.0, "chunked output differs from the whole-file output: {agreement:.2} dB");
}
