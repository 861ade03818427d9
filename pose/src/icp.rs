//! Iterative closest point: point-to-point (weighted Kabsch) and point-to-plane (Gauss–Newton on
//! `nᵀ(T·s − q)`), both with robust kernels applied by iteratively reweighted least squares.
//!
//! ICP moves a *source* cloud onto a *target* whose k-d tree (and normals) are built once in a [`Target`] and
//! reused by every call. Updates are left-multiplied: `T ← exp(δ)·T` with `δ = [ω, v]`. Iteration stops when an
//! update rotates less than `min_rotation_step` and translates less than `min_translation_step`, or after
//! `max_iterations`.

use nalgebra::{Matrix3, Matrix6, Point3, Vector3, Vector6};

use crate::cloud::{NormalOrientation, PointCloud};
use crate::error::{Error, Result};
use crate::kdtree::KdTree;
use crate::se3::{self, Pose};

/// The error ICP minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcpMethod {
    /// Squared distance between corresponding points (closed-form weighted Kabsch step).
    PointToPoint,
    /// Squared distance along the target normal (converges in fewer iterations on surfaces).
    PointToPlane,
}

/// A robust kernel: the IRLS weight given to a residual `r` (same units as the clouds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RobustKernel {
    /// Plain least squares: `w = 1`.
    L2,
    /// Huber with threshold `k`: `w = min(1, k/|r|)`.
    Huber(f64),
    /// Tukey's biweight with scale `k`: `w = (1 − (r/k)²)²` for `|r| < k`, else 0.
    Tukey(f64),
    /// Cauchy with scale `k`: `w = 1/(1 + (r/k)²)`.
    Cauchy(f64),
}

impl RobustKernel {
    /// The IRLS weight of residual `r`.
    pub fn weight(&self, r: f64) -> f64 {
        let a = r.abs();
        match *self {
            RobustKernel::L2 => 1.0,
            RobustKernel::Huber(k) => {
                if a <= k {
                    1.0
                } else {
                    k / a
                }
            }
            RobustKernel::Tukey(k) => {
                if a >= k {
                    0.0
                } else {
                    let u = 1.0 - (a / k) * (a / k);
                    u * u
                }
            }
            RobustKernel::Cauchy(k) => 1.0 / (1.0 + (a / k) * (a / k)),
        }
    }
}

/// ICP settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IcpConfig {
    /// Error metric.
    pub method: IcpMethod,
    /// Robust kernel on the residuals.
    pub kernel: RobustKernel,
    /// Correspondences farther apart than this are ignored.
    pub max_correspondence: f64,
    /// Iteration limit.
    pub max_iterations: usize,
    /// Weight `λ` of a point-to-point term added to point-to-plane residuals: it pulls along the surface too,
    /// where point-to-plane alone lets a scan slide (along a cylinder's axis, across a plane); 0 disables it.
    pub point_weight: f64,
    /// The sensor position in the *source* frame: correspondences to target points facing away from it are
    /// skipped (used only when the target's normals are oriented).
    pub viewpoint: Option<Point3<f64>>,
    /// Converged when an update rotates less than this (radians) …
    pub min_rotation_step: f64,
    /// … and translates less than this (cloud units).
    pub min_translation_step: f64,
}

impl IcpConfig {
    /// Point-to-plane with a Tukey kernel at the correspondence distance, for clouds of unit diameter.
    pub fn point_to_plane(max_correspondence: f64) -> Self {
        IcpConfig {
            method: IcpMethod::PointToPlane,
            kernel: RobustKernel::Tukey(max_correspondence),
            max_correspondence,
            viewpoint: None,
            point_weight: 0.0,
            max_iterations: 30,
            min_rotation_step: 1e-5,
            min_translation_step: 1e-6,
        }
    }

    /// Classic point-to-point ICP with plain least squares.
    pub fn point_to_point(max_correspondence: f64) -> Self {
        IcpConfig {
            method: IcpMethod::PointToPoint,
            kernel: RobustKernel::L2,
            ..Self::point_to_plane(max_correspondence)
        }
    }

    fn check(&self) -> Result<()> {
        if !(self.max_correspondence.is_finite() && self.max_correspondence > 0.0) {
            return Err(Error::invalid(
                "ICP max correspondence distance",
                format!("{} must be positive", self.max_correspondence),
            ));
        }
        Ok(())
    }
}

/// The cloud ICP aligns to, with its k-d tree and normals, built once and shared.
#[derive(Debug)]
pub struct Target {
    /// Points and unit normals.
    pub cloud: PointCloud,
    /// Tree over `cloud.points`.
    pub tree: KdTree,
    /// Typical gap between neighbouring target points (median nearest-neighbour distance).
    pub spacing: f64,
    /// Whether the normals are oriented outwards (given with the cloud, e.g. from a mesh), which makes
    /// back-facing tests meaningful; estimated normals are not trusted for that.
    pub oriented: bool,
}

impl Target {
    /// Builds the tree; estimates normals (`k` neighbours, away from the centroid) when the cloud has none.
    pub fn new(cloud: PointCloud, k_normals: usize) -> Result<Self> {
        let oriented = cloud.normals.is_some();
        let cloud = if oriented {
            cloud
        } else {
            cloud.with_estimated_normals(k_normals, NormalOrientation::AwayFromCentroid)?
        };
        let tree = KdTree::new(&cloud.points)?;
        let spacing = tree.median_gap(&cloud.points);
        Ok(Target { cloud, tree, spacing, oriented })
    }

    /// The nearest target point to `p` within squared distance `max2`. With a viewpoint (target frame) and
    /// oriented normals, points facing away from the viewpoint are skipped, since the sensor cannot have seen
    /// them: the nearest facing one among the 4 nearest is taken (the near side of a thin wall), or none.
    pub fn correspondence(&self, p: &Point3<f64>, max2: f64, viewpoint: Option<&Point3<f64>>) -> Option<usize> {
        let faces = |i: usize| match viewpoint {
            Some(v) if self.oriented => {
                let to_view = v - self.cloud.points[i];
                // Grazing points pass: their normals are the least reliable.
                self.normal(i).dot(&to_view) > -0.2 * to_view.norm()
            }
            _ => true,
        };
        let nb = self.tree.nearest(p);
        if nb.dist2 > max2 {
            return None;
        }
        if faces(nb.index) {
            return Some(nb.index);
        }
        self.tree.knn(p, 4).into_iter().skip(1).find(|nb| nb.dist2 <= max2 && faces(nb.index)).map(|nb| nb.index)
    }

    /// The unit normal of target point `i`.
    pub fn normal(&self, i: usize) -> Vector3<f64> {
        // Invariant: `new` guarantees normals are present.
        self.cloud.normals.as_ref().map(|n| n[i]).unwrap_or_else(Vector3::z)
    }
}

/// The outcome of an ICP run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IcpResult {
    /// The transformation taking the source onto the target.
    pub pose: Pose,
    /// Fraction of source points with a target point within the correspondence distance.
    pub fitness: f64,
    /// RMS distance of those inlier correspondences.
    pub inlier_rmse: f64,
    /// Iterations run.
    pub iterations: usize,
    /// Whether the step criterion was met before the iteration limit.
    pub converged: bool,
}

/// Fitness and inlier RMSE of `pose` applied to `source` against `target`, at `max_distance`.
pub fn evaluate(source: &[Point3<f64>], target: &Target, pose: &Pose, max_distance: f64) -> (f64, f64) {
    let max2 = max_distance * max_distance;
    let (mut n, mut sum) = (0usize, 0.0);
    for s in source {
        let d2 = target.tree.nearest(&(pose * s)).dist2;
        if d2 <= max2 {
            n += 1;
            sum += d2;
        }
    }
    if n == 0 {
        return (0.0, 0.0);
    }
    (n as f64 / source.len().max(1) as f64, (sum / n as f64).sqrt())
}

/// A smooth alignment score in [0, 1]: the mean of `max(0, 1 − d²/τ²)` over source points, `d` the distance
/// to the nearest target point. Unlike fitness it rewards tighter fits, so it separates near-ties.
pub fn truncated_score(source: &[Point3<f64>], target: &Target, pose: &Pose, tau: f64) -> f64 {
    let t2 = tau * tau;
    let s: f64 = source.iter().map(|s| (1.0 - target.tree.nearest(&(pose * s)).dist2 / t2).max(0.0)).sum();
    s / source.len().max(1) as f64
}

/// Like [`truncated_score`] but with the residual `r² = (n·(T·s − q))² + max(0, |T·s − q| − spacing)²` to the
/// nearest target point `q` (when it lies within `gate`): the sampling gaps of the target do not count as misfit,
/// while points beyond the target's edges still do. With a `viewpoint` (target frame), `q` is the nearest point
/// that faces it (see [`Target::correspondence`]): a sensor cannot have measured the far side of a thin wall, so a
/// scan point is not scored against it when the near side's samples happen to lie a little farther away.
pub fn plane_score(
    source: &[Point3<f64>],
    target: &Target,
    pose: &Pose,
    tau: f64,
    gate: f64,
    viewpoint: Option<&Point3<f64>>,
) -> f64 {
    let (t2, g2) = (tau * tau, gate * gate);
    let s: f64 = source
        .iter()
        .map(|s| {
            let p = pose * s;
            let Some(i) = target.correspondence(&p, g2, viewpoint) else {
                return 0.0;
            };
            let q = target.cloud.points[i];
            let r = target.normal(i).dot(&(p - q));
            let excess = ((p - q).norm() - target.spacing).max(0.0);
            (1.0 - (r * r + excess * excess) / t2).max(0.0)
        })
        .sum();
    s / source.len().max(1) as f64
}

/// Runs ICP from `init`; returns the pose taking `source` onto `target`.
pub fn icp(source: &[Point3<f64>], target: &Target, init: &Pose, cfg: &IcpConfig) -> Result<IcpResult> {
    cfg.check()?;
    if source.is_empty() {
        return Err(Error::EmptyCloud { what: "ICP source".into() });
    }
    let max2 = cfg.max_correspondence * cfg.max_correspondence;
    let mut pose = *init;
    let mut converged = false;
    let mut iterations = 0;
    for _ in 0..cfg.max_iterations {
        iterations += 1;
        let view = cfg.viewpoint.map(|v| pose * v);
        let delta = match cfg.method {
            IcpMethod::PointToPlane => {
                plane_step(source, target, &pose, max2, &cfg.kernel, view.as_ref(), cfg.point_weight)
            }
            IcpMethod::PointToPoint => point_step(source, target, &pose, max2, &cfg.kernel, view.as_ref()),
        };
        let Some(delta) = delta else { break };
        pose = se3::exp(&delta) * pose;
        if se3::omega(&delta).norm() < cfg.min_rotation_step && se3::vel(&delta).norm() < cfg.min_translation_step {
            converged = true;
            break;
        }
    }
    se3::renormalize(&mut pose);
    let (fitness, inlier_rmse) = evaluate(source, target, &pose, cfg.max_correspondence);
    Ok(IcpResult { pose, fitness, inlier_rmse, iterations, converged })
}

/// The point-to-plane information matrix `Σ w·JᵀJ`, `J = [(p × n)ᵀ, nᵀ]`, of `source` under `pose` against
/// `target` (correspondences within `max_correspondence` as in [`Target::correspondence`], Tukey weights): how
/// strongly the data pin each left perturbation `exp(δ)·pose`, `δ = [ω, v]` in the target frame. Its near-null
/// directions are the motions the data cannot see (a cylinder turning about its axis). `None` with fewer than
/// 6 correspondences.
pub fn plane_information(
    source: &[Point3<f64>],
    target: &Target,
    pose: &Pose,
    max_correspondence: f64,
    viewpoint: Option<&Point3<f64>>,
) -> Option<Matrix6<f64>> {
    let max2 = max_correspondence * max_correspondence;
    let kernel = RobustKernel::Tukey(max_correspondence);
    let (mut h, mut count) = (Matrix6::zeros(), 0);
    for s in source {
        let p = pose * s;
        let Some(i) = target.correspondence(&p, max2, viewpoint) else {
            continue;
        };
        let n = target.normal(i);
        let w = kernel.weight(n.dot(&(p - target.cloud.points[i])));
        if w > 0.0 {
            let pxn = p.coords.cross(&n);
            let j = Vector6::new(pxn.x, pxn.y, pxn.z, n.x, n.y, n.z);
            h += j * j.transpose() * w;
            count += 1;
        }
    }
    (count >= 6).then_some(h)
}

/// One damped Gauss–Newton step of point-to-plane ICP; `None` when too few correspondences constrain it.
fn plane_step(
    source: &[Point3<f64>],
    target: &Target,
    pose: &Pose,
    max2: f64,
    kernel: &RobustKernel,
    view: Option<&Point3<f64>>,
    point_weight: f64,
) -> Option<Vector6<f64>> {
    let mut h = Matrix6::zeros();
    let mut b = Vector6::zeros();
    let mut count = 0;
    for s in source {
        let p = pose * s;
        let Some(i) = target.correspondence(&p, max2, view) else {
            continue;
        };
        let q = target.cloud.points[i];
        let n = target.normal(i);
        let r = n.dot(&(p - q));
        let w = kernel.weight(r);
        if w <= 0.0 {
            continue;
        }
        let pxn = p.coords.cross(&n);
        let j = Vector6::new(pxn.x, pxn.y, pxn.z, n.x, n.y, n.z);
        h += j * j.transpose() * w;
        b += j * (w * r);
        if point_weight > 0.0 {
            // e = p − q with ∂e/∂δ = [−p^, I].
            let mut je = nalgebra::Matrix3x6::zeros();
            je.fixed_view_mut::<3, 3>(0, 0).copy_from(&-crate::so3::hat(&p.coords));
            je.fixed_view_mut::<3, 3>(0, 3).copy_from(&Matrix3::identity());
            let lw = point_weight * w;
            h += je.transpose() * je * lw;
            b += je.transpose() * (p - q) * lw;
        }
        count += 1;
    }
    if count < 6 {
        return None;
    }
    // Levenberg damping keeps directions the surface does not constrain (sliding along a plane) at zero.
    let damping = 1e-6 * h.trace() / 6.0 + 1e-12;
    let a = h + Matrix6::identity() * damping;
    let delta = a.cholesky()?.solve(&-b);
    delta.iter().all(|v| v.is_finite()).then_some(delta)
}

/// One weighted Kabsch step of point-to-point ICP; `None` when the correspondences cannot fix a rotation.
fn point_step(
    source: &[Point3<f64>],
    target: &Target,
    pose: &Pose,
    max2: f64,
    kernel: &RobustKernel,
    view: Option<&Point3<f64>>,
) -> Option<Vector6<f64>> {
    let mut pairs = Vec::with_capacity(source.len());
    for s in source {
        let p = pose * s;
        let Some(i) = target.correspondence(&p, max2, view) else {
            continue;
        };
        let q = target.cloud.points[i];
        let w = kernel.weight((p - q).norm());
        if w > 0.0 {
            pairs.push((p, q, w));
        }
    }
    if pairs.len() < 3 {
        return None;
    }
    let wsum: f64 = pairs.iter().map(|x| x.2).sum();
    let pc = pairs.iter().fold(Vector3::zeros(), |a, x| a + x.0.coords * x.2) / wsum;
    let qc = pairs.iter().fold(Vector3::zeros(), |a, x| a + x.1.coords * x.2) / wsum;
    let cov = pairs.iter().fold(Matrix3::zeros(), |a, x| a + (x.0.coords - pc) * (x.1.coords - qc).transpose() * x.2);
    let svd = cov.svd(true, true);
    let (u, vt) = (svd.u?, svd.v_t?);
    let d = (vt.transpose() * u.transpose()).determinant().signum();
    let r = vt.transpose() * Matrix3::from_diagonal(&Vector3::new(1.0, 1.0, d)) * u.transpose();
    let r = nalgebra::Rotation3::from_matrix_unchecked(r);
    let t = qc - r * pc;
    let delta = se3::log(&se3::pose(r, t));
    delta.iter().all(|v| v.is_finite()).then_some(delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes;
    use crate::so3;
    use rand::{Rng, SeedableRng};

    fn bunny_target() -> (PointCloud, Target) {
        let o = shapes::bunny().unwrap();
        let d = o.diameter();
        let model = o.model_cloud(3000, 0).unwrap();
        let norm = crate::cloud::Normalization { centre: Point3::origin(), scale: 1.0 / d };
        let model = model.normalized(&norm);
        let target = Target::new(model.voxel_downsample(0.015).unwrap(), 12).unwrap();
        (model, target)
    }

    #[test]
    fn kernels_have_their_textbook_weights() {
        assert_eq!(RobustKernel::L2.weight(5.0), 1.0);
        assert_eq!(RobustKernel::Huber(1.0).weight(0.5), 1.0);
        assert_eq!(RobustKernel::Huber(1.0).weight(-4.0), 0.25);
        assert_eq!(RobustKernel::Tukey(2.0).weight(1.0), 0.5625);
        assert_eq!(RobustKernel::Tukey(2.0).weight(2.5), 0.0);
        assert_eq!(RobustKernel::Cauchy(1.0).weight(1.0), 0.5);
    }

    /// A wall 0.004 thick: its top face (normal +z) sampled every 0.02 in x and y, its bottom face (normal −z)
    /// on the grid shifted by 0.01 in x.
    fn thin_wall() -> Target {
        let (mut points, mut normals) = (Vec::new(), Vec::new());
        for i in 0..10 {
            for j in 0..10 {
                points.push(Point3::new(i as f64 * 0.02, j as f64 * 0.02, 0.002));
                normals.push(Vector3::z());
                points.push(Point3::new(i as f64 * 0.02 + 0.01, j as f64 * 0.02, -0.002));
                normals.push(-Vector3::z());
            }
        }
        Target::new(PointCloud { points, normals: Some(normals), colors: None }, 12).unwrap()
    }

    #[test]
    fn the_plane_score_seen_from_the_sensor_ignores_the_far_side_of_a_thin_wall() {
        let target = thin_wall();
        // Scan points on the top face, half of them right above a bottom-face sample (nearer than the top
        // face's own samples), seen from above.
        let scan: Vec<Point3<f64>> = (1..8)
            .flat_map(|i| [Point3::new(i as f64 * 0.02, 0.06, 0.002), Point3::new(i as f64 * 0.02 + 0.01, 0.06, 0.002)])
            .collect();
        let above = Point3::new(0.1, 0.1, 1.0);
        let blind = plane_score(&scan, &target, &Pose::identity(), 0.003, 0.05, None);
        let seen = plane_score(&scan, &target, &Pose::identity(), 0.003, 0.05, Some(&above));
        assert!((blind - 0.5).abs() < 1e-9, "{blind}");
        assert!((seen - 1.0).abs() < 1e-9, "{seen}");
        // Seen from below, the bottom face is the visible one and the top-face points do not fit it.
        let below = Point3::new(0.1, 0.1, -1.0);
        assert!(plane_score(&scan, &target, &Pose::identity(), 0.003, 0.05, Some(&below)) < 0.01);
    }

    #[test]
    fn the_information_matrix_has_a_null_rotation_for_a_surface_of_revolution() {
        // A sphere: every rotation about its centre leaves the point-to-plane residuals unchanged.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let sphere: Vec<Point3<f64>> = (0..800)
            .map(|_| {
                let v = Vector3::new(rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5);
                Point3::from(v.normalize() * 0.5)
            })
            .collect();
        let normals = sphere.iter().map(|p| p.coords.normalize()).collect();
        let target =
            Target::new(PointCloud { points: sphere.clone(), normals: Some(normals), colors: None }, 12).unwrap();
        let a = plane_information(&sphere, &target, &Pose::identity(), 0.05, None).unwrap();
        let rot = a.fixed_view::<3, 3>(0, 0).norm();
        let trans = a.fixed_view::<3, 3>(3, 3);
        assert!(rot < 1e-9 * trans.norm(), "{rot} vs {}", trans.norm());
        // Translations are pinned in every direction.
        assert!(trans.symmetric_eigen().eigenvalues.min() > 100.0);
        assert!(plane_information(&sphere[..3], &target, &Pose::identity(), 0.05, None).is_none());
    }

    /// Both methods recover a known moderate misalignment of the bunny exactly (noise-free), and
    /// point-to-plane needs fewer iterations.
    #[test]
    fn both_methods_recover_a_known_pose() {
        let (model, target) = bunny_target();
        let truth = se3::pose(so3::exp(&Vector3::new(0.25, -0.2, 0.15)), Vector3::new(0.05, -0.03, 0.04));
        // The source is the model seen through the inverse of the truth: icp must find `truth`.
        let source: Vec<Point3<f64>> = model.points.iter().step_by(4).map(|p| truth.inverse() * p).collect();
        let mut iters = Vec::new();
        for cfg in [IcpConfig::point_to_point(0.2), IcpConfig::point_to_plane(0.2)] {
            let mut cfg = cfg;
            cfg.max_iterations = 200;
            let r = icp(&source, &target, &Pose::identity(), &cfg).unwrap();
            let (re, te) = se3::errors(&r.pose, &truth);
            assert!(re < 0.01 && te < 0.005, "{:?}: rotation {re}, translation {te}", cfg.method);
            assert!(r.fitness > 0.99);
            iters.push(r.iterations);
        }
        assert!(iters[1] < iters[0], "point-to-plane {} vs point-to-point {} iterations", iters[1], iters[0]);
    }

    /// With 30 % gross outliers plain least squares is pulled off; Tukey point-to-plane is not.
    #[test]
    fn robust_kernel_resists_outliers() {
        let (model, target) = bunny_target();
        let truth = se3::pose(so3::exp(&Vector3::new(0.1, 0.1, -0.1)), Vector3::new(0.02, 0.0, 0.01));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut source: Vec<Point3<f64>> = model.points.iter().step_by(3).map(|p| truth.inverse() * p).collect();
        let n = source.len();
        for i in 0..(n * 3 / 10) {
            // Outliers 0.05–0.15 away from their inlier, within the correspondence distance.
            let dir = Vector3::new(rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5)
                .normalize();
            source[i] += dir * (0.05 + 0.1 * rng.random::<f64>()) + Vector3::new(0.08, 0.0, 0.0);
        }
        let mut robust = IcpConfig::point_to_plane(0.3);
        robust.kernel = RobustKernel::Tukey(0.03);
        robust.max_iterations = 100;
        let mut plain = robust;
        plain.kernel = RobustKernel::L2;
        let r = icp(&source, &target, &Pose::identity(), &robust).unwrap();
        let p = icp(&source, &target, &Pose::identity(), &plain).unwrap();
        let (rr, rt) = se3::errors(&r.pose, &truth);
        let (_, pt) = se3::errors(&p.pose, &truth);
        assert!(rr < 0.01 && rt < 0.003, "robust: {rr} {rt}");
        assert!(pt > 3.0 * rt.max(1e-3), "plain least squares was not disturbed: {pt}");
    }

    #[test]
    fn evaluate_counts_inliers() {
        let (model, target) = bunny_target();
        let mut source: Vec<Point3<f64>> = model.points.iter().take(100).copied().collect();
        for s in source.iter_mut().take(10) {
            s.x += 10.0;
        }
        let (fit, rmse) = evaluate(&source, &target, &Pose::identity(), 0.05);
        assert_eq!(fit, 0.9);
        assert!(rmse < 0.02);
        assert!(truncated_score(&source, &target, &Pose::identity(), 0.05) > 0.5);
        assert!(icp(&[], &target, &Pose::identity(), &IcpConfig::point_to_plane(0.1)).is_err());
        assert!(icp(&source, &target, &Pose::identity(), &IcpConfig::point_to_plane(f64::NAN)).is_err());
    }
}
