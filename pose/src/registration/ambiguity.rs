//! The final checks of a pose: the object's near-symmetries (a mug upside down about its handle) and a rotation
//! that the scan leaves free (a mug whose handle is hidden), settled within what the scan allows.

use nalgebra::{Point3, Rotation3, Vector3};

use super::{EstimateConfig, Problem, SCAN_TRANSLATION_STEPS, distinct, parallel_map, refine};
use crate::error::Result;
use crate::icp::{self, IcpConfig, Target};
use crate::se3::{self, Pose};

/// A rotation is free when its stiffness is below this fraction of the next weakest (see
/// [`weakest_rotation`]) …
const FREE_ROTATION_RATIO: f64 = 0.3;

/// … its profile is scored in steps of this many degrees …
const PROFILE_STEP_DEG: f64 = 5.0;

/// … its best this many other local peaks are polished too …
const PROFILE_PEAKS: usize = 3;

/// … and what scores within this of the best counts as equally good.
const PROFILE_TOLERANCE: f64 = 0.005;

/// Half-turn axes scored when looking for near-symmetries …
const SYMMETRY_AXES: usize = 160;

/// … each by the fit of this many probes …
const SYMMETRY_PROBES: usize = 40;

/// … the best this many polished by ICP …
const SYMMETRY_POLISHED: usize = 4;

/// … at this distance (object diameters) of the self-fit …
const SYMMETRY_TAU: f64 = 0.03;

/// … and kept when they fit at least this well, at most this many.
const SYMMETRY_FIT: f64 = 0.6;

/// At most this many near-symmetries are kept (the best-fitting).
const SYMMETRY_MAX: usize = 3;

/// The rotation the scan pins least at `pose` (normalised, object → scene). From the point-to-plane information
/// matrix `A` of the fine scan in the object frame ([`icp::plane_information`]), the Schur complement
/// `S = A_ωω − A_ωv·A_vv⁻¹·A_vω` is the stiffness of each rotation `ω` when the translation follows it at best,
/// `v = −A_vv⁻¹·A_vω·ω`. Returns the twist `[ω, v]` of the weakest (`|ω| = 1`, `v` without a component along
/// `ω`, so that `exp(θ·[ω, v])` turns about a fixed line of the object), and the ratio of its stiffness to the
/// next weakest: near 0 the scan leaves that rotation free (a mug whose handle is hidden behind it), near 1
/// no rotation stands out. `None` with too few correspondences.
pub fn weakest_rotation(problem: &Problem, pose: &Pose) -> Option<(se3::Twist, f64)> {
    let g = pose.inverse();
    let view = problem.viewpoint.map(|v| g * v);
    let a =
        icp::plane_information(&problem.scene_fine, &problem.object, &g, 2.0 * problem.score_distance, view.as_ref())?;
    let aww = a.fixed_view::<3, 3>(0, 0).into_owned();
    let awv = a.fixed_view::<3, 3>(0, 3).into_owned();
    // A little damping: a translation the data leave free too (along a cylinder's axis) must not blow up.
    let avv = a.fixed_view::<3, 3>(3, 3).into_owned() + nalgebra::Matrix3::identity() * (1e-6 * a.trace() + 1e-12);
    let avv_inv = avv.try_inverse()?;
    let eig = nalgebra::SymmetricEigen::new(aww - awv * avv_inv * awv.transpose());
    let mut idx = [0usize, 1, 2];
    idx.sort_by(|&i, &j| eig.eigenvalues[i].total_cmp(&eig.eigenvalues[j]));
    let (l0, l1) = (eig.eigenvalues[idx[0]].max(0.0), eig.eigenvalues[idx[1]].max(0.0));
    let w: Vector3<f64> = eig.eigenvectors.column(idx[0]).into_owned();
    let v = -(avv_inv * awv.transpose() * w);
    let v = v - w * w.dot(&v);
    let ratio = if l1 > 0.0 { l0 / l1 } else { 1.0 };
    (ratio.is_finite() && w.iter().chain(v.iter()).all(|x| x.is_finite())).then(|| (se3::twist(&w, &v), ratio))
}

/// Settles a rotation that the scan leaves (nearly) free at `pose`. When the [`weakest_rotation`] is weak
/// (stiffness ratio below 0.3), the (coarse-scan) score is profiled over the whole turn
/// about it in 5° steps (each averaged with its neighbours, since single poses score with
/// some noise). The middle of the arc that scores within 0.005 of the best is the pose
/// consistent with the scan farthest from the poses the scan rules out (a hidden handle can only turn until
/// it would show beside the body: the smallest worst-case error); it and the next 3 local
/// peaks of the profile are polished by ICP, and the best after polishing is returned, the middle unless
/// another beats it by more than the tolerance. `None` when no rotation is weak or when the whole turn fits
/// (a symmetry: nothing to choose).
pub fn settle_free_rotation(problem: &Problem, pose: &Pose, cfg: &EstimateConfig) -> Result<Option<(Pose, f64)>> {
    let Some((xi, ratio)) = weakest_rotation(problem, pose) else {
        return Ok(None);
    };
    if ratio > FREE_ROTATION_RATIO {
        return Ok(None);
    }
    let n = (360.0 / PROFILE_STEP_DEG).round() as usize;
    let step = std::f64::consts::TAU / n as f64;
    let turned = |k: f64| pose * se3::exp(&(xi * (k * step)));
    let scores = parallel_map(n, cfg.threads, |k| Ok(problem.score(&problem.scene, &turned(k as f64))))?;
    let smooth: Vec<f64> = (0..n).map(|k| (scores[(k + n - 1) % n] + scores[k] + scores[(k + 1) % n]) / 3.0).collect();
    // Invariant: n ≥ 1, so there is a best.
    let best = (0..n).max_by(|&a, &b| smooth[a].total_cmp(&smooth[b]).then(b.cmp(&a))).unwrap_or(0);
    let floor = smooth[best] - PROFILE_TOLERANCE;
    let (mut lo, mut hi) = (0usize, 0usize);
    while lo < n && smooth[(best + n - lo - 1) % n] >= floor {
        lo += 1;
    }
    while hi < n && smooth[(best + hi + 1) % n] >= floor {
        hi += 1;
    }
    if lo + hi + 1 >= n {
        return Ok(None); // the whole turn fits: a symmetry, nothing to choose
    }
    let middle = best as f64 + (hi as f64 - lo as f64) / 2.0;
    let middle = middle.rem_euclid(n as f64);
    // Unrefined poses along the turn score with the error of the turn's axis on top of the noise, so the other
    // local peaks are polished too and the scores after refinement decide; ties go to the middle.
    let mut starts = vec![middle];
    let mut peaks: Vec<usize> = (0..n)
        .filter(|&k| (1..=2).all(|j| smooth[k] >= smooth[(k + j) % n] && smooth[k] >= smooth[(k + n - j) % n]))
        .collect();
    peaks.sort_by(|&a, &b| smooth[b].total_cmp(&smooth[a]).then(a.cmp(&b)));
    for k in peaks {
        if starts.len() > PROFILE_PEAKS {
            break;
        }
        let far = |s: &f64| {
            let d = (k as f64 - s).rem_euclid(n as f64);
            d.min(n as f64 - d) >= 4.0
        };
        if starts.iter().all(far) {
            starts.push(k as f64);
        }
    }
    let polished = parallel_map(starts.len(), cfg.threads, |i| {
        refine(problem, &turned(starts[i]), &[problem.score_distance], 10)
    })?;
    let mut out = polished[0];
    for &(p, s) in &polished[1..] {
        if s > out.1 + PROFILE_TOLERANCE {
            out = (p, s);
        }
    }
    Ok(Some(out))
}

/// The final check of the best pose `(pose, score)`: the object's [`near_symmetries`] applied to it (a mug the
/// other way up differs only in its rim and bottom) are refined and scored too, and where the scan leaves a
/// rotation of the best of them free, it is settled within what the scan allows ([`settle_free_rotation`]).
/// Returns the best-scoring result; ties go to `pose`.
pub fn resolve_ambiguities(problem: &Problem, pose: &Pose, score: f64, cfg: &EstimateConfig) -> Result<(Pose, f64)> {
    let stages = [2.0 * problem.score_distance, problem.score_distance];
    let mut options: Vec<(Pose, f64)> = vec![(*pose, score)];
    let syms = &problem.near_symmetries;
    let flips = parallel_map(syms.len(), cfg.threads, |i| refine(problem, &(pose * syms[i]), &stages, 15))?;
    options.extend(flips);
    // Ties go to the earlier option (the pose as found).
    let mut best = options[0];
    for &o in &options[1..] {
        if o.1 > best.1 {
            best = o;
        }
    }
    if let Some((p, s)) = settle_free_rotation(problem, &best.0, cfg)?
        && s >= best.1 - PROFILE_TOLERANCE
    {
        best = (p, s);
    }
    Ok(best)
}

/// How well the rigid motion `s` maps the object onto itself: the mean over `probes` (with their outward
/// `normals`, when known) of `max(0, 1 − r²/τ²)` with the residual `r` of [`icp::plane_score`] to the nearest
/// object point, counting only where that point's normal agrees with the moved probe's (within 60°).
pub fn self_fit(target: &Target, probes: &[Point3<f64>], normals: Option<&[Vector3<f64>]>, s: &Pose, tau: f64) -> f64 {
    let t2 = tau * tau;
    let total: f64 = probes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let q = s * p;
            let nb = target.tree.nearest(&q);
            let agrees = match (normals, &target.cloud.normals) {
                (Some(ns), Some(tn)) => (s.rotation * ns[i]).dot(&tn[nb.index]) > 0.5,
                _ => true,
            };
            let m = target.cloud.points[nb.index];
            let r = target.cloud.normals.as_ref().map_or(0.0, |tn| tn[nb.index].dot(&(q - m)));
            let excess = (nb.dist2.sqrt() - target.spacing).max(0.0);
            if agrees { (1.0 - (r * r + excess * excess) / t2).max(0.0) } else { 0.0 }
        })
        .sum();
    total / probes.len().max(1) as f64
}

/// The object's near-symmetries: rigid motions other than the identity that map it onto itself up to a small
/// part (a box's half-turns exactly, a mug upside down but for its rim and bottom, a mug turned about its axis
/// but for its handle). Half-turns about 160 axes spread over the sphere (through the centroid) are
/// scored by [`self_fit`], the best few polished by point-to-plane ICP of the object onto itself, and those that
/// still fit at least 0.6 and turn by more than 30° are kept, distinct ones only, best first. A
/// scan can tell such poses apart only by the small part, so each is tried on the final pose.
pub fn near_symmetries(
    target: &Target,
    probes: &[Point3<f64>],
    normals: Option<&[Vector3<f64>]>,
    threads: usize,
) -> Result<Vec<Pose>> {
    let tau = SYMMETRY_TAU;
    let few = &probes[..probes.len().min(SYMMETRY_PROBES)];
    let few_normals = normals.map(|ns| &ns[..few.len()]);
    // Axes on a Fibonacci half-sphere: a half-turn about a and about −a is the same.
    let golden = std::f64::consts::PI * (3.0 - 5f64.sqrt());
    let gate2 = 0.01;
    let mut scored: Vec<(Pose, f64)> = parallel_map(SYMMETRY_AXES, threads, |i| {
        let z = 1.0 - (i as f64 + 0.5) / SYMMETRY_AXES as f64;
        let r = (1.0 - z * z).max(0.0).sqrt();
        let (sin, cos) = (golden * i as f64).sin_cos();
        let axis = nalgebra::Unit::new_normalize(Vector3::new(r * cos, r * sin, z));
        let mut half = se3::pose(Rotation3::from_axis_angle(&axis, std::f64::consts::PI), Vector3::zeros());
        // The part that matches need not be centred on the centroid (a mug's heavy bottom): a few
        // translation-only steps first.
        for _ in 0..SCAN_TRANSLATION_STEPS / 2 {
            let (mut shift, mut n) = (Vector3::zeros(), 0usize);
            for p in few {
                let q = half * p;
                let nb = target.tree.nearest(&q);
                if nb.dist2 <= gate2 {
                    shift += target.cloud.points[nb.index] - q;
                    n += 1;
                }
            }
            if n > 0 {
                half.translation.vector += shift / n as f64;
            }
        }
        Ok((half, self_fit(target, few, few_normals, &half, 2.0 * tau)))
    })?;
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut cfg = IcpConfig::point_to_plane(2.0 * tau);
    cfg.max_iterations = 10;
    let mut kept: Vec<(Pose, f64)> = Vec::new();
    for (half, _) in scored.into_iter().take(SYMMETRY_POLISHED) {
        let s = icp::icp(probes, target, &half, &cfg)?.pose;
        let fit = self_fit(target, probes, normals, &s, tau);
        if fit >= SYMMETRY_FIT
            && crate::so3::angle(&s.rotation) > 30f64.to_radians()
            && kept.iter().all(|k| distinct(&k.0, &s))
        {
            kept.push((s, fit));
        }
    }
    kept.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(kept.into_iter().take(SYMMETRY_MAX).map(|k| k.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PointCloud;
    use crate::registration::{IcpSurrogate, estimate_pose, prepare};

    /// Case `index` of `diffuse pose bench --cases 40` (seed 0) with the model and estimator seed it uses.
    fn bench_case(
        name: &str,
        index: usize,
    ) -> (crate::shapes::ObjectModel, PointCloud, crate::bench::BenchCase, EstimateConfig) {
        use diffuse_core::seed::sample_seed;
        let cfg = crate::bench::BenchConfig::default();
        let oi = crate::shapes::BUILTIN.iter().position(|&n| n == name).unwrap();
        let o = crate::shapes::builtin(name).unwrap();
        let model = o.model_cloud(cfg.model_points, sample_seed(cfg.seed ^ 0x0B1E, oi as u64)).unwrap();
        let c = crate::bench::make_case(&o, o.diameter(), index, &cfg).unwrap();
        let est = EstimateConfig { seed: sample_seed(cfg.seed, index as u64), threads: 2, ..cfg.estimate.clone() };
        (o, model, c, est)
    }

    #[test]
    fn near_symmetries_are_found_where_they_exist() {
        let axis_of = |s: &Pose| se3::axis_angle(s);
        // The box: its half-turns about its axes, exact (the coarse search over axes may miss one of the three).
        let (_, model, c, cfg) = bench_case("box", 40);
        let syms = prepare(&model, &c.scene, &cfg).unwrap().problem.near_symmetries;
        let mut seen = [false; 3];
        for s in &syms {
            let (axis, angle) = axis_of(s);
            assert!((angle - std::f64::consts::PI).abs() < 0.02, "{angle}");
            let k = axis.iamax();
            assert!(axis[k].abs() > 0.999, "{axis:?}");
            assert!(!seen[k], "{syms:?}");
            seen[k] = true;
        }
        assert!(syms.len() >= 2, "{syms:?}");
        // The mug: upside down about its handle's axis (x) keeps all but the rim and the bottom.
        let (_, model, c, cfg) = bench_case("mug", 160);
        let syms = prepare(&model, &c.scene, &cfg).unwrap().problem.near_symmetries;
        assert!(
            syms.iter().any(|s| {
                let (axis, angle) = axis_of(s);
                (angle - std::f64::consts::PI).abs() < 0.05 && axis.x.abs() > 0.99
            }),
            "{syms:?}"
        );
        // The bunny has none; none are looked for when the check is off.
        let (_, model, c, cfg) = bench_case("bunny", 0);
        assert!(prepare(&model, &c.scene, &cfg).unwrap().problem.near_symmetries.is_empty());
        let off = EstimateConfig { resolve_ambiguities: false, ..cfg };
        let (_, model, c, _) = bench_case("box", 40);
        assert!(prepare(&model, &c.scene, &off).unwrap().problem.near_symmetries.is_empty());
    }

    #[test]
    fn the_turn_about_a_cylinder_axis_is_free_and_an_l_plate_pins_every_rotation() {
        let (_, model, c, cfg) = bench_case("cylinder", 80);
        let prep = prepare(&model, &c.scene, &cfg).unwrap();
        let (xi, ratio) = weakest_rotation(&prep.problem, &prep.from_scene(&c.truth)).unwrap();
        // The cylinder's axis is z in its own frame.
        assert!(ratio < 0.05 && se3::omega(&xi).z.abs() > 0.99, "{ratio} {xi:?}");
        let (_, model, c, cfg) = bench_case("l-shape", 120);
        let prep = prepare(&model, &c.scene, &cfg).unwrap();
        let (_, ratio) = weakest_rotation(&prep.problem, &prep.from_scene(&c.truth)).unwrap();
        assert!(ratio > FREE_ROTATION_RATIO, "{ratio}");
    }

    #[test]
    fn the_upside_down_mug_is_turned_back_by_its_near_symmetry() {
        // Bench case 181: the handle shows, the view is nearly side-on, and the search ends on the mug upside
        // down about its handle; only the check of the near-symmetries brings it back.
        let (o, model, c, cfg) = bench_case("mug", 181);
        let err = |cfg: &EstimateConfig| {
            let est = estimate_pose(&model, &c.scene, cfg, &IcpSurrogate::default()).unwrap();
            crate::metrics::pose_errors(&est.pose, &c.truth, &model.points, &o.symmetry, o.diameter()).unwrap()
        };
        let off = err(&EstimateConfig { resolve_ambiguities: false, ..cfg.clone() });
        let on = err(&cfg);
        assert!(off.rotation_deg > 170.0, "{off:?}");
        assert!(on.rotation_deg < 5.0 && on.translation < 0.02, "{on:?}");
    }
}
