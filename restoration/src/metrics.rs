//! Full-reference image quality: PSNR and SSIM on 8-bit values (data range 255), as scikit-image computes them.
//!
//! Both metrics first round each value to its 8-bit level, `q = round(255·clamp(v, 0, 1))`, so a 16-bit image is
//! scored like its 8-bit version and every tool that reads the same PNGs gets the same numbers. Alpha is ignored.

use crate::planes::Planes;
use crate::{Error, Result};

/// Side of SSIM's Gaussian window (scikit-image: `2·⌊3.5·σ + ½⌋ + 1` with truncate 3.5).
pub const SSIM_WINDOW: usize = 11;
/// Standard deviation of SSIM's Gaussian window, in pixels.
pub const SSIM_SIGMA: f64 = 1.5;
/// SSIM's constants `C1 = (K1·L)²`, `C2 = (K2·L)²` use these with `L = 255`.
pub const SSIM_K1: f64 = 0.01;
/// See [`SSIM_K1`].
pub const SSIM_K2: f64 = 0.03;
const RANGE: f64 = 255.0;

fn check_same(a: &Planes, b: &Planes, what: &'static str) -> Result<()> {
    if (a.channels, a.height, a.width) != (b.channels, b.height, b.width) {
        return Err(Error::shape(what, a.shape_text(), b.shape_text()));
    }
    if a.data.is_empty() {
        return Err(Error::invalid(what, "the images are empty"));
    }
    Ok(())
}

/// The 8-bit level of a value in [0, 1]: `round(255·clamp(v, 0, 1))` (NaN counts as 0).
pub fn level_8bit(v: f32) -> f64 {
    if v.is_nan() { 0.0 } else { f64::from((v.clamp(0.0, 1.0) * 255.0).round()) }
}

/// Peak signal-to-noise ratio in dB, `10·log10(255² / MSE)` with the MSE over every value of every channel on
/// 8-bit levels (scikit-image's `peak_signal_noise_ratio(a, b, data_range=255)`); `+∞` for identical images.
pub fn psnr(a: &Planes, b: &Planes) -> Result<f64> {
    check_same(a, b, "psnr")?;
    let se: f64 = a.data.iter().zip(&b.data).map(|(&x, &y)| (level_8bit(x) - level_8bit(y)).powi(2)).sum();
    let mse = se / a.data.len() as f64;
    Ok(if mse == 0.0 { f64::INFINITY } else { 10.0 * (RANGE * RANGE / mse).log10() })
}

/// The normalised 1-D Gaussian of SSIM's window: `g(k) ∝ exp(−k²/(2σ²))`, `k = −5 … 5`, `Σg = 1`.
fn gaussian_window() -> [f64; SSIM_WINDOW] {
    let r = (SSIM_WINDOW / 2) as f64;
    let mut g = [0.0; SSIM_WINDOW];
    for (i, v) in g.iter_mut().enumerate() {
        let k = i as f64 - r;
        *v = (-k * k / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp();
    }
    let s: f64 = g.iter().sum();
    g.iter_mut().for_each(|v| *v /= s);
    g
}

/// Gaussian-weighted local mean of `x` (`h × w`) at every pixel whose window lies inside the image: an
/// `(h − 10) × (w − 10)` map. scikit-image filters the whole image (reflecting at the borders) and then drops
/// `(11 − 1)/2 = 5` pixels from each side before averaging; the pixels it keeps are exactly these, whose
/// windows never reach the reflected border, so the result is the same.
fn local_mean(x: &[f64], h: usize, w: usize, g: &[f64; SSIM_WINDOW]) -> Vec<f64> {
    let (oh, ow) = (h + 1 - SSIM_WINDOW, w + 1 - SSIM_WINDOW);
    let mut rows = vec![0.0; h * ow];
    for y in 0..h {
        for x0 in 0..ow {
            rows[y * ow + x0] = (0..SSIM_WINDOW).map(|k| g[k] * x[y * w + x0 + k]).sum();
        }
    }
    let mut out = vec![0.0; oh * ow];
    for y0 in 0..oh {
        for x0 in 0..ow {
            out[y0 * ow + x0] = (0..SSIM_WINDOW).map(|k| g[k] * rows[(y0 + k) * ow + x0]).sum();
        }
    }
    out
}

/// Mean SSIM of one channel given as 8-bit levels.
fn ssim_plane(a: &[f64], b: &[f64], h: usize, w: usize, g: &[f64; SSIM_WINDOW]) -> f64 {
    let (c1, c2) = ((SSIM_K1 * RANGE).powi(2), (SSIM_K2 * RANGE).powi(2));
    let prod = |f: &dyn Fn(f64, f64) -> f64| -> Vec<f64> { a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect() };
    let (ux, uy) = (local_mean(a, h, w, g), local_mean(b, h, w, g));
    let uxx = local_mean(&prod(&|x, _| x * x), h, w, g);
    let uyy = local_mean(&prod(&|_, y| y * y), h, w, g);
    let uxy = local_mean(&prod(&|x, y| x * y), h, w, g);
    let mut sum = 0.0;
    for i in 0..ux.len() {
        let (mx, my) = (ux[i], uy[i]);
        let (vx, vy, vxy) = (uxx[i] - mx * mx, uyy[i] - my * my, uxy[i] - mx * my);
        sum += ((2.0 * mx * my + c1) * (2.0 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
    }
    sum / ux.len() as f64
}

/// Structural similarity (Wang et al. 2004) on 8-bit levels, averaged over channels:
/// `SSIM = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))` with Gaussian-weighted local moments
/// (window 11, σ 1.5, population covariance), `C1 = (0.01·255)²`, `C2 = (0.03·255)²`, averaged over the pixels
/// 5 or more from every border. Matches scikit-image's `structural_similarity(a, b, channel_axis=2,
/// data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)` (tests/fixtures/restoration).
/// Both sides must be at least 11 pixels.
pub fn ssim(a: &Planes, b: &Planes) -> Result<f64> {
    check_same(a, b, "ssim")?;
    if a.height < SSIM_WINDOW || a.width < SSIM_WINDOW {
        return Err(Error::invalid(
            "ssim",
            format!("the images are {}×{} pixels; SSIM needs at least {SSIM_WINDOW} on each side", a.width, a.height),
        ));
    }
    let g = gaussian_window();
    let mut total = 0.0;
    for c in 0..a.channels {
        let qa: Vec<f64> = a.plane(c).iter().map(|&v| level_8bit(v)).collect();
        let qb: Vec<f64> = b.plane(c).iter().map(|&v| level_8bit(v)).collect();
        total += ssim_plane(&qa, &qb, a.height, a.width, &g);
    }
    Ok(total / a.channels as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_io::read_image;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/restoration")
    }

    #[test]
    fn psnr_and_ssim_of_identical_images() {
        let p = Planes::new(1, 12, 12, (0..144).map(|i| i as f32 / 143.0).collect()).unwrap();
        assert_eq!(psnr(&p, &p).unwrap(), f64::INFINITY);
        assert!((ssim(&p, &p).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn psnr_of_a_known_error() {
        // Every value off by 5 levels: MSE 25, PSNR = 10·log10(255²/25).
        let a = Planes::new(3, 4, 4, vec![100.0 / 255.0; 48]).unwrap();
        let b = Planes::new(3, 4, 4, vec![105.0 / 255.0; 48]).unwrap();
        assert!((psnr(&a, &b).unwrap() - 10.0 * (255.0f64 * 255.0 / 25.0).log10()).abs() < 1e-9);
    }

    #[test]
    fn mismatched_and_small_images_are_errors() {
        let a = Planes::zeros(3, 20, 20);
        assert!(psnr(&a, &Planes::zeros(3, 20, 21)).is_err());
        assert!(ssim(&a, &Planes::zeros(1, 20, 20)).is_err());
        assert!(ssim(&Planes::zeros(1, 10, 30), &Planes::zeros(1, 10, 30)).unwrap_err().to_string().contains("11"));
    }

    #[test]
    fn window_is_scikit_images() {
        let g = gaussian_window();
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!((g[5] / g[0] - (25.0 / 4.5f64).exp()).abs() < 1e-9);
    }

    /// tests/fixtures/restoration/metrics.json holds scikit-image's values (tools/make_ssim_fixtures.py).
    #[test]
    fn agrees_with_scikit_image_on_the_fixtures() {
        let text = std::fs::read_to_string(fixtures().join("metrics.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let pairs = json["pairs"].as_array().unwrap();
        assert!(pairs.len() >= 4);
        let (mut worst_psnr, mut worst_ssim) = (0.0f64, 0.0f64);
        for pair in pairs {
            let name = |k: &str| fixtures().join(pair[k].as_str().unwrap());
            let (a, b) = (read_image(&name("clean")).unwrap(), read_image(&name("distorted")).unwrap());
            let (p, s) = (psnr(&a.planes, &b.planes).unwrap(), ssim(&a.planes, &b.planes).unwrap());
            let (ep, es) = (pair["psnr"].as_f64().unwrap(), pair["ssim"].as_f64().unwrap());
            (worst_psnr, worst_ssim) = (worst_psnr.max((p - ep).abs()), worst_ssim.max((s - es).abs()));
            assert!((s - es).abs() < 1e-9, "{}: SSIM {s} vs scikit-image {es}", pair["distorted"]);
            assert!((p - ep).abs() < 1e-9, "{}: PSNR {p} vs scikit-image {ep}", pair["distorted"]);
        }
        eprintln!("largest difference from scikit-image: PSNR {worst_psnr:.2e} dB, SSIM {worst_ssim:.2e}");
    }
}
