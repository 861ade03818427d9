//! The NOCS / REAL275 measures of a category-level estimate (Wang et al. 2019, as their evaluation code computes
//! them): the 3D IoU of the posed boxes, the rotation error (for bottle, bowl and can, and for a mug whose handle
//! is hidden, only the angle between the up axes counts) and the translation error, and the fractions of estimates
//! within 5°2cm, 5°5cm, 10°2cm and 10°5cm.

use nalgebra::{Point3, Rotation3, Vector3};

use super::CategorySymmetry;
use super::shapes::box_corners;
use crate::se3::{self, Pose};

/// A category-level estimate or truth: pose canonical → camera and the tight box's size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizedPose {
    /// Canonical → camera.
    pub pose: Pose,
    /// `[w, h, d]` along the canonical axes (metres).
    pub size: Vector3<f64>,
}

impl SizedPose {
    /// The 8 corners of the posed box.
    pub fn corners(&self) -> [Point3<f64>; 8] {
        box_corners(&self.size).map(|p| self.pose * p)
    }

    /// The posed box as a closed triangle mesh (to open next to the scan).
    pub fn box_mesh(&self) -> crate::mesh::TriMesh {
        let mut m = crate::mesh::TriMesh::default();
        crate::shapes::cuboid(self.size / 2.0, &mut m);
        m.transformed(&self.pose)
    }
}

/// Errors of one estimate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CategoryErrors {
    /// 3D IoU of the boxes.
    pub iou: f64,
    /// Rotation error (degrees), symmetry-aware.
    pub rotation_deg: f64,
    /// Translation error (metres).
    pub translation_m: f64,
}

/// IoU of the camera-axis-aligned boxes around the posed corners of `a` and `b`, as NOCS's `compute_3d_iou`
/// computes it.
fn aligned_iou(a: &SizedPose, b: &SizedPose) -> f64 {
    let bounds = |s: &SizedPose| {
        let c = s.corners();
        let lo = c.iter().fold(Vector3::repeat(f64::INFINITY), |m, p| m.inf(&p.coords));
        let hi = c.iter().fold(Vector3::repeat(f64::NEG_INFINITY), |m, p| m.sup(&p.coords));
        (lo, hi)
    };
    let ((alo, ahi), (blo, bhi)) = (bounds(a), bounds(b));
    let overlap = (ahi.inf(&bhi) - alo.sup(&blo)).map(|x| x.max(0.0));
    let inter = overlap.product();
    let union = (ahi - alo).product() + (bhi - blo).product() - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Whether a scan's category counts as symmetric about y: bottle, bowl, can, and a mug whose handle is hidden.
fn about_y(symmetry: CategorySymmetry, handle_visible: Option<bool>) -> bool {
    symmetry == CategorySymmetry::AboutY || handle_visible == Some(false)
}

/// The errors of `est` against `truth` for a category with `symmetry` (and, for a mug, whether its handle shows).
/// For categories symmetric about y the IoU is the best over turns of the estimate about its own y axis (in
/// 10° steps, as NOCS does for those categories).
pub fn category_errors(
    est: &SizedPose,
    truth: &SizedPose,
    symmetry: CategorySymmetry,
    handle_visible: Option<bool>,
) -> CategoryErrors {
    let symmetric = about_y(symmetry, handle_visible);
    let iou = if symmetric {
        (0..36)
            .map(|k| {
                let turn = Rotation3::from_axis_angle(&Vector3::y_axis(), (k as f64 * 10.0).to_radians());
                aligned_iou(&SizedPose { pose: est.pose * se3::pose(turn, Vector3::zeros()), size: est.size }, truth)
            })
            .fold(0.0, f64::max)
    } else {
        aligned_iou(est, truth)
    };
    let (re, rt) = (est.pose.rotation, truth.pose.rotation);
    let rotation = if symmetric {
        (re * Vector3::y()).dot(&(rt * Vector3::y())).clamp(-1.0, 1.0).acos()
    } else if symmetry == CategorySymmetry::HalfTurnY {
        let half = Rotation3::from_axis_angle(&Vector3::y_axis(), std::f64::consts::PI);
        crate::so3::distance(&re, &rt).min(crate::so3::distance(&re, &(rt * half)))
    } else {
        crate::so3::distance(&re, &rt)
    };
    CategoryErrors {
        iou,
        rotation_deg: rotation.to_degrees(),
        translation_m: (est.pose.translation.vector - truth.pose.translation.vector).norm(),
    }
}

/// The fractions the field reports over a set of estimates.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct CategorySummary {
    /// Estimates.
    pub cases: usize,
    /// IoU ≥ 25 %.
    pub iou25: f64,
    /// IoU ≥ 50 %.
    pub iou50: f64,
    /// Within 5° and 2 cm.
    pub deg5_cm2: f64,
    /// Within 5° and 5 cm.
    pub deg5_cm5: f64,
    /// Within 10° and 2 cm.
    pub deg10_cm2: f64,
    /// Within 10° and 5 cm.
    pub deg10_cm5: f64,
    /// Mean rotation error (degrees).
    pub mean_rotation_deg: f64,
    /// Mean translation error (cm).
    pub mean_translation_cm: f64,
    /// Mean time per estimate (ms).
    pub mean_time_ms: f64,
}

/// Summarises `(errors, milliseconds)` pairs.
pub fn summarize(results: &[(CategoryErrors, f64)]) -> CategorySummary {
    let n = results.len().max(1) as f64;
    let frac = |f: &dyn Fn(&CategoryErrors) -> bool| results.iter().filter(|r| f(&r.0)).count() as f64 / n;
    let within = |deg: f64, cm: f64| move |e: &CategoryErrors| e.rotation_deg <= deg && e.translation_m <= cm / 100.0;
    CategorySummary {
        cases: results.len(),
        iou25: frac(&|e| e.iou >= 0.25),
        iou50: frac(&|e| e.iou >= 0.5),
        deg5_cm2: frac(&within(5.0, 2.0)),
        deg5_cm5: frac(&within(5.0, 5.0)),
        deg10_cm2: frac(&within(10.0, 2.0)),
        deg10_cm5: frac(&within(10.0, 5.0)),
        mean_rotation_deg: results.iter().map(|r| r.0.rotation_deg).sum::<f64>() / n,
        mean_translation_cm: 100.0 * results.iter().map(|r| r.0.translation_m).sum::<f64>() / n,
        mean_time_ms: results.iter().map(|r| r.1).sum::<f64>() / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn box_at(yaw_deg: f64, shift: Vector3<f64>, size: Vector3<f64>) -> SizedPose {
        let r = Rotation3::from_axis_angle(&Vector3::y_axis(), yaw_deg.to_radians());
        SizedPose { pose: se3::pose(r, Vector3::new(0.0, 0.0, 1.0) + shift), size }
    }

    #[test]
    fn iou_and_errors_follow_the_nocs_definitions() {
        let size = Vector3::new(0.2, 0.1, 0.1);
        let truth = box_at(0.0, Vector3::zeros(), size);
        let same = category_errors(&truth, &truth, CategorySymmetry::None, None);
        assert!((same.iou - 1.0).abs() < 1e-12 && same.rotation_deg < 1e-9 && same.translation_m < 1e-12);
        // Shifted by half its width along x: the boxes overlap by half, IoU = 0.5 / 1.5.
        let shifted =
            category_errors(&box_at(0.0, Vector3::new(0.1, 0.0, 0.0), size), &truth, CategorySymmetry::None, None);
        assert!((shifted.iou - 1.0 / 3.0).abs() < 1e-9 && (shifted.translation_m - 0.1).abs() < 1e-12);
        // Turned 90° about y: a wrong pose for a box without symmetry, but 180° is nothing for a box.
        let quarter = category_errors(&box_at(90.0, Vector3::zeros(), size), &truth, CategorySymmetry::None, None);
        assert!((quarter.rotation_deg - 90.0).abs() < 1e-6 && quarter.iou < 0.6);
        let half = category_errors(&box_at(180.0, Vector3::zeros(), size), &truth, CategorySymmetry::HalfTurnY, None);
        assert!(half.rotation_deg < 1e-6 && (half.iou - 1.0).abs() < 1e-9);
        // About y anything goes for a can, and for a mug whose handle is hidden; not when it shows.
        let can = category_errors(&box_at(40.0, Vector3::zeros(), size), &truth, CategorySymmetry::AboutY, None);
        assert!(can.rotation_deg < 1e-6 && can.iou > 0.99);
        let hidden =
            category_errors(&box_at(37.0, Vector3::zeros(), size), &truth, CategorySymmetry::None, Some(false));
        let shown = category_errors(&box_at(37.0, Vector3::zeros(), size), &truth, CategorySymmetry::None, Some(true));
        assert!(hidden.rotation_deg < 1e-6 && (shown.rotation_deg - 37.0).abs() < 1e-6);
        let s = summarize(&[(same, 1.0), (shifted, 3.0)]);
        assert_eq!((s.cases, s.iou50, s.iou25, s.deg5_cm2, s.deg5_cm5), (2, 0.5, 1.0, 0.5, 0.5));
        assert!((s.mean_time_ms - 2.0).abs() < 1e-12 && (s.mean_translation_cm - 5.0).abs() < 1e-9);
    }
}
