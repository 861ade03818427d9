//! Seeded synthetic degradations of clean images, for training pairs and for `diffuse restore degrade`.
//!
//! Values are in [0, 1]; every degraded image is finally clamped and quantised to 8 bits like a real file,
//! `y ← round(255·clamp(y, 0, 1))/255`. `n` below is standard normal noise, independent per value.
//!
//! | task | random draw ([`Degradation::draw`]) | fixed test variant ([`Degradation::fixed`]) |
//! |---|---|---|
//! | denoise | `y = x + σ·n`, σ ~ U[0, 50]/255; with Poisson–Gaussian on, half the draws are `y = P(k·x)/k + σ·n`, k ~ logU[8, 512] | AWGN σ = 25/255 (or `--sigma`) |
//! | deblur | `y = K ∗ x + σ·n`, K Gaussian (σ_b ~ U[0.5, 3] px) or a random motion kernel (half each), σ ~ U[0, 3]/255 | Gaussian σ_b = 2 px (or `--sigma`), σ = 2/255 |
//! | lowlight | `y = P(k·e·x^γ)/k + σ·n`, e ~ U[0.05, 0.3], γ ~ U[1.3, 2.2], k ~ logU[100, 1000], σ ~ U[0.5, 3]/255 | e = 0.1, γ = 1.8, k = 400, σ = 1/255 |
//!
//! `P(λ)` is a Poisson draw (photon shot noise, `k` photons at full scale) and `K ∗ x` a convolution with
//! mirror-reflected borders. The same seed gives the same degradation and noise ([`rng_for`]).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson, StandardNormal};

use crate::planes::Planes;
use crate::{Error, Result};

/// The restoration tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Additive (optionally signal-dependent) noise.
    Denoise,
    /// Gaussian or motion blur plus a little noise.
    Deblur,
    /// Under-exposure, gamma and sensor noise.
    Lowlight,
}

impl Task {
    /// Every task, in order.
    pub const ALL: [Task; 3] = [Task::Denoise, Task::Deblur, Task::Lowlight];

    /// The task's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Task::Denoise => "denoise",
            Task::Deblur => "deblur",
            Task::Lowlight => "lowlight",
        }
    }
}

impl std::str::FromStr for Task {
    type Err = Error;
    fn from_str(s: &str) -> Result<Task> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| Error::invalid("task", format!("'{s}'; valid: denoise, deblur, lowlight")))
    }
}

/// The random stream of one image: ChaCha8 seeded with core's per-sample seed of (`seed`, FNV-1a hash of
/// `key`), so an image's degradation depends on the run seed and its name, not on the other files of a batch.
pub fn rng_for(seed: u64, key: &str) -> ChaCha8Rng {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    ChaCha8Rng::seed_from_u64(diffuse_core::seed::sample_seed(seed, hash))
}

/// A known exposure curve `x ↦ e·x^γ` of low light (the exposure and gamma a camera or its user may know).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Curve {
    /// Exposure scale `e`, in (0, 1].
    pub exposure: f64,
    /// Gamma `γ`, in [0.2, 5].
    pub gamma: f64,
}

impl Curve {
    /// The curve, with its parameters checked.
    pub fn new(exposure: f64, gamma: f64) -> Result<Curve> {
        if !(exposure.is_finite() && exposure > 0.0 && exposure <= 1.0) {
            return Err(Error::invalid("--exposure", format!("{exposure} is outside (0, 1]")));
        }
        if !(gamma.is_finite() && (0.2..=5.0).contains(&gamma)) {
            return Err(Error::invalid("--gamma", format!("{gamma} is outside [0.2, 5]")));
        }
        Ok(Curve { exposure, gamma })
    }

    /// The curve's inverse applied to an image, `x = (clamp(y, 0, 1)/e)^(1/γ)` clamped to [0, 1]: what a
    /// known-curve low-light model restores (its noise is what is left to remove).
    pub fn invert(&self, y: &Planes) -> Planes {
        let mut x = y.clone();
        let (inv_e, inv_g) = (1.0 / self.exposure, 1.0 / self.gamma);
        x.data.iter_mut().for_each(|v| *v = (f64::from(v.clamp(0.0, 1.0)) * inv_e).powf(inv_g).min(1.0) as f32);
        x
    }
}

/// A normalised square blur kernel of odd side.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Kernel {
    /// Side in pixels (odd).
    pub size: usize,
    /// `size × size` weights, row-major, summing to 1.
    pub weights: Vec<f32>,
}

/// The 1-D Gaussian `g(k) ∝ exp(−k²/(2σ²))`, `|k| ≤ ⌈3σ⌉`, summing to 1.
fn gaussian_1d(sigma: f64) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as i64;
    let g: Vec<f64> = (-r..=r).map(|k| (-(k * k) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let s: f64 = g.iter().sum();
    g.iter().map(|v| (v / s) as f32).collect()
}

impl Kernel {
    /// The isotropic Gaussian of standard deviation `sigma` pixels, radius `⌈3σ⌉`.
    pub fn gaussian(sigma: f64) -> Kernel {
        let g = gaussian_1d(sigma);
        let weights = g.iter().flat_map(|a| g.iter().map(move |b| a * b)).collect();
        Kernel { size: g.len(), weights }
    }

    /// A random camera-shake kernel: a smooth random walk of length ~ U[5, 21] px (direction drifting by
    /// N(0, 0.3²) rad per quarter pixel) splatted bilinearly and normalised to sum 1.
    pub fn motion(rng: &mut impl Rng) -> Kernel {
        let length: f64 = rng.random_range(5.0..21.0);
        let steps = (4.0 * length).ceil() as usize;
        let mut angle: f64 = rng.random_range(0.0..std::f64::consts::TAU);
        let (mut x, mut y) = (0.0f64, 0.0f64);
        let mut pts = Vec::with_capacity(steps + 1);
        pts.push((x, y));
        for _ in 0..steps {
            angle += 0.3 * rng.sample::<f64, _>(StandardNormal);
            x += 0.25 * angle.cos();
            y += 0.25 * angle.sin();
            pts.push((x, y));
        }
        let (mx, my) = (pts.iter().map(|p| p.0).sum::<f64>(), pts.iter().map(|p| p.1).sum::<f64>());
        let n = pts.len() as f64;
        let reach = pts.iter().map(|p| (p.0 - mx / n).abs().max((p.1 - my / n).abs())).fold(0.0, f64::max);
        let r = reach.ceil() as usize + 1;
        let size = 2 * r + 1;
        let mut w = vec![0.0f64; size * size];
        for &(px, py) in &pts {
            let (fx, fy) = (px - mx / n + r as f64, py - my / n + r as f64);
            let (ix, iy) = (fx.floor() as usize, fy.floor() as usize);
            let (ax, ay) = (fx - ix as f64, fy - iy as f64);
            for (dy, wy) in [(0, 1.0 - ay), (1, ay)] {
                for (dx, wx) in [(0, 1.0 - ax), (1, ax)] {
                    w[(iy + dy) * size + ix + dx] += wy * wx;
                }
            }
        }
        let s: f64 = w.iter().sum();
        Kernel { size, weights: w.iter().map(|v| (v / s) as f32).collect() }
    }
}

/// How a blur is made.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Blur {
    /// Isotropic Gaussian of standard deviation `sigma` pixels (applied separably).
    Gaussian {
        /// Standard deviation in pixels.
        sigma: f64,
    },
    /// A motion kernel ([`Kernel::motion`]).
    Motion {
        /// The kernel.
        kernel: Kernel,
    },
}

impl Blur {
    /// The blurred image `K ∗ x` (mirrored borders, not quantised).
    pub fn apply(&self, x: &Planes) -> Planes {
        match self {
            Blur::Gaussian { sigma } => convolve_separable(x, &gaussian_1d(*sigma)),
            Blur::Motion { kernel } => convolve(x, kernel),
        }
    }

    /// The blur as a 2-D kernel.
    pub fn kernel(&self) -> Kernel {
        match self {
            Blur::Gaussian { sigma } => Kernel::gaussian(*sigma),
            Blur::Motion { kernel } => kernel.clone(),
        }
    }
}

/// One degradation with all its parameters drawn (recorded so a test pair can be reproduced or inverted).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "task", rename_all = "lowercase")]
pub enum Degradation {
    /// `y = x + σ·n`, or `y = P(k·x)/k + σ·n` when `peak` is set.
    Denoise {
        /// Gaussian noise standard deviation (in [0, 1] units; 25/255 is "σ = 25").
        sigma: f64,
        /// Photons at full scale `k` of the Poisson part, if any.
        peak: Option<f64>,
    },
    /// `y = K ∗ x + σ·n`.
    Deblur {
        /// The blur.
        blur: Blur,
        /// Gaussian noise standard deviation after the blur.
        sigma: f64,
    },
    /// `y = P(k·e·x^γ)/k + σ·n`.
    Lowlight {
        /// Exposure scale `e`.
        exposure: f64,
        /// Gamma `γ`.
        gamma: f64,
        /// Photons at full scale `k`.
        peak: f64,
        /// Read-noise standard deviation.
        sigma: f64,
    },
}

fn log_uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    rng.random_range(lo.ln()..hi.ln()).exp()
}

impl Degradation {
    /// A random degradation of `task` from the training distribution (module table); `poisson` lets half the
    /// denoise draws be Poisson–Gaussian.
    pub fn draw(task: Task, poisson: bool, rng: &mut impl Rng) -> Degradation {
        match task {
            Task::Denoise => {
                let sigma = rng.random_range(0.0..=50.0) / 255.0;
                let peak = (poisson && rng.random_bool(0.5)).then(|| log_uniform(rng, 8.0, 512.0));
                Degradation::Denoise { sigma, peak }
            }
            Task::Deblur => {
                let blur = if rng.random_bool(0.5) {
                    Blur::Gaussian { sigma: rng.random_range(0.5..=3.0) }
                } else {
                    Blur::Motion { kernel: Kernel::motion(rng) }
                };
                Degradation::Deblur { blur, sigma: rng.random_range(0.0..=3.0) / 255.0 }
            }
            Task::Lowlight => Degradation::Lowlight {
                exposure: rng.random_range(0.05..=0.3),
                gamma: rng.random_range(1.3..=2.2),
                peak: log_uniform(rng, 100.0, 1000.0),
                sigma: rng.random_range(0.5..=3.0) / 255.0,
            },
        }
    }

    /// The fixed test variant of `task`: AWGN σ = `param`/255 (default 25) for denoise; Gaussian blur of
    /// `param` px (default 2) plus noise 2/255 for deblur; e = 0.1, γ = 1.8, k = 400, σ = 1/255 for lowlight,
    /// which takes no parameter.
    pub fn fixed(task: Task, param: Option<f64>) -> Result<Degradation> {
        let check = |v: f64, lo: f64, hi: f64, what: &str| {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(Error::invalid("--sigma", format!("{v} is outside [{lo}, {hi}] ({what})")))
            }
        };
        Ok(match task {
            Task::Denoise => {
                let s = check(param.unwrap_or(25.0), 0.0, 255.0, "noise level in 8-bit units")?;
                Degradation::Denoise { sigma: s / 255.0, peak: None }
            }
            Task::Deblur => {
                let s = check(param.unwrap_or(2.0), 0.1, 20.0, "blur standard deviation in pixels")?;
                Degradation::Deblur { blur: Blur::Gaussian { sigma: s }, sigma: 2.0 / 255.0 }
            }
            Task::Lowlight => {
                if param.is_some() {
                    return Err(Error::invalid("--sigma", "applies to denoise and deblur, not lowlight"));
                }
                Degradation::Lowlight { exposure: 0.1, gamma: 1.8, peak: 400.0, sigma: 1.0 / 255.0 }
            }
        })
    }

    /// What a non-blind model may be told about this degradation: the curve of low light, the kernel of a
    /// blur (`None` for noise).
    pub fn known(&self) -> Option<crate::known::Known> {
        match self {
            Degradation::Lowlight { exposure, gamma, .. } => {
                Some(crate::known::Known::Curve(Curve { exposure: *exposure, gamma: *gamma }))
            }
            Degradation::Deblur { blur, .. } => Some(crate::known::Known::Blur(blur.kernel())),
            Degradation::Denoise { .. } => None,
        }
    }

    /// Degrades `clean` (values in [0, 1]) with noise from `rng`; the result is quantised to 8 bits.
    pub fn apply(&self, clean: &Planes, rng: &mut impl Rng) -> Planes {
        let mut y = match self {
            Degradation::Denoise { peak, .. } => {
                let mut y = clean.clone();
                if let Some(k) = peak {
                    shot_noise(&mut y.data, *k, rng);
                }
                y
            }
            Degradation::Deblur { blur, .. } => blur.apply(clean),
            Degradation::Lowlight { exposure, gamma, peak, .. } => {
                let mut y = clean.clone();
                y.data.iter_mut().for_each(|v| *v = (*exposure * f64::from(v.max(0.0)).powf(*gamma)) as f32);
                shot_noise(&mut y.data, *peak, rng);
                y
            }
        };
        let sigma = match self {
            Degradation::Denoise { sigma, .. } | Degradation::Deblur { sigma, .. } => *sigma,
            Degradation::Lowlight { sigma, .. } => *sigma,
        };
        if sigma > 0.0 {
            for v in &mut y.data {
                *v += (sigma * rng.sample::<f64, _>(StandardNormal)) as f32;
            }
        }
        y.quantize_8bit();
        y
    }
}

/// `v ← P(k·v)/k` for every value (Poisson shot noise with `k` photons at full scale).
fn shot_noise(data: &mut [f32], k: f64, rng: &mut impl Rng) {
    for v in data {
        let lambda = k * f64::from(v.clamp(0.0, 1.0));
        *v = match Poisson::new(lambda) {
            Ok(p) => (p.sample(rng) / k) as f32,
            Err(_) => 0.0, // λ = 0: no photons
        };
    }
}

/// Index `i` (may be negative or past the end) mirrored into `0..n` without repeating the edge pixel.
fn reflect(i: isize, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let p = 2 * (n as isize - 1);
    let k = i.rem_euclid(p);
    (if k < n as isize { k } else { p - k }) as usize
}

/// `K ∗ x` per channel with a 2-D kernel and mirrored borders. Only the kernel's non-zero taps are visited (a
/// motion kernel is mostly zeros: a path of a few dozen pixels in a square of up to 45²).
fn convolve(x: &Planes, k: &Kernel) -> Planes {
    let r = (k.size / 2) as isize;
    let taps: Vec<(isize, isize, f32)> = (0..k.weights.len())
        .filter(|&i| k.weights[i] != 0.0)
        .map(|i| ((i / k.size) as isize - r, (i % k.size) as isize - r, k.weights[i]))
        .collect();
    let (h, w) = (x.height, x.width);
    let mut out = Planes::zeros(x.channels, h, w);
    for c in 0..x.channels {
        let src = x.plane(c);
        for yy in 0..h {
            for xx in 0..w {
                let mut acc = 0.0f32;
                for &(dy, dx, wt) in &taps {
                    acc += wt * src[reflect(yy as isize - dy, h) * w + reflect(xx as isize - dx, w)];
                }
                out.data[(c * h + yy) * w + xx] = acc;
            }
        }
    }
    out
}

/// Convolution with the outer product `g ⊗ g` of a symmetric 1-D kernel, as a row pass then a column pass.
fn convolve_separable(x: &Planes, g: &[f32]) -> Planes {
    let r = (g.len() / 2) as isize;
    let (h, w) = (x.height, x.width);
    let mut tmp = Planes::zeros(x.channels, h, w);
    let mut out = Planes::zeros(x.channels, h, w);
    for c in 0..x.channels {
        let (src, base) = (x.plane(c), c * h * w);
        for yy in 0..h {
            for xx in 0..w {
                tmp.data[base + yy * w + xx] =
                    (-r..=r).map(|d| g[(d + r) as usize] * src[yy * w + reflect(xx as isize - d, w)]).sum();
            }
        }
        for yy in 0..h {
            for xx in 0..w {
                out.data[base + yy * w + xx] =
                    (-r..=r).map(|d| g[(d + r) as usize] * tmp.data[base + reflect(yy as isize - d, h) * w + xx]).sum();
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "degrade_tests.rs"]
mod tests;
