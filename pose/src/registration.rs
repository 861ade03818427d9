//! SE(3) diffusion registration: the pose of a known object in a (partial, noisy) scan.
//!
//! The reverse process follows the SE(3) diffusion registration method (Jiang et al., DiffusionReg; see
//! docs/pose.md). Poses are rigid transforms object → scene; twists are `[ω, v]`. For each hypothesis `H_k`
//! (an initial rotation, centroids aligned) the process runs on the pose relative to it, `H = H_rel·H_k`, from
//! `H_rel,T = I`: at step `t = T … 1` the [`Surrogate`] predicts a correction `ΔH` at `H_t`, giving the clean
//! estimate `Ĥ_0 = ΔH·H_t`, and
//!
//! `H_rel,t−1 = exp(√β̃_t·[σ_r·z_ω, σ_t·z_v]) · exp(γ0·log Ĥ_0,rel + γ1·log H_rel,t)`, `z ~ N(0, I₆)`,
//!
//! with the DDPM posterior weights `γ0, γ1` and variance `β̃_t` of a cosine schedule
//! ([`crate::schedule::DdpmTable`]). Since `H_τ = exp(√ᾱ_τ·log H_0)` along the forward geodesic to `I`, this is
//! exactly the Euclidean DDPM posterior mean in log-pose coordinates. The last step has `γ0 = 1`, `γ1 = 0`,
//! `β̃_1 = 0`, so it returns the surrogate's clean estimate.
//!
//! All hypotheses run in parallel (each with its own seeded noise stream, so the result does not depend on the
//! thread count) and are ranked by a truncated-quadratic fit score; the best few are refined by point-to-plane
//! ICP on a finer scan and the best of those is returned. Geometry is normalised internally: both clouds are
//! centred on their centroids and scaled by 1/object diameter, so distances in [`EstimateConfig`] are fractions
//! of the object diameter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use diffuse_core::SampleSeeds;
use nalgebra::{Point3, Rotation3, UnitQuaternion, Vector3};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, StandardNormal};

use crate::cloud::{Normalization, PointCloud};
use crate::error::{Error, Result};
use crate::icp::{self, IcpConfig, Target};
use crate::schedule::DdpmTable;
use crate::se3::{self, Pose};

/// Fewest points an object or scene may have.
pub const MIN_POINTS: usize = 10;

/// The registration problem as the surrogate sees it, in normalised coordinates (object diameter 1, both
/// clouds centred on their centroids).
#[derive(Debug)]
pub struct Problem {
    /// The object model with normals and its k-d tree.
    pub object: Target,
    /// The coarse scene points used by the reverse process.
    pub scene: Vec<Point3<f64>>,
    /// The finer scene points used for refinement and scoring.
    pub scene_fine: Vec<Point3<f64>>,
}

/// Where the reverse process stands when the surrogate is called.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseLevel {
    /// The step `t` (from `steps` down to 1).
    pub step: usize,
    /// Total steps `T`.
    pub steps: usize,
    /// `ᾱ_t` of the schedule.
    pub alpha_bar: f64,
}

impl NoiseLevel {
    /// `σ_t = √(1 − ᾱ_t)`: near 1 at the start of the reverse process, small at its end.
    pub fn sigma(&self) -> f64 {
        (1.0 - self.alpha_bar).max(0.0).sqrt()
    }
}

/// The denoiser of the reverse process: given the current pose `H_t` (object → scene, normalised frames), it
/// predicts the correction `ΔH` such that `Ĥ_0 = ΔH·H_t`. A learned registration network plugs in here.
pub trait Surrogate: Sync {
    /// Short name for reports.
    fn name(&self) -> &str;
    /// Predicts `ΔH` at pose `pose` and noise level `level`.
    fn predict(&self, problem: &Problem, pose: &Pose, level: NoiseLevel) -> Result<Pose>;
}

/// The training-free surrogate: a few robust point-to-plane ICP iterations from the current pose, with a
/// correspondence distance that shrinks with the noise level (`near + (far − near)·σ_t`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IcpSurrogate {
    /// ICP iterations per call.
    pub iterations: usize,
    /// Correspondence distance at `σ_t = 0` (object diameters).
    pub near: f64,
    /// Correspondence distance at `σ_t = 1` (object diameters).
    pub far: f64,
}

impl Default for IcpSurrogate {
    fn default() -> Self {
        IcpSurrogate {
            iterations: 8,
            near: 0.05,
            far: 0.3,
        }
    }
}

impl Surrogate for IcpSurrogate {
    fn name(&self) -> &str {
        "icp"
    }

    fn predict(&self, problem: &Problem, pose: &Pose, level: NoiseLevel) -> Result<Pose> {
        let d = self.near + (self.far - self.near) * level.sigma();
        let mut cfg = IcpConfig::point_to_plane(d);
        cfg.max_iterations = self.iterations;
        cfg.min_rotation_step = 1e-3;
        cfg.min_translation_step = 1e-4;
        // ICP moves the scene onto the object, i.e. estimates H⁻¹.
        let r = icp::icp(&problem.scene, &problem.object, &pose.inverse(), &cfg)?;
        Ok(r.pose.inverse() * pose.inverse())
    }
}

/// Settings of [`estimate_pose`]. Distances are fractions of the object diameter.
#[derive(Debug, Clone, PartialEq)]
pub struct EstimateConfig {
    /// Number of initial rotations (spread over SO(3)), each run through the reverse process.
    pub hypotheses: usize,
    /// Reverse-process steps `T` (surrogate calls per hypothesis).
    pub steps: usize,
    /// Rotation noise scale `σ_r` (radians) of the reverse steps.
    pub sigma_r: f64,
    /// Translation noise scale `σ_t` of the reverse steps.
    pub sigma_t: f64,
    /// Voxel size of the object model.
    pub object_voxel: f64,
    /// Voxel size of the coarse scene used by the reverse process …
    pub coarse_voxel: f64,
    /// … and at most this many of its points.
    pub coarse_points: usize,
    /// Voxel size of the fine scene used for refinement …
    pub fine_voxel: f64,
    /// … and at most this many of its points.
    pub fine_points: usize,
    /// How many of the best hypotheses are refined.
    pub refine_top: usize,
    /// Distance of the truncated-quadratic score that ranks hypotheses.
    pub score_distance: f64,
    /// Inlier distance of the reported fitness and RMSE.
    pub inlier_distance: f64,
    /// Seed of the noise and subsampling.
    pub seed: u64,
    /// Worker threads (0: one per available core).
    pub threads: usize,
}

impl Default for EstimateConfig {
    fn default() -> Self {
        EstimateConfig {
            hypotheses: 48,
            steps: 5,
            sigma_r: 0.1,
            sigma_t: 0.01,
            object_voxel: 0.02,
            coarse_voxel: 0.04,
            coarse_points: 200,
            fine_voxel: 0.015,
            fine_points: 1000,
            refine_top: 4,
            score_distance: 0.03,
            inlier_distance: 0.03,
            seed: 0,
            threads: 0,
        }
    }
}

impl EstimateConfig {
    fn check(&self) -> Result<()> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(
                    name,
                    format!("{v} must be positive and finite"),
                ))
            }
        };
        if self.hypotheses == 0 {
            return Err(Error::invalid(
                "hypotheses",
                "at least one hypothesis is needed",
            ));
        }
        if self.steps == 0 {
            return Err(Error::invalid(
                "steps",
                "at least one reverse step is needed",
            ));
        }
        for (n, v) in [
            ("object voxel", self.object_voxel),
            ("coarse voxel", self.coarse_voxel),
            ("fine voxel", self.fine_voxel),
            ("score distance", self.score_distance),
            ("inlier distance", self.inlier_distance),
        ] {
            positive(n, v)?;
        }
        if !(self.sigma_r >= 0.0
            && self.sigma_r.is_finite()
            && self.sigma_t >= 0.0
            && self.sigma_t.is_finite())
        {
            return Err(Error::invalid(
                "noise scales",
                "sigma_r and sigma_t must be finite and non-negative",
            ));
        }
        if self.coarse_points < MIN_POINTS || self.fine_points < MIN_POINTS {
            return Err(Error::invalid(
                "point budgets",
                format!("coarse and fine point budgets must be at least {MIN_POINTS}"),
            ));
        }
        Ok(())
    }
}

/// One refined candidate pose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Which hypothesis it came from.
    pub hypothesis: usize,
    /// Object → scene, in scene units.
    pub pose: Pose,
    /// The truncated-quadratic score that ranked it (higher is better).
    pub score: f64,
}

/// Wall-clock time of the stages, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// Validation, downsampling, normals, trees.
    pub prepare_ms: f64,
    /// The reverse process over all hypotheses.
    pub hypotheses_ms: f64,
    /// Refinement of the best candidates and final scoring.
    pub refine_ms: f64,
    /// Everything.
    pub total_ms: f64,
}

/// The result of [`estimate_pose`].
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// The pose object → scene: `p_scene = R·p_object + t`.
    pub pose: Pose,
    /// Fraction of scene points within `inlier_distance` of the posed object.
    pub fitness: f64,
    /// RMS distance of those inliers (scene units).
    pub inlier_rmse: f64,
    /// The inlier distance used (scene units).
    pub inlier_distance: f64,
    /// The object's diameter (scene units).
    pub object_diameter: f64,
    /// The refined candidates, best first.
    pub candidates: Vec<Candidate>,
    /// Problems worth telling the user about (scale mismatch, ...).
    pub warnings: Vec<String>,
    /// Time per stage.
    pub timings: Timings,
    /// Hypotheses and steps used, and the surrogate's name.
    pub hypotheses: usize,
    /// Reverse steps per hypothesis.
    pub steps: usize,
    /// The surrogate that ran.
    pub surrogate: String,
}

/// The 60 rotations of the icosahedral group as unit quaternions `[w, x, y, z]` (one of each `±q` pair): the
/// vertices of the 600-cell. Their covering radius on SO(3) is about 44°.
fn icosahedral_group() -> Vec<[f64; 4]> {
    let g = (1.0 + 5f64.sqrt()) / 2.0;
    let mut qs: Vec<[f64; 4]> = Vec::with_capacity(120);
    for i in 0..4 {
        for s in [1.0, -1.0] {
            let mut q = [0.0; 4];
            q[i] = s;
            qs.push(q);
        }
    }
    for m in 0..16 {
        qs.push([0, 1, 2, 3].map(|k| if m >> k & 1 == 1 { 0.5 } else { -0.5 }));
    }
    // ½(±φ, ±1, ±1/φ, 0) under the 12 even permutations.
    let even = [
        [0, 1, 2, 3],
        [0, 2, 3, 1],
        [0, 3, 1, 2],
        [1, 0, 3, 2],
        [1, 2, 0, 3],
        [1, 3, 2, 0],
        [2, 0, 1, 3],
        [2, 1, 3, 0],
        [2, 3, 0, 1],
        [3, 0, 2, 1],
        [3, 1, 0, 2],
        [3, 2, 1, 0],
    ];
    let base = [g / 2.0, 0.5, 0.5 / g, 0.0];
    for p in even {
        for m in 0..8 {
            let mut q = [0.0; 4];
            for k in 0..3 {
                q[p[k]] = if m >> k & 1 == 1 { -base[k] } else { base[k] };
            }
            qs.push(q);
        }
    }
    // Keep one of each antipodal pair (the first non-zero component positive).
    qs.retain(|q| q.iter().find(|v| v.abs() > 1e-12).is_some_and(|&v| v > 0.0));
    qs
}

/// Rotation angle between two unit quaternions.
fn quat_angle(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let d = (a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3])
        .abs()
        .min(1.0);
    2.0 * d.acos()
}

/// Greedy farthest-point choice of `n` elements of `pool`, starting from its first element.
fn farthest_points(pool: &[[f64; 4]], n: usize, chosen: &mut Vec<[f64; 4]>) {
    let mut dmin: Vec<f64> = pool
        .iter()
        .map(|p| {
            chosen
                .iter()
                .map(|c| quat_angle(p, c))
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    while chosen.len() < n {
        let Some((i, _)) = dmin
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        else {
            return;
        };
        let q = pool[i];
        chosen.push(q);
        for (d, p) in dmin.iter_mut().zip(pool) {
            *d = d.min(quat_angle(p, &q));
        }
    }
}

/// `n` rotations spread evenly over SO(3), deterministic: the identity first, then a farthest-point choice
/// among the 60 icosahedral rotations, and beyond 60 a farthest-point choice among 4 096 super-Fibonacci
/// rotations (Alexa 2022).
pub fn spread_rotations(n: usize) -> Vec<Rotation3<f64>> {
    let ico = icosahedral_group();
    let mut chosen = vec![ico[0]];
    if n == 0 {
        return Vec::new();
    }
    farthest_points(&ico, n.min(ico.len()), &mut chosen);
    if n > ico.len() {
        let m = 4096;
        let (phi, psi) = (std::f64::consts::SQRT_2, 1.533_751_168_755_204_3_f64);
        let pool: Vec<[f64; 4]> = (0..m)
            .map(|i| {
                let s = i as f64 + 0.5;
                let (r, big_r) = ((s / m as f64).sqrt(), (1.0 - s / m as f64).sqrt());
                let (alpha, beta) = (
                    2.0 * std::f64::consts::PI * s / phi,
                    2.0 * std::f64::consts::PI * s / psi,
                );
                [
                    big_r * beta.cos(),
                    r * alpha.sin(),
                    r * alpha.cos(),
                    big_r * beta.sin(),
                ]
            })
            .collect();
        farthest_points(&pool, n, &mut chosen);
    }
    chosen
        .iter()
        .map(|q| {
            UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(q[0], q[1], q[2], q[3]))
                .to_rotation_matrix()
        })
        .collect()
}

/// Keeps at most `max` points, chosen at random with `seed` (order preserved), when there are more.
fn cap(points: Vec<Point3<f64>>, max: usize, seed: u64) -> Vec<Point3<f64>> {
    if points.len() <= max {
        return points;
    }
    let mut idx: Vec<usize> = (0..points.len()).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    idx.truncate(max);
    idx.sort_unstable();
    idx.into_iter().map(|i| points[i]).collect()
}

/// Warnings when object and scene sizes differ so much that their units probably differ.
fn scale_warnings(object_diameter: f64, scene_diameter: f64) -> Vec<String> {
    let ratio = scene_diameter / object_diameter;
    let mut w = Vec::new();
    if ratio > 5.0 {
        w.push(format!(
            "the scene (extent {scene_diameter:.4}) is {ratio:.1}× larger than the object (diameter {object_diameter:.4}): \
             are they in the same units? The estimator expects a scan cropped to the object"
        ));
    } else if ratio < 0.1 {
        w.push(format!(
            "the object (diameter {object_diameter:.4}) is {:.1}× larger than the scene (extent {scene_diameter:.4}): \
             are they in the same units?",
            1.0 / ratio
        ));
    }
    w
}

fn elapsed_ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Both clouds prepared for registration, and how to map poses back to scene units.
struct Prepared {
    problem: Problem,
    /// Object centring (scale 1/diameter).
    object_centre: Point3<f64>,
    /// Centroid of the cleaned scene, in scene units divided by the diameter.
    scene_centre: Point3<f64>,
    /// All scene points in the normalised scene frame (for the reported fitness).
    scene_all: Vec<Point3<f64>>,
    diameter: f64,
    warnings: Vec<String>,
}

impl Prepared {
    /// Maps a normalised pose back to scene units: `p_s = R'·p_o + (d·c_s − R'·c_o + d·t')`.
    fn to_scene(&self, h: &Pose) -> Pose {
        let r = h.rotation;
        let t = self.scene_centre.coords * self.diameter - r * self.object_centre.coords
            + h.translation.vector * self.diameter;
        se3::pose(r, t)
    }
}

/// Validates, normalises, downsamples and cleans both clouds and builds the object's k-d tree.
fn prepare(object: &PointCloud, scene: &PointCloud, cfg: &EstimateConfig) -> Result<Prepared> {
    cfg.check()?;
    object.validate("object", MIN_POINTS)?;
    scene.validate("scene", MIN_POINTS)?;
    let diameter = object.diameter();
    let warnings = scale_warnings(diameter, scene.diameter());
    let object_centre = object.centroid();
    let obj_norm = Normalization {
        centre: object_centre,
        scale: 1.0 / diameter,
    };
    let object_n = object
        .normalized(&obj_norm)
        .voxel_downsample(cfg.object_voxel)?;
    if object_n.len() < MIN_POINTS {
        return Err(Error::TooFewPoints {
            what: "object".into(),
            have: object_n.len(),
            need: MIN_POINTS,
            context: " after voxel downsampling".into(),
        });
    }
    let target = Target::new(object_n, 12)?;
    let scene_scaled = scene.normalized(&Normalization {
        centre: Point3::origin(),
        scale: 1.0 / diameter,
    });
    let fine = scene_scaled.voxel_downsample(cfg.fine_voxel)?;
    let (fine, _) = fine.remove_statistical_outliers(12, 2.0)?;
    if fine.len() < MIN_POINTS {
        return Err(Error::TooFewPoints {
            what: "scene".into(),
            have: fine.len(),
            need: MIN_POINTS,
            context: " after downsampling and outlier removal".into(),
        });
    }
    let scene_centre = fine.centroid();
    let centre = |c: &PointCloud| {
        c.points
            .iter()
            .map(|p| Point3::from(p - scene_centre))
            .collect::<Vec<_>>()
    };
    let coarse = centre(&fine.voxel_downsample(cfg.coarse_voxel)?);
    Ok(Prepared {
        problem: Problem {
            object: target,
            scene: cap(coarse, cfg.coarse_points, cfg.seed ^ 0xC0A5),
            scene_fine: cap(centre(&fine), cfg.fine_points, cfg.seed ^ 0xF14E),
        },
        object_centre,
        scene_centre,
        scene_all: centre(&scene_scaled),
        diameter,
        warnings,
    })
}

/// Point-to-plane ICP refinement of a normalised pose on the fine scan, in two shrinking stages; returns the
/// refined pose and its score.
fn refine(
    problem: &Problem,
    pose: &Pose,
    cfg: &EstimateConfig,
    stages: &[f64],
    iterations: usize,
) -> Result<(Pose, f64)> {
    let mut g = pose.inverse();
    for &d in stages {
        let mut c = IcpConfig::point_to_plane(d);
        c.max_iterations = iterations;
        g = icp::icp(&problem.scene_fine, &problem.object, &g, &c)?.pose;
    }
    Ok((
        g.inverse(),
        icp::truncated_score(&problem.scene_fine, &problem.object, &g, cfg.score_distance),
    ))
}

/// Builds the reported [`Estimate`] from ranked candidates `(hypothesis, normalised pose, score)`.
fn finish(
    prep: &Prepared,
    mut candidates: Vec<(usize, Pose, f64)>,
    cfg: &EstimateConfig,
    timings: Timings,
    surrogate: &str,
) -> Estimate {
    candidates.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    let best = candidates[0].1;
    let (fitness, rmse) = icp::evaluate(
        &prep.scene_all,
        &prep.problem.object,
        &best.inverse(),
        cfg.inlier_distance,
    );
    Estimate {
        pose: prep.to_scene(&best),
        fitness,
        inlier_rmse: rmse * prep.diameter,
        inlier_distance: cfg.inlier_distance * prep.diameter,
        object_diameter: prep.diameter,
        candidates: candidates
            .iter()
            .map(|&(k, p, s)| Candidate {
                hypothesis: k,
                pose: prep.to_scene(&p),
                score: s,
            })
            .collect(),
        warnings: prep.warnings.clone(),
        timings,
        hypotheses: cfg.hypotheses,
        steps: cfg.steps,
        surrogate: surrogate.to_string(),
    }
}

/// Estimates the pose of `object` (a model cloud, normals optional) in `scene` by SE(3) diffusion with
/// `surrogate` as denoiser. Both clouds are validated first: empty, too small, non-finite, identical or
/// collinear inputs are errors naming "object" or "scene".
pub fn estimate_pose(
    object: &PointCloud,
    scene: &PointCloud,
    cfg: &EstimateConfig,
    surrogate: &dyn Surrogate,
) -> Result<Estimate> {
    let start = Instant::now();
    let prep = prepare(object, scene, cfg)?;
    let problem = &prep.problem;
    let prepare_ms = elapsed_ms(start);

    // The reverse process, one hypothesis per initial rotation.
    let t_hyp = Instant::now();
    let table = DdpmTable::cosine(cfg.steps)?;
    let inits = spread_rotations(cfg.hypotheses);
    let seeds = SampleSeeds::new(cfg.seed, 0, cfg.hypotheses);
    let results = parallel_map(cfg.hypotheses, cfg.threads, |k| -> Result<(Pose, f64)> {
        let init = se3::pose(inits[k], Vector3::zeros());
        let pose = reverse_process(problem, surrogate, &table, &init, &seeds, k, cfg)?;
        Ok((
            pose,
            icp::truncated_score(
                &problem.scene,
                &problem.object,
                &pose.inverse(),
                cfg.score_distance,
            ),
        ))
    })?;
    let hypotheses_ms = elapsed_ms(t_hyp);

    // Refine the best few on the fine scan.
    let t_ref = Instant::now();
    let mut order: Vec<usize> = (0..results.len()).collect();
    order.sort_by(|&a, &b| results[b].1.total_cmp(&results[a].1).then(a.cmp(&b)));
    let top: Vec<usize> = order.into_iter().take(cfg.refine_top.max(1)).collect();
    let stages = [2.0 * cfg.score_distance, cfg.score_distance];
    let refined = parallel_map(top.len(), cfg.threads, |j| {
        refine(problem, &results[top[j]].0, cfg, &stages, 15)
    })?;
    let candidates = top
        .iter()
        .zip(&refined)
        .map(|(&k, &(p, s))| (k, p, s))
        .collect();
    let refine_ms = elapsed_ms(t_ref);
    let timings = Timings {
        prepare_ms,
        hypotheses_ms,
        refine_ms,
        total_ms: elapsed_ms(start),
    };
    Ok(finish(&prep, candidates, cfg, timings, surrogate.name()))
}

/// The classical baseline: point-to-plane ICP from the identity rotation with the centroids aligned
/// (coarse-to-fine correspondence distances 0.3, 0.1, 0.05 and the score distance), on the same prepared
/// clouds as [`estimate_pose`].
pub fn icp_from_identity(
    object: &PointCloud,
    scene: &PointCloud,
    cfg: &EstimateConfig,
) -> Result<Estimate> {
    let start = Instant::now();
    let prep = prepare(object, scene, cfg)?;
    let prepare_ms = elapsed_ms(start);
    let t = Instant::now();
    let stages = [0.3, 0.1, 0.05, cfg.score_distance];
    let (pose, score) = refine(&prep.problem, &Pose::identity(), cfg, &stages, 30)?;
    let timings = Timings {
        prepare_ms,
        hypotheses_ms: 0.0,
        refine_ms: elapsed_ms(t),
        total_ms: elapsed_ms(start),
    };
    let mut cfg = cfg.clone();
    cfg.hypotheses = 1;
    cfg.steps = 0;
    Ok(finish(
        &prep,
        vec![(0, pose, score)],
        &cfg,
        timings,
        "icp-from-identity",
    ))
}

/// Runs the reverse process of hypothesis `k` from `init`; returns the clean pose (normalised frames).
fn reverse_process(
    problem: &Problem,
    surrogate: &dyn Surrogate,
    table: &DdpmTable,
    init: &Pose,
    seeds: &SampleSeeds,
    k: usize,
    cfg: &EstimateConfig,
) -> Result<Pose> {
    let steps = table.steps();
    let mut rel = Pose::identity();
    for t in (1..=steps).rev() {
        let h_t = rel * init;
        let level = NoiseLevel {
            step: t,
            steps,
            alpha_bar: table.alpha_bar(t),
        };
        let delta = surrogate.predict(problem, &h_t, level)?;
        let h0_rel = delta * rel;
        let (g0, g1) = table.posterior_weights(t);
        rel = se3::exp(&(se3::log(&h0_rel) * g0 + se3::log(&rel) * g1));
        let var = table.posterior_variance(t);
        if var > 0.0 {
            let mut rng = seeds.rng(k, t as u64);
            let mut z = || -> f64 { StandardNormal.sample(&mut rng) };
            let w = Vector3::new(z(), z(), z()) * (cfg.sigma_r * var.sqrt());
            let v = Vector3::new(z(), z(), z()) * (cfg.sigma_t * var.sqrt());
            rel = se3::exp(&se3::twist(&w, &v)) * rel;
        }
        if !rel.translation.vector.iter().all(|x| x.is_finite()) {
            return Err(Error::Numerical {
                op: "reverse process",
                reason: format!("non-finite pose at step {t}"),
            });
        }
    }
    Ok(rel * init)
}

/// Maps `f` over `0..n` on `threads` workers (0: available cores); results in index order, first error wins.
fn parallel_map<T: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let threads = if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        threads
    };
    let threads = threads.min(n).max(1);
    if threads == 1 {
        return (0..n).map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut out: Vec<(usize, Result<T>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        mine.push((i, f(i)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    if out.len() != n {
        return Err(Error::Numerical {
            op: "parallel hypotheses",
            reason: "a worker thread panicked".into(),
        });
    }
    out.sort_by_key(|x| x.0);
    out.into_iter().map(|x| x.1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::so3;

    #[test]
    fn spread_rotations_cover_so3_better_than_random() {
        use rand::SeedableRng;
        let n = 60;
        let spread = spread_rotations(n);
        assert_eq!(icosahedral_group().len(), 60);
        assert_eq!(spread_rotations(100).len(), 100);
        assert_eq!(spread[0], Rotation3::identity());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let random: Vec<Rotation3<f64>> = (0..n).map(|_| so3::uniform(&mut rng)).collect();
        let probes: Vec<Rotation3<f64>> = (0..2000).map(|_| so3::uniform(&mut rng)).collect();
        let covering = |set: &[Rotation3<f64>]| {
            probes
                .iter()
                .map(|p| {
                    set.iter()
                        .map(|r| so3::distance(p, r))
                        .fold(f64::INFINITY, f64::min)
                })
                .fold(0.0, f64::max)
        };
        let (cs, cr) = (covering(&spread), covering(&random));
        assert!(cs < 0.75 * cr, "spread {cs} vs random {cr}");
        assert!(cs.to_degrees() < 46.0, "{}", cs.to_degrees());
        // The icosahedral rotations form a group: products stay in the set.
        let set: Vec<Rotation3<f64>> = spread.clone();
        let (a, b) = (set[5], set[17]);
        assert!(set.iter().any(|r| so3::distance(r, &(a * b)) < 1e-9));
    }

    #[test]
    fn parallel_map_keeps_order_and_reports_errors() {
        let v = parallel_map(100, 3, |i| Ok(i * 2)).unwrap();
        assert_eq!(v, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        let e = parallel_map(10, 2, |i| {
            if i == 7 {
                Err(Error::invalid("x", "seven"))
            } else {
                Ok(i)
            }
        });
        assert!(e.unwrap_err().to_string().contains("seven"));
    }

    #[test]
    fn scale_mismatch_is_reported_with_the_larger_side() {
        assert!(scale_warnings(0.1, 100.0)[0].contains("scene"));
        assert!(scale_warnings(100.0, 0.1)[0].starts_with("the object"));
        assert!(scale_warnings(1.0, 0.8).is_empty());
    }
}
