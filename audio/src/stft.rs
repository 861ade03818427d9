//! Short-time Fourier transform matching `torch.stft` / `torch.istft` as SGMSE+ calls them: `center=True`
//! with reflect padding of `n_fft/2` on both sides, a periodic Hann (or square-root Hann) window as long as the
//! FFT, not normalised, one-sided; the inverse overlap-adds the windowed frames, divides by the summed squared
//! window and cuts the result to the original length.
//!
//! Spectrograms are stored as real data in the layout `[2, F, T]` (real parts, then imaginary parts; F =
//! `n_fft/2 + 1` bins, T frames), the same layout the model contract uses for complex tensors.
//! Arithmetic is done in `f64`; the stored values are `f32`.

use std::sync::Arc;

use realfft::{ComplexToReal, RealFftPlanner, RealToComplex, num_complex::Complex};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Longest FFT accepted (0.34 s at 48 kHz; SGMSE+ uses 510 at 16 kHz).
pub const MAX_N_FFT: usize = 16_384;

/// The analysis/synthesis window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// Periodic Hann: `w[n] = 0.5 − 0.5·cos(2πn/N)` (`torch.hann_window(N, periodic=True)`).
    Hann,
    /// Square root of the periodic Hann window.
    #[serde(rename = "sqrthann")]
    SqrtHann,
}

impl Window {
    /// The window's `n` samples.
    pub fn samples(self, n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos();
                match self {
                    Window::Hann => hann,
                    Window::SqrtHann => hann.max(0.0).sqrt(),
                }
            })
            .collect()
    }
}

/// A complex spectrogram as real data, layout `[2, bins, frames]` (real block, then imaginary block).
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrogram {
    /// Frequency bins F.
    pub bins: usize,
    /// Frames T.
    pub frames: usize,
    /// `2·F·T` values: `data[(0·F + f)·T + t]` is Re X[f, t], `data[(1·F + f)·T + t]` is Im X[f, t].
    pub data: Vec<f32>,
}

impl Spectrogram {
    /// An all-zero spectrogram.
    pub fn zeros(bins: usize, frames: usize) -> Self {
        Spectrogram { bins, frames, data: vec![0.0; 2 * bins * frames] }
    }

    /// Index of Re X[f, t] in `data` (Im is `offset + bins·frames`).
    #[inline]
    pub fn index(&self, f: usize, t: usize) -> usize {
        f * self.frames + t
    }

    /// The `[2, F, T]` shape as libtorch wants it.
    pub fn shape(&self) -> [i64; 3] {
        [2, self.bins as i64, self.frames as i64]
    }

    /// Copies the data into a float tensor of shape `[2, F, T]` on the CPU.
    pub fn to_tensor(&self) -> tch::Tensor {
        tch::Tensor::from_slice(&self.data).view(self.shape())
    }

    /// Reads a `[2, F, T]` (or `[1, 2, F, T]`) float tensor.
    pub fn from_tensor(t: &tch::Tensor) -> Result<Self> {
        let size = t.size();
        let dims: Vec<i64> = match size.as_slice() {
            [1, 2, f, n] | [2, f, n] => vec![*f, *n],
            _ => {
                return Err(Error::Shape { op: "spectrogram", expected: "[2, F, T]".into(), got: format!("{size:?}") });
            }
        };
        let flat = t.f_to_kind(tch::Kind::Float)?.f_to_device(tch::Device::Cpu)?.f_contiguous()?.f_view([-1])?;
        let data = Vec::<f32>::try_from(&flat)?;
        Ok(Spectrogram { bins: dims[0] as usize, frames: dims[1] as usize, data })
    }
}

/// A planned STFT/iSTFT pair for one `n_fft`, hop and window.
#[derive(Clone)]
pub struct Stft {
    n_fft: usize,
    hop: usize,
    window: Vec<f64>,
    forward: Arc<dyn RealToComplex<f64>>,
    inverse: Arc<dyn ComplexToReal<f64>>,
}

impl std::fmt::Debug for Stft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stft").field("n_fft", &self.n_fft).field("hop", &self.hop).finish_non_exhaustive()
    }
}

impl Stft {
    /// Plans the transforms; `n_fft` must be even and at least 2, `1 ≤ hop ≤ n_fft`.
    pub fn new(n_fft: usize, hop: usize, window: Window) -> Result<Self> {
        if n_fft < 2 || !n_fft.is_multiple_of(2) {
            return Err(Error::invalid("n_fft", format!("{n_fft}: must be even and at least 2")));
        }
        // A sidecar asking for n_fft = 10^9 drove enhancement to 13.7 GB; no speech model uses frames this long.
        if n_fft > MAX_N_FFT {
            return Err(Error::invalid(
                "n_fft",
                format!("{n_fft} is over the limit of {MAX_N_FFT} (docs/reliability.md lists every limit)"),
            ));
        }
        if hop == 0 || hop > n_fft {
            return Err(Error::invalid("hop", format!("{hop}: must be between 1 and n_fft = {n_fft}")));
        }
        let mut planner = RealFftPlanner::<f64>::new();
        let stft = Stft {
            n_fft,
            hop,
            window: window.samples(n_fft),
            forward: planner.plan_fft_forward(n_fft),
            inverse: planner.plan_fft_inverse(n_fft),
        };
        // The overlap-add must never divide by ~0 (torch's NOLA check); Hann and sqrt-Hann with hop ≤ n_fft/2 pass.
        let envelope_min = (0..hop)
            .map(|i| (i..n_fft).step_by(hop).map(|j| stft.window[j].powi(2)).sum::<f64>())
            .fold(f64::INFINITY, f64::min);
        if envelope_min < 1e-11 {
            return Err(Error::invalid(
                "hop",
                format!("{hop} with n_fft {n_fft}: the window overlap-add has zeros, the inverse does not exist"),
            ));
        }
        Ok(stft)
    }

    /// FFT length.
    pub fn n_fft(&self) -> usize {
        self.n_fft
    }

    /// Hop between frames.
    pub fn hop(&self) -> usize {
        self.hop
    }

    /// Frequency bins F = `n_fft/2 + 1`.
    pub fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Frames T of a signal of `len` samples: `1 + len / hop`.
    pub fn frames(&self, len: usize) -> usize {
        1 + len / self.hop
    }

    /// Shortest signal the reflect padding accepts: `n_fft/2 + 1` samples.
    pub fn min_len(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Forward transform; the signal must have at least [`Stft::min_len`] samples.
    pub fn forward(&self, signal: &[f32]) -> Result<Spectrogram> {
        let len = signal.len();
        let pad = self.n_fft / 2;
        if len < self.min_len() {
            return Err(Error::invalid(
                "signal",
                format!("{len} samples is shorter than one STFT frame (at least {} needed)", self.min_len()),
            ));
        }
        let frames = self.frames(len);
        let bins = self.bins();
        let mut spec = Spectrogram::zeros(bins, frames);
        let im_offset = bins * frames;
        let mut input = self.forward.make_input_vec();
        let mut output = self.forward.make_output_vec();
        let mut scratch = self.forward.make_scratch_vec();
        for t in 0..frames {
            for (n, slot) in input.iter_mut().enumerate() {
                // Position in the reflect-padded signal; reflection excludes the edge sample, as torch does.
                let i = (t * self.hop + n) as isize - pad as isize;
                let j = if i < 0 {
                    (-i) as usize
                } else if i as usize >= len {
                    2 * (len - 1) - i as usize
                } else {
                    i as usize
                };
                *slot = f64::from(signal[j]) * self.window[n];
            }
            self.forward
                .process_with_scratch(&mut input, &mut output, &mut scratch)
                .map_err(|e| Error::invalid("stft", e.to_string()))?;
            for (f, c) in output.iter().enumerate() {
                let k = f * frames + t;
                spec.data[k] = c.re as f32;
                spec.data[im_offset + k] = c.im as f32;
            }
        }
        Ok(spec)
    }

    /// Inverse transform to a signal of exactly `length` samples (zeros past the last frame, as torch does).
    pub fn inverse(&self, spec: &Spectrogram, length: usize) -> Result<Vec<f32>> {
        let bins = self.bins();
        if spec.bins != bins || spec.data.len() != 2 * spec.bins * spec.frames || spec.frames == 0 {
            return Err(Error::Shape {
                op: "istft",
                expected: format!("[2, {bins}, T ≥ 1]"),
                got: format!("[2, {}, {}] with {} values", spec.bins, spec.frames, spec.data.len()),
            });
        }
        let frames = spec.frames;
        let (n_fft, hop) = (self.n_fft, self.hop);
        let pad = n_fft / 2;
        // Streaming overlap-add: `acc` holds the padded signal at positions [t·hop, t·hop + n_fft) while frame t
        // is added; the first `hop` positions are final after it (the last frame finalises all of them). Memory
        // is the output alone, whatever the length.
        let mut out = vec![0.0f32; length];
        let mut acc = vec![0.0f64; n_fft];
        let mut input = self.inverse.make_input_vec();
        let mut output = self.inverse.make_output_vec();
        let mut scratch = self.inverse.make_scratch_vec();
        let im_offset = bins * frames;
        let norm = 1.0 / n_fft as f64;
        // The summed squared window at padded position j, over the frames that cover it, in frame order.
        let envelope = |j: usize| -> f64 {
            let first = (j + 1).saturating_sub(n_fft).div_ceil(hop);
            let last = (j / hop).min(frames - 1);
            (first..=last).map(|t| self.window[j - t * hop] * self.window[j - t * hop]).sum()
        };
        for t in 0..frames {
            for (f, c) in input.iter_mut().enumerate() {
                let k = f * frames + t;
                *c = Complex::new(f64::from(spec.data[k]), f64::from(spec.data[im_offset + k]));
            }
            // A real signal's DC and Nyquist bins are real: their imaginary parts are ignored (as by torch's irfft).
            input[0].im = 0.0;
            input[bins - 1].im = 0.0;
            self.inverse
                .process_with_scratch(&mut input, &mut output, &mut scratch)
                .map_err(|e| Error::invalid("istft", e.to_string()))?;
            for n in 0..n_fft {
                acc[n] += output[n] * norm * self.window[n];
            }
            let start = t * hop;
            let done = if t + 1 == frames { n_fft } else { hop };
            for (n, &v) in acc[..done].iter().enumerate() {
                let j = start + n;
                if j >= pad && j - pad < length {
                    let e = envelope(j);
                    out[j - pad] = if e > 1e-11 { (v / e) as f32 } else { 0.0 };
                }
            }
            acc.copy_within(hop.., 0);
            acc[n_fft - hop..].fill(0.0);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
            })
            .collect()
    }

    #[test]
    fn round_trip_restores_the_signal() {
        for (n_fft, hop) in [(510, 128), (1534, 384), (512, 128)] {
            for window in [Window::Hann, Window::SqrtHann] {
                let stft = Stft::new(n_fft, hop, window).unwrap();
                for len in [stft.min_len(), 1000, 4097, 16000] {
                    let x = noise(len, len as u64);
                    let spec = stft.forward(&x).unwrap();
                    assert_eq!((spec.bins, spec.frames), (n_fft / 2 + 1, 1 + len / hop));
                    let y = stft.inverse(&spec, len).unwrap();
                    let err = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                    assert!(err < 1e-6, "{n_fft}/{hop} {window:?} len {len}: round-trip error {err}");
                }
            }
        }
    }

    /// The textbook inverse (whole-signal overlap-add and envelope buffers) that the streaming one replaces.
    fn inverse_with_buffers(stft: &Stft, spec: &Spectrogram, length: usize) -> Vec<f32> {
        let (n_fft, hop, frames, bins) = (stft.n_fft, stft.hop, spec.frames, spec.bins);
        let full = n_fft + hop * (frames - 1);
        let (mut out, mut env) = (vec![0.0f64; full], vec![0.0f64; full]);
        let mut input = stft.inverse.make_input_vec();
        let mut output = stft.inverse.make_output_vec();
        for t in 0..frames {
            for (f, c) in input.iter_mut().enumerate() {
                let k = f * frames + t;
                *c = Complex::new(f64::from(spec.data[k]), f64::from(spec.data[bins * frames + k]));
            }
            input[0].im = 0.0;
            input[bins - 1].im = 0.0;
            stft.inverse.process(&mut input, &mut output).unwrap();
            for n in 0..n_fft {
                out[t * hop + n] += output[n] * (1.0 / n_fft as f64) * stft.window[n];
                env[t * hop + n] += stft.window[n] * stft.window[n];
            }
        }
        (0..length)
            .map(|i| {
                let j = i + n_fft / 2;
                if j < full && env[j] > 1e-11 { (out[j] / env[j]) as f32 } else { 0.0 }
            })
            .collect()
    }

    #[test]
    fn the_streaming_inverse_equals_whole_signal_overlap_add() {
        for (n_fft, hop, window) in [(510, 128, Window::Hann), (16, 8, Window::SqrtHann), (12, 3, Window::Hann)] {
            let stft = Stft::new(n_fft, hop, window).unwrap();
            for frames in [1usize, 2, 7, 40] {
                // Any spectrogram, not only one of a real signal.
                let data = noise(2 * stft.bins() * frames, frames as u64 + 3);
                let spec = Spectrogram { bins: stft.bins(), frames, data };
                for length in [1, (frames - 1) * hop, frames * hop + n_fft] {
                    let a = stft.inverse(&spec, length).unwrap();
                    let b = inverse_with_buffers(&stft, &spec, length);
                    assert_eq!(a, b, "n_fft {n_fft} hop {hop} frames {frames} length {length}");
                }
            }
        }
    }

    #[test]
    fn a_pure_tone_lands_in_its_bin() {
        let stft = Stft::new(512, 128, Window::Hann).unwrap();
        let x: Vec<f32> =
            (0..4096).map(|i| (2.0 * std::f64::consts::PI * 32.0 * i as f64 / 512.0).cos() as f32).collect();
        let spec = stft.forward(&x).unwrap();
        let t = spec.frames / 2;
        let mag = |f: usize| {
            let k = spec.index(f, t);
            f64::from(spec.data[k]).hypot(f64::from(spec.data[spec.bins * spec.frames + k]))
        };
        // Periodic Hann: the tone's energy is in bin 32 (amplitude N/4 = 128) and half of that in bins 31 and 33.
        assert!((mag(32) - 128.0).abs() < 1e-3, "{}", mag(32));
        assert!((mag(31) - 64.0).abs() < 1e-3 && (mag(33) - 64.0).abs() < 1e-3);
        assert!(mag(40) < 1e-3);
    }

    #[test]
    fn bad_parameters_and_short_signals_are_errors() {
        assert!(Stft::new(511, 128, Window::Hann).is_err());
        assert!(Stft::new(512, 0, Window::Hann).is_err());
        assert!(Stft::new(512, 512, Window::Hann).is_err(), "Hann with hop = n_fft has zeros in the overlap-add");
        let stft = Stft::new(510, 128, Window::Hann).unwrap();
        let err = stft.forward(&[0.0; 255]).unwrap_err().to_string();
        assert!(err.contains("shorter than one STFT frame"), "{err}");
        assert!(stft.forward(&[0.0; 256]).is_ok());
    }
}
