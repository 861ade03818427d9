//! Registration with scale: 7 degrees of freedom (one uniform scale) and 9 (a scale per axis of the object's
//! own frame), so that `p_scene ≈ R·diag(s)·p_object + t`.
//!
//! The state of the reverse process is a point of SE(3) × ℝ³: the rigid pose and the log-scales `l = ln s`.
//! Both diffuse in their Lie algebra: the posterior step of [`super::estimate_pose`] applies to
//! `[log H_rel, l_rel]` alike, with noise `σ_s` on the log-scales. The denoiser is scale-aware point-to-plane
//! ICP: Gauss–Newton on `n_s·(q − R·diag(s)·p − t)` in `[ω, v, l]` (for 7 DoF one `l` shared by the three
//! axes, which makes each step a linearised Umeyama). Correspondences are found in the unscaled object's k-d
//! tree by mapping a scene point back, `u = diag(s)⁻¹·Rᵀ·(q − t)`; the residual is measured in the scene, along
//! the stretched surface's normal `n_s ∝ R·diag(s)⁻¹·n`. Whether a model point faces the sensor is the sign of
//! `n·(v − p)`, which a linear map does not change, so the visibility tests of the rigid estimator carry over.
//!
//! The initial hypotheses come from the same rotation scan as the rigid estimator, where each rotation also
//! gets its own uniform scale (the RMS spread of the scan over that of the object's surface the sensor would see,
//! then a few translation-and-scale correspondence steps). The best candidates are refined with scale on the
//! fine scan; then, with the scale held, the object's near-symmetries and any rotation the scan leaves free are
//! settled on the stretched model exactly as in 6 DoF, and a last scale-aware polish follows.

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use diffuse_core::SampleSeeds;
use nalgebra::{Point3, Rotation3, Vector3};
use rand_distr::{Distribution, StandardNormal};

use super::scaled_fit::{MAX_LOG_SCALE, POINT_WEIGHT, ReverseTerm, scaled_icp, scaled_score, scaled_view_penalty};
use super::{
    EstimateConfig, Prepared, Problem, SCAN_PROBES, SCAN_TRANSLATION_STEPS, Timings, VISIBILITY_SIGMA, best_distinct,
    distinct, elapsed_ms, parallel_map, quat_rotation, spread_best, super_fibonacci,
};
use crate::error::{Error, Result};
use crate::icp::{IcpConfig, Target};
use crate::kdtree::KdTree;
use crate::schedule::DdpmTable;
use crate::se3::{self, Pose};

/// Degrees of freedom of a registration (`--dof`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, serde::Serialize)]
pub enum Dof {
    /// Rotation and translation (6).
    #[default]
    Rigid,
    /// Rotation, translation and one uniform scale (7).
    Similarity,
    /// Rotation, translation and a scale per axis of the object's frame (9).
    Anisotropic,
}

impl Dof {
    /// 6, 7 or 9.
    pub fn count(&self) -> usize {
        match self {
            Dof::Rigid => 6,
            Dof::Similarity => 7,
            Dof::Anisotropic => 9,
        }
    }
}

impl fmt::Display for Dof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.count())
    }
}

impl FromStr for Dof {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "6" => Ok(Dof::Rigid),
            "7" => Ok(Dof::Similarity),
            "9" => Ok(Dof::Anisotropic),
            other => Err(Error::invalid(
                "dof",
                format!(
                    "'{other}' is not a registration mode; valid: 6 (rigid), 7 (one scale), 9 (a scale per object axis)"
                ),
            )),
        }
    }
}

/// A pose with scale: `p ↦ R·diag(s)·p + t` with `s = exp(log_scale)` per axis of the object's frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaledPose {
    /// The rigid part `(R, t)`.
    pub pose: Pose,
    /// `ln s` per object axis.
    pub log_scale: Vector3<f64>,
}

impl ScaledPose {
    /// A rigid pose (scale 1).
    pub fn rigid(pose: Pose) -> Self {
        ScaledPose { pose, log_scale: Vector3::zeros() }
    }

    /// The scale per object axis.
    pub fn scale(&self) -> Vector3<f64> {
        self.log_scale.map(f64::exp)
    }

    /// `R·diag(s)·p + t`.
    pub fn apply(&self, p: &Point3<f64>) -> Point3<f64> {
        self.pose * Point3::from(p.coords.component_mul(&self.scale()))
    }

    /// The inverse map: `diag(s)⁻¹·Rᵀ·(q − t)`.
    pub fn to_object(&self, q: &Point3<f64>) -> Point3<f64> {
        Point3::from((self.pose.inverse() * q).coords.component_div(&self.scale()))
    }

    /// A surface normal of the object carried into the scene: `R·diag(s)⁻¹·n`, renormalised.
    pub fn normal_to_scene(&self, n: &Vector3<f64>) -> Vector3<f64> {
        (self.pose.rotation * n.component_div(&self.scale())).normalize()
    }

    pub(super) fn is_finite(&self) -> bool {
        self.log_scale
            .iter()
            .chain(self.pose.translation.vector.iter())
            .chain(self.pose.rotation.matrix().iter())
            .all(|x| x.is_finite())
    }
}

/// Scores within this of each other count as equally good (as in the rigid estimator's checks).
const PROFILE_TOLERANCE: f64 = 0.005;

/// Noise of the reverse steps on the log-scales (like `σ_r` on rotations).
const SIGMA_LOG_SCALE: f64 = 0.05;

/// The reverse process uses every `COARSE_REVERSE_STRIDE`-th probe of the model-to-scan term (the final fit all):
/// it was most of the time that scale added over 6 DoF. On the validation cases (`pose bench --dof 7 --cases 40`,
/// seeds 1 and 2) 1 and 3 gave 94.0 / 93.0 % and 93.0 / 93.0 %, at 2.05× and 1.72× the 6-DoF time of the same
/// run.
const COARSE_REVERSE_STRIDE: usize = 3;

/// RMS distance of points from their (weighted) centroid.
fn rms_spread<'a>(points: impl Iterator<Item = (&'a Point3<f64>, f64)>) -> Option<(Vector3<f64>, f64)> {
    let (mut sum, mut sum2, mut w) = (Vector3::zeros(), 0.0, 0.0);
    for (p, c) in points {
        sum += p.coords * c;
        sum2 += p.coords.norm_squared() * c;
        w += c;
    }
    if w <= 0.0 {
        return None;
    }
    let mean = sum / w;
    Some((mean, (sum2 / w - mean.norm_squared()).max(0.0).sqrt()))
}

/// The initial scaled pose of rotation `r`: the object's uniform scale is the RMS spread of the scan over that
/// of the object's surface as the sensor would sample it (points weighted by `max(0, n·v̂)` with a viewpoint
/// and oriented normals, all points otherwise), and its centroid is placed on the scan's.
fn initial_scaled(problem: &Problem, r: &Rotation3<f64>, scan_spread: f64) -> ScaledPose {
    let stride = (problem.object.cloud.len() / 1000).max(1);
    let points = problem.object.cloud.points.iter().step_by(stride);
    let moments = match (problem.viewpoint, &problem.object.cloud.normals) {
        (Some(v), Some(normals)) if problem.object.oriented => {
            let to_view = (r.inverse() * v.coords).normalize();
            rms_spread(points.zip(normals.iter().step_by(stride)).map(|(p, n)| (p, n.dot(&to_view).max(0.0))))
        }
        _ => rms_spread(points.map(|p| (p, 1.0))),
    };
    let (centre, spread) = moments.unwrap_or((Vector3::zeros(), 0.0));
    let scale = if spread > 0.0 { (scan_spread / spread).clamp(0.1, 10.0) } else { 1.0 };
    ScaledPose { pose: se3::pose(*r, -(r * centre) * scale), log_scale: Vector3::repeat(scale.ln()) }
}

/// The rotation scan with scale: as [`super::rotation_scan`], each of `scan_rotations` rotations is placed by
/// [`initial_scaled`], then alternates translation and uniform-scale correspondence steps (a Umeyama scale with
/// the rotation held) and is scored on a few scan points; returns the best `hypotheses` at least
/// `scan_separation_deg` apart.
pub fn scaled_rotation_scan(problem: &Problem, cfg: &EstimateConfig) -> Result<Vec<ScaledPose>> {
    let quats = super_fibonacci(cfg.scan_rotations);
    let spread = rms_spread(problem.scene_fine.iter().map(|p| (p, 1.0))).map_or(0.5, |m| m.1);
    let tau = cfg.scan_distance;
    let gate2 = 4.0 * tau * tau;
    let scored = parallel_map(quats.len(), cfg.threads, |i| -> Result<(ScaledPose, f64)> {
        let mut sp = initial_scaled(problem, &quat_rotation(&quats[i]), spread);
        for _ in 0..SCAN_TRANSLATION_STEPS {
            let s = sp.scale();
            let gate2_u = gate2 / s.min().powi(2);
            // Pairs (a, q): a = R·diag(s)·p, the model point relative to the translation, and its scan point.
            let pairs: Vec<(Vector3<f64>, Vector3<f64>)> = problem
                .scene_scan
                .iter()
                .filter_map(|q| {
                    let nb = problem.object.tree.nearest(&sp.to_object(q));
                    (nb.dist2 <= gate2_u).then(|| {
                        let p = problem.object.cloud.points[nb.index].coords.component_mul(&s);
                        (sp.pose.rotation * p, q.coords)
                    })
                })
                .collect();
            if pairs.len() < 3 {
                break;
            }
            let n = pairs.len() as f64;
            let a_mean = pairs.iter().fold(Vector3::zeros(), |acc, x| acc + x.0) / n;
            let q_mean = pairs.iter().fold(Vector3::zeros(), |acc, x| acc + x.1) / n;
            let (num, den) = pairs.iter().fold((0.0, 0.0), |(num, den), (a, q)| {
                ((num + (q - q_mean).dot(&(a - a_mean))), den + (a - a_mean).norm_squared())
            });
            // A damped step: correspondences of a wrong rotation can ask for any scale.
            let k = if den > 0.0 { (num / den).clamp(0.8, 1.25) } else { 1.0 };
            sp.log_scale = (sp.log_scale.add_scalar(k.ln())).map(|x| x.clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE));
            sp.pose.translation.vector = q_mean - a_mean * k;
        }
        let tau2 = tau * tau;
        let s_max = sp.scale().max();
        let fit: f64 = problem
            .scene_scan
            .iter()
            .map(|q| {
                let u = sp.to_object(q);
                let nb = problem.object.tree.nearest(&u);
                // The distance in the scene, bounded by the largest stretch.
                let d2 =
                    (sp.apply(&problem.object.cloud.points[nb.index]) - q).norm_squared().min(nb.dist2 * s_max * s_max);
                (1.0 - d2 / tau2).max(0.0)
            })
            .sum::<f64>()
            / problem.scene_scan.len().max(1) as f64;
        Ok((sp, fit - scaled_view_penalty(problem, &sp, SCAN_PROBES)))
    })?;
    Ok(spread_best(&scored, cfg.hypotheses, cfg.scan_separation_deg.to_radians(), |sp| &sp.pose.rotation))
}

/// The scale-aware denoiser: a few robust scale-aware ICP iterations from the current state, with the rigid
/// surrogate's shrinking correspondence distance, self-conditioned on its previous clean estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaledIcpSurrogate {
    /// ICP iterations per call.
    pub iterations: usize,
    /// Correspondence distance at `σ_t = 0` (object diameters).
    pub near: f64,
    /// Correspondence distance at `σ_t = 1` (object diameters).
    pub far: f64,
}

impl Default for ScaledIcpSurrogate {
    fn default() -> Self {
        ScaledIcpSurrogate { iterations: 8, near: 0.05, far: 0.3 }
    }
}

impl ScaledIcpSurrogate {
    /// The clean estimate `(Ĥ_0, ŝ_0)` from the current state at noise level `sigma`.
    pub fn predict(
        &self,
        problem: &Problem,
        sp: &ScaledPose,
        sigma: f64,
        previous: Option<&ScaledPose>,
        dof: Dof,
        reverse: Option<&ReverseTerm>,
    ) -> ScaledPose {
        let d = self.near + (self.far - self.near) * sigma;
        let mut cfg = IcpConfig::point_to_plane(d);
        cfg.max_iterations = self.iterations;
        cfg.min_rotation_step = 1e-3;
        cfg.min_translation_step = 1e-4;
        cfg.viewpoint = if sigma < VISIBILITY_SIGMA { problem.viewpoint } else { None };
        cfg.point_weight = POINT_WEIGHT;
        // Like the visibility test, the model-to-scan term only helps near the answer.
        let reverse = if sigma < VISIBILITY_SIGMA { reverse } else { None };
        let mut best = scaled_icp(&problem.scene, &problem.object, sp, &cfg, dof, reverse);
        if let Some(prev) = previous {
            let again = scaled_icp(&problem.scene, &problem.object, prev, &cfg, dof, reverse);
            if scaled_score(problem, &problem.scene, &again) > scaled_score(problem, &problem.scene, &best) {
                best = again;
            }
        }
        best
    }
}

/// A ranked candidate: its hypothesis, its scaled pose (normalised frames) and its score.
pub(super) type Ranked = (usize, ScaledPose, f64);

/// A hypothesis in flight: its index, the pose and log-scales relative to its start, and its last clean
/// estimate.
type ScaledTrack = (usize, Pose, Vector3<f64>, Option<ScaledPose>);

/// One reverse step `t` of hypothesis `k` on SE(3) × ℝ³; returns the next relative state and the clean
/// estimate.
#[allow(clippy::too_many_arguments)]
fn scaled_reverse_step(
    problem: &Problem,
    surrogate: &ScaledIcpSurrogate,
    table: &DdpmTable,
    t: usize,
    init: &ScaledPose,
    track: &ScaledTrack,
    seeds: &SampleSeeds,
    cfg: &EstimateConfig,
    dof: Dof,
    reverse: Option<&ReverseTerm>,
) -> Result<(Pose, Vector3<f64>, ScaledPose)> {
    let (k, rel, lrel, previous) = track;
    let sigma = (1.0 - table.alpha_bar(t)).max(0.0).sqrt();
    let current = ScaledPose { pose: rel * init.pose, log_scale: init.log_scale + lrel };
    let h0 = surrogate.predict(problem, &current, sigma, previous.as_ref(), dof, reverse);
    let h0_rel = h0.pose * init.pose.inverse();
    let l0_rel = h0.log_scale - init.log_scale;
    let (g0, g1) = table.posterior_weights(t);
    let mut next = se3::exp(&(se3::log(&h0_rel) * g0 + se3::log(rel) * g1));
    let mut lnext = l0_rel * g0 + lrel * g1;
    let var = table.posterior_variance(t);
    if var > 0.0 {
        let mut rng = seeds.rng(*k, t as u64);
        let mut z = || -> f64 { StandardNormal.sample(&mut rng) };
        let w = Vector3::new(z(), z(), z()) * (cfg.sigma_r * var.sqrt());
        let v = Vector3::new(z(), z(), z()) * (cfg.sigma_t * var.sqrt());
        next = se3::exp(&se3::twist(&w, &v)) * next;
        let zl = Vector3::new(z(), z(), z()) * (SIGMA_LOG_SCALE * var.sqrt());
        lnext += if dof == Dof::Anisotropic { zl } else { Vector3::repeat(zl.x) };
    }
    if !(ScaledPose { pose: next, log_scale: lnext }).is_finite() {
        return Err(Error::Numerical { op: "reverse process", reason: format!("non-finite scaled pose at step {t}") });
    }
    Ok((next, lnext, h0))
}

/// The problem with the object stretched by `scale` (normalised frames): the same scan and view, the model,
/// its probes and their normals stretched, its tree rebuilt and, when asked, its near-symmetries found again.
pub fn stretched_problem(problem: &Problem, scale: &Vector3<f64>, cfg: &EstimateConfig) -> Result<Problem> {
    let mut object = Target::new(problem.object.cloud.scaled(scale), 12)?;
    object.oriented = problem.object.oriented;
    let object_probe: Vec<Point3<f64>> =
        problem.object_probe.iter().map(|p| Point3::from(p.coords.component_mul(scale))).collect();
    let object_probe_normals: Option<Vec<Vector3<f64>>> =
        problem.object_probe_normals.as_ref().map(|ns| ns.iter().map(|n| n.component_div(scale).normalize()).collect());
    let near_symmetries = if cfg.resolve_ambiguities {
        super::near_symmetries(&object, &object_probe, object_probe_normals.as_deref(), cfg.threads)?
    } else {
        Vec::new()
    };
    Ok(Problem {
        object,
        scene: problem.scene.clone(),
        scene_fine: problem.scene_fine.clone(),
        scene_scan: problem.scene_scan.clone(),
        viewpoint: problem.viewpoint,
        free_space: problem.free_space.clone(),
        object_probe,
        object_probe_normals,
        score_distance: problem.score_distance,
        free_space_weight: problem.free_space_weight,
        missing_weight: problem.missing_weight,
        near_symmetries,
    })
}

/// Refines a scaled pose on the fine scan in shrinking stages; returns it with its score.
fn scaled_refine(
    problem: &Problem,
    sp: &ScaledPose,
    stages: &[f64],
    iterations: usize,
    dof: Dof,
    reverse: Option<&ReverseTerm>,
) -> (ScaledPose, f64) {
    let mut out = *sp;
    for &d in stages {
        let mut c = IcpConfig::point_to_plane(d);
        c.max_iterations = iterations;
        c.viewpoint = problem.viewpoint;
        c.point_weight = POINT_WEIGHT;
        out = scaled_icp(&problem.scene_fine, &problem.object, &out, &c, dof, reverse);
    }
    (out, scaled_score(problem, &problem.scene_fine, &out))
}

/// The scaled pose `sp` (normalised frames) after the estimator's final polish, and its score, as it scores its own
/// answer.
pub(super) fn polish(prep: &Prepared, sp: &ScaledPose, cfg: &EstimateConfig, dof: Dof) -> (ScaledPose, f64) {
    let problem = &prep.problem;
    let scan_tree = KdTree::new(&problem.scene_fine).ok();
    let reverse = ReverseTerm::of(problem, scan_tree.as_ref());
    scaled_refine(problem, sp, &[cfg.score_distance], 10, dof, reverse.as_ref())
}

/// The reverse process with scale on a prepared problem: returns the ranked candidates `(hypothesis, scaled
/// pose, score)` in normalised frames, the stretched problem of the best, and the stage timings.
pub(super) fn run_scaled(
    prep: &Prepared,
    cfg: &EstimateConfig,
    dof: Dof,
    start: Instant,
) -> Result<(Vec<Ranked>, Problem, Timings)> {
    let problem = &prep.problem;
    let prepare_ms = elapsed_ms(start);
    let t_hyp = Instant::now();
    let surrogate = ScaledIcpSurrogate::default();
    let table = DdpmTable::cosine(cfg.steps)?;
    let inits = scaled_rotation_scan(problem, cfg)?;
    let seeds = SampleSeeds::new(cfg.seed, 0, inits.len());
    let scan_tree = KdTree::new(&problem.scene_fine).ok();
    let reverse = ReverseTerm::of(problem, scan_tree.as_ref());
    let reverse = reverse.as_ref();
    // The reverse process sees a third of the model-to-scan probes, the final fit all of them.
    let coarse_reverse = reverse.map(|r| ReverseTerm { stride: COARSE_REVERSE_STRIDE, ..*r });
    let coarse_reverse = coarse_reverse.as_ref();
    let mut alive: Vec<ScaledTrack> = (0..inits.len()).map(|k| (k, Pose::identity(), Vector3::zeros(), None)).collect();
    for t in (1..=cfg.steps).rev() {
        alive = parallel_map(alive.len(), cfg.threads, |j| -> Result<ScaledTrack> {
            let k = alive[j].0;
            let (rel, lrel, h0) = scaled_reverse_step(
                problem,
                &surrogate,
                &table,
                t,
                &inits[k],
                &alive[j],
                &seeds,
                cfg,
                dof,
                coarse_reverse,
            )?;
            Ok((k, rel, lrel, Some(h0)))
        })?;
    }
    let results: Vec<Ranked> = parallel_map(alive.len(), cfg.threads, |j| {
        let (k, rel, lrel, _) = alive[j];
        let sp = ScaledPose { pose: rel * inits[k].pose, log_scale: inits[k].log_scale + lrel };
        Ok((k, sp, scaled_score(problem, &problem.scene, &sp)))
    })?;
    let hypotheses_ms = elapsed_ms(t_hyp);

    let t_ref = Instant::now();
    let top = best_distinct(&results, cfg.refine_top, |sp| &sp.pose);
    // Per-axis scales still have far to go after the reverse process (the scan starts them uniform): wider
    // correspondence stages first (chosen on the validation cases: 65 % against 62.5 % without).
    let stages: Vec<f64> = match dof {
        Dof::Anisotropic => vec![0.1, 0.06, 2.0 * cfg.score_distance, cfg.score_distance],
        _ => vec![2.0 * cfg.score_distance, cfg.score_distance],
    };
    let refined = parallel_map(top.len(), cfg.threads, |j| {
        Ok(scaled_refine(problem, &results[top[j]].1, &stages, 15, dof, reverse))
    })?;
    let mut candidates: Vec<Ranked> = top.iter().zip(&refined).map(|(&i, &(p, s))| (results[i].0, p, s)).collect();
    candidates.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    // The stretched model's near-symmetries are tried on the best, each refitted with its own scale (the mug
    // upside down fits best at another scale than the right way up); then, with the scale held, a rotation the
    // scan leaves free is settled on the stretched model as in 6 DoF, and one more scale-aware polish follows.
    let best = candidates[0].1;
    let stretched = stretched_problem(problem, &best.scale(), cfg)?;
    if cfg.resolve_ambiguities {
        let syms = &stretched.near_symmetries;
        let flips = parallel_map(syms.len(), cfg.threads, |i| {
            let start = ScaledPose { pose: best.pose * syms[i], log_scale: best.log_scale };
            Ok(scaled_refine(problem, &start, &stages[stages.len() - 2..], 15, dof, reverse))
        })?;
        let mut chosen = (best, candidates[0].2);
        for (sp, score) in flips {
            if score > chosen.1 {
                chosen = (sp, score);
            }
        }
        let on = if chosen.0.log_scale == best.log_scale {
            None
        } else {
            Some(stretched_problem(
                problem,
                &chosen.0.scale(),
                &EstimateConfig { resolve_ambiguities: false, ..cfg.clone() },
            )?)
        };
        let view = on.as_ref().unwrap_or(&stretched);
        let settled = match super::settle_free_rotation(view, &chosen.0.pose, cfg)? {
            Some((pose, _)) => ScaledPose { pose, log_scale: chosen.0.log_scale },
            None => chosen.0,
        };
        let (polished, score) = scaled_refine(problem, &settled, &[cfg.score_distance], 10, dof, reverse);
        if score >= chosen.1 - PROFILE_TOLERANCE || distinct(&polished.pose, &chosen.0.pose) {
            candidates[0] = (candidates[0].0, polished, score);
        } else {
            candidates[0] = (candidates[0].0, chosen.0, chosen.1);
        }
    }
    let stretched = if candidates[0].1.log_scale == best.log_scale {
        stretched
    } else {
        stretched_problem(
            problem,
            &candidates[0].1.scale(),
            &EstimateConfig { resolve_ambiguities: false, ..cfg.clone() },
        )?
    };
    let refine_ms = elapsed_ms(t_ref);
    Ok((candidates, stretched, Timings { prepare_ms, hypotheses_ms, refine_ms, total_ms: elapsed_ms(start) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dof_parses_its_three_modes_and_names_the_valid_ones() {
        assert_eq!("6".parse::<Dof>().unwrap(), Dof::Rigid);
        assert_eq!("7".parse::<Dof>().unwrap(), Dof::Similarity);
        assert_eq!("9".parse::<Dof>().unwrap(), Dof::Anisotropic);
        let e = "5".parse::<Dof>().unwrap_err().to_string();
        assert!(e.contains("'5'") && e.contains("6 (rigid)"), "{e}");
        assert_eq!(Dof::Anisotropic.to_string(), "9");
    }

    proptest! {
        #[test]
        fn scaled_poses_invert_and_carry_normals_onto_the_stretched_surface(
            w in prop::array::uniform3(-3.0f64..3.0), t in prop::array::uniform3(-1.0f64..1.0),
            l in prop::array::uniform3(-0.7f64..0.7), p in prop::array::uniform3(-1.0f64..1.0),
            d in prop::array::uniform3(-1.0f64..1.0),
        ) {
            let sp = ScaledPose {
                pose: se3::pose(crate::so3::exp(&Vector3::from(w)), Vector3::from(t)),
                log_scale: Vector3::from(l),
            };
            let p = Point3::from(Vector3::from(p));
            let back = sp.to_object(&sp.apply(&p));
            prop_assert!((back - p).norm() < 1e-9);
            // A tangent direction d' = d − (d·n)n of the surface stays perpendicular to the carried normal.
            let n = Vector3::new(0.3, -0.5, 0.8).normalize();
            let d = Vector3::from(d);
            let tangent = d - n * d.dot(&n);
            let carried = sp.pose.rotation * tangent.component_mul(&sp.scale());
            prop_assert!(sp.normal_to_scene(&n).dot(&carried).abs() < 1e-9 * (1.0 + carried.norm()));
        }
    }
}

#[cfg(test)]
mod estimate_tests {
    use super::*;
    use crate::bench::{BenchConfig, make_case};
    use crate::registration::estimate_pose;
    use crate::{IcpSurrogate, metrics, shapes};

    /// Bench case `index` of `object` with scale mode `dof` (seed 0), estimated with the bench's settings.
    fn run_case(object: &str, index: usize, dof: Dof) -> metrics::PoseErrors {
        let mut cfg = BenchConfig::default();
        cfg.estimate.dof = dof;
        cfg.estimate.threads = 2;
        let o = shapes::builtin(object).unwrap();
        let model = o.model_cloud(4000, 11).unwrap();
        let c = make_case(&o, o.diameter(), index, &cfg).unwrap();
        // Stretched enough that a rigid fit would fail the scale check.
        assert!(c.scale.iter().any(|s| (s - 1.0).abs() > 0.1), "{:?}", c.scale);
        let est = estimate_pose(&model, &c.scene, &cfg.estimate, &IcpSurrogate::default()).unwrap();
        assert_eq!(est.dof, dof);
        let eq = metrics::stretch_equivalents(&model.points, &c.scale, 0.05 * o.diameter()).unwrap();
        metrics::scaled_pose_errors(
            (&est.pose, &est.scale),
            (&c.truth, &c.scale),
            &eq,
            &model.points,
            &o.symmetry,
            o.diameter(),
        )
        .unwrap()
    }

    /// On a case the estimator gets right, the truth polished as it polishes its answer stays right and scores as
    /// its answer does (the diagnostic `pose bench` runs on failures compares the two scores).
    #[test]
    fn the_polished_truth_of_a_solved_case_scores_as_the_answer() {
        let mut cfg = BenchConfig::default();
        cfg.estimate.dof = Dof::Similarity;
        cfg.estimate.threads = 2;
        let o = shapes::builtin("bunny").unwrap();
        let model = o.model_cloud(4000, 11).unwrap();
        let c = make_case(&o, o.diameter(), 0, &cfg).unwrap();
        let est = estimate_pose(&model, &c.scene, &cfg.estimate, &IcpSurrogate::default()).unwrap();
        let (pose, scale, score) =
            crate::registration::polish_pose(&model, &c.scene, &cfg.estimate, &c.truth, &c.scale).unwrap();
        let err = |p, s| {
            metrics::scaled_pose_errors((p, s), (&c.truth, &c.scale), &[], &model.points, &o.symmetry, o.diameter())
                .unwrap()
        };
        let (answer, polished) = (err(&est.pose, &est.scale), err(&pose, &scale));
        assert!(answer.rotation_deg < 2.0 && answer.scale < 0.02, "{answer:?}");
        assert!(polished.rotation_deg < 2.0 && polished.scale < 0.02, "{polished:?}");
        assert!((score - est.candidates[0].score).abs() < 0.005, "{score} vs {}", est.candidates[0].score);
    }

    /// The mean log-scale error of the final fit started from the truth, over single views of `object`, with the
    /// model-to-scan term's dead zone as built or set to `dead_zone`.
    fn fitted_scale_bias(object: &str, dead_zone: Option<f64>) -> f64 {
        let mut cfg = BenchConfig::default();
        cfg.estimate.dof = Dof::Similarity;
        cfg.estimate.resolve_ambiguities = false;
        let o = shapes::builtin(object).unwrap();
        let model = o.model_cloud(4000, 11).unwrap();
        let cases = 8;
        let mut sum = 0.0;
        for index in 0..cases {
            let c = make_case(&o, o.diameter(), index, &cfg).unwrap();
            let prep = crate::registration::prepare(&model, &c.scene, &cfg.estimate).unwrap();
            let p = &prep.problem;
            let truth = prep.from_scene_scaled(&c.truth, &c.scale);
            let tree = KdTree::new(&p.scene_fine).unwrap();
            let mut reverse = ReverseTerm::of(p, Some(&tree)).unwrap();
            if let Some(d) = dead_zone {
                reverse.dead_zone = d;
            }
            let d = cfg.estimate.score_distance;
            let (fit, _) = scaled_refine(p, &truth, &[2.0 * d, d], 15, Dof::Similarity, Some(&reverse));
            sum += fit.log_scale.x - truth.log_scale.x;
        }
        sum / cases as f64
    }

    /// The nearest sample of a model point at the scan's edge lies inward, so the model-to-scan term pulls a
    /// model smaller; its dead zone takes a fifth to a quarter of that pull away (from the truth, 8 views: box
    /// −1.04 → −0.86 %, cylinder −0.74 → −0.54 %; wider zones remove more here, but chose worse on validation).
    #[test]
    fn the_dead_zone_lessens_the_shrinking_pull_of_the_model_to_scan_term() {
        for object in ["box", "cylinder"] {
            let (with, without) = (fitted_scale_bias(object, None), fitted_scale_bias(object, Some(0.0)));
            assert!(with > without + 0.0015 && with.abs() < 0.009, "{object}: {with} with, {without} without");
        }
    }

    #[test]
    fn stretched_partial_views_are_registered_with_their_scale() {
        for (object, index, dof) in
            [("bunny", 1, Dof::Similarity), ("box", 3, Dof::Similarity), ("bunny", 2, Dof::Anisotropic)]
        {
            let e = run_case(object, index, dof);
            assert!(e.rotation_deg < 5.0 && e.translation < 0.02 && e.scale < 0.03, "{object} {index} {dof}: {e:?}");
        }
    }
}
