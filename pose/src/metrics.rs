//! Pose error measures: rotation error (geodesic angle, symmetry-aware), translation error, ADD and ADD-S.
//!
//! ADD is the mean distance between each model point under the estimated and the true pose; ADD-S, for
//! symmetric objects, the mean distance from each estimated model point to the *nearest* true model point, so
//! poses that differ by a symmetry of the object score zero.

use nalgebra::Point3;

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
