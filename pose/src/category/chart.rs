//! The diffusion state of the category-level model: a posed, sized box as 9 normalised coordinates in the chart of
//! a base box, `z = (ω, v, δl)`:
//!
//! - rotation `R = R_B · exp(ω ⊙ s_ω)` (ω in the base box's own frame, so ω_y is a turn about its up axis);
//! - translation `t = t_B + R_B · v · s_t · |size_B|` (in units of the base box's diagonal);
//! - size `size = size_B ⊙ exp(δl · s_l)`.
//!
//! The scales `s` make one unit of noise mean the same in every coordinate: most of a turn about the vertical, a
//! quarter of the diagonal, half an octave of size. The tilt scale is 0 by default: objects stand on their table,
//! whose normal the start measures to a fraction of a degree (the PCA box's up axis), so only the turn about the
//! vertical is diffused and the tilt coordinates stay 0. A model with a positive tilt scale diffuses all three.
//!
//! The network predicts the clean box in the chart of the noisy one; the solver works in the chart of a fixed
//! base; both conversions are exact.

use nalgebra::{Rotation3, UnitQuaternion, Vector3};
use serde::{Deserialize, Serialize};

use super::CategorySymmetry;
use super::metrics::SizedPose;
use crate::se3;
use crate::so3;

/// Coordinates of the chart.
pub const DIM: usize = 9;

/// What one unit of each coordinate means.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartScales {
    /// Tilt (turns about the box's x and z), radians.
    pub tilt: f64,
    /// Turn about the box's up axis, radians.
    pub yaw: f64,
    /// Translation, in box diagonals.
    pub translation: f64,
    /// Log-size (natural log).
    pub log_size: f64,
}

impl Default for ChartScales {
    fn default() -> Self {
        ChartScales { tilt: 0.0, yaw: 2.0, translation: 0.25, log_size: 0.35 }
    }
}

impl ChartScales {
    /// Whether every scale is finite and positive (the tilt may be 0: the up axis is then not diffused but
    /// taken from the start, the supporting plane's normal).
    pub fn is_valid(&self) -> bool {
        self.tilt >= 0.0
            && self.tilt.is_finite()
            && [self.yaw, self.translation, self.log_size].iter().all(|v| v.is_finite() && *v > 0.0)
    }

    fn rotation(&self) -> Vector3<f64> {
        Vector3::new(self.tilt, self.yaw, self.tilt)
    }
}

/// `v / scale` per component, 0 where the scale is 0 (a coordinate that is not diffused).
fn divide(v: Vector3<f64>, scale: Vector3<f64>) -> Vector3<f64> {
    v.zip_map(&scale, |a, s| if s > 0.0 { a / s } else { 0.0 })
}

/// The box at coordinates `z` in the chart of `base`.
pub fn retract(base: &SizedPose, z: &[f64; DIM], s: &ChartScales) -> SizedPose {
    let w = Vector3::new(z[0], z[1], z[2]).component_mul(&s.rotation());
    let v = Vector3::new(z[3], z[4], z[5]) * (s.translation * base.size.norm());
    let l = Vector3::new(z[6], z[7], z[8]) * s.log_size;
    let rb = base.pose.rotation;
    let rotation = rb * so3::exp(&w);
    let translation = base.pose.translation.vector + rb * v;
    SizedPose { pose: se3::pose(rotation, translation), size: base.size.component_mul(&l.map(f64::exp)) }
}

/// The coordinates of `target` in the chart of `base` (the inverse of [`retract`]; turns are taken below π).
pub fn local(base: &SizedPose, target: &SizedPose, s: &ChartScales) -> [f64; DIM] {
    let rb = base.pose.rotation;
    let w = divide(so3::log(&(rb.inverse() * target.pose.rotation)), s.rotation());
    let v = (rb.inverse() * (target.pose.translation.vector - base.pose.translation.vector))
        / (s.translation * base.size.norm());
    let l = target.size.component_div(&base.size).map(f64::ln) / s.log_size;
    [w.x, w.y, w.z, v.x, v.y, v.z, l.x, l.y, l.z]
}

/// The turn about y (radians) that brings `a`'s rotation closest to `b`'s with the up axis kept: the twist of
/// `aᵀ·b` about y.
pub fn twist_about_y(a: &Rotation3<f64>, b: &Rotation3<f64>) -> f64 {
    let q = UnitQuaternion::from_rotation_matrix(&(a.inverse() * b));
    2.0 * q.j.atan2(q.w)
}

/// Of the boxes equal to `truth` under the category's symmetry, the one nearest `near`: turned about y by the
/// twist that reaches `near` (symmetric about y), or by a half-turn when that is nearer (half-turn symmetry).
pub fn nearest_equivalent(truth: &SizedPose, near: &SizedPose, symmetry: CategorySymmetry) -> SizedPose {
    let turned = |angle: f64| SizedPose {
        pose: truth.pose * se3::pose(Rotation3::from_axis_angle(&Vector3::y_axis(), angle), Vector3::zeros()),
        size: truth.size,
    };
    match symmetry {
        CategorySymmetry::AboutY => turned(twist_about_y(&truth.pose.rotation, &near.pose.rotation)),
        CategorySymmetry::HalfTurnY => {
            let half = turned(std::f64::consts::PI);
            let d = |c: &SizedPose| so3::distance(&c.pose.rotation, &near.pose.rotation);
            if d(&half) < d(truth) { half } else { *truth }
        }
        CategorySymmetry::None => *truth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base() -> SizedPose {
        SizedPose {
            pose: se3::pose(so3::exp(&Vector3::new(0.3, -1.1, 0.5)), Vector3::new(0.1, -0.2, 0.7)),
            size: Vector3::new(0.08, 0.12, 0.05),
        }
    }

    #[test]
    fn without_tilt_only_the_heading_moves() {
        let (b, s) = (base(), ChartScales::default());
        let moved = retract(&b, &[0.7, 0.4, -0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], &s);
        let up = |p: &SizedPose| p.pose.rotation * Vector3::y();
        assert!((up(&moved) - up(&b)).norm() < 1e-12);
        let z = local(&b, &moved, &s);
        assert!(z[0] == 0.0 && z[2] == 0.0 && (z[1] - 0.4).abs() < 1e-12, "{z:?}");
    }

    proptest! {
        #[test]
        fn local_inverts_retract(z in proptest::array::uniform9(-1.2f64..1.2)) {
            let s = ChartScales { tilt: 0.1, ..ChartScales::default() };
            let b = base();
            let back = local(&b, &retract(&b, &z, &s), &s);
            for (a, c) in z.iter().zip(back.iter()) {
                prop_assert!((a - c).abs() < 1e-9, "{z:?} vs {back:?}");
            }
        }

        #[test]
        fn the_nearest_equivalent_is_the_truth_turned_and_no_farther(yaw in -3.1f64..3.1, tilt in -0.3f64..0.3) {
            let truth = base();
            let s = ChartScales { tilt: 0.1, ..ChartScales::default() };
            let near = retract(&truth, &[tilt, yaw / 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], &s);
            for sym in [CategorySymmetry::AboutY, CategorySymmetry::HalfTurnY, CategorySymmetry::None] {
                let e = nearest_equivalent(&truth, &near, sym);
                // Same up axis, same centre and size: an equal box.
                let up = |p: &SizedPose| p.pose.rotation * Vector3::y();
                prop_assert!((up(&e) - up(&truth)).norm() < 1e-9);
                prop_assert!(e.pose.translation.vector == truth.pose.translation.vector && e.size == truth.size);
                let d = |p: &SizedPose| so3::distance(&p.pose.rotation, &near.pose.rotation);
                prop_assert!(d(&e) <= d(&truth) + 1e-12);
                if sym == CategorySymmetry::AboutY {
                    // Only the tilt is left: the angle between the up axes.
                    let swing = up(&truth).dot(&up(&near)).clamp(-1.0, 1.0).acos();
                    prop_assert!((d(&e) - swing).abs() < 1e-6, "{} vs {swing}", d(&e));
                }
            }
        }
    }
}
