//! Pose error measures: rotation error (geodesic angle, symmetry-aware), translation error, ADD and ADD-S.
//!
//! ADD is the mean distance between each model point under the estimated and the true pose; ADD-S, for
//! symmetric objects, the mean distance from each estimated model point to the *nearest* true model point, so
//! poses that differ by a symmetry of the object score zero.

use nalgebra::{Matrix3, Point3, Rotation3, Vector3};

use crate::error::Result;
use crate::kdtree::KdTree;
use crate::se3::Pose;
use crate::shapes::Symmetry;

/// Errors of an estimated pose against the truth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoseErrors {
    /// Geodesic rotation error in degrees, symmetry-aware.
    pub rotation_deg: f64,
    /// Translation error in object diameters.
    pub translation: f64,
    /// ADD in object diameters.
    pub add: f64,
    /// ADD-S in object diameters.
    pub add_s: f64,
    /// The largest relative error of the scale per object axis, `max_k |ŝ_k/s_k − 1|` (0 when neither has one).
    pub scale: f64,
}

/// Mean distance between `est·p` and `truth·p` over `points`.
pub fn add(est: &Pose, truth: &Pose, points: &[Point3<f64>]) -> f64 {
    points.iter().map(|p| (est * p - truth * p).norm()).sum::<f64>() / points.len().max(1) as f64
}

/// Mean distance from each `est·p` to the nearest `truth·q`, over `points`.
pub fn add_s(est: &Pose, truth: &Pose, points: &[Point3<f64>]) -> Result<f64> {
    let moved: Vec<Point3<f64>> = points.iter().map(|p| truth * p).collect();
    let tree = KdTree::new(&moved)?;
    Ok(points.iter().map(|p| tree.nearest(&(est * p)).dist2.sqrt()).sum::<f64>() / points.len() as f64)
}

/// All errors of `est` against `truth` for an object with `symmetry`, model `points` and `diameter`.
pub fn pose_errors(
    est: &Pose,
    truth: &Pose,
    points: &[Point3<f64>],
    symmetry: &Symmetry,
    diameter: f64,
) -> Result<PoseErrors> {
    Ok(PoseErrors {
        rotation_deg: symmetry.rotation_error(&est.rotation, &truth.rotation).to_degrees(),
        translation: (est.translation.vector - truth.translation.vector).norm() / diameter,
        add: add(est, truth, points) / diameter,
        add_s: add_s(est, truth, points)? / diameter,
        scale: 0.0,
    })
}

/// The 24 rotations that permute the coordinate axes (with signs): the rotation group of a cube.
pub fn axis_permutations() -> Vec<Rotation3<f64>> {
    let mut out = Vec::with_capacity(24);
    for perm in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
        for signs in 0..8u8 {
            let mut m = Matrix3::zeros();
            for (row, &col) in perm.iter().enumerate() {
                m[(row, col)] = if signs >> row & 1 == 1 { -1.0 } else { 1.0 };
            }
            if m.determinant() > 0.0 {
                out.push(Rotation3::from_matrix_unchecked(m));
            }
        }
    }
    out
}

/// The ways of writing a stretched object's pose that give the very same shape in the scene: `(Q, s')` with
/// `R·Q·diag(s')·p` covering what `R·diag(s)·p` covers. With a scale per axis a box has more of these than its
/// rigid symmetries: turned a quarter about an axis with the two scales across it swapped (and rescaled by the
/// ratio of its sides), it is the same box. Tried for each axis permutation `Q`: `s'` makes the bounding box of
/// `diag(s')·p` after `Q` match that of `diag(s)·p`, and the pair counts when 95 % of the one stretched point set
/// lies within `tolerance` of the other (the sampling gap must pass; a part that sticks out must not). The identity pair always comes first.
pub fn stretch_equivalents(
    points: &[Point3<f64>],
    scale: &Vector3<f64>,
    tolerance: f64,
) -> Result<Vec<(Rotation3<f64>, Vector3<f64>)>> {
    let stretched: Vec<Point3<f64>> = points.iter().map(|p| Point3::from(p.coords.component_mul(scale))).collect();
    let tree = KdTree::new(&stretched)?;
    let extent = |pts: &mut dyn Iterator<Item = Vector3<f64>>| {
        let (mut lo, mut hi) = (Vector3::repeat(f64::INFINITY), Vector3::repeat(f64::NEG_INFINITY));
        for p in pts {
            lo = lo.inf(&p);
            hi = hi.sup(&p);
        }
        hi - lo
    };
    let base = extent(&mut points.iter().map(|p| p.coords));
    let target = extent(&mut stretched.iter().map(|p| p.coords));
    let mut out = vec![(Rotation3::identity(), *scale)];
    for q in axis_permutations().into_iter().skip(1) {
        // Q·diag(s')·B must have the extents of diag(s)·B: diag(s')·B has those of Qᵀ applied to them.
        let wanted = q.matrix().transpose().abs() * target;
        let s2 = wanted.component_div(&base);
        if !s2.iter().all(|x| x.is_finite() && *x > 0.0) {
            continue;
        }
        let mut gaps: Vec<f64> =
            points.iter().map(|p| tree.nearest(&(q * Point3::from(p.coords.component_mul(&s2)))).dist2).collect();
        gaps.sort_by(f64::total_cmp);
        // Nearly all of the one on the other: a mean would let a thin plate turned in its plane pass.
        let p95 = gaps.get(gaps.len() * 95 / 100).map_or(f64::INFINITY, |d| d.sqrt());
        if p95 <= tolerance {
            out.push((q, s2));
        }
    }
    Ok(out)
}

/// Errors of a scaled estimate `(pose, scale)` against a scaled truth (`p ↦ R·diag(s)·p + t`): rotation
/// (symmetry-aware) and translation as [`pose_errors`], ADD and ADD-S between the stretched models, and the
/// largest relative scale error `max_k |ŝ_k/s_k − 1|`. Rotation and scale are those of the `equivalents` of the
/// truth (see [`stretch_equivalents`]; `(I, s)` alone when empty) whose rotation is nearest. Lengths are in
/// units of the stretched object's diameter, taken as `diameter` times the geometric mean of the true scales.
pub fn scaled_pose_errors(
    est: (&Pose, &Vector3<f64>),
    truth: (&Pose, &Vector3<f64>),
    equivalents: &[(Rotation3<f64>, Vector3<f64>)],
    points: &[Point3<f64>],
    symmetry: &Symmetry,
    diameter: f64,
) -> Result<PoseErrors> {
    let d = diameter * truth.1.iter().product::<f64>().cbrt();
    let stretch = |s: &Vector3<f64>| -> Vec<Point3<f64>> {
        points.iter().map(|p| Point3::from(p.coords.component_mul(s))).collect()
    };
    let (pe, pt) = (stretch(est.1), stretch(truth.1));
    let moved_e: Vec<Point3<f64>> = pe.iter().map(|p| est.0 * p).collect();
    let moved_t: Vec<Point3<f64>> = pt.iter().map(|p| truth.0 * p).collect();
    let n = points.len().max(1) as f64;
    let add = moved_e.iter().zip(&moved_t).map(|(a, b)| (a - b).norm()).sum::<f64>() / n;
    let tree = KdTree::new(&moved_t)?;
    let add_s = moved_e.iter().map(|p| tree.nearest(p).dist2.sqrt()).sum::<f64>() / n;
    let identity = [(Rotation3::identity(), *truth.1)];
    let options = if equivalents.is_empty() { &identity[..] } else { equivalents };
    let (rotation, scale) = options
        .iter()
        .map(|(q, s)| {
            let r = symmetry.rotation_error(&est.0.rotation, &(truth.0.rotation * q));
            (r, est.1.component_div(s).iter().map(|x| (x - 1.0).abs()).fold(0.0, f64::max))
        })
        .fold(
            (f64::INFINITY, f64::INFINITY),
            |a, b| if b.0 < a.0 - 1e-9 || (b.0 <= a.0 + 1e-9 && b.1 < a.1) { b } else { a },
        );
    Ok(PoseErrors {
        rotation_deg: rotation.to_degrees(),
        translation: (est.0.translation.vector - truth.0.translation.vector).norm() / d,
        add: add / d,
        add_s: add_s / d,
        scale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{se3, shapes, so3};
    use approx::assert_relative_eq;
    use nalgebra::Vector3;

    #[test]
    fn symmetric_poses_have_zero_add_s_but_not_zero_add() {
        let b = shapes::box_object();
        let pts = b.model_cloud(2000, 0).unwrap().points;
        let truth = se3::pose(so3::exp(&Vector3::new(0.2, 0.4, -0.1)), Vector3::new(0.1, 0.2, 0.5));
        let half_turn = so3::exp(&Vector3::new(0.0, 0.0, std::f64::consts::PI));
        let est = truth * se3::pose(half_turn, Vector3::zeros());
        let e = pose_errors(&est, &truth, &pts, &b.symmetry, b.diameter()).unwrap();
        assert!(e.rotation_deg < 1e-6);
        // Zero up to the gap between the 2000 surface samples.
        assert!(e.add_s < 0.025, "{}", e.add_s);
        assert!(e.add > 0.2, "{}", e.add);
        // Without the symmetry the same estimate is 180° off.
        let e = pose_errors(&est, &truth, &pts, &Symmetry::None, b.diameter()).unwrap();
        assert_relative_eq!(e.rotation_deg, 180.0, epsilon = 1e-6);
    }

    #[test]
    fn a_stretched_box_turned_a_quarter_with_its_scales_swapped_is_the_same_box() {
        assert_eq!(axis_permutations().len(), 24);
        let b = shapes::box_object();
        let pts = b.model_cloud(3000, 0).unwrap().points;
        let s = Vector3::new(1.2, 0.7, 1.5);
        let eq = stretch_equivalents(&pts, &s, 0.01).unwrap();
        // Every axis permutation gives a box: 24 ways, the identity first.
        assert_eq!(eq.len(), 24);
        assert_eq!(eq[0], (Rotation3::identity(), s));
        let truth = se3::pose(so3::exp(&Vector3::new(0.2, 0.4, -0.1)), Vector3::new(0.1, 0.2, 0.5));
        let (q, s2) = eq[5];
        let est = se3::pose(truth.rotation * q, truth.translation.vector);
        let e = scaled_pose_errors((&est, &s2), (&truth, &s), &eq, &pts, &b.symmetry, b.diameter()).unwrap();
        assert!(e.rotation_deg < 1e-6 && e.scale < 1e-9 && e.add_s < 0.02, "{e:?}");
        // Judged against the identity pair alone the same estimate is far off.
        let e = scaled_pose_errors((&est, &s2), (&truth, &s), &[], &pts, &b.symmetry, b.diameter()).unwrap();
        assert!(e.rotation_deg > 45.0 || e.scale > 0.1, "{e:?}");
        // The L-shaped plate has no such twin.
        let l = shapes::l_shape();
        let lp = l.model_cloud(3000, 0).unwrap().points;
        assert_eq!(stretch_equivalents(&lp, &s, 0.01).unwrap().len(), 1);
    }

    #[test]
    fn pure_translation_errors() {
        let pts = vec![Point3::new(0.0, 0.0, 0.0), Point3::new(1.0, 0.0, 0.0)];
        let truth = Pose::identity();
        let est = se3::pose(so3::exp(&Vector3::zeros()), Vector3::new(0.0, 0.3, 0.4));
        let e = pose_errors(&est, &truth, &pts, &Symmetry::None, 2.0).unwrap();
        assert_relative_eq!(e.translation, 0.25);
        assert_relative_eq!(e.add, 0.25);
        assert_relative_eq!(e.add_s, 0.25);
    }
}
