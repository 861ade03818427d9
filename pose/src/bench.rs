//! The synthetic pose benchmark behind `diffuse pose bench`.
//!
//! Each case places a shipped object under a uniformly random rotation (full SO(3)) and a random translation in
//! front of a virtual depth camera, renders the visible surface (a partial view), keeps `scan_points` points of
//! which a fraction `outliers` is replaced by points uniform in the scan's enlarged bounding box, and adds
//! Gaussian noise of `noise` object diameters per coordinate. Estimates are scored by the symmetry-aware rotation
//! error, the translation error and ADD-S; a case succeeds when rotation error < 5° and translation error < 2 % of
//! the diameter. Every case is seeded by its index, so results repeat exactly.

use std::time::Instant;

use diffuse_core::seed::sample_seed;
use nalgebra::{Point3, Vector3};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::cloud::PointCloud;
use crate::error::{Error, Result};
use crate::mesh::Camera;
use crate::metrics::{self, PoseErrors};
use crate::registration::{self, Dof, EstimateConfig, Surrogate};
use crate::se3::{self, Pose};
use crate::shapes::{self, ObjectModel, Symmetry};
use crate::so3;

/// Benchmark settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    /// Built-in object names (see [`shapes::BUILTIN`]).
    pub objects: Vec<String>,
    /// Cases per object.
    pub cases_per_object: usize,
    /// Points per scan (outliers included).
    pub scan_points: usize,
    /// Gaussian noise per coordinate, in object diameters.
    pub noise: f64,
    /// Fraction of scan points that are outliers.
    pub outliers: f64,
    /// Surface samples in the object model given to the estimators.
    pub model_points: usize,
    /// Success threshold on the rotation error (degrees).
    pub rotation_threshold_deg: f64,
    /// Success threshold on the translation error (object diameters).
    pub translation_threshold: f64,
    /// Seed of the cases.
    pub seed: u64,
    /// The depth camera.
    pub camera: Camera,
    /// Settings of the diffusion estimator (its `seed` is set per case).
    pub estimate: EstimateConfig,
    /// Also run the baselines: ICP from the identity in 6 DoF; with scale (`estimate.dof` 7 or 9) the 6-DoF
    /// estimator given the model at its true scale (the upper bound) and given the unscaled model (what a
    /// rigid-only tool gets).
    pub baseline: bool,
    /// With scale: each case's object is stretched by factors drawn log-uniformly in this range (one factor in
    /// 7 DoF, one per object axis in 9 DoF; an axially symmetric object keeps its symmetry, so its two scales
    /// across the axis are equal).
    pub scale_range: (f64, f64),
    /// Success threshold on the largest relative scale error (with scale).
    pub scale_threshold: f64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            objects: shapes::BUILTIN.iter().map(|s| s.to_string()).collect(),
            cases_per_object: 20,
            scan_points: 2000,
            noise: 0.01,
            outliers: 0.05,
            model_points: 4000,
            rotation_threshold_deg: 5.0,
            translation_threshold: 0.02,
            seed: 0,
            camera: Camera { width: 640, height: 480, fx: 600.0, fy: 600.0, cx: 320.0, cy: 240.0 },
            // The scans are in the camera frame: the sensor sits at the origin.
            estimate: EstimateConfig { viewpoint: Some(Point3::origin()), ..EstimateConfig::default() },
            baseline: true,
            scale_range: (0.6, 1.6),
            scale_threshold: 0.03,
        }
    }
}

/// One synthetic scan with its ground truth.
#[derive(Debug, Clone)]
pub struct BenchCase {
    /// Object name.
    pub object: String,
    /// Index of the case among all cases of the run.
    pub index: usize,
    /// True pose object → camera (rigid part).
    pub truth: Pose,
    /// True scale per object axis (1 without scale): `p_camera = R·diag(scale)·p + t`.
    pub scale: Vector3<f64>,
    /// The scan (camera frame).
    pub scene: PointCloud,
    /// For objects with a distinguishing part (the mug's handle): the fraction of the rendered object pixels
    /// that show it.
    pub feature_fraction: Option<f64>,
    /// Whether that part is visible enough to tell the pose (at least [`FEATURE_VISIBLE`] of the pixels).
    pub feature_visible: Option<bool>,
}

/// Fraction of a scan's object pixels on the distinguishing part above which the part counts as visible.
pub const FEATURE_VISIBLE: f64 = 0.02;

/// Two stretched shapes are the same when 95 % of the one lies this close to the other (object diameters: a
/// few sampling gaps of the model).
const EQUIVALENT_SHAPE: f64 = 0.05;

/// Most cases per object of one benchmark run (`pose bench --cases`).
pub const MAX_CASES: usize = 100_000;
/// Most points per scan or object model in a benchmark (`pose bench --points`).
pub const MAX_POINTS: usize = 1_000_000;

/// Renders case `index` of `object` (whose diameter is `diameter`).
pub fn make_case(object: &ObjectModel, diameter: f64, index: usize, cfg: &BenchConfig) -> Result<BenchCase> {
    if !(cfg.noise >= 0.0 && cfg.outliers >= 0.0 && cfg.outliers < 1.0 && cfg.scan_points >= 10) {
        return Err(Error::invalid(
            "benchmark",
            "noise ≥ 0, outliers in [0, 1) and at least 10 scan points are needed",
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(sample_seed(cfg.seed, index as u64));
    let rotation = so3::uniform(&mut rng);
    let t = Vector3::new(
        (rng.random::<f64>() - 0.5) * 0.6 * diameter,
        (rng.random::<f64>() - 0.5) * 0.6 * diameter,
        (2.2 + 0.8 * rng.random::<f64>()) * diameter,
    );
    let truth = se3::pose(rotation, t);
    // Drawn after the pose, so the rigid cases stay what they were.
    let scale = match cfg.estimate.dof {
        Dof::Rigid => Vector3::repeat(1.0),
        dof => draw_scale(&mut rng, dof, &object.symmetry, cfg.scale_range)?,
    };
    let image = cfg.camera.render(&object.mesh.scaled(&scale).transformed(&truth));
    let (points, tris) = image.to_points();
    if points.len() < 10 {
        return Err(Error::TooFewPoints {
            what: format!("rendered {}", object.name),
            have: points.len(),
            need: 10,
            context: String::new(),
        });
    }
    let feature_fraction = object
        .feature
        .map(|(a, b)| tris.iter().filter(|&&t| (a..b).contains(&(t as usize))).count() as f64 / tris.len() as f64);
    let feature_visible = feature_fraction.map(|f| f >= FEATURE_VISIBLE);
    let n_out = (cfg.outliers * cfg.scan_points as f64).round() as usize;
    let n_in = cfg.scan_points - n_out;
    let mut idx: Vec<usize> = (0..points.len()).collect();
    idx.shuffle(&mut rng);
    idx.truncate(n_in);
    let sd = cfg.noise * diameter;
    let mut scan: Vec<Point3<f64>> = idx
        .iter()
        .map(|&i| {
            let z = Vector3::from_fn(|_, _| -> f64 { StandardNormal.sample(&mut rng) });
            points[i] + z * sd
        })
        .collect();
    let (lo, hi) = PointCloud::new(scan.clone()).bounding_box();
    let pad = Vector3::repeat(0.1 * diameter);
    let (lo, hi) = (lo - pad, hi + pad);
    for _ in 0..n_out {
        scan.push(Point3::from(lo.coords + (hi - lo).component_mul(&Vector3::from_fn(|_, _| rng.random::<f64>()))));
    }
    scan.shuffle(&mut rng);
    Ok(BenchCase {
        object: object.name.clone(),
        index,
        truth,
        scale,
        scene: PointCloud::new(scan),
        feature_fraction,
        feature_visible,
    })
}

/// Scale factors for one case: log-uniform in `range`, one for all axes in 7 DoF; one per axis in 9 DoF, the two
/// across an axial symmetry's axis equal.
fn draw_scale(rng: &mut ChaCha8Rng, dof: Dof, symmetry: &Symmetry, range: (f64, f64)) -> Result<Vector3<f64>> {
    let (lo, hi) = range;
    if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
        return Err(Error::invalid("benchmark", format!("scale range {lo}..{hi} must be positive and ordered")));
    }
    let mut draw = || (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp();
    let mut s = Vector3::from_fn(|_, _| draw());
    match (dof, symmetry) {
        (Dof::Similarity, _) => s = Vector3::repeat(s.x),
        (Dof::Anisotropic, Symmetry::Axial { axis, .. }) => {
            let k = axis.iamax();
            let (a, b) = ((k + 1) % 3, (k + 2) % 3);
            s[b] = s[a];
        }
        _ => {}
    }
    Ok(s)
}

/// Which estimator produced a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// SE(3) diffusion with the configured surrogate.
    Diffusion,
    /// Point-to-plane ICP from the identity rotation, centroids aligned.
    IcpFromIdentity,
    /// The 6-DoF estimator given the model at the true scale (with scale: the upper bound).
    #[serde(rename = "6dof-true-scale")]
    RigidTrueScale,
    /// The 6-DoF estimator given the unscaled model (with scale: what a rigid-only tool gets).
    #[serde(rename = "6dof-unscaled")]
    RigidUnscaled,
}

impl Method {
    /// Name in reports.
    pub fn label(&self) -> &'static str {
        match self {
            Method::Diffusion => "diffusion",
            Method::IcpFromIdentity => "icp-from-identity",
            Method::RigidTrueScale => "6dof-true-scale",
            Method::RigidUnscaled => "6dof-unscaled",
        }
    }
}

/// The outcome of one estimator on one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    /// Object name.
    pub object: String,
    /// Case index.
    pub index: usize,
    /// Estimator.
    pub method: Method,
    /// Errors against the truth.
    pub errors: PoseErrors,
    /// Wall-clock time of the estimate (ms).
    pub time_ms: f64,
    /// Rotation and translation within the thresholds.
    pub success: bool,
    /// See [`BenchCase::feature_visible`].
    pub feature_visible: Option<bool>,
    /// For a failed case of the diffusion estimator: whether the truth, after the estimator's final polish, is
    /// still right and scores higher than its answer (`Some(true)`: the search missed it; `Some(false)`: the
    /// estimator's score does not prefer a right answer there). `None` otherwise.
    pub truth_preferred: Option<bool>,
}

/// Aggregates over a set of case results.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Estimator.
    pub method: Method,
    /// Object name or "all".
    pub object: String,
    /// Number of cases.
    pub cases: usize,
    /// Fraction of successful cases.
    pub success_rate: f64,
    /// Mean symmetry-aware rotation error (degrees).
    pub mean_rotation_deg: f64,
    /// Median rotation error (degrees).
    pub median_rotation_deg: f64,
    /// Mean translation error (object diameters).
    pub mean_translation: f64,
    /// Mean ADD-S (object diameters).
    pub mean_add_s: f64,
    /// Fraction of cases with ADD-S below 10 % of the diameter (the usual ADD-S accuracy).
    pub add_s_accuracy: f64,
    /// Mean of the largest relative scale error per case (0 in 6 DoF).
    pub mean_scale_error: f64,
    /// Mean time per estimate (ms).
    pub mean_time_ms: f64,
    /// 95th-percentile time per estimate (ms).
    pub p95_time_ms: f64,
}

/// Summarises the results of one method (on one object or all).
pub fn summarize(results: &[&CaseResult], method: Method, object: &str) -> Summary {
    let n = results.len().max(1) as f64;
    let mut rot: Vec<f64> = results.iter().map(|r| r.errors.rotation_deg).collect();
    rot.sort_by(f64::total_cmp);
    let mut times: Vec<f64> = results.iter().map(|r| r.time_ms).collect();
    times.sort_by(f64::total_cmp);
    let pick = |v: &[f64], q: f64| {
        if v.is_empty() { 0.0 } else { v[((v.len() - 1) as f64 * q).round() as usize] }
    };
    Summary {
        method,
        object: object.to_string(),
        cases: results.len(),
        success_rate: results.iter().filter(|r| r.success).count() as f64 / n,
        mean_rotation_deg: rot.iter().sum::<f64>() / n,
        median_rotation_deg: pick(&rot, 0.5),
        mean_translation: results.iter().map(|r| r.errors.translation).sum::<f64>() / n,
        mean_add_s: results.iter().map(|r| r.errors.add_s).sum::<f64>() / n,
        add_s_accuracy: results.iter().filter(|r| r.errors.add_s < 0.1).count() as f64 / n,
        mean_scale_error: results.iter().map(|r| r.errors.scale).sum::<f64>() / n,
        mean_time_ms: times.iter().sum::<f64>() / n,
        p95_time_ms: pick(&times, 0.95),
    }
}

/// All results and their summaries (per object and overall, per method).
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Every case result in run order.
    pub results: Vec<CaseResult>,
    /// Summaries: for each method, each object then "all".
    pub summaries: Vec<Summary>,
}

/// Runs the benchmark; `on_result` sees each result as it is made (for progress and per-case output).
pub fn run(
    cfg: &BenchConfig,
    surrogate: &dyn Surrogate,
    on_result: &mut dyn FnMut(&CaseResult),
) -> Result<BenchReport> {
    // Cases are made one at a time, but each holds its scan and model: bound them before the first.
    diffuse_core::limits::at_most("cases per object", cfg.cases_per_object, MAX_CASES)?;
    diffuse_core::limits::at_most("scan points", cfg.scan_points, MAX_POINTS)?;
    diffuse_core::limits::at_most("model points", cfg.model_points, MAX_POINTS)?;
    let mut results = Vec::new();
    let scaled = cfg.estimate.dof != Dof::Rigid;
    let mut methods = vec![Method::Diffusion];
    if cfg.baseline {
        if scaled {
            methods.extend([Method::RigidTrueScale, Method::RigidUnscaled]);
        } else {
            methods.push(Method::IcpFromIdentity);
        }
    }
    for (oi, name) in cfg.objects.iter().enumerate() {
        let object = shapes::builtin(name)?;
        let diameter = object.diameter();
        let model = object.model_cloud(cfg.model_points, sample_seed(cfg.seed ^ 0x0B1E, oi as u64))?;
        let eval_points: Vec<Point3<f64>> = model.points.iter().step_by(4).copied().collect();
        for c in 0..cfg.cases_per_object {
            let index = oi * cfg.cases_per_object + c;
            let case = make_case(&object, diameter, index, cfg)?;
            // Poses with scale that give the same stretched shape count as the truth (a box's axes swapped).
            let equivalents = if cfg.estimate.dof == Dof::Anisotropic {
                metrics::stretch_equivalents(&model.points, &case.scale, EQUIVALENT_SHAPE * diameter)?
            } else {
                Vec::new()
            };
            for &method in &methods {
                let mut est_cfg = cfg.estimate.clone();
                est_cfg.seed = sample_seed(cfg.seed, index as u64);
                let rigid = EstimateConfig { dof: Dof::Rigid, ..est_cfg.clone() };
                let t = Instant::now();
                let est = match method {
                    Method::Diffusion => registration::estimate_pose(&model, &case.scene, &est_cfg, surrogate)?,
                    Method::IcpFromIdentity => registration::icp_from_identity(&model, &case.scene, &est_cfg)?,
                    Method::RigidTrueScale => {
                        let mut e =
                            registration::estimate_pose(&model.scaled(&case.scale), &case.scene, &rigid, surrogate)?;
                        e.scale = case.scale;
                        e
                    }
                    Method::RigidUnscaled => registration::estimate_pose(&model, &case.scene, &rigid, surrogate)?,
                };
                let time_ms = t.elapsed().as_secs_f64() * 1e3;
                let errors_of = |pose: &Pose, scale: &Vector3<f64>| {
                    metrics::scaled_pose_errors(
                        (pose, scale),
                        (&case.truth, &case.scale),
                        &equivalents,
                        &eval_points,
                        &object.symmetry,
                        diameter,
                    )
                };
                let errors = errors_of(&est.pose, &est.scale)?;
                let succeeds = |e: &PoseErrors| {
                    e.rotation_deg < cfg.rotation_threshold_deg
                        && e.translation < cfg.translation_threshold
                        && (!scaled || e.scale < cfg.scale_threshold)
                };
                let success = succeeds(&errors);
                let truth_preferred = match (method, success, est.candidates.first()) {
                    (Method::Diffusion, false, Some(best)) => {
                        let (pose, scale, score) =
                            registration::polish_pose(&model, &case.scene, &est_cfg, &case.truth, &case.scale)?;
                        Some(score > best.score && succeeds(&errors_of(&pose, &scale)?))
                    }
                    _ => None,
                };
                let result = CaseResult {
                    object: name.clone(),
                    index,
                    method,
                    success,
                    errors,
                    time_ms,
                    feature_visible: case.feature_visible,
                    truth_preferred,
                };
                on_result(&result);
                results.push(result);
            }
        }
    }
    let mut summaries = Vec::new();
    for &m in &methods {
        for name in &cfg.objects {
            let rs: Vec<&CaseResult> = results.iter().filter(|r| r.method == m && &r.object == name).collect();
            summaries.push(summarize(&rs, m, name));
        }
        let rs: Vec<&CaseResult> = results.iter().filter(|r| r.method == m).collect();
        summaries.push(summarize(&rs, m, "all"));
    }
    Ok(BenchReport { results, summaries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_partial_noisy_and_repeatable() {
        let cfg = BenchConfig::default();
        let o = shapes::box_object();
        let d = o.diameter();
        let a = make_case(&o, d, 3, &cfg).unwrap();
        let b = make_case(&o, d, 3, &cfg).unwrap();
        assert_eq!(a.scene, b.scene);
        assert_eq!(a.scene.len(), 2000);
        // Inliers lie near the true surface (noise 1 % of the diameter), outliers mostly do not.
        let model = o.model_cloud(20000, 0).unwrap().transformed(&a.truth);
        let tree = crate::kdtree::KdTree::new(&model.points).unwrap();
        let near = a.scene.points.iter().filter(|p| tree.nearest(p).dist2.sqrt() < 0.04 * d).count();
        assert!((1880..1990).contains(&near), "{near}");
        // A partial view: the visible half faces the camera.
        let c = make_case(&o, d, 4, &cfg).unwrap();
        assert_ne!(a.truth, c.truth);
    }

    #[test]
    fn mug_handle_visibility_is_reported() {
        let cfg = BenchConfig::default();
        let o = shapes::mug();
        let d = o.diameter();
        let seen: Vec<bool> = (0..12).map(|i| make_case(&o, d, i, &cfg).unwrap().feature_visible.unwrap()).collect();
        assert!(seen.iter().any(|&v| v));
    }
}
