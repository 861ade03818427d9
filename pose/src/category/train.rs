//! Training the category-level model by denoising on the chart.
//!
//! A pool of scans is made first: `scenes_per_category` procedural training instances per category (instance
//! seeds below [`VALIDATION_SEEDS`]; validation uses seeds from there up to the held-out test seeds
//! [`super::shapes::TEST_SEEDS`], which training never touches), each scanned once on its table by
//! [`super::scene::make_scene`]. Each step draws `batch` scans, a noise level σ log-uniform in the recipe's
//! range and ε ~ N(0, I₉), forms the noisy box `retract(truth, σ·ε)`, and regresses the network's output onto the
//! chart coordinates of the truth seen from the noisy box — the nearest of the truth's symmetric equals (any turn
//! about y for bottle, bowl, can and a mug whose handle is hidden; a half-turn for the box). Loss: smooth-L1 in
//! chart units, weighted by 1/(σ + 0.1) so that the fine steps count. AdamW with warm-up and cosine decay, an EMA
//! of the weights (written as the model), checkpoints, exact resume (every draw of step n depends only on the
//! seed and n), a time limit.

pub use diffuse_core::optim::CHECKPOINT;
use diffuse_core::optim::{AdamEma, AdamSettings, RunOptions, drive, warmup_cosine};
use diffuse_core::seed::sample_seed;
use nalgebra::Point3;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::baseline::{Plane, above_plane, support_plane};
use super::chart::{DIM, local, nearest_equivalent, retract};
use super::estimate::CategoryOptions;
use super::metrics::{CategoryErrors, SizedPose, category_errors, summarize};
use super::model::{CategoryModel, box_condition, box_view};
use super::net::heading_bin;
use super::scene::{SceneConfig, make_scene};
use super::shapes::instance;
use super::{Category, CategorySymmetry};
use crate::cloud::PointCloud;
use crate::error::{Error, Result};

/// Instance seeds from here up to the test seeds are validation instances; training draws below.
pub const VALIDATION_SEEDS: u64 = 1 << 39;
/// The model file (EMA weights) in the output folder; its sidecar is `model.json`.
pub const MODEL: &str = "model.safetensors";
/// Most scenes per category in the pool.
pub const MAX_SCENES: usize = 100_000;

/// The options a resumed run must keep, recorded in the checkpoint and the sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Boxes per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up steps (linear), then cosine decay to 5 % at the last step.
    pub warmup: u64,
    /// Adam's β1 and β2.
    pub betas: (f64, f64),
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Gradient clipping by global norm.
    pub grad_clip: f64,
    /// EMA decay of the weights written as the model.
    pub ema_decay: f64,
    /// Training scans per category in the pool.
    pub scenes_per_category: usize,
    /// Noise levels drawn log-uniformly in this range.
    pub sigma: (f64, f64),
    /// Seed of every draw.
    pub seed: u64,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            batch: 64,
            lr: 1e-3,
            warmup: 200,
            betas: (0.9, 0.999),
            weight_decay: 1e-4,
            grad_clip: 1.0,
            ema_decay: 0.999,
            scenes_per_category: 1000,
            sigma: (0.01, 2.0),
            seed: 0,
        }
    }
}

/// What a training run does (core's [`RunOptions`] with this crate's [`Recipe`]).
pub type TrainOptions = RunOptions<Recipe>;

/// One scan of the pool.
#[derive(Debug, Clone)]
pub struct PoolScene {
    /// Index of its category in the model's list.
    pub category: usize,
    /// The scan's points above its table (sensor at the origin).
    pub object: Vec<Point3<f64>>,
    /// The table as found in the scan.
    pub table: Plane,
    /// The whole scan, kept for validation scenes only (the estimator needs it; training does not).
    pub scan: Option<PointCloud>,
    /// The true box.
    pub truth: SizedPose,
    /// Its symmetry in this scan (a mug with its handle hidden counts as symmetric about y).
    pub symmetry: CategorySymmetry,
    /// For a mug, whether its handle shows.
    pub handle_visible: Option<bool>,
}

/// One step's report to the progress callback (validation: the mean of IoU50, 10°5cm and 5°2cm on validation
/// scans).
pub type Progress = diffuse_core::optim::StepReport;

/// What a run did.
pub type TrainReport = diffuse_core::optim::DriveReport;

/// Scans of `categories`, `per_category` each, instance seeds from `first_seed` on; made on all cores. The whole
/// scans are kept only with `keep_scans` (validation); training needs only the points above the table.
pub fn make_pool(
    table_margin: f64,
    keep_scans: bool,
    categories: &[Category],
    per_category: usize,
    first_seed: u64,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<PoolScene>> {
    diffuse_core::limits::at_most("scenes per category", per_category, MAX_SCENES)?;
    let jobs: Vec<(usize, u64)> =
        (0..categories.len()).flat_map(|c| (0..per_category as u64).map(move |i| (c, i))).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs.len().max(1));
    let cfg = SceneConfig::default();
    let make = |&(c, i): &(usize, u64)| -> Result<PoolScene> {
        let category = categories[c];
        let inst = instance(category, first_seed + i);
        let scene_seed = sample_seed(seed ^ (c as u64) << 48, i);
        let s = make_scene(&inst, scene_seed, &cfg)?;
        let table = support_plane(&s.scan.points, &Point3::origin(), scene_seed)?;
        let symmetry = if s.handle_visible == Some(false) { CategorySymmetry::AboutY } else { category.symmetry() };
        Ok(PoolScene {
            category: c,
            object: above_plane(&s.scan.points, &table, table_margin),
            table,
            scan: keep_scans.then_some(s.scan),
            truth: SizedPose { pose: s.truth, size: s.size },
            symmetry,
            handle_visible: s.handle_visible,
        })
    };
    let mut pool: Vec<Option<Result<PoolScene>>> = (0..jobs.len()).map(|_| None).collect();
    let chunk = 64;
    for (done, block) in jobs.chunks(chunk * threads).enumerate() {
        let parts: Vec<Vec<Result<PoolScene>>> = std::thread::scope(|scope| {
            let handles: Vec<_> =
                block.chunks(chunk).map(|part| scope.spawn(move || part.iter().map(make).collect())).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
        });
        let base = done * chunk * threads;
        for (k, r) in parts.into_iter().flatten().enumerate() {
            pool[base + k] = Some(r);
        }
        progress((base + block.len()).min(jobs.len()), jobs.len());
    }
    pool.into_iter().map(|r| r.unwrap_or_else(|| Err(Error::invalid("pool", "a scene thread failed")))).collect()
}

/// Validation: the full estimator (default sampler) on `scenes`; the mean of the IoU50, 10°5cm and 5°2cm
/// fractions.
pub fn validate(model: &CategoryModel, scenes: &[PoolScene]) -> Result<f64> {
    let mut results: Vec<(CategoryErrors, f64)> = Vec::new();
    for (i, s) in scenes.iter().enumerate() {
        let category = model.config().categories[s.category];
        let cloud = s.scan.as_ref().ok_or_else(|| Error::invalid("validation", "a scene made without its scan"))?;
        let opts = CategoryOptions { seed: i as u64, ..CategoryOptions::default() };
        let e = match model.estimate(cloud, &Point3::origin(), category, &opts) {
            Ok(e) => category_errors(&e.best, &s.truth, category.symmetry(), s.handle_visible),
            Err(_) => CategoryErrors { iou: 0.0, rotation_deg: 180.0, translation_m: 1.0 },
        };
        results.push((e, 0.0));
    }
    let s = summarize(&results);
    Ok((s.iou50 + s.deg10_cm5 + s.deg5_cm2) / 3.0)
}

/// One step's batch.
struct Batch {
    views: Tensor,
    conditions: Tensor,
    /// Chart coordinates of the truth from the noisy box, the yaw as a residual from its heading bin's centre.
    targets: Tensor,
    /// The heading bins.
    bins: Tensor,
    /// Per-box loss weights.
    weights: Tensor,
}

impl Batch {
    /// The loss of the network's output `out`: weighted smooth-L1 on the chart coordinates plus half the weighted
    /// cross-entropy of the heading bins.
    fn loss(&self, out: &Tensor) -> Result<Tensor> {
        let coords = out.f_narrow(1, 0, DIM as i64)?;
        let logits = out.f_narrow(1, DIM as i64, out.size()[1] - DIM as i64)?;
        let l1 = coords.f_smooth_l1_loss(&self.targets, tch::Reduction::None, 0.05)?.f_sum_dim_intlist(
            [1i64].as_slice(),
            false,
            None,
        )?;
        let ce =
            logits.f_log_softmax(1, Kind::Float)?.f_gather(1, &self.bins.f_unsqueeze(1)?, false)?.f_squeeze_dim(1)?;
        let per = l1.f_sub(&ce.f_mul_scalar(0.5)?)?;
        Ok(per.f_mul(&self.weights)?.f_mean(Kind::Float)?)
    }
}

/// One step's batch: views, conditions and targets.
fn batch(model: &CategoryModel, pool: &[PoolScene], r: &Recipe, step: u64) -> Result<Batch> {
    let cfg = model.config();
    let n = cfg.network.points;
    let nbins = cfg.network.heading_bins;
    let (mut views, mut conds, mut targets, mut weights) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut bins: Vec<i64> = Vec::new();
    let (lo, hi) = (r.sigma.0.ln(), r.sigma.1.ln());
    for b in 0..r.batch as u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(sample_seed(r.seed ^ step.wrapping_mul(0x9E37_79B9), b));
        let scene = &pool[rng.random_range(0..pool.len())];
        let sigma = (lo + (hi - lo) * rng.random::<f64>()).exp();
        let z: [f64; DIM] = std::array::from_fn(|_| {
            let e: f64 = StandardNormal.sample(&mut rng);
            sigma * e
        });
        let hyp = retract(&scene.truth, &z, &cfg.chart);
        let target = nearest_equivalent(&scene.truth, &hyp, scene.symmetry);
        let mut coords = local(&hyp, &target, &cfg.chart);
        let (bin, residual) = heading_bin(coords[1] * cfg.chart.yaw, nbins);
        coords[1] = residual / cfg.chart.yaw;
        bins.push(bin as i64);
        targets.extend(coords.map(|v| v as f32));
        box_view(&scene.object, &hyp, cfg.crop, n, &mut rng, &mut views);
        box_condition(sigma, &hyp, &Point3::origin(), &scene.table, scene.category, cfg.categories.len(), &mut conds);
        weights.push((1.0 / (sigma + 0.1)) as f32);
    }
    let device = model.var_store().device();
    let b = r.batch as i64;
    let t = |v: &[f32], shape: &[i64]| -> Result<Tensor> {
        Ok(Tensor::f_from_slice(v)?.f_view(shape)?.f_to_device(device)?)
    };
    Ok(Batch {
        views: t(&views, &[b, n as i64, 3])?,
        conditions: t(&conds, &[b, -1])?,
        targets: t(&targets, &[b, DIM as i64])?,
        bins: Tensor::f_from_slice(&bins)?.f_to_device(device)?,
        weights: t(&weights, &[b])?,
    })
}

/// Trains `model` on `pool`; validates on `validation` every `opts.validate_every` steps and at the end (EMA
/// weights); writes the checkpoint and, at the end, the EMA model (`model.safetensors` + `model.json`) to
/// `opts.out`.
pub fn train(
    model: &mut CategoryModel,
    pool: &[PoolScene],
    validation: &[PoolScene],
    opts: &TrainOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<TrainReport> {
    let r = opts.recipe.clone();
    if r.batch == 0 || r.batch > 4096 || pool.is_empty() {
        return Err(Error::invalid("training", "needs a batch of 1 to 4096 and a non-empty pool"));
    }
    if !(r.lr > 0.0 && r.sigma.0 > 0.0 && r.sigma.1 > r.sigma.0 && r.sigma.1.is_finite()) {
        return Err(Error::invalid("recipe", "needs lr > 0 and 0 < σ_lo < σ_hi"));
    }
    let adam =
        AdamSettings { betas: r.betas, weight_decay: r.weight_decay, grad_clip: r.grad_clip, ema_decay: r.ema_decay };
    adam.validate()?;
    let mut state = AdamEma::new(model.var_store())?;
    if opts.resume {
        state.load_with_recipe(&opts.out.join(CHECKPOINT), &r)?;
    }
    let model_ref: &CategoryModel = model;
    let mut step = |n: u64| -> Result<f64> {
        let b = batch(model_ref, pool, &r, n)?;
        let loss = b.loss(&model_ref.forward(&b.views, &b.conditions)?)?;
        loss.f_backward()?;
        Ok(loss.double_value(&[]))
    };
    let mut check = |_: u64| validate(model_ref, validation);
    let report = drive(
        &mut state,
        opts,
        &mut step,
        &|n| (adam, warmup_cosine(r.lr, r.warmup, n, opts.steps, 0.05)),
        if validation.is_empty() { None } else { Some(&mut check) },
        progress,
    )?;
    let record = serde_json::json!({"recipe": r, "steps": report.step, "stopped_by_time": report.stopped_by_time});
    match &mut model.config_mut().training {
        serde_json::Value::Object(m) => m.extend(record.as_object().cloned().unwrap_or_default()),
        other => *other = record,
    }
    model.save(&opts.out.join(MODEL), true)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::model::CategoryModelConfig;
    use crate::category::net::NetConfig;

    fn tiny() -> CategoryModel {
        let mut cfg = CategoryModelConfig::new(vec![Category::Can, Category::Mug]);
        cfg.network = NetConfig { points: 32, point_widths: [8, 8, 8], head: 16, categories: 2, heading_bins: 4 };
        tch::manual_seed(0);
        CategoryModel::new(cfg, tch::Device::Cpu).unwrap()
    }

    fn weights(m: &CategoryModel) -> Vec<Vec<f32>> {
        diffuse_core::weights::named(m.var_store())
            .iter()
            .map(|(_, t)| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())
            .collect()
    }

    #[test]
    fn resume_is_exact_and_the_model_is_written() {
        let pool = make_pool(0.004, false, &[Category::Can, Category::Mug], 3, 0, 0, &mut |_, _| {}).unwrap();
        assert_eq!(pool.len(), 6);
        assert!(pool.iter().all(|s| s.truth.size.iter().all(|&v| v > 0.0)));
        let dir = tempfile::tempdir().unwrap();
        let opts = |steps: u64, resume: bool, out: &std::path::Path| TrainOptions {
            recipe: Recipe { batch: 4, warmup: 2, ..Recipe::default() },
            steps,
            checkpoint_every: 0,
            time_limit: None,
            out: out.to_path_buf(),
            resume,
            validate_every: 0,
        };
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let mut straight = tiny();
        let r = train(&mut straight, &pool, &[], &opts(4, false, &a), &mut |_| {}).unwrap();
        assert_eq!(r.step, 4);
        assert!(r.last_loss.is_finite());
        let mut first = tiny();
        train(&mut first, &pool, &[], &opts(2, false, &b), &mut |_| {}).unwrap();
        let mut resumed = tiny();
        let r = train(&mut resumed, &pool, &[], &opts(4, true, &b), &mut |_| {}).unwrap();
        assert_eq!(r.step, 4);
        assert_eq!(weights(&straight), weights(&resumed));
        // The written model loads and knows its recipe.
        let loaded = CategoryModel::load(&a.join(MODEL), tch::Device::Cpu).unwrap();
        assert_eq!(weights(&loaded), weights(&straight));
        assert_eq!(loaded.config().training["steps"], 4);
        // A different recipe does not resume.
        let mut other = opts(6, true, &b);
        other.recipe.batch = 5;
        let e = train(&mut tiny(), &pool, &[], &other, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("checkpoint.safetensors") && e.contains("same recipe"), "{e}");
    }

    #[test]
    fn training_moves_the_network_towards_the_targets() {
        // On a fixed batch, a few hundred steps must cut the loss: the targets are learnable from the views.
        let pool = make_pool(0.004, false, &[Category::Can, Category::Mug], 4, 0, 0, &mut |_, _| {}).unwrap();
        let mut m = tiny();
        let r = Recipe { batch: 16, ..Recipe::default() };
        let b = batch(&m, &pool, &r, 1).unwrap();
        let loss = |m: &CategoryModel| -> f64 {
            b.loss(&m.forward(&b.views, &b.conditions).unwrap()).unwrap().double_value(&[])
        };
        let before = loss(&m);
        let mut state = AdamEma::new(m.var_store()).unwrap();
        let adam = AdamSettings { betas: (0.9, 0.999), weight_decay: 0.0, grad_clip: 0.0, ema_decay: 0.0 };
        for _ in 0..300 {
            b.loss(&m.forward(&b.views, &b.conditions).unwrap()).unwrap().backward();
            state.update(&adam, 3e-3).unwrap();
        }
        let _ = &mut m;
        let after = loss(&m);
        assert!(after < 0.3 * before, "{before} → {after}");
    }
}
