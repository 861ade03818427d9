//! The SGMSE+ spectrogram transform, waveform normalisation and frame padding, each with its exact inverse.
//!
//! - Transform (`exponent`): `c = β·|z|^α·e^{i∠z}`, inverse `z = |c/β|^{1/α}·e^{i∠c}`; `log`:
//!   `c = β·ln(1 + |z|)·e^{i∠z}`; `none`: identity. A zero coefficient stays zero.
//! - Normalisation: the waveform is divided by its largest magnitude (`max |y|` of the whole noisy file) and the
//!   enhanced waveform multiplied back; an all-zero waveform has no factor (the caller reports it).
//! - Frame padding: the frame axis is padded at the end to a multiple of 64 (the U-Net downsamples 6 times) with
//!   zeros, a reflection (excluding the edge frame) or a replication; cropping back restores the frames.

use serde::{Deserialize, Serialize};

use crate::stft::Spectrogram;
use crate::{Error, Result};

/// The amplitude compression applied to STFT coefficients before the network sees them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SpecTransform {
    /// `β·|z|^α·e^{i∠z}` (SGMSE+: α 0.5, β 0.15; 48 kHz models α 0.667, β 0.065).
    Exponent {
        /// Magnitude exponent α (> 0).
        alpha: f64,
        /// Factor β (> 0).
        beta: f64,
    },
    /// `β·ln(1 + |z|)·e^{i∠z}`.
    Log {
        /// Factor β (> 0).
        beta: f64,
    },
    /// No transform.
    None,
}

impl SpecTransform {
    /// The SGMSE+ 16 kHz setting: exponent α 0.5, β 0.15.
    pub const SGMSE_16K: SpecTransform = SpecTransform::Exponent { alpha: 0.5, beta: 0.15 };

    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        match *self {
            SpecTransform::Exponent { alpha, beta } if !(ok(alpha) && ok(beta)) => Err(Error::invalid(
                "transform",
                format!("exponent α = {alpha}, β = {beta}: both must be positive and finite"),
            )),
            SpecTransform::Log { beta } if !ok(beta) => {
                Err(Error::invalid("transform", format!("log β = {beta}: must be positive and finite")))
            }
            _ => Ok(()),
        }
    }

    /// Maps a magnitude `m ≥ 0` forward.
    fn forward_mag(&self, m: f64) -> f64 {
        match *self {
            SpecTransform::Exponent { alpha, beta } => beta * m.powf(alpha),
            SpecTransform::Log { beta } => beta * m.ln_1p(),
            SpecTransform::None => m,
        }
    }

    /// Maps a magnitude `m ≥ 0` back.
    fn backward_mag(&self, m: f64) -> f64 {
        match *self {
            SpecTransform::Exponent { alpha, beta } => (m / beta).powf(1.0 / alpha),
            SpecTransform::Log { beta } => (m / beta).exp_m1(),
            SpecTransform::None => m,
        }
    }

    fn apply(&self, spec: &mut Spectrogram, mag: impl Fn(f64) -> f64) {
        if *self == SpecTransform::None {
            return;
        }
        let n = spec.bins * spec.frames;
        let (re, im) = spec.data.split_at_mut(n);
        for (r, i) in re.iter_mut().zip(im.iter_mut()) {
            let (x, y) = (f64::from(*r), f64::from(*i));
            let m = x.hypot(y);
            // The phase of 0 is 0 (torch's angle(0)), so a zero coefficient maps to zero.
            let scale = if m > 0.0 { mag(m) / m } else { 0.0 };
            *r = (x * scale) as f32;
            *i = (y * scale) as f32;
        }
    }

    /// Applies the transform in place.
    pub fn forward(&self, spec: &mut Spectrogram) {
        self.apply(spec, |m| self.forward_mag(m));
    }

    /// Applies the inverse transform in place.
    pub fn backward(&self, spec: &mut Spectrogram) {
        self.apply(spec, |m| self.backward_mag(m));
    }

    /// [`SpecTransform::forward`] on a tensor `[B, 2, F, T]` (real and imaginary parts on dim 1), on its device.
    pub fn forward_tensor(&self, ri: &tch::Tensor) -> Result<tch::Tensor> {
        let m = ri.f_square()?.f_sum_dim_intlist(Some(&[1i64][..]), true, None)?.f_sqrt()?;
        // c = g(|z|)/|z|·z; at |z| = 0 the coefficient is 0 whatever the (finite) factor.
        let safe = m.f_clamp_min(1e-12)?;
        let scale = match *self {
            SpecTransform::Exponent { alpha, beta } => safe.f_pow_tensor_scalar(alpha - 1.0)?.f_mul_scalar(beta)?,
            SpecTransform::Log { beta } => safe.f_log1p()?.f_div(&safe)?.f_mul_scalar(beta)?,
            SpecTransform::None => return Ok(ri.shallow_clone()),
        };
        Ok(ri.f_mul(&scale)?)
    }

    /// [`SpecTransform::backward`] on a tensor `[B, 2, F, T]`, differentiable (for losses on the waveform).
    pub fn backward_tensor(&self, ri: &tch::Tensor) -> Result<tch::Tensor> {
        let m = ri.f_square()?.f_sum_dim_intlist(Some(&[1i64][..]), true, None)?.f_sqrt()?;
        let safe = m.f_clamp_min(1e-12)?;
        let scale = match *self {
            SpecTransform::Exponent { alpha, beta } => {
                safe.f_div_scalar(beta)?.f_pow_tensor_scalar(1.0 / alpha)?.f_div(&safe)?
            }
            SpecTransform::Log { beta } => safe.f_div_scalar(beta)?.f_expm1()?.f_div(&safe)?,
            SpecTransform::None => return Ok(ri.shallow_clone()),
        };
        Ok(ri.f_mul(&scale)?)
    }
}

/// Largest magnitude of a waveform, the SGMSE+ normalisation factor; `None` when every sample is zero.
pub fn norm_factor(signal: &[f32]) -> Option<f32> {
    let max = signal.iter().fold(0.0f32, |m, &s| m.max(s.abs()));
    (max > 0.0 && max.is_finite()).then_some(max)
}

/// How the frame axis is padded to the network's multiple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PadMode {
    /// Zeros (`ncsnpp`).
    Zero,
    /// Mirror image excluding the edge frame (`ncsnpp_48k`, `ncsnpp_v2`); repeats the mirroring when the pad is
    /// longer than the signal (where torch's `ReflectionPad2d` would refuse).
    Reflection,
    /// Repeats the last frame.
    Replication,
}

/// Frames after padding `frames` up to a multiple of `multiple`.
pub fn padded_frames(frames: usize, multiple: usize) -> usize {
    frames.div_ceil(multiple.max(1)) * multiple.max(1)
}

/// Pads the frame axis at the end up to a multiple of `multiple`.
pub fn pad_frames(spec: &Spectrogram, multiple: usize, mode: PadMode) -> Spectrogram {
    let t0 = spec.frames;
    let t1 = padded_frames(t0, multiple);
    if t1 == t0 {
        return spec.clone();
    }
    let mut out = Spectrogram::zeros(spec.bins, t1);
    for row in 0..2 * spec.bins {
        let src = &spec.data[row * t0..(row + 1) * t0];
        let dst = &mut out.data[row * t1..(row + 1) * t1];
        dst[..t0].copy_from_slice(src);
        for t in t0..t1 {
            dst[t] = match mode {
                PadMode::Zero => 0.0,
                PadMode::Replication => src[t0 - 1],
                PadMode::Reflection => src[reflect_index(t, t0)],
            };
        }
    }
    out
}

/// Index of position `t ≥ len` in the endless mirror image `x0 x1 … x_{n−1} x_{n−2} … x1 x0 x1 …`.
fn reflect_index(t: usize, len: usize) -> usize {
    if len == 1 {
        return 0;
    }
    let period = 2 * (len - 1);
    let k = t % period;
    if k < len { k } else { period - k }
}

/// Keeps the first `frames` frames (undoes [`pad_frames`]).
pub fn crop_frames(spec: &Spectrogram, frames: usize) -> Result<Spectrogram> {
    if frames > spec.frames {
        return Err(Error::Shape {
            op: "crop_frames",
            expected: format!("≥ {frames} frames"),
            got: spec.frames.to_string(),
        });
    }
    let mut out = Spectrogram::zeros(spec.bins, frames);
    for row in 0..2 * spec.bins {
        out.data[row * frames..(row + 1) * frames]
            .copy_from_slice(&spec.data[row * spec.frames..row * spec.frames + frames]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_tensor_transforms_equal_the_in_place_ones() {
        let values: Vec<(f32, f32)> = (0..24)
            .map(|k| if k == 5 { (0.0, 0.0) } else { ((k as f32 * 0.37).sin() * 3.0, (k as f32 * 0.91).cos()) })
            .collect();
        // The tensor result (a batch of one) against the in-place one, within a relative tolerance.
        let check = |label: String, tensor: tch::Tensor, expected: &Spectrogram, tol: f32| {
            let got = Spectrogram::from_tensor(&tensor.squeeze_dim(0)).unwrap();
            for (a, b) in got.data.iter().zip(&expected.data) {
                assert!((a - b).abs() <= tol * b.abs().max(1.0), "{label}: {a} vs {b}");
            }
        };
        for t in [SpecTransform::SGMSE_16K, SpecTransform::Log { beta: 0.4 }, SpecTransform::None] {
            let spec = spec_from(&values, 4);
            let batch = spec.to_tensor().unsqueeze(0);
            let mut forward = spec.clone();
            t.forward(&mut forward);
            check(format!("{t:?} forward"), t.forward_tensor(&batch).unwrap(), &forward, 1e-6);
            let mut back = spec.clone();
            t.backward(&mut back);
            check(format!("{t:?} backward"), t.backward_tensor(&batch).unwrap(), &back, 1e-5);
        }
    }

    fn spec_from(values: &[(f32, f32)], bins: usize) -> Spectrogram {
        let frames = values.len() / bins;
        let mut s = Spectrogram::zeros(bins, frames);
        for (k, &(r, i)) in values.iter().enumerate() {
            s.data[k] = r;
            s.data[bins * frames + k] = i;
        }
        s
    }

    #[test]
    fn exponent_transform_values() {
        let mut s = spec_from(&[(3.0, 4.0), (0.0, 0.0), (-1.0, 0.0), (0.0, -0.25)], 2);
        SpecTransform::SGMSE_16K.forward(&mut s);
        // |3+4i| = 5 → 0.15·√5 along the same direction.
        let m = 0.15 * 5f64.sqrt();
        assert!((f64::from(s.data[0]) - m * 0.6).abs() < 1e-6 && (f64::from(s.data[4]) - m * 0.8).abs() < 1e-6);
        assert_eq!((s.data[1], s.data[5]), (0.0, 0.0), "zero stays zero");
        assert!((f64::from(s.data[2]) + 0.15).abs() < 1e-7);
        assert!((f64::from(s.data[7]) + 0.15 * 0.5).abs() < 1e-7);
    }

    proptest! {
        #[test]
        fn transforms_invert_exactly(re in prop::collection::vec(-100.0f32..100.0, 12), im in prop::collection::vec(-100.0f32..100.0, 12),
                                    alpha in 0.2f64..1.5, beta in 0.01f64..2.0) {
            let values: Vec<(f32, f32)> = re.iter().copied().zip(im.iter().copied()).collect();
            for tr in [SpecTransform::Exponent { alpha, beta }, SpecTransform::Log { beta }, SpecTransform::None] {
                let orig = spec_from(&values, 3);
                let mut s = orig.clone();
                tr.forward(&mut s);
                tr.backward(&mut s);
                for (a, b) in orig.data.iter().zip(&s.data) {
                    prop_assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{tr:?}: {a} vs {b}");
                }
            }
        }

        #[test]
        fn padding_then_cropping_is_the_identity(frames in 1usize..150, bins in 1usize..4, mode in 0usize..3) {
            let mode = [PadMode::Zero, PadMode::Reflection, PadMode::Replication][mode];
            let values: Vec<(f32, f32)> = (0..frames * bins).map(|k| (k as f32, -(k as f32))).collect();
            let s = spec_from(&values, bins);
            let p = pad_frames(&s, 64, mode);
            prop_assert_eq!(p.frames % 64, 0);
            prop_assert!(p.frames >= frames && p.frames < frames + 64);
            prop_assert_eq!(crop_frames(&p, frames).unwrap(), s);
        }
    }

    #[test]
    fn padding_modes_match_torch() {
        // One bin, frames [1, 2, 3]: ReflectionPad → 1 2 3 2 1 2 3 …, ReplicationPad → 1 2 3 3 3 …
        let s = spec_from(&[(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)], 1);
        let r = pad_frames(&s, 8, PadMode::Reflection);
        assert_eq!(&r.data[..8], &[1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 3.0, 2.0]);
        let r = pad_frames(&s, 8, PadMode::Replication);
        assert_eq!(&r.data[..8], &[1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]);
        let r = pad_frames(&s, 8, PadMode::Zero);
        assert_eq!(&r.data[..8], &[1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn silence_has_no_norm_factor() {
        assert_eq!(norm_factor(&[0.0; 10]), None);
        assert_eq!(norm_factor(&[0.1, -0.5, 0.25]), Some(0.5));
        assert!(SpecTransform::Exponent { alpha: 0.0, beta: 1.0 }.validate().is_err());
    }
}
