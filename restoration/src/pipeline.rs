//! Whole-image restoration, training data and benchmarks: what the `diffuse restore` model commands run.
//!
//! - [`restore_planes`] / [`restore_file`]: read → tile ([`Tiling`], bounded memory for any size) →
//!   [`sample::restore`] per tile → blend → write with the input's format, bit depth and alpha.
//! - [`load_clean_images`]: clean training images from folders (bad files skipped with a note);
//!   [`training_degrader`]: the seeded on-the-fly degradation callback of [`crate::train::train`].
//! - [`bench`]: PSNR/SSIM and time per image against the step count for several samplers.

use std::path::{Path, PathBuf};
use std::time::Instant;

use diffuse_core::search::Schedule;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::Tensor;

use crate::degrade::{Degradation, Task};
use crate::image_io::{Image, read_image, write_image};
use crate::known::{Known, check_known, model_input};
use crate::metrics::{psnr, ssim};
use crate::model::{ModelInput, RestorationModel};
use crate::planes::{Planes, Tiling};
use crate::sample::{SampleOptions, restore};
use crate::{Error, Result};

/// The default tiling of whole images: 256-pixel tiles overlapping by 32.
pub const DEFAULT_TILING: Tiling = Tiling { tile: 256, overlap: 32 };

/// Restores colour planes (values in [0, 1]) tile by tile; each tile is one [`sample::restore`] call with the
/// same options (tile k uses seed stream `opts.first_index + k`, so the result does not depend on the batch).
pub fn restore_planes(
    model: &RestorationModel,
    planes: &Planes,
    opts: &SampleOptions,
    tiling: Tiling,
) -> Result<Planes> {
    let c = model.config().network.image_channels;
    // Grey images through an RGB model: restore the grey replicated to RGB and average back.
    let grey_in_rgb = planes.channels == 1 && c == 3;
    if planes.channels != c && !grey_in_rgb {
        return Err(Error::invalid(
            "image",
            format!("{} channels, but the model restores {c}-channel images", planes.channels),
        ));
    }
    let mut k = 0u64;
    let mut out = tiling.apply(planes, |tile| {
        let mut x = tile.to_tensor();
        if grey_in_rgb {
            x = x.f_repeat([3, 1, 1])?;
        }
        let o = SampleOptions { first_index: opts.first_index + k, ..opts.clone() };
        k += 1;
        let out = restore(model, &x.f_unsqueeze(0)?, &o)?.f_squeeze_dim(0)?;
        let out = if grey_in_rgb { out.f_mean_dim(0, true, tch::Kind::Float)? } else { out };
        Planes::from_tensor(&out)
    })?;
    // Blending divides a weighted sum by the sum of weights, which can round one ulp past 1.
    out.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
    Ok(out)
}

/// Files left out of a set of images, each with the reason.
pub type Notes = Vec<(PathBuf, String)>;

/// What restoring one file did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FileReport {
    /// Megapixels of the image.
    pub megapixels: f64,
}

/// Restores `input` into `output` (atomic; an existing output is kept unless `force`), keeping the input's
/// format, bit depth and alpha. `known`: the degradation's parameters, for a model that restores through them
/// ([`crate::known`]; refused when the model cannot use them or needs them and they are missing).
pub fn restore_file(
    model: &RestorationModel,
    input: &Path,
    output: &Path,
    opts: &SampleOptions,
    tiling: Tiling,
    force: bool,
    known: Option<&Known>,
) -> Result<FileReport> {
    // A mismatch is found before anything is read or written.
    check_known(model.config().input, known)?;
    diffuse_core::io::check_output(output, force)?;
    let image = read_image(input)?;
    // Checked above: without parameters the model is blind and reads the image as it is (no copy of it).
    let inverted;
    let planes = match known {
        Some(_) => {
            inverted = model_input(model.config().input, known, &image.planes).map_err(|e| in_file(input, e))?;
            &inverted
        }
        None => &image.planes,
    };
    let restored = restore_planes(model, planes, opts, tiling).map_err(|e| in_file(input, e))?;
    write_image(&image.with_planes(restored)?, output, force)?;
    Ok(FileReport { megapixels: image.megapixels() })
}

fn in_file(path: &Path, e: Error) -> Error {
    let text = e.to_string();
    if text.contains(&path.display().to_string()) { e } else { Error::file(path, text) }
}

/// Clean images for training or validation: every image file under each folder, as `[3, H, W]` tensors in
/// [0, 1] (grey replicated to RGB, alpha dropped) with at least `min_side` pixels per side. Files that cannot be
/// read or are too small are returned as notes (file, reason) instead.
pub fn load_clean_images(dirs: &[PathBuf], min_side: usize) -> Result<(Vec<(PathBuf, Tensor)>, Notes)> {
    let (mut images, mut notes) = (Vec::new(), Vec::new());
    for dir in dirs {
        for rel in crate::eval::relative_images(dir)? {
            let file = dir.join(&rel);
            match read_image(&file) {
                Ok(im) if im.planes.height < min_side || im.planes.width < min_side => notes.push((
                    file,
                    format!("{} × {} is smaller than {min_side} pixels", im.planes.width, im.planes.height),
                )),
                Ok(im) => {
                    let t = im.planes.to_tensor();
                    let t = if im.planes.channels == 1 { t.f_repeat([3, 1, 1])? } else { t };
                    images.push((file, t));
                }
                Err(e) => notes.push((file, e.to_string())),
            }
        }
    }
    Ok((images, notes))
}

/// The degradation callback of training: a random draw of `task` per crop, seeded by the crop's seed, as the
/// model sees it (`input`: a known-parameter model gets the draw inverted with its own parameters).
pub fn training_degrader(task: Task, input: ModelInput) -> impl FnMut(&Tensor, u64) -> Tensor {
    move |crop: &Tensor, seed: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = Degradation::draw(task, false, &mut rng);
        match Planes::from_tensor(crop) {
            Ok(p) => {
                let y = d.apply(&p, &mut rng);
                if input == ModelInput::Degraded {
                    return y.to_tensor();
                }
                // A mismatch of task and input is refused by the sidecar's validation before training starts.
                model_input(input, d.known().as_ref(), &y).unwrap_or(y).to_tensor()
            }
            // Unreachable for the [C, H, W] crops training passes; a wrong shape is reported by train's check.
            Err(_) => crop.shallow_clone(),
        }
    }
}

/// A clean image and its degraded version (the fixed test variant of a task), for validation and benchmarks.
#[derive(Debug)]
pub struct Pair {
    /// The clean file.
    pub file: PathBuf,
    /// Clean planes.
    pub clean: Planes,
    /// Degraded planes.
    pub degraded: Planes,
}

/// Degrades clean images with the fixed test variant of `task` (noise seeded by `seed` and the file name).
pub fn fixed_pairs(task: Task, files: &[(PathBuf, Image)], seed: u64) -> Result<Vec<Pair>> {
    let d = Degradation::fixed(task, None)?;
    Ok(files
        .iter()
        .map(|(file, im)| {
            let mut rng = crate::degrade::rng_for(seed, &file.to_string_lossy());
            Pair { file: file.clone(), clean: im.planes.clone(), degraded: d.apply(&im.planes, &mut rng) }
        })
        .collect())
}

/// Reads every image under `dir` and degrades it with the fixed test variant of `task`; unreadable files are
/// returned as notes (file, reason).
pub fn load_fixed_pairs(task: Task, dir: &Path, seed: u64) -> Result<(Vec<Pair>, Notes)> {
    let (mut files, mut notes) = (Vec::new(), Vec::new());
    for rel in crate::eval::relative_images(dir)? {
        match read_image(&dir.join(&rel)) {
            Ok(im) => files.push((rel, im)),
            Err(e) => notes.push((dir.join(&rel), e.to_string())),
        }
    }
    Ok((fixed_pairs(task, &files, seed)?, notes))
}

/// The pairs as a model of `input` sees them: for a known-parameter model, the degraded images inverted with
/// the fixed variant's parameters (its curve or kernel); otherwise unchanged.
pub fn for_model_input(mut pairs: Vec<Pair>, task: Task, input: ModelInput) -> Result<Vec<Pair>> {
    if input != ModelInput::Degraded {
        let known = Degradation::fixed(task, None)?.known();
        for p in &mut pairs {
            p.degraded = model_input(input, known.as_ref(), &p.degraded)?;
        }
    }
    Ok(pairs)
}

/// Mean PSNR and SSIM of restored pairs (the degraded input when `restored` is `None`).
pub fn mean_scores(pairs: &[Pair], restored: Option<&[Planes]>) -> Result<(f64, f64)> {
    let (mut p, mut s) = (0.0, 0.0);
    for (i, pair) in pairs.iter().enumerate() {
        let r = restored.map_or(&pair.degraded, |r| &r[i]);
        p += psnr(&pair.clean, r)?.min(100.0);
        s += ssim(&pair.clean, r)?;
    }
    let n = pairs.len().max(1) as f64;
    Ok((p / n, s / n))
}

/// One benchmark point: a sampler at a step count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchPoint {
    /// Core solver name.
    pub sampler: String,
    /// Grid intervals (one network evaluation each for single-evaluation solvers).
    pub steps: usize,
    /// Mean PSNR (dB, identical images counted as 100 dB).
    pub psnr: f64,
    /// Mean SSIM.
    pub ssim: f64,
    /// Mean seconds per image.
    pub seconds_per_image: f64,
}

/// Restores every pair with each sampler at each step count, then with each schedule (rows `s3:SOLVER` at the
/// schedule's NFE); `tick` is called after every image.
#[allow(clippy::too_many_arguments)]
pub fn bench(
    model: &RestorationModel,
    pairs: &[Pair],
    samplers: &[String],
    steps: &[usize],
    schedules: &[Schedule],
    seed: u64,
    tiling: Tiling,
    tick: &mut dyn FnMut(),
) -> Result<Vec<BenchPoint>> {
    let base = SampleOptions { seed, schedule: None, ..SampleOptions::defaults_of(model) };
    let mut runs: Vec<(String, usize, SampleOptions)> = Vec::new();
    for sampler in samplers {
        for &n in steps {
            runs.push((sampler.clone(), n, SampleOptions { solver: sampler.clone(), steps: n, ..base.clone() }));
        }
    }
    for s in schedules {
        runs.push((format!("s3:{}", s.solver), s.nfe, SampleOptions { schedule: Some(s.clone()), ..base.clone() }));
    }
    let mut points = Vec::new();
    for (sampler, n, opts) in runs {
        let start = Instant::now();
        let mut restored = Vec::new();
        for pair in pairs {
            restored.push(restore_planes(model, &pair.degraded, &opts, tiling)?);
            tick();
        }
        let seconds = start.elapsed().as_secs_f64() / pairs.len().max(1) as f64;
        let (psnr, ssim) = mean_scores(pairs, Some(&restored))?;
        points.push(BenchPoint { sampler, steps: n, psnr, ssim, seconds_per_image: seconds });
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelConfig, NetConfig};
    use diffuse_core::{Parameterization, path::PathSpec};
    use tch::Device;

    fn tiny() -> RestorationModel {
        let config = ModelConfig::new(
            "denoise",
            PathSpec::default_of("rddm").unwrap(),
            Parameterization::Residual,
            NetConfig::tiny(3, 1),
        );
        RestorationModel::new(config, Device::Cpu).unwrap()
    }

    #[test]
    fn tiled_restoration_keeps_shape_and_range_for_grey_and_rgb() {
        let model = tiny();
        let opts = SampleOptions { steps: 2, ..SampleOptions::defaults_of(&model) };
        for c in [1, 3] {
            let p = Planes::new(c, 37, 45, (0..c * 37 * 45).map(|i| (i % 7) as f32 / 7.0).collect()).unwrap();
            let out = restore_planes(&model, &p, &opts, Tiling { tile: 16, overlap: 4 }).unwrap();
            assert_eq!((out.channels, out.height, out.width), (c, 37, 45));
            assert!(out.data.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn the_training_degrader_is_seeded() {
        let mut d = training_degrader(Task::Denoise, ModelInput::Degraded);
        let x = Tensor::full([3, 8, 8], 0.5, (tch::Kind::Float, Device::Cpu));
        let (a, b, c) = (d(&x, 1), d(&x, 1), d(&x, 2));
        assert!(a.equal(&b));
        assert_eq!(a.size(), [3, 8, 8]);
        assert!(!a.equal(&c) || a.equal(&x));
    }

    #[test]
    fn a_known_curve_model_sees_the_draw_with_its_own_curve_inverted() {
        let x = Tensor::linspace(0.0, 1.0, 3 * 8 * 8, (tch::Kind::Float, Device::Cpu)).reshape([3, 8, 8]);
        let (blind, known) = (
            training_degrader(Task::Lowlight, ModelInput::Degraded)(&x, 9),
            training_degrader(Task::Lowlight, ModelInput::InverseCurve)(&x, 9),
        );
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let Some(Known::Curve(curve)) = Degradation::draw(Task::Lowlight, false, &mut rng).known() else {
            panic!("a low-light draw knows its curve")
        };
        let expected = curve.invert(&Planes::from_tensor(&blind).unwrap()).to_tensor();
        assert!(known.equal(&expected));
        // The inversion brings the dark draw back near the clean ramp.
        let (err_blind, err_known) = (
            f64::try_from((&blind - &x).abs().mean(None)).unwrap(),
            f64::try_from((&known - &x).abs().mean(None)).unwrap(),
        );
        assert!(err_known < 0.5 * err_blind, "{err_known} vs {err_blind}");
    }

    fn rgb8(planes: Planes) -> Image {
        Image { planes, alpha: None, bit_depth: 8, format: crate::image_io::Format::Png }
    }

    #[test]
    fn a_curve_is_required_exactly_by_known_curve_models() {
        let mut config = ModelConfig::new(
            "lowlight",
            PathSpec::default_of("rddm").unwrap(),
            Parameterization::Residual,
            NetConfig::tiny(3, 1),
        );
        config.input = ModelInput::InverseCurve;
        let known = RestorationModel::new(config, Device::Cpu).unwrap();
        let curve = Known::Curve(crate::degrade::Curve::new(0.1, 1.8).unwrap());
        let dir = std::env::temp_dir().join(format!("diffuse-curve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (input, output) = (dir.join("in.png"), dir.join("out.png"));
        let im = rgb8(Planes::new(3, 8, 8, vec![0.02; 192]).unwrap());
        write_image(&im, &input, true).unwrap();
        let opts = SampleOptions { steps: 1, ..SampleOptions::defaults_of(&known) };
        assert!(restore_file(&known, &input, &output, &opts, DEFAULT_TILING, false, None).is_err());
        assert!(restore_file(&tiny(), &input, &output, &opts, DEFAULT_TILING, false, Some(&curve)).is_err());
        assert!(!output.exists(), "a refused job writes nothing");
        restore_file(&known, &input, &output, &opts, DEFAULT_TILING, false, Some(&curve)).unwrap();
        assert!(output.exists());
        std::fs::remove_dir_all(&dir).unwrap();
        // Fixed pairs for a known-parameter model carry the fixed variant's inversion.
        let clean = Planes::new(3, 8, 8, vec![0.6; 192]).unwrap();
        let pairs = fixed_pairs(Task::Lowlight, &[(PathBuf::from("a.png"), rgb8(clean))], 1).unwrap();
        let before = pairs[0].degraded.clone();
        let after = for_model_input(pairs, Task::Lowlight, ModelInput::InverseCurve).unwrap();
        assert_eq!(after[0].degraded, crate::degrade::Curve::new(0.1, 1.8).unwrap().invert(&before));
        assert!(for_model_input(after, Task::Denoise, ModelInput::InverseCurve).is_err());
    }
}
