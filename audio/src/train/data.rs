//! Training data: clips, seeded draws, mixing on the fly, batches of spectrograms and the validation set.

use std::collections::BTreeMap;
use std::path::PathBuf;

use diffuse_core::seed::mix64;
use tch::{Device, Kind, Tensor};

use super::TrainOptions;
use crate::config::ModelConfig;
use crate::{Error, Result};

/// A counter-based random stream (SplitMix64), so draws depend only on (seed, step, item).
#[derive(Debug, Clone)]
pub struct Draws(u64);

impl Draws {
    /// The stream of `key`.
    pub fn new(key: u64) -> Self {
        Draws(mix64(key))
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

/// Clips of one role (clean or noise) at the model rate, mono.
#[derive(Debug, Default)]
pub struct ClipSet {
    /// The clips.
    pub clips: Vec<Vec<f32>>,
    /// Their files.
    pub files: Vec<PathBuf>,
    /// Files skipped, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Files resampled to the model rate, by original rate.
    pub resampled: BTreeMap<u32, usize>,
}

impl ClipSet {
    /// Reads every .wav under `dirs` (sorted), mixing channels down and resampling to `rate`. Unreadable and
    /// silent files are skipped and listed; an empty or unreadable folder, or one with no usable clip, is an
    /// error naming it.
    pub fn load(dirs: &[PathBuf], rate: u32, role: &str) -> Result<Self> {
        let mut set = ClipSet::default();
        for dir in dirs {
            if !dir.is_dir() {
                return Err(Error::data(dir, format!("the {role} folder does not exist or is not a folder")));
            }
            let mut files = Vec::new();
            crate::wav::collect_wavs(dir, &mut files)?;
            if files.is_empty() {
                return Err(Error::data(dir, format!("no .wav files in the {role} folder")));
            }
            for f in files {
                match crate::wav::read_wav(&f) {
                    Ok(audio) => {
                        let n = audio.len();
                        let ch = audio.channels.len().max(1) as f32;
                        let mono: Vec<f32> =
                            (0..n).map(|i| audio.channels.iter().map(|c| c[i]).sum::<f32>() / ch).collect();
                        let mono = if audio.sample_rate != rate {
                            *set.resampled.entry(audio.sample_rate).or_default() += 1;
                            crate::resample::resample(&mono, audio.sample_rate, rate)?
                        } else {
                            mono
                        };
                        if crate::transform::norm_factor(&mono).is_none() {
                            set.skipped.push((f, "silent".into()));
                            continue;
                        }
                        set.clips.push(mono);
                        set.files.push(f);
                    }
                    Err(e) => set.skipped.push((f, e.to_string())),
                }
            }
        }
        if set.clips.is_empty() {
            let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            return Err(Error::data(
                dirs.first().cloned().unwrap_or_default(),
                format!("no usable {role} clip in {} ({} files skipped)", names.join(", "), set.skipped.len()),
            ));
        }
        Ok(set)
    }

    /// Clips shorter than `len` samples.
    pub fn shorter_than(&self, len: usize) -> usize {
        self.clips.iter().filter(|c| c.len() < len).count()
    }

    /// Total duration in seconds at `rate`.
    pub fn seconds(&self, rate: u32) -> f64 {
        self.clips.iter().map(Vec::len).sum::<usize>() as f64 / f64::from(rate)
    }
}

/// Filters `x` in place by H(z) = (1 + r1 z⁻¹ + r2 z⁻²) / (1 + r3 z⁻¹ + r4 z⁻²) with each r uniform in
/// [−3/8, 3/8] (Valin, "A hybrid DSP/deep learning approach to real-time full-band speech enhancement", 2018):
/// up to about ±17 dB of tilt or resonance; the poles stay inside the unit circle for every draw.
pub fn shape_spectrum(x: &mut [f32], draws: &mut Draws) {
    let mut r = [0.0f64; 4];
    for v in &mut r {
        *v = 0.75 * draws.uniform() - 0.375;
    }
    let (mut x1, mut x2, mut y1, mut y2) = (0.0f64, 0.0, 0.0, 0.0);
    for v in x.iter_mut() {
        let xn = f64::from(*v);
        let yn = xn + r[0] * x1 + r[1] * x2 - r[2] * y1 - r[3] * y2;
        (x2, x1, y2, y1) = (x1, xn, y1, yn);
        *v = yn as f32;
    }
}

/// How [`mix`] draws a mixture (the mixing fields of [`TrainOptions`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Mixing {
    /// SNR range in dB.
    pub snr_db: (f64, f64),
    /// Gains down to −this many dB are applied after normalisation.
    pub gain_jitter_db: f64,
    /// Speech and noise are first shaped by [`shape_spectrum`].
    pub spectral_shaping: bool,
}

impl Mixing {
    /// The validation mixtures: SNR uniform in [0, 10] dB, no gain jitter, no shaping.
    pub const VALIDATION: Mixing = Mixing { snr_db: (0.0, 10.0), gain_jitter_db: 0.0, spectral_shaping: false };
}

/// One mixture: (clean, noisy), both `len` samples, normalised by the mixture's peak and scaled by the gain;
/// with spectral shaping the target is the shaped speech. With `rooms` the speech is first reverberated by one of
/// them ([`reverberate`]): the noisy side hears the whole room, the target only its direct path and the
/// reflections it keeps (dereverberation).
pub fn mix(
    clean: &ClipSet,
    noise: &ClipSet,
    rooms: Option<Rooms>,
    len: usize,
    how: Mixing,
    draws: &mut Draws,
) -> (Vec<f32>, Vec<f32>) {
    let crop = |clip: &[f32], draws: &mut Draws, tile: bool, len: usize| -> Vec<f32> {
        if clip.len() >= len {
            let start = draws.below(clip.len() - len + 1);
            clip[start..start + len].to_vec()
        } else if tile {
            let start = draws.below(clip.len());
            (0..len).map(|k| clip[(start + k) % clip.len()]).collect()
        } else {
            // Short clean clips are zero-padded at a random offset (sgmse pads short clips too).
            let mut out = vec![0.0; len];
            let off = draws.below(len - clip.len() + 1);
            out[off..off + clip.len()].copy_from_slice(clip);
            out
        }
    };
    let energy = |x: &[f32]| x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len().max(1) as f64;
    // A crop that is (nearly) silence cannot set an SNR: try a few others.
    // The room's tail needs the speech before the crop: a reverberated crop starts `pre` samples earlier.
    let room =
        rooms.filter(|r| !r.set.clips.is_empty()).map(|r| (&r.set.clips[draws.below(r.set.clips.len())], r.keep));
    let pre = room.map_or(0, |(h, _)| h.len().saturating_sub(1));
    let mut c = Vec::new();
    for _ in 0..8 {
        let idx = draws.below(clean.clips.len());
        c = crop(&clean.clips[idx], draws, false, pre + len);
        if energy(&c[pre..]) > 1e-7 {
            break;
        }
    }
    let mut n = crop(&noise.clips[draws.below(noise.clips.len())], draws, true, len);
    if how.spectral_shaping {
        shape_spectrum(&mut c, draws);
        shape_spectrum(&mut n, draws);
    }
    let (c, heard) = match room {
        Some((h, keep)) => reverberate(&c, h, pre, keep),
        None => (c.clone(), c),
    };
    let snr = how.snr_db.0 + (how.snr_db.1 - how.snr_db.0) * draws.uniform();
    let (pc, pn) = (energy(&heard), energy(&n).max(1e-20));
    let k = if pc > 0.0 { (pc / (pn * 10f64.powf(snr / 10.0))).sqrt() } else { 0.0 } as f32;
    let noisy: Vec<f32> = heard.iter().zip(&n).map(|(a, b)| a + k * b).collect();
    let peak = noisy.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-8);
    let gain = 10f64.powf(-how.gain_jitter_db * draws.uniform() / 20.0) as f32 / peak;
    (c.iter().map(|v| v * gain).collect(), noisy.iter().map(|v| v * gain).collect())
}

/// Half-width of the direct path around the impulse response's peak: 2.5 ms at 16 kHz, which holds the
/// fractional-delay filter of image-source simulators and no reflection of a talker more than 0.9 m from a wall.
pub const DIRECT_PATH_HALF_WIDTH: usize = 40;

/// Rooms to reverberate the training speech in, and what of each the target keeps.
#[derive(Debug, Clone, Copy)]
pub struct Rooms<'a> {
    /// The impulse responses.
    pub set: &'a ClipSet,
    /// Samples after the direct path's peak that stay in the target (early reflections); at most
    /// [`DIRECT_PATH_HALF_WIDTH`] keeps the direct path alone.
    pub keep: usize,
}

/// `speech` (`pre` samples of lead-in, then the crop) through the room `rir`: (the target, the whole room), each
/// the crop's length. The target is `speech` through `rir` from [`DIRECT_PATH_HALF_WIDTH`] samples before its
/// largest tap to `keep` samples after it (at least the half-width): the direct path, and the early reflections
/// when `keep` is larger, so it keeps the room's delay and distance gain (SGMSE's WSJ0-Reverb targets are the
/// direct path; the DNS Challenge's keep the first 50 ms).
pub fn reverberate(speech: &[f32], rir: &[f32], pre: usize, keep: usize) -> (Vec<f32>, Vec<f32>) {
    let peak = rir.iter().enumerate().fold(0, |best, (i, v)| if v.abs() > rir[best].abs() { i } else { best });
    let lo = peak.saturating_sub(DIRECT_PATH_HALF_WIDTH);
    let hi = (peak + keep.max(DIRECT_PATH_HALF_WIDTH) + 1).min(rir.len());
    let mut early = vec![0.0f32; hi];
    early[lo..hi].copy_from_slice(&rir[lo..hi]);
    let len = speech.len() - pre;
    let [dry, wet] = convolve(speech, [&early, rir]);
    (dry[pre..pre + len].to_vec(), wet[pre..pre + len].to_vec())
}

/// The first `x.len()` samples of the linear convolutions `x * h` for each filter, by FFT (one plan and one
/// transform of `x` for all of them).
fn convolve<const N: usize>(x: &[f32], filters: [&[f32]; N]) -> [Vec<f32>; N] {
    use realfft::RealFftPlanner;
    let longest = filters.iter().map(|h| h.len()).max().unwrap_or(0);
    let size = (x.len() + longest).next_power_of_two();
    let mut planner = RealFftPlanner::<f64>::new();
    let (fwd, inv) = (planner.plan_fft_forward(size), planner.plan_fft_inverse(size));
    let spectrum = |v: &[f32]| {
        let mut buf: Vec<f64> = v.iter().map(|&s| f64::from(s)).collect();
        buf.resize(size, 0.0);
        let mut out = fwd.make_output_vec();
        fwd.process(&mut buf, &mut out).expect("buffers sized by the plan");
        out
    };
    let xs = spectrum(x);
    filters.map(|h| {
        let mut prod: Vec<_> = xs.iter().zip(&spectrum(h)).map(|(a, b)| a * b / size as f64).collect();
        let mut out = inv.make_output_vec();
        inv.process(&mut prod, &mut out).expect("buffers sized by the plan");
        out[..x.len()].iter().map(|&v| v as f32).collect()
    })
}

/// Transformed spectrograms `[B, 2, F, T]` of a batch of waveforms `[B, L]` with libtorch's STFT, on the
/// waveforms' device (the same values as this crate's [`crate::stft::Stft`] and transform, up to float rounding).
pub fn spectrogram_batch_torch(waves: &Tensor, config: &ModelConfig) -> Result<Tensor> {
    let n_fft = config.stft.n_fft as i64;
    let window = stft_window(config, waves.device())?;
    // Centred frames by reflect padding here and an uncentred STFT: tch passes `align_to_window` as a set value,
    // which libtorch refuses together with `center = true`.
    let padded =
        waves.f_to_kind(Kind::Float)?.f_unsqueeze(1)?.f_reflection_pad1d([n_fft / 2, n_fft / 2])?.f_squeeze_dim(1)?;
    let z = padded.f_stft_center(
        n_fft,
        config.stft.hop as i64,
        n_fft,
        Some(&window),
        false,
        "constant",
        false,
        true,
        true,
        false,
    )?;
    let ri = z.f_view_as_real()?.f_permute([0, 3, 1, 2])?.f_contiguous()?;
    config.transform.forward_tensor(&ri)
}

/// `[B, L]` tensors of the clean and noisy waveforms of a batch.
pub(super) fn wave_batch(pairs: &[(Vec<f32>, Vec<f32>)]) -> Result<(Tensor, Tensor)> {
    let shape = [pairs.len() as i64, pairs.first().map_or(0, |p| p.0.len()) as i64];
    let clean: Vec<f32> = pairs.iter().flat_map(|p| p.0.iter().copied()).collect();
    let noisy: Vec<f32> = pairs.iter().flat_map(|p| p.1.iter().copied()).collect();
    Ok((Tensor::from_slice(&clean).f_view(shape)?, Tensor::from_slice(&noisy).f_view(shape)?))
}

/// The waveforms `[B, (T − 1)·hop]` of transformed spectrograms `[B, 2, F, T]` made by [`spectrogram_batch_torch`]:
/// the inverse transform and the inverse of its centred STFT, differentiable.
pub fn waveform_batch_torch(spec: &Tensor, config: &ModelConfig) -> Result<Tensor> {
    let n_fft = config.stft.n_fft as i64;
    let frames = spec.size().last().copied().unwrap_or(0);
    let window = stft_window(config, spec.device())?;
    let z = config.transform.backward_tensor(spec)?.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_view_as_complex()?;
    Ok(z.f_istft(
        n_fft,
        config.stft.hop as i64,
        n_fft,
        Some(&window),
        true,
        false,
        true,
        (frames - 1).max(0) * config.stft.hop as i64,
        false,
    )?)
}

pub(super) fn stft_window(config: &ModelConfig, device: Device) -> Result<Tensor> {
    let hann = Tensor::f_hann_window_periodic(config.stft.n_fft as i64, true, (Kind::Float, device))?;
    Ok(match config.stft.window {
        crate::stft::Window::Hann => hann,
        crate::stft::Window::SqrtHann => hann.f_sqrt()?,
    })
}

/// σ_d for the data objective: the standard deviation of `x0 − y` per real coordinate of the transformed
/// spectrograms over `items` training mixtures drawn from `seed` (independent of the steps' draws).
pub fn estimate_sigma_data(
    clean: &ClipSet,
    noise: &ClipSet,
    rooms: Option<Rooms>,
    opts: &TrainOptions,
    items: usize,
) -> Result<f64> {
    let crop_len = (opts.crop_frames - 1) * opts.model.stft.hop;
    let pairs: Vec<(Vec<f32>, Vec<f32>)> = (0..items)
        .map(|i| {
            let mut d = Draws::new(opts.seed ^ 0x7369_676d_615f_6461 ^ mix64(i as u64));
            mix(clean, noise, rooms, crop_len, opts.mixing(), &mut d)
        })
        .collect();
    let (c, n) = wave_batch(&pairs)?;
    let r = spectrogram_batch_torch(&c, &opts.model)?.f_sub(&spectrogram_batch_torch(&n, &opts.model)?)?;
    let v = r.f_square()?.f_mean(Kind::Double)?.f_double_value(&[])?;
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::invalid("sigma data", format!("the training mixtures give σ_d² = {v}")));
    }
    Ok(v.sqrt())
}

/// Fixed validation mixtures: (clean, noisy) of about 2 s at SNRs uniform in [0, 10] dB, drawn from `seed`
/// (reverberated in `rooms` when given).
pub fn validation_set(
    clean: &ClipSet,
    noise: &ClipSet,
    rooms: Option<Rooms>,
    items: usize,
    rate: u32,
    seed: u64,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let len = 2 * rate as usize;
    (0..items)
        .map(|i| {
            let mut d = Draws::new(seed ^ 0x7661_6c69_6461_7465 ^ i as u64);
            mix(clean, noise, rooms, len, Mixing::VALIDATION, &mut d)
        })
        .collect()
}
