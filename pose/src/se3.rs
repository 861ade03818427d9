//! The rigid-motion group SE(3): twists, exponential and logarithm maps, adjoint and Jacobians.
//!
//! **Twist order is `[ω, v]`** (rotation first, then translation), as in the SE(3) diffusion registration
//! reference: `ξ = [ω; v] ∈ ℝ⁶`, `ξ^ = [[ω^, v], [0, 0]]`. `exp(ξ) = (exp(ω), J_l(ω)·v)`, so the translation of
//! `exp(ξ)` is *not* `v` unless `ω = 0`. Poses are [`Pose`] (`nalgebra::IsometryMatrix3<f64>`), acting on points as
//! `p ↦ R·p + t`.
//!
//! Jacobians follow the same left/right convention as [`crate::so3`]:
//! `exp(ξ + δ) ≈ exp(J_l(ξ)·δ)·exp(ξ) ≈ exp(ξ)·exp(J_r(ξ)·δ)`; in `[ω, v]` order `J_l = [[J, 0], [Q, J]]`
//! with `J = J_l(ω)` and `Q` from Barfoot (*State Estimation for Robotics*, eq. 7.86).

use nalgebra::{Matrix3, Matrix4, Matrix6, Translation3, Vector3, Vector6};

use crate::so3;

/// A rigid transformation `p ↦ R·p + t` (rotation stored as a matrix).
pub type Pose = nalgebra::IsometryMatrix3<f64>;

/// A twist `[ω; v]`: rotation vector first, then the translational part.
pub type Twist = Vector6<f64>;

/// Below this angle the coefficients of `Q` use their Taylor series (their closed forms cancel badly).
const Q_SERIES_ANGLE: f64 = 0.2;

/// Builds a twist from its rotational part `ω` and translational part `v`.
pub fn twist(w: &Vector3<f64>, v: &Vector3<f64>) -> Twist {
    Vector6::new(w.x, w.y, w.z, v.x, v.y, v.z)
}

/// The rotational part `ω` (first three entries) of a twist.
pub fn omega(xi: &Twist) -> Vector3<f64> {
    xi.fixed_rows::<3>(0).into_owned()
}

/// The translational part `v` (last three entries) of a twist.
pub fn vel(xi: &Twist) -> Vector3<f64> {
    xi.fixed_rows::<3>(3).into_owned()
}

/// The 4×4 matrix `ξ^ = [[ω^, v], [0, 0]]`.
pub fn hat(xi: &Twist) -> Matrix4<f64> {
    let mut m = Matrix4::zeros();
    m.fixed_view_mut::<3, 3>(0, 0).copy_from(&so3::hat(&omega(xi)));
    m.fixed_view_mut::<3, 1>(0, 3).copy_from(&vel(xi));
    m
}

/// Builds a pose from a rotation and a translation.
pub fn pose(r: nalgebra::Rotation3<f64>, t: Vector3<f64>) -> Pose {
    Pose::from_parts(Translation3::from(t), r)
}

/// The pose `exp(ξ^) = (exp(ω), J_l(ω)·v)`.
pub fn exp(xi: &Twist) -> Pose {
    let w = omega(xi);
    pose(so3::exp(&w), so3::left_jacobian(&w) * vel(xi))
}

/// The twist `ξ` with `exp(ξ) = g` and rotation angle in `[0, π]`.
pub fn log(g: &Pose) -> Twist {
    let w = so3::log(&g.rotation);
    twist(&w, &(so3::left_jacobian_inv(&w) * g.translation.vector))
}

/// The adjoint `Ad_g` with `g·exp(ξ)·g⁻¹ = exp(Ad_g·ξ)`: `[[R, 0], [t^·R, R]]` in `[ω, v]` order.
pub fn adjoint(g: &Pose) -> Matrix6<f64> {
    let r = g.rotation.matrix();
    let mut a = Matrix6::zeros();
    a.fixed_view_mut::<3, 3>(0, 0).copy_from(r);
    a.fixed_view_mut::<3, 3>(3, 3).copy_from(r);
    a.fixed_view_mut::<3, 3>(3, 0).copy_from(&(so3::hat(&g.translation.vector) * r));
    a
}

/// Barfoot's `Q(ω, v)`, the lower-left block of the SE(3) left Jacobian in `[ω, v]` order.
fn q_block(w: &Vector3<f64>, v: &Vector3<f64>) -> Matrix3<f64> {
    let theta = w.norm();
    let (c1, c2, c3) = if theta < Q_SERIES_ANGLE {
        let t2 = theta * theta;
        (
            1.0 / 6.0 - t2 / 120.0 + t2 * t2 / 5040.0 - t2 * t2 * t2 / 362880.0,
            1.0 / 24.0 - t2 / 720.0 + t2 * t2 / 40320.0 - t2 * t2 * t2 / 3628800.0,
            1.0 / 120.0 - t2 / 2520.0 + t2 * t2 / 120960.0 - t2 * t2 * t2 / 9979200.0,
        )
    } else {
        let (s, c) = theta.sin_cos();
        let t2 = theta * theta;
        (
            (theta - s) / (t2 * theta),
            (t2 + 2.0 * c - 2.0) / (2.0 * t2 * t2),
            (2.0 * theta - 3.0 * s + theta * c) / (2.0 * t2 * t2 * theta),
        )
    };
    let p = so3::hat(w);
    let r = so3::hat(v);
    let pr = p * r;
    let rp = r * p;
    let prp = pr * p;
    r * 0.5 + (pr + rp + prp) * c1 + (p * pr + rp * p - prp * 3.0) * c2 + (prp * p + p * prp) * c3
}

/// The left Jacobian `J_l(ξ) = [[J_l(ω), 0], [Q(ω, v), J_l(ω)]]`.
pub fn left_jacobian(xi: &Twist) -> Matrix6<f64> {
    let w = omega(xi);
    let j = so3::left_jacobian(&w);
    let mut m = Matrix6::zeros();
    m.fixed_view_mut::<3, 3>(0, 0).copy_from(&j);
    m.fixed_view_mut::<3, 3>(3, 3).copy_from(&j);
    m.fixed_view_mut::<3, 3>(3, 0).copy_from(&q_block(&w, &vel(xi)));
    m
}

/// The inverse left Jacobian `[[J⁻¹, 0], [−J⁻¹·Q·J⁻¹, J⁻¹]]` (rotation angle below 2π).
pub fn left_jacobian_inv(xi: &Twist) -> Matrix6<f64> {
    let w = omega(xi);
    let ji = so3::left_jacobian_inv(&w);
    let mut m = Matrix6::zeros();
    m.fixed_view_mut::<3, 3>(0, 0).copy_from(&ji);
    m.fixed_view_mut::<3, 3>(3, 3).copy_from(&ji);
    m.fixed_view_mut::<3, 3>(3, 0).copy_from(&(-ji * q_block(&w, &vel(xi)) * ji));
    m
}

/// The right Jacobian `J_r(ξ) = J_l(−ξ)`.
pub fn right_jacobian(xi: &Twist) -> Matrix6<f64> {
    left_jacobian(&-xi)
}

/// The inverse right Jacobian `J_r⁻¹(ξ) = J_l⁻¹(−ξ)`.
pub fn right_jacobian_inv(xi: &Twist) -> Matrix6<f64> {
    left_jacobian_inv(&-xi)
}

/// The point on the geodesic from `a` (t = 0) to `b` (t = 1): `exp(t·log(b·a⁻¹))·a`; `t` may lie outside [0, 1].
///
/// This equals `a·exp(t·log(a⁻¹·b))`: the left and right forms trace the same curve.
pub fn interpolate(a: &Pose, b: &Pose, t: f64) -> Pose {
    exp(&(log(&(b * a.inverse())) * t)) * a
}

/// Rotation angle (radians) and translation distance between two poses: `|log(R_a⁻¹R_b)|` and `|t_a − t_b|`.
pub fn errors(a: &Pose, b: &Pose) -> (f64, f64) {
    (so3::distance(&a.rotation, &b.rotation), (a.translation.vector - b.translation.vector).norm())
}

/// A pose as its 4×4 homogeneous matrix (row-major when read row by row).
pub fn to_matrix(g: &Pose) -> Matrix4<f64> {
    g.to_homogeneous()
}

/// The rotation of `g` as a unit axis and an angle in radians (`[0, π]`; the axis is `z` for the identity).
pub fn axis_angle(g: &Pose) -> (Vector3<f64>, f64) {
    let w = so3::log(&g.rotation);
    let angle = w.norm();
    (if angle > 0.0 { w / angle } else { Vector3::z() }, angle)
}

/// The rotation of `g` as a unit quaternion `[w, x, y, z]` with `w ≥ 0`.
pub fn quaternion_wxyz(g: &Pose) -> [f64; 4] {
    let q = nalgebra::UnitQuaternion::from_rotation_matrix(&g.rotation);
    let s = if q.w < 0.0 { -1.0 } else { 1.0 };
    [q.w * s, q.i * s, q.j * s, q.k * s]
}

/// The 4×4 homogeneous matrix of `g`, row by row.
pub fn matrix_rows(g: &Pose) -> [[f64; 4]; 4] {
    let m = g.to_homogeneous();
    std::array::from_fn(|i| std::array::from_fn(|j| m[(i, j)]))
}

/// Re-orthonormalises the rotation of `g` (removes the drift of many compositions).
pub fn renormalize(g: &mut Pose) {
    g.rotation.renormalize();
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use proptest::prelude::*;
    use std::f64::consts::PI;

    fn twist_strategy(max_angle: f64) -> impl Strategy<Value = Twist> {
        (prop::array::uniform3(-1.0f64..1.0), 0.0f64..1.0, 0u8..4, prop::array::uniform3(-2.0f64..2.0)).prop_filter_map(
            "zero direction",
            move |(d, u, k, v)| {
                let d = Vector3::from(d);
                let n = d.norm();
                if n < 1e-6 {
                    return None;
                }
                let r = match k {
                    0 => u * 1e-7,
                    1 => u * 0.3,
                    _ => u * max_angle,
                };
                Some(twist(&(d / n * r), &Vector3::from(v)))
            },
        )
    }

    fn pose_strategy() -> impl Strategy<Value = Pose> {
        (prop::array::uniform4(-1.0f64..1.0), prop::array::uniform3(-3.0f64..3.0)).prop_filter_map(
            "zero q",
            |(q, t)| {
                let q = nalgebra::Quaternion::new(q[0], q[1], q[2], q[3]);
                (q.norm() > 1e-3)
                    .then(|| pose(nalgebra::UnitQuaternion::from_quaternion(q).to_rotation_matrix(), Vector3::from(t)))
            },
        )
    }

    fn numeric_jacobian(f: impl Fn(&Twist) -> Twist) -> Matrix6<f64> {
        let h = 1e-6;
        let mut j = Matrix6::zeros();
        for i in 0..6 {
            let mut e = Twist::zeros();
            e[i] = h;
            j.set_column(i, &((f(&e) - f(&-e)) / (2.0 * h)));
        }
        j
    }

    #[test]
    fn exp_matches_the_matrix_exponential_of_the_hat() {
        let xi = twist(&Vector3::new(0.4, -0.9, 0.3), &Vector3::new(1.0, 2.0, -0.5));
        // Taylor series of the 4×4 matrix exponential, summed to convergence.
        let a = hat(&xi);
        let mut term = Matrix4::identity();
        let mut sum = Matrix4::identity();
        for k in 1..40 {
            term = term * a / k as f64;
            sum += term;
        }
        assert_relative_eq!(to_matrix(&exp(&xi)), sum, epsilon = 1e-12);
    }

    #[test]
    fn pure_translation_and_pure_rotation() {
        let v = Vector3::new(1.0, -2.0, 3.0);
        assert_relative_eq!(exp(&twist(&Vector3::zeros(), &v)).translation.vector, v, epsilon = 1e-15);
        let w = Vector3::new(0.0, 0.0, PI / 2.0);
        let g = exp(&twist(&w, &Vector3::zeros()));
        assert_relative_eq!(
            g.transform_point(&nalgebra::Point3::new(1.0, 0.0, 0.0)).coords,
            Vector3::y(),
            epsilon = 1e-15
        );
    }

    #[test]
    fn axis_angle_and_quaternion_describe_the_rotation() {
        let w = Vector3::new(0.0, 0.6, 0.8) * 1.2;
        let g = pose(so3::exp(&w), Vector3::new(1.0, 2.0, 3.0));
        let (axis, angle) = axis_angle(&g);
        assert_relative_eq!(axis, Vector3::new(0.0, 0.6, 0.8), epsilon = 1e-12);
        assert_relative_eq!(angle, 1.2, epsilon = 1e-12);
        let q = quaternion_wxyz(&g);
        assert_relative_eq!(q[0], 0.6f64.cos(), epsilon = 1e-12);
        assert_relative_eq!(q[2], 0.6 * 0.6f64.sin(), epsilon = 1e-12);
        let m = matrix_rows(&g);
        assert_eq!(m[3], [0.0, 0.0, 0.0, 1.0]);
        assert_eq!(m[1][3], 2.0);
    }

    #[test]
    fn log_is_accurate_near_pi() {
        let w = Vector3::new(0.0, 0.6, 0.8) * (PI - 1e-9);
        let xi = twist(&w, &Vector3::new(0.3, 0.1, -0.2));
        assert_relative_eq!(log(&exp(&xi)), xi, epsilon = 1e-7);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn exp_of_log_is_identity(g in pose_strategy()) {
            let back = exp(&log(&g));
            prop_assert!((to_matrix(&back) - to_matrix(&g)).norm() < 1e-10);
        }

        #[test]
        fn log_of_exp_is_identity_below_pi(xi in twist_strategy(PI - 1e-3)) {
            prop_assert!((log(&exp(&xi)) - xi).norm() < 1e-9 * (1.0 + xi.norm()));
        }

        #[test]
        fn left_jacobian_matches_finite_differences(xi in twist_strategy(3.0)) {
            let g_inv = exp(&xi).inverse();
            let num = numeric_jacobian(|d| log(&(exp(&(xi + d)) * g_inv)));
            let ana = left_jacobian(&xi);
            prop_assert!((num - ana).norm() < 1e-6 * (1.0 + xi.norm()), "{num}\nvs\n{ana}");
        }

        #[test]
        fn right_jacobian_matches_finite_differences(xi in twist_strategy(3.0)) {
            let g_inv = exp(&xi).inverse();
            let num = numeric_jacobian(|d| log(&(g_inv * exp(&(xi + d)))));
            prop_assert!((num - right_jacobian(&xi)).norm() < 1e-6 * (1.0 + xi.norm()));
        }

        #[test]
        fn jacobian_inverses_are_inverses(xi in twist_strategy(3.1)) {
            prop_assert!((left_jacobian(&xi) * left_jacobian_inv(&xi) - Matrix6::identity()).norm() < 1e-9);
            prop_assert!((right_jacobian(&xi) * right_jacobian_inv(&xi) - Matrix6::identity()).norm() < 1e-9);
        }

        #[test]
        fn adjoint_conjugates_exponentials(g in pose_strategy(), xi in twist_strategy(2.0)) {
            let lhs = g * exp(&xi) * g.inverse();
            let rhs = exp(&(adjoint(&g) * xi));
            prop_assert!((to_matrix(&lhs) - to_matrix(&rhs)).norm() < 1e-9);
        }

        #[test]
        fn left_and_right_interpolation_agree(a in pose_strategy(), b in pose_strategy(), t in -0.5f64..1.5) {
            prop_assume!(so3::distance(&a.rotation, &b.rotation) < PI - 1e-3);
            let left = interpolate(&a, &b, t);
            let right = a * exp(&(log(&(a.inverse() * b)) * t));
            prop_assert!((to_matrix(&left) - to_matrix(&right)).norm() < 1e-9);
            prop_assert!((to_matrix(&interpolate(&a, &b, 1.0)) - to_matrix(&b)).norm() < 1e-9);
        }
    }
}
