//! Non-blind restoration: what a user knows about a degradation (the exposure curve of a dark photo, the blur
//! kernel of a blurred one) and how a known-parameter model's input is made from it.
//!
//! A blind model restores the degraded image `y` itself. A known-parameter model ([`ModelInput`] in its sidecar)
//! restores a first, classical inversion of `y` and learns only what that inversion leaves — the amplified noise
//! and ringing — as deep Wiener deconvolution does for blur (Dong et al., NeurIPS 2020):
//!
//! | input | made from `y` and | model input |
//! |---|---|---|
//! | `inverse_curve` | the curve `x ↦ e·x^γ` | `(clamp(y, 0, 1)/e)^(1/γ)`, clamped to [0, 1] ([`Curve::invert`]) |
//! | `wiener` | the kernel `K`, a fixed `nsr` | `F⁻¹[conj(K̂)·Ŷ / (|K̂|² + nsr)]` ([`wiener`]) |
//!
//! The Wiener filter runs on the image's mirror extension (period 2H − 2 by 2W − 2, the same mirror without
//! a repeated edge pixel as [`crate::degrade`]'s blur), so an image blurred with mirrored borders is inverted
//! without border artefacts; large images go in blocks with a margin ([`WIENER_BLOCK`]), so memory stays bounded.

use tch::{Device, Kind, Tensor};

use crate::degrade::{Curve, Kernel};
use crate::model::ModelInput;
use crate::planes::Planes;
use crate::{Error, Result};

/// What is known about a degradation.
#[derive(Debug, Clone, PartialEq)]
pub enum Known {
    /// The exposure curve of a low-light image.
    Curve(Curve),
    /// The blur kernel of a blurred image.
    Blur(Kernel),
}

/// Side of the blocks the Wiener filter works on (each with a margin of [`wiener_margin`] on every side).
pub const WIENER_BLOCK: usize = 512;

/// The margin of a Wiener block: wide enough for the kernel's reach to die out (at least 32 pixels).
pub fn wiener_margin(kernel: &Kernel) -> usize {
    (4 * (kernel.size / 2)).max(32)
}

/// The input a model of kind `input` restores, made from the degraded image `y` and what is `known`; refuses a
/// known-parameter model without its parameters, and parameters a model cannot use.
pub fn model_input(input: ModelInput, known: Option<&Known>, y: &Planes) -> Result<Planes> {
    match (input, known) {
        (ModelInput::Degraded, None) => Ok(y.clone()),
        (ModelInput::InverseCurve, Some(Known::Curve(c))) => Ok(c.invert(y)),
        (ModelInput::Wiener { nsr }, Some(Known::Blur(k))) => wiener(y, k, nsr),
        (ModelInput::Degraded, Some(_)) => Err(Error::invalid(
            "known parameters",
            "this model is blind; an exposure curve or a blur kernel needs a known-parameter model",
        )),
        (ModelInput::InverseCurve, _) => Err(Error::invalid(
            "--exposure/--gamma",
            "the model restores images of a known exposure curve: give its exposure and gamma",
        )),
        (ModelInput::Wiener { .. }, _) => Err(Error::invalid(
            "--blur-sigma/--kernel",
            "the model restores images of a known blur: give the blur kernel",
        )),
    }
}

/// Checks that `known` fits the model of kind `input` (the same refusals as [`model_input`], before any work).
pub fn check_known(input: ModelInput, known: Option<&Known>) -> Result<()> {
    model_input(input, known, &Planes::zeros(1, 1, 1)).map(|_| ())
}

/// Largest side of a kernel image read by [`read_kernel`].
pub const MAX_KERNEL_SIDE: usize = 99;

/// A blur kernel from an image file (grey or colour, averaged): odd sides, square, at most
/// [`MAX_KERNEL_SIDE`] pixels, normalised to sum 1 (the usual way kernels of deblurring benchmarks are shipped).
pub fn read_kernel(path: &std::path::Path) -> Result<Kernel> {
    let im = crate::image_io::read_image(path)?;
    let p = &im.planes;
    if p.width != p.height || p.width % 2 == 0 || p.width > MAX_KERNEL_SIDE {
        return Err(Error::file(
            path,
            format!(
                "a kernel must be square with an odd side of at most {MAX_KERNEL_SIDE} pixels, not {} × {}",
                p.width, p.height
            ),
        ));
    }
    let n = p.width * p.height;
    let weights: Vec<f64> = (0..n).map(|i| (0..p.channels).map(|c| f64::from(p.data[c * n + i])).sum()).collect();
    let sum: f64 = weights.iter().sum();
    if sum <= 0.0 {
        return Err(Error::file(path, "the kernel is all black (its weights sum to zero)"));
    }
    Ok(Kernel { size: p.width, weights: weights.iter().map(|w| (w / sum) as f32).collect() })
}

/// Wiener deconvolution of every channel of `y` by `kernel` with noise-to-signal ratio `nsr` (> 0), in blocks of
/// [`WIENER_BLOCK`] pixels with margins; values are not clamped (the model reads the ringing as well).
pub fn wiener(y: &Planes, kernel: &Kernel, nsr: f64) -> Result<Planes> {
    if !(nsr.is_finite() && nsr > 0.0) {
        return Err(Error::invalid("nsr", format!("{nsr} must be a positive number")));
    }
    let (h, w) = (y.height, y.width);
    if h < 2 || w < 2 {
        return Ok(y.clone());
    }
    let m = wiener_margin(kernel);
    let mut out = Planes::zeros(y.channels, h, w);
    for top in (0..h).step_by(WIENER_BLOCK) {
        for left in (0..w).step_by(WIENER_BLOCK) {
            let (t0, l0) = (top.saturating_sub(m), left.saturating_sub(m));
            let (t1, l1) = ((top + WIENER_BLOCK + m).min(h), (left + WIENER_BLOCK + m).min(w));
            let block = y.crop(t0, l0, t1 - t0, l1 - l0)?;
            let restored = wiener_whole(&block, kernel, nsr)?;
            let (bh, bw) = (WIENER_BLOCK.min(h - top), WIENER_BLOCK.min(w - left));
            for c in 0..y.channels {
                for r in 0..bh {
                    let src = (c * restored.height + top - t0 + r) * restored.width + left - l0;
                    let dst = (c * h + top + r) * w + left;
                    out.data[dst..dst + bw].copy_from_slice(&restored.data[src..src + bw]);
                }
            }
        }
    }
    Ok(out)
}

/// Mirror indices `0, 1, …, n−1, n−2, …, 1` (one period of the mirror extension without a repeated edge).
fn mirror_period(n: usize) -> Vec<i64> {
    (0..n as i64).chain((1..n as i64 - 1).rev()).collect()
}

/// The Wiener filter on one block, whole (its mirror extension is circular, so one FFT inverts it).
fn wiener_whole(y: &Planes, kernel: &Kernel, nsr: f64) -> Result<Planes> {
    let (h, w) = (y.height, y.width);
    let opts = (Kind::Double, Device::Cpu);
    let (rows, cols) = (mirror_period(h), mirror_period(w));
    let (ph, pw) = (rows.len() as i64, cols.len() as i64);
    let x = y.to_tensor().f_to_kind(Kind::Double)?;
    let ext = x.f_index_select(1, &Tensor::from_slice(&rows))?.f_index_select(2, &Tensor::from_slice(&cols))?;
    // The kernel's optical transfer function: taps placed with their centre at (0, 0), wrapped.
    let r = (kernel.size / 2) as i64;
    let mut taps = vec![0.0f64; (ph * pw) as usize];
    for (i, &v) in kernel.weights.iter().enumerate() {
        let (dy, dx) = ((i / kernel.size) as i64 - r, (i % kernel.size) as i64 - r);
        taps[(dy.rem_euclid(ph) * pw + dx.rem_euclid(pw)) as usize] += f64::from(v);
    }
    let k = Tensor::from_slice(&taps).f_reshape([ph, pw])?.f_to_kind(opts.0)?;
    let kf = k.f_fft_rfft2(None::<&[i64]>, [-2, -1], "backward")?;
    let filter = kf.f_conj()?.f_div(&(kf.f_abs()?.f_square()? + nsr))?;
    let yf = ext.f_fft_rfft2(None::<&[i64]>, [-2, -1], "backward")?;
    let xf = yf.f_mul(&filter)?;
    let restored = xf.f_fft_irfft2(Some([ph, pw].as_slice()), [-2, -1], "backward")?;
    let restored = restored.f_narrow(1, 0, h as i64)?.f_narrow(2, 0, w as i64)?.f_to_kind(Kind::Float)?;
    Planes::from_tensor(&restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::degrade::{Blur, Degradation};
    use rand::SeedableRng;

    fn ramp(c: usize, h: usize, w: usize) -> Planes {
        let data = (0..c * h * w).map(|i| (((i % w) * 7 + (i / w) * 3) % 23) as f32 / 23.0).collect();
        Planes::new(c, h, w, data).unwrap()
    }

    fn max_diff(a: &Planes, b: &Planes) -> f32 {
        a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn wiener_inverts_a_mirror_bordered_blur_without_noise() {
        let x = ramp(3, 37, 29);
        let blur = Blur::Gaussian { sigma: 1.0 };
        let blurred = blur.apply(&x);
        let back = wiener(&blurred, &Kernel::gaussian(1.0), 1e-9).unwrap();
        assert!(max_diff(&back, &x) < 2e-3, "{}", max_diff(&back, &x));
        // The quantised draw comes back far closer than it went in.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let y = Degradation::Deblur { blur, sigma: 0.0 }.apply(&x, &mut rng);
        let back = wiener(&y, &Kernel::gaussian(1.0), 1e-4).unwrap();
        let err = |p: &Planes| p.data.iter().zip(&x.data).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>();
        assert!(err(&back) < 0.2 * err(&y), "{} vs {}", err(&back), err(&y));
    }

    #[test]
    fn blocks_give_the_whole_image_result_away_from_block_seams() {
        let x = ramp(1, 40, 1100);
        let k = Kernel::gaussian(1.5);
        let blocked = wiener(&x, &k, 1e-2).unwrap();
        let whole = wiener_whole(&x, &k, 1e-2).unwrap();
        // The margin (32 px) lets the filter's reach die out: blocks agree with one FFT of the whole image.
        assert!(max_diff(&blocked, &whole) < 1e-3, "{}", max_diff(&blocked, &whole));
    }

    #[test]
    fn parameters_must_match_the_model() {
        let y = ramp(3, 8, 8);
        let curve = Known::Curve(Curve::new(0.1, 1.8).unwrap());
        let blur = Known::Blur(Kernel::gaussian(2.0));
        assert_eq!(model_input(ModelInput::Degraded, None, &y).unwrap(), y);
        assert!(model_input(ModelInput::InverseCurve, Some(&curve), &y).is_ok());
        assert!(model_input(ModelInput::Wiener { nsr: 1e-3 }, Some(&blur), &y).is_ok());
        let err = |i, k: Option<&Known>| model_input(i, k, &y).unwrap_err().to_string();
        assert!(err(ModelInput::Degraded, Some(&blur)).contains("blind"));
        assert!(err(ModelInput::InverseCurve, None).contains("--exposure"));
        assert!(err(ModelInput::InverseCurve, Some(&blur)).contains("--exposure"));
        assert!(err(ModelInput::Wiener { nsr: 1e-3 }, Some(&curve)).contains("--blur-sigma"));
        assert!(wiener(&y, &Kernel::gaussian(2.0), 0.0).is_err());
    }
}
