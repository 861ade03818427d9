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
//! ICP on a finer scan and the best of those is returned. With a viewpoint the score also weighs what the
//! sensor's view says against a pose ([`crate::visibility`]), and the best pose is finally checked against the
//! object's near-symmetries and settled along a rotation the scan leaves free ([`resolve_ambiguities`]).
//! Geometry is normalised internally: both clouds are centred on their centroids and scaled by 1/object
//! diameter, so distances in [`EstimateConfig`] are fractions of the object diameter.

use std::time::Instant;

use diffuse_core::SampleSeeds;
use nalgebra::{Point3, Rotation3, Vector3};
use rand_distr::{Distribution, StandardNormal};

use crate::cloud::PointCloud;
use crate::error::{Error, Result};
use crate::icp::{self, IcpConfig};
use crate::schedule::DdpmTable;
use crate::se3::{self, Pose};

mod ambiguity;
mod parallel;
mod problem;
mod result;
mod rotations;
mod scaled;
mod scaled_fit;
pub use ambiguity::{near_symmetries, resolve_ambiguities, self_fit, settle_free_rotation, weakest_rotation};
use parallel::parallel_map;
pub use problem::{MAX_OBJECT_TO_SCENE, Prepared, Problem, WARN_OBJECT_TO_SCENE, prepare};
pub use result::{Candidate, Estimate, Timings};
use rotations::quat_rotation;
pub use rotations::{spread_rotations, super_fibonacci};
pub use scaled::{Dof, ScaledIcpSurrogate, ScaledPose, scaled_rotation_scan, stretched_problem};
pub use scaled_fit::{ReverseTerm, scaled_icp, scaled_score};

/// A hypothesis in flight: its index, `H_rel` and its last clean estimate.
type Track = (usize, Pose, Option<Pose>);

/// Fewest points an object or scene may have.
pub const MIN_POINTS: usize = 10;
/// Most hypotheses one estimate runs (`--hypotheses`).
pub const MAX_HYPOTHESES: usize = 4096;
/// Most reverse-process steps per hypothesis (`--steps`).
pub const MAX_STEPS: usize = 10_000;

/// Translation-only correspondence steps per scanned rotation.
const SCAN_TRANSLATION_STEPS: usize = 6;

/// Noise level below which the ICP surrogate skips back-facing object points.
const VISIBILITY_SIGMA: f64 = 0.7;

/// Object points probed against the scan's view (free space and footprint) when scoring a pose …
const PROBES: usize = 400;

/// … and the fewer used by the initial rotation scan.
const SCAN_PROBES: usize = 100;

/// Normals farther apart than this (radians) are different surfaces when downsampling the object.
const SURFACE_ANGLE: f64 = std::f64::consts::FRAC_PI_3;

/// Poses closer than this in rotation (radians) and translation (object diameters) count as the same when
/// choosing the candidates to refine.
const SAME_POSE: (f64, f64) = (0.05, 0.02);

/// Weight of the point-to-point term in the registration ICP (see [`IcpConfig::point_weight`]).
const POINT_WEIGHT: f64 = 0.1;

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
    /// Predicts `ΔH` at pose `pose` and noise level `level`. `previous` is the clean estimate `Ĥ_0` this
    /// surrogate returned at the step before (self-conditioning; `None` at the first step).
    fn predict(&self, problem: &Problem, pose: &Pose, level: NoiseLevel, previous: Option<&Pose>) -> Result<Pose>;
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
        IcpSurrogate { iterations: 8, near: 0.05, far: 0.3 }
    }
}

impl Surrogate for IcpSurrogate {
    fn name(&self) -> &str {
        "icp"
    }

    fn predict(&self, problem: &Problem, pose: &Pose, level: NoiseLevel, previous: Option<&Pose>) -> Result<Pose> {
        let d = self.near + (self.far - self.near) * level.sigma();
        let mut cfg = IcpConfig::point_to_plane(d);
        cfg.max_iterations = self.iterations;
        cfg.min_rotation_step = 1e-3;
        cfg.min_translation_step = 1e-4;
        // Skipping back-facing points only helps near the answer: far from it, it leaves so few
        // correspondences that ICP can run off; so only in the later, low-noise steps.
        cfg.viewpoint = if level.sigma() < VISIBILITY_SIGMA { problem.viewpoint } else { None };
        cfg.point_weight = POINT_WEIGHT;
        // ICP moves the scene onto the object, i.e. estimates H⁻¹.
        let mut best = icp::icp(&problem.scene, &problem.object, &pose.inverse(), &cfg)?.pose.inverse();
        // Self-conditioning: ICP from the previous clean estimate too, keeping the better fit, so a good
        // estimate is not lost when the reverse step interpolates away from it.
        if let Some(prev) = previous {
            let again = icp::icp(&problem.scene, &problem.object, &prev.inverse(), &cfg)?.pose.inverse();
            if problem.score(&problem.scene, &again) > problem.score(&problem.scene, &best) {
                best = again;
            }
        }
        Ok(best * pose.inverse())
    }
}

/// Settings of [`estimate_pose`]. Distances are fractions of the object diameter.
#[derive(Debug, Clone, PartialEq)]
pub struct EstimateConfig {
    /// Degrees of freedom: rigid (6), with one scale (7) or a scale per object axis (9).
    pub dof: Dof,
    /// Rotations scored in the initial scan (super-Fibonacci over SO(3)); 0 skips the scan and starts the
    /// hypotheses from evenly spread rotations instead.
    pub scan_rotations: usize,
    /// Scene points used to score each scanned rotation.
    pub scan_points: usize,
    /// Distance of the scan's truncated-quadratic score (coarse: translations are only roughly aligned).
    pub scan_distance: f64,
    /// Smallest angle (degrees) between two hypotheses taken from the scan.
    pub scan_separation_deg: f64,
    /// Number of hypotheses (the best-scoring scanned rotations) run through the reverse process.
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
    /// Fraction of hypotheses that go on after the first reverse step (ranked by the fit of their clean
    /// estimates); 1 keeps all.
    pub keep_after_first: f64,
    /// How many of the best hypotheses are refined.
    pub refine_top: usize,
    /// Distance of the truncated-quadratic score that ranks hypotheses.
    pub score_distance: f64,
    /// Inlier distance of the reported fitness and RMSE.
    pub inlier_distance: f64,
    /// The sensor position in scene coordinates, when the scan is a single view from a known place (a depth
    /// camera's scan in its own frame: the origin). Enables the free-space check.
    pub viewpoint: Option<Point3<f64>>,
    /// Weight of the free-space violation fraction in the score.
    pub free_space_weight: f64,
    /// Weight in the score of the fraction of model surface that faces the sensor but lies outside the scan's
    /// footprint (needs the viewpoint and oriented object normals; 0 turns it off).
    pub missing_weight: f64,
    /// Whether the best pose is checked against the object's near-symmetries (see [`near_symmetries`]) and,
    /// where the scan leaves a rotation free, settled within what the scan allows (see [`resolve_ambiguities`]).
    pub resolve_ambiguities: bool,
    /// Seed of the noise and subsampling.
    pub seed: u64,
    /// Worker threads (0: one per available core).
    pub threads: usize,
}

impl Default for EstimateConfig {
    fn default() -> Self {
        EstimateConfig {
            dof: Dof::Rigid,
            scan_rotations: 512,
            scan_points: 48,
            scan_distance: 0.1,
            scan_separation_deg: 20.0,
            hypotheses: 12,
            steps: 5,
            sigma_r: 0.1,
            sigma_t: 0.01,
            object_voxel: 0.02,
            coarse_voxel: 0.04,
            coarse_points: 200,
            fine_voxel: 0.015,
            fine_points: 1000,
            keep_after_first: 1.0,
            refine_top: 3,
            score_distance: 0.03,
            inlier_distance: 0.03,
            viewpoint: None,
            free_space_weight: 1.0,
            missing_weight: 0.5,
            resolve_ambiguities: true,
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
                Err(Error::invalid(name, format!("{v} must be positive and finite")))
            }
        };
        if self.hypotheses == 0 {
            return Err(Error::invalid("hypotheses", "at least one hypothesis is needed"));
        }
        if self.steps == 0 {
            return Err(Error::invalid("steps", "at least one reverse step is needed"));
        }
        // Each hypothesis holds its own pose track and surrogate work: a billion of them asked for 96 GB.
        diffuse_core::limits::at_most("hypotheses", self.hypotheses, MAX_HYPOTHESES)?;
        diffuse_core::limits::at_most("steps", self.steps, MAX_STEPS)?;
        diffuse_core::limits::at_most("scan rotations", self.scan_rotations, MAX_HYPOTHESES)?;
        for (n, v) in [
            ("object voxel", self.object_voxel),
            ("coarse voxel", self.coarse_voxel),
            ("fine voxel", self.fine_voxel),
            ("score distance", self.score_distance),
            ("inlier distance", self.inlier_distance),
        ] {
            positive(n, v)?;
        }
        if !(self.sigma_r >= 0.0 && self.sigma_r.is_finite() && self.sigma_t >= 0.0 && self.sigma_t.is_finite()) {
            return Err(Error::invalid("noise scales", "sigma_r and sigma_t must be finite and non-negative"));
        }
        if !(self.keep_after_first > 0.0 && self.keep_after_first <= 1.0) {
            return Err(Error::invalid("keep after first", format!("{} must lie in (0, 1]", self.keep_after_first)));
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

/// Milliseconds since `t`.
fn elapsed_ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Point-to-plane ICP refinement of a normalised pose on the fine scan, in shrinking stages; returns the
/// refined pose and its score.
pub fn refine(problem: &Problem, pose: &Pose, stages: &[f64], iterations: usize) -> Result<(Pose, f64)> {
    let mut g = pose.inverse();
    for &d in stages {
        let mut c = IcpConfig::point_to_plane(d);
        c.max_iterations = iterations;
        c.viewpoint = problem.viewpoint;
        c.point_weight = POINT_WEIGHT;
        g = icp::icp(&problem.scene_fine, &problem.object, &g, &c)?.pose;
    }
    let h = g.inverse();
    Ok((h, problem.score(&problem.scene_fine, &h)))
}

/// Builds the reported [`Estimate`] from ranked candidates `(hypothesis, normalised scaled pose, score)`;
/// `object` is the (stretched) model the best candidate is evaluated against.
fn finish(
    prep: &Prepared,
    object: &icp::Target,
    mut candidates: Vec<(usize, ScaledPose, f64)>,
    cfg: &EstimateConfig,
    timings: Timings,
    surrogate: &str,
) -> Estimate {
    candidates.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    let best = candidates[0].1;
    let (fitness, rmse) = icp::evaluate(&prep.scene_all, object, &best.pose.inverse(), cfg.inlier_distance);
    Estimate {
        pose: prep.to_scene_scaled(&best),
        scale: best.scale(),
        dof: cfg.dof,
        fitness,
        inlier_rmse: rmse * prep.diameter,
        inlier_distance: cfg.inlier_distance * prep.diameter,
        object_diameter: prep.diameter,
        candidates: candidates
            .iter()
            .map(|&(k, p, s)| Candidate { hypothesis: k, pose: prep.to_scene_scaled(&p), scale: p.scale(), score: s })
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
    if cfg.dof != Dof::Rigid {
        // The near-symmetries of the model as given are not those of the stretched one: found after the scale.
        let prep = prepare(object, scene, &EstimateConfig { resolve_ambiguities: false, ..cfg.clone() })?;
        let (candidates, stretched, timings) = scaled::run_scaled(&prep, cfg, cfg.dof, start)?;
        return Ok(finish(&prep, &stretched.object, candidates, cfg, timings, "scaled-icp"));
    }
    let prep = prepare(object, scene, cfg)?;
    let problem = &prep.problem;
    let prepare_ms = elapsed_ms(start);

    // The reverse process, one hypothesis per initial rotation, all advanced step by step; after the first
    // step only the hypotheses whose clean estimates fit best go on.
    let t_hyp = Instant::now();
    let table = DdpmTable::cosine(cfg.steps)?;
    let inits: Vec<Pose> = if cfg.scan_rotations > 0 {
        rotation_scan(problem, cfg)?
    } else {
        spread_rotations(cfg.hypotheses).iter().map(|r| problem.initial_pose(r)).collect()
    };
    let seeds = SampleSeeds::new(cfg.seed, 0, inits.len());
    // Per hypothesis: its index, H_rel and the last clean estimate.
    let mut alive: Vec<Track> = (0..inits.len()).map(|k| (k, Pose::identity(), None)).collect();
    for t in (1..=cfg.steps).rev() {
        let prune = t == cfg.steps && t > 1 && cfg.keep_after_first < 1.0;
        let mut stepped = parallel_map(alive.len(), cfg.threads, |j| -> Result<(Track, f64)> {
            let (k, rel, prev) = alive[j];
            let (next, h0) =
                reverse_step(problem, surrogate, &table, t, &inits[k], &rel, prev.as_ref(), &seeds, k, cfg)?;
            let score = if prune { problem.score(&problem.scene, &h0) } else { 0.0 };
            Ok(((k, next, Some(h0)), score))
        })?;
        if prune {
            let keep = ((cfg.keep_after_first * cfg.hypotheses as f64).ceil() as usize).max(cfg.refine_top).max(1);
            stepped.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.0.cmp(&b.0.0)));
            stepped.truncate(keep);
            stepped.sort_by_key(|x| x.0.0);
        }
        alive = stepped.into_iter().map(|x| x.0).collect();
    }
    let results: Vec<(usize, Pose, f64)> = parallel_map(alive.len(), cfg.threads, |j| {
        let (k, rel, _) = alive[j];
        let pose = rel * inits[k];
        Ok((k, pose, problem.score(&problem.scene, &pose)))
    })?;
    let hypotheses_ms = elapsed_ms(t_hyp);

    // Refine the best few on the fine scan.
    let t_ref = Instant::now();
    let top = best_distinct(&results, cfg.refine_top, |p| p);
    let stages = [2.0 * cfg.score_distance, cfg.score_distance];
    let refined = parallel_map(top.len(), cfg.threads, |j| refine(problem, &results[top[j]].1, &stages, 15))?;
    let mut candidates: Vec<(usize, Pose, f64)> =
        top.iter().zip(&refined).map(|(&i, &(p, s))| (results[i].0, p, s)).collect();
    if cfg.resolve_ambiguities {
        candidates.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        let (p, s) = resolve_ambiguities(problem, &candidates[0].1, candidates[0].2, cfg)?;
        candidates[0].1 = p;
        candidates[0].2 = s;
    }
    let refine_ms = elapsed_ms(t_ref);
    let timings = Timings { prepare_ms, hypotheses_ms, refine_ms, total_ms: elapsed_ms(start) };
    let candidates = candidates.into_iter().map(|(k, p, s)| (k, ScaledPose::rigid(p), s)).collect();
    Ok(finish(&prep, &prep.problem.object, candidates, cfg, timings, surrogate.name()))
}

/// For diagnosis (benchmarks): the scene-unit pose `pose` with `scale` (the truth, say) after the final polish of
/// [`estimate_pose`] on the same inputs, with its scale and its score, comparable with [`Candidate::score`]. A
/// polished truth that scores higher than the estimate and is still right was missed by the search; otherwise
/// the estimator's score does not prefer the truth.
pub fn polish_pose(
    object: &PointCloud,
    scene: &PointCloud,
    cfg: &EstimateConfig,
    pose: &Pose,
    scale: &Vector3<f64>,
) -> Result<(Pose, Vector3<f64>, f64)> {
    let prep = prepare(object, scene, &EstimateConfig { resolve_ambiguities: false, ..cfg.clone() })?;
    let sp = prep.from_scene_scaled(pose, scale);
    let (sp, score) = if cfg.dof == Dof::Rigid {
        let (p, s) = refine(&prep.problem, &sp.pose, &[cfg.score_distance], 10)?;
        (ScaledPose::rigid(p), s)
    } else {
        scaled::polish(&prep, &sp, cfg, cfg.dof)
    };
    Ok((prep.to_scene_scaled(&sp), sp.scale(), score))
}

/// The classical baseline: point-to-plane ICP from the identity rotation with the centroids aligned
/// (coarse-to-fine correspondence distances 0.3, 0.1, 0.05 and the score distance), on the same prepared
/// clouds as [`estimate_pose`].
pub fn icp_from_identity(object: &PointCloud, scene: &PointCloud, cfg: &EstimateConfig) -> Result<Estimate> {
    let start = Instant::now();
    // The baseline checks no near-symmetries: it need not look for them.
    let prep = prepare(object, scene, &EstimateConfig { resolve_ambiguities: false, ..cfg.clone() })?;
    let prepare_ms = elapsed_ms(start);
    let t = Instant::now();
    let stages = [0.3, 0.1, 0.05, cfg.score_distance];
    let (pose, score) = refine(&prep.problem, &Pose::identity(), &stages, 30)?;
    let timings = Timings { prepare_ms, hypotheses_ms: 0.0, refine_ms: elapsed_ms(t), total_ms: elapsed_ms(start) };
    let mut cfg = cfg.clone();
    cfg.hypotheses = 1;
    cfg.steps = 0;
    Ok(finish(
        &prep,
        &prep.problem.object,
        vec![(0, ScaledPose::rigid(pose), score)],
        &cfg,
        timings,
        "icp-from-identity",
    ))
}

/// The initial scan: scores `scan_rotations` rotations over SO(3), each placed by [`Problem::initial_pose`] and
/// one translation-only correspondence step, with a coarse truncated-quadratic fit on a few scene points (minus
/// free-space violations); returns the best `hypotheses` initial poses at least `scan_separation_deg` apart.
pub fn rotation_scan(problem: &Problem, cfg: &EstimateConfig) -> Result<Vec<Pose>> {
    let quats = super_fibonacci(cfg.scan_rotations);
    let tau = cfg.scan_distance;
    let gate2 = 4.0 * tau * tau;
    let scored = parallel_map(quats.len(), cfg.threads, |i| -> Result<(usize, Pose, f64)> {
        let pose = problem.initial_pose(&quat_rotation(&quats[i]));
        // Translation steps in the object frame: move by the mean offset of the near correspondences.
        let mut g = pose.inverse();
        for _ in 0..SCAN_TRANSLATION_STEPS {
            let (mut shift, mut n) = (Vector3::zeros(), 0usize);
            for s in &problem.scene_scan {
                let p = g * s;
                let nb = problem.object.tree.nearest(&p);
                if nb.dist2 <= gate2 {
                    shift += problem.object.cloud.points[nb.index] - p;
                    n += 1;
                }
            }
            if n > 0 {
                g = nalgebra::Translation3::from(shift / n as f64) * g;
            }
        }
        let fit = icp::truncated_score(&problem.scene_scan, &problem.object, &g, tau);
        let pose = g.inverse();
        Ok((i, pose, fit - problem.view_penalty(&pose, SCAN_PROBES)))
    })?;
    let scored: Vec<(Pose, f64)> = scored.into_iter().map(|(_, p, f)| (p, f)).collect();
    Ok(spread_best(&scored, cfg.hypotheses, cfg.scan_separation_deg.to_radians(), |p| &p.rotation))
}

/// One reverse step `t` of hypothesis `k` (initial pose `init`, current relative pose `rel`, previous clean
/// estimate `previous`): returns the new relative pose `H_rel,t−1` and the surrogate's clean estimate `Ĥ_0`.
fn reverse_step(
    problem: &Problem,
    surrogate: &dyn Surrogate,
    table: &DdpmTable,
    t: usize,
    init: &Pose,
    rel: &Pose,
    previous: Option<&Pose>,
    seeds: &SampleSeeds,
    k: usize,
    cfg: &EstimateConfig,
) -> Result<(Pose, Pose)> {
    let level = NoiseLevel { step: t, steps: table.steps(), alpha_bar: table.alpha_bar(t) };
    let delta = surrogate.predict(problem, &(rel * init), level, previous)?;
    // Ĥ_0 = ΔH·H_t = ΔH·H_rel·H_k, so relative to the hypothesis Ĥ_0,rel = ΔH·H_rel.
    let h0_rel = delta * rel;
    let (g0, g1) = table.posterior_weights(t);
    let mut next = se3::exp(&(se3::log(&h0_rel) * g0 + se3::log(rel) * g1));
    let var = table.posterior_variance(t);
    if var > 0.0 {
        let mut rng = seeds.rng(k, t as u64);
        let mut z = || -> f64 { StandardNormal.sample(&mut rng) };
        let w = Vector3::new(z(), z(), z()) * (cfg.sigma_r * var.sqrt());
        let v = Vector3::new(z(), z(), z()) * (cfg.sigma_t * var.sqrt());
        next = se3::exp(&se3::twist(&w, &v)) * next;
    }
    if !next.translation.vector.iter().chain(next.rotation.matrix().iter()).all(|x| x.is_finite()) {
        return Err(Error::Numerical { op: "reverse process", reason: format!("non-finite pose at step {t}") });
    }
    Ok((next, h0_rel * init))
}

/// Indices of the best `n` (at least one) of the ranked `results` `(hypothesis, pose, score)`, by score and then
/// hypothesis, whose poses are pairwise [`distinct`]: several hypotheses often end on the same pose, and refining
/// copies would crowd out a near-tied rival.
fn best_distinct<T>(results: &[(usize, T, f64)], n: usize, pose: impl Fn(&T) -> &Pose) -> Vec<usize> {
    let mut order: Vec<usize> = (0..results.len()).collect();
    order.sort_by(|&a, &b| results[b].2.total_cmp(&results[a].2).then(results[a].0.cmp(&results[b].0)));
    let mut top: Vec<usize> = Vec::with_capacity(n.max(1));
    for i in order {
        if top.len() == n.max(1) {
            break;
        }
        if top.iter().all(|&j| distinct(pose(&results[i].1), pose(&results[j].1))) {
            top.push(i);
        }
    }
    top
}

/// The best `n` of the scored starts `(start, score)` (ties to the earlier) whose rotations are at least
/// `min_sep` radians apart.
fn spread_best<T: Copy>(
    scored: &[(T, f64)],
    n: usize,
    min_sep: f64,
    rotation: impl Fn(&T) -> &Rotation3<f64>,
) -> Vec<T> {
    let mut order: Vec<usize> = (0..scored.len()).collect();
    order.sort_by(|&a, &b| scored[b].1.total_cmp(&scored[a].1).then(a.cmp(&b)));
    let mut chosen: Vec<T> = Vec::with_capacity(n);
    for i in order {
        if chosen.len() == n {
            break;
        }
        let r = rotation(&scored[i].0);
        if chosen.iter().all(|c| crate::so3::distance(rotation(c), r) >= min_sep) {
            chosen.push(scored[i].0);
        }
    }
    chosen
}

/// Whether two normalised poses differ by more than [`SAME_POSE`].
fn distinct(a: &Pose, b: &Pose) -> bool {
    let (r, t) = se3::errors(a, b);
    r > SAME_POSE.0 || t > SAME_POSE.1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A surrogate that knows the answer: `ΔH = H_true·H_t⁻¹`.
    struct Oracle(Pose);

    impl Surrogate for Oracle {
        fn name(&self) -> &str {
            "oracle"
        }
        fn predict(&self, _: &Problem, pose: &Pose, _: NoiseLevel, _: Option<&Pose>) -> Result<Pose> {
            Ok(self.0 * pose.inverse())
        }
    }

    fn case(name: &str, index: usize) -> (crate::shapes::ObjectModel, PointCloud, crate::bench::BenchCase) {
        let cfg = crate::bench::BenchConfig::default();
        let o = crate::shapes::builtin(name).unwrap();
        let model = o.model_cloud(3000, 1).unwrap();
        let c = crate::bench::make_case(&o, o.diameter(), index, &cfg).unwrap();
        (o, model, c)
    }
    #[test]
    fn with_an_exact_denoiser_the_reverse_process_ends_on_the_truth() {
        // Whatever the hypothesis, the noise and the step count: the last step returns Ĥ_0 exactly.
        let (_, model, c) = case("bunny", 2);
        let cfg = EstimateConfig { viewpoint: Some(Point3::origin()), ..EstimateConfig::default() };
        let prep = prepare(&model, &c.scene, &cfg).unwrap();
        let truth = prep.from_scene(&c.truth);
        let oracle = Oracle(truth);
        for steps in [1, 5, 20] {
            let table = DdpmTable::cosine(steps).unwrap();
            let seeds = SampleSeeds::new(3, 0, 2);
            for (k, init) in spread_rotations(2).iter().enumerate() {
                let init = se3::pose(*init, Vector3::new(0.1, -0.2, 0.05));
                let (mut rel, mut prev) = (Pose::identity(), None);
                for t in (1..=steps).rev() {
                    let (next, h0) =
                        reverse_step(&prep.problem, &oracle, &table, t, &init, &rel, prev.as_ref(), &seeds, k, &cfg)
                            .unwrap();
                    assert!(se3::log(&(h0 * truth.inverse())).norm() < 1e-9);
                    rel = next;
                    prev = Some(h0);
                }
                let (r, t) = se3::errors(&(rel * init), &truth);
                assert!(r < 1e-9 && t < 1e-9, "steps {steps}: {r} {t}");
            }
        }
        // And the scene-unit round trip of the normalisation is exact.
        let back = prep.to_scene(&truth);
        let (r, t) = se3::errors(&back, &c.truth);
        assert!(r < 1e-12 && t < 1e-12);
    }

    #[test]
    fn estimates_recover_full_rotations_and_do_not_depend_on_threads() {
        let (o, model, c) = case("l-shape", 3);
        let cfg = EstimateConfig { viewpoint: Some(Point3::origin()), threads: 1, ..EstimateConfig::default() };
        let one = estimate_pose(&model, &c.scene, &cfg, &IcpSurrogate::default()).unwrap();
        let two =
            estimate_pose(&model, &c.scene, &EstimateConfig { threads: 2, ..cfg.clone() }, &IcpSurrogate::default())
                .unwrap();
        assert_eq!(one.pose, two.pose);
        let e = crate::metrics::pose_errors(&one.pose, &c.truth, &model.points, &o.symmetry, o.diameter()).unwrap();
        assert!(e.rotation_deg < 5.0 && e.translation < 0.02, "{e:?}");
        assert!(one.fitness > 0.85 && one.fitness <= 0.96, "{}", one.fitness);
        // The initial rotation of this case is far from the identity, where plain ICP stays stuck.
        let init_angle = crate::so3::angle(&c.truth.rotation).to_degrees();
        let icp = icp_from_identity(&model, &c.scene, &cfg).unwrap();
        let ei = crate::metrics::pose_errors(&icp.pose, &c.truth, &model.points, &o.symmetry, o.diameter()).unwrap();
        assert!(init_angle > 60.0 && ei.rotation_deg > 20.0, "initial {init_angle}°, ICP {ei:?}");
    }

    #[test]
    fn invalid_settings_and_inputs_are_errors() {
        let (_, model, c) = case("box", 0);
        let bad = [
            EstimateConfig { hypotheses: 0, ..EstimateConfig::default() },
            EstimateConfig { steps: 0, ..EstimateConfig::default() },
            EstimateConfig { score_distance: f64::NAN, ..EstimateConfig::default() },
            EstimateConfig { keep_after_first: 0.0, ..EstimateConfig::default() },
            EstimateConfig { viewpoint: Some(Point3::new(f64::INFINITY, 0.0, 0.0)), ..EstimateConfig::default() },
        ];
        for cfg in &bad {
            assert!(estimate_pose(&model, &c.scene, cfg, &IcpSurrogate::default()).is_err(), "{cfg:?}");
        }
        let empty = PointCloud::default();
        let e = estimate_pose(&empty, &c.scene, &EstimateConfig::default(), &IcpSurrogate::default()).unwrap_err();
        assert!(e.to_string().starts_with("object is empty"), "{e}");
        let e = estimate_pose(&model, &empty, &EstimateConfig::default(), &IcpSurrogate::default()).unwrap_err();
        assert!(e.to_string().starts_with("scene is empty"), "{e}");
    }
}
