//! The rotation group SO(3): hat/vee, exponential and logarithm maps, and the left/right Jacobians.
//!
//! A rotation vector `ω ∈ so(3) ≅ ℝ³` has angle `θ = |ω|` and axis `ω/θ`; `exp(ω)` is Rodrigues' formula
//! `I + (sin θ/θ)·ω^ + ((1 − cos θ)/θ²)·ω^²`. Every θ-dependent coefficient switches to its Taylor series below
//! [`SMALL_ANGLE`], so nothing divides by a vanishing angle. [`log`] returns `θ ∈ [0, π]` and is accurate up to
//! and at π: it reads the angle with `atan2` and, near π, the axis from the symmetric part of the matrix.
//!
//! Jacobian conventions (Barfoot, *State Estimation for Robotics*, §7.1): for small `δ`,
//! `exp(ω + δ) ≈ exp(J_l(ω)·δ)·exp(ω) ≈ exp(ω)·exp(J_r(ω)·δ)`, and `J_r(ω) = J_l(−ω) = J_l(ω)ᵀ`.

use nalgebra::{Matrix3, Rotation3, Vector3};

/// Below this angle (radians) the θ-dependent coefficients use their Taylor series.
pub const SMALL_ANGLE: f64 = 1e-2;

/// Above `π − NEAR_PI` [`log`] reads the rotation axis from the symmetric part of the matrix.
const NEAR_PI: f64 = 0.1;

/// The skew-symmetric matrix `ω^` with `ω^·x = ω × x`.
pub fn hat(w: &Vector3<f64>) -> Matrix3<f64> {
    Matrix3::new(0.0, -w.z, w.y, w.z, 0.0, -w.x, -w.y, w.x, 0.0)
}

/// The vector of a skew-symmetric matrix (inverse of [`hat`]); reads the antisymmetric part of any matrix.
pub fn vee(m: &Matrix3<f64>) -> Vector3<f64> {
    Vector3::new(m[(2, 1)] - m[(1, 2)], m[(0, 2)] - m[(2, 0)], m[(1, 0)] - m[(0, 1)]) * 0.5
}

/// `sin θ/θ`, `(1 − cos θ)/θ²` and `(θ − sin θ)/θ³`, with series below [`SMALL_ANGLE`].
fn coefficients(theta: f64) -> (f64, f64, f64) {
    if theta < SMALL_ANGLE {
        let t2 = theta * theta;
        (
            1.0 - t2 / 6.0 * (1.0 - t2 / 20.0),
            0.5 - t2 / 24.0 * (1.0 - t2 / 30.0),
            1.0 / 6.0 - t2 / 120.0 * (1.0 - t2 / 42.0),
        )
    } else {
        let (s, c) = theta.sin_cos();
        (s / theta, (1.0 - c) / (theta * theta), (theta - s) / (theta * theta * theta))
    }
}

/// The rotation `exp(ω^)` (Rodrigues' formula).
pub fn exp(w: &Vector3<f64>) -> Rotation3<f64> {
    let theta = w.norm();
    let (a, b, _) = coefficients(theta);
    let k = hat(w);
    Rotation3::from_matrix_unchecked(Matrix3::identity() + k * a + k * k * b)
}

/// The rotation angle `θ ∈ [0, π]` of `r`, accurate over the whole range (atan2 of sine and cosine parts).
pub fn angle(r: &Rotation3<f64>) -> f64 {
    let m = r.matrix();
    let s = vee(m).norm();
    let c = 0.5 * (m.trace() - 1.0);
    s.atan2(c)
}

/// The geodesic distance (angle of `a⁻¹·b`) between two rotations, in radians.
pub fn distance(a: &Rotation3<f64>, b: &Rotation3<f64>) -> f64 {
    angle(&(a.inverse() * b))
}

/// The rotation vector `ω` with `exp(ω) = r` and `|ω| ∈ [0, π]`.
///
/// At exactly `θ = π` both `±ω` are valid; the sign then follows the (rounding-level) antisymmetric part.
pub fn log(r: &Rotation3<f64>) -> Vector3<f64> {
    let m = r.matrix();
    let skew = vee(m); // = sin θ · axis
    let s = skew.norm();
    let c = 0.5 * (m.trace() - 1.0);
    let theta = s.atan2(c);
    if theta < SMALL_ANGLE {
        // θ/sin θ = 1 + θ²/6 + 7θ⁴/360 + …
        let t2 = theta * theta;
        return skew * (1.0 + t2 / 6.0 + 7.0 * t2 * t2 / 360.0);
    }
    if theta < std::f64::consts::PI - NEAR_PI {
        return skew * (theta / s);
    }
    // Near π the antisymmetric part vanishes; (R + Rᵀ)/2 − cos θ·I = (1 − cos θ)·a·aᵀ carries the axis.
    let b = (m + m.transpose()) * 0.5 - Matrix3::identity() * c;
    let k = (0..3).max_by(|&i, &j| b[(i, i)].total_cmp(&b[(j, j)])).unwrap_or(0);
    let col = b.column(k).into_owned();
    let norm = col.norm();
    if norm == 0.0 {
        // Only reachable for a non-rotation matrix; fall back to the antisymmetric formula.
        return skew * (theta / s.max(f64::MIN_POSITIVE));
    }
    let mut axis = col / norm;
    if axis.dot(&skew) < 0.0 {
        axis = -axis;
    }
    axis * theta
}

/// The left Jacobian `J_l(ω) = I + ((1 − cos θ)/θ²)·ω^ + ((θ − sin θ)/θ³)·ω^²`.
pub fn left_jacobian(w: &Vector3<f64>) -> Matrix3<f64> {
    let (_, b, c) = coefficients(w.norm());
    let k = hat(w);
    Matrix3::identity() + k * b + k * k * c
}

/// The inverse left Jacobian `J_l⁻¹(ω) = I − ½·ω^ + (1/θ²)·(1 − (θ/2)·cot(θ/2))·ω^²`, valid for `θ < 2π`.
pub fn left_jacobian_inv(w: &Vector3<f64>) -> Matrix3<f64> {
    let theta = w.norm();
    let d = if theta < SMALL_ANGLE {
        let t2 = theta * theta;
        1.0 / 12.0 + t2 / 720.0 + t2 * t2 / 30240.0
    } else {
        let half = 0.5 * theta;
        (1.0 - half / half.tan()) / (theta * theta)
    };
    let k = hat(w);
    Matrix3::identity() - k * 0.5 + k * k * d
}

/// The right Jacobian `J_r(ω) = J_l(−ω)`.
pub fn right_jacobian(w: &Vector3<f64>) -> Matrix3<f64> {
    left_jacobian(&-w)
}

/// The inverse right Jacobian `J_r⁻¹(ω) = J_l⁻¹(−ω)`.
pub fn right_jacobian_inv(w: &Vector3<f64>) -> Matrix3<f64> {
    left_jacobian_inv(&-w)
}

/// The point on the geodesic from `a` (t = 0) to `b` (t = 1): `exp(t·log(b·a⁻¹))·a`; `t` may lie outside [0, 1].
pub fn interpolate(a: &Rotation3<f64>, b: &Rotation3<f64>, t: f64) -> Rotation3<f64> {
    exp(&(log(&(b * a.inverse())) * t)) * a
}

/// A rotation drawn uniformly (Haar measure) from a uniform unit quaternion.
pub fn uniform<R: rand::Rng + ?Sized>(rng: &mut R) -> Rotation3<f64> {
    use rand_distr::{Distribution, StandardNormal};
    loop {
        let q: [f64; 4] = std::array::from_fn(|_| StandardNormal.sample(rng));
        let n = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]).sqrt();
        if n > 1e-9 {
            let q = nalgebra::Quaternion::new(q[0], q[1], q[2], q[3]) / n;
            return nalgebra::UnitQuaternion::new_unchecked(q).to_rotation_matrix();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use proptest::prelude::*;
    use std::f64::consts::PI;

    fn vec3(max_norm: f64) -> impl Strategy<Value = Vector3<f64>> {
        // Directions uniform-ish on the sphere, norms spread over [0, max_norm] with extra mass near 0.
        (prop::array::uniform3(-1.0f64..1.0), 0.0f64..1.0, 0u8..4).prop_filter_map(
            "zero direction",
            move |(d, u, k)| {
                let d = Vector3::from(d);
                let n = d.norm();
                if n < 1e-6 {
                    return None;
                }
                let r = match k {
                    0 => u * 1e-6,
                    1 => u * 0.05,
                    _ => u * max_norm,
                };
                Some(d / n * r)
            },
        )
    }

    fn rotation() -> impl Strategy<Value = Rotation3<f64>> {
        prop::array::uniform4(-1.0f64..1.0).prop_filter_map("zero quaternion", |q| {
            let q = nalgebra::Quaternion::new(q[0], q[1], q[2], q[3]);
            (q.norm() > 1e-3).then(|| nalgebra::UnitQuaternion::from_quaternion(q).to_rotation_matrix())
        })
    }

    #[test]
    fn hat_is_the_cross_product_and_vee_inverts_it() {
        let a = Vector3::new(0.3, -1.2, 2.0);
        let b = Vector3::new(-0.7, 0.4, 1.1);
        assert_relative_eq!(hat(&a) * b, a.cross(&b), epsilon = 1e-15);
        assert_relative_eq!(vee(&hat(&a)), a, epsilon = 1e-15);
    }

    #[test]
    fn exp_matches_nalgebra_scaled_axis() {
        for w in [Vector3::new(0.1, 0.2, -0.3), Vector3::new(2.0, -1.0, 0.5), Vector3::new(1e-9, 0.0, 0.0)] {
            assert_relative_eq!(exp(&w).matrix(), Rotation3::from_scaled_axis(w).matrix(), epsilon = 1e-14);
        }
    }

    #[test]
    fn log_is_accurate_at_and_near_pi() {
        let axis = Vector3::new(1.0, -2.0, 0.5).normalize();
        for eps in [0.0, 1e-14, 1e-10, 1e-6, 1e-3, 0.05, 0.099, 0.101, 0.5] {
            let w = axis * (PI - eps);
            let r = exp(&w);
            let l = log(&r);
            if eps == 0.0 {
                // ±axis·π are both correct at π.
                assert!((l - w).norm() < 1e-12 || (l + w).norm() < 1e-12, "{l:?}");
            } else {
                assert_relative_eq!(l, w, epsilon = 1e-11);
            }
            assert_relative_eq!(exp(&l).matrix(), r.matrix(), epsilon = 1e-14);
        }
    }

    #[test]
    fn log_is_accurate_for_tiny_angles() {
        for theta in [0.0, 1e-300, 1e-12, 1e-8, 1e-4, 0.0099, 0.0101] {
            let w = Vector3::new(0.6, 0.0, -0.8) * theta;
            assert_relative_eq!(log(&exp(&w)), w, epsilon = 1e-17, max_relative = 1e-12);
        }
    }

    #[test]
    fn coefficient_series_join_the_closed_forms_smoothly() {
        let below = coefficients(SMALL_ANGLE * (1.0 - 1e-9));
        let (s, c) = SMALL_ANGLE.sin_cos();
        let t = SMALL_ANGLE;
        let closed = (s / t, (1.0 - c) / (t * t), (t - s) / (t * t * t));
        assert_relative_eq!(below.0, closed.0, max_relative = 1e-12);
        assert_relative_eq!(below.1, closed.1, max_relative = 1e-12);
        // (θ − sin θ)/θ³ in closed form loses ~θ⁻²·ε of precision at the switch; the series is the accurate one.
        assert_relative_eq!(below.2, closed.2, max_relative = 1e-9);
    }

    /// Central finite difference of `f` along each basis vector, as the columns of a 3×3 matrix.
    fn numeric_jacobian(f: impl Fn(&Vector3<f64>) -> Vector3<f64>) -> Matrix3<f64> {
        let h = 1e-6;
        let mut j = Matrix3::zeros();
        for i in 0..3 {
            let mut e = Vector3::zeros();
            e[i] = h;
            j.set_column(i, &((f(&e) - f(&-e)) / (2.0 * h)));
        }
        j
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn exp_of_log_is_identity(r in rotation()) {
            prop_assert!((exp(&log(&r)).matrix() - r.matrix()).norm() < 1e-12);
        }

        #[test]
        fn log_of_exp_is_identity_below_pi(w in vec3(PI - 1e-6)) {
            let l = log(&exp(&w));
            prop_assert!((l - w).norm() < 1e-10 * (1.0 + w.norm()), "{l:?} vs {w:?}");
        }

        #[test]
        fn exp_is_a_proper_rotation(w in vec3(10.0)) {
            let r = exp(&w);
            prop_assert!((r.matrix() * r.matrix().transpose() - Matrix3::identity()).norm() < 1e-13);
            prop_assert!((r.matrix().determinant() - 1.0).abs() < 1e-13);
        }

        #[test]
        fn left_jacobian_matches_finite_differences(w in vec3(3.0)) {
            // J_l(ω) = ∂/∂δ log(exp(ω + δ)·exp(ω)⁻¹) at δ = 0.
            let r_inv = exp(&w).inverse();
            let num = numeric_jacobian(|d| log(&(exp(&(w + d)) * r_inv)));
            prop_assert!((num - left_jacobian(&w)).norm() < 1e-7, "{num} vs {}", left_jacobian(&w));
        }

        #[test]
        fn right_jacobian_matches_finite_differences(w in vec3(3.0)) {
            // J_r(ω) = ∂/∂δ log(exp(ω)⁻¹·exp(ω + δ)) at δ = 0.
            let r_inv = exp(&w).inverse();
            let num = numeric_jacobian(|d| log(&(r_inv * exp(&(w + d)))));
            prop_assert!((num - right_jacobian(&w)).norm() < 1e-7);
        }

        #[test]
        fn jacobian_inverses_are_inverses(w in vec3(3.1)) {
            prop_assert!((left_jacobian(&w) * left_jacobian_inv(&w) - Matrix3::identity()).norm() < 1e-10);
            prop_assert!((right_jacobian(&w) * right_jacobian_inv(&w) - Matrix3::identity()).norm() < 1e-10);
        }

        #[test]
        fn angle_is_the_norm_of_log_and_distance_is_symmetric(a in rotation(), b in rotation()) {
            prop_assert!((angle(&a) - log(&a).norm()).abs() < 1e-12);
            prop_assert!((distance(&a, &b) - distance(&b, &a)).abs() < 1e-12);
        }

        #[test]
        fn interpolation_hits_endpoints_and_halves_the_distance(a in rotation(), b in rotation()) {
            let d = distance(&a, &b);
            prop_assume!(d < PI - 1e-6);
            prop_assert!((interpolate(&a, &b, 0.0).matrix() - a.matrix()).norm() < 1e-12);
            prop_assert!((interpolate(&a, &b, 1.0).matrix() - b.matrix()).norm() < 1e-10);
            let mid = interpolate(&a, &b, 0.5);
            prop_assert!((distance(&a, &mid) - d / 2.0).abs() < 1e-10);
            prop_assert!((distance(&mid, &b) - d / 2.0).abs() < 1e-10);
        }
    }

    #[test]
    fn uniform_rotations_have_the_haar_angle_distribution() {
        // Under the Haar measure P(θ ≤ x) = (x − sin x)/π; Kolmogorov–Smirnov at n = 4000, α = 0.001.
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = 4000;
        let mut angles: Vec<f64> = (0..n).map(|_| angle(&uniform(&mut rng))).collect();
        angles.sort_by(f64::total_cmp);
        let d = angles
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let f = (x - x.sin()) / PI;
                (f - i as f64 / n as f64).abs().max(((i + 1) as f64 / n as f64 - f).abs())
            })
            .fold(0.0, f64::max);
        assert!(d < 1.95 / (n as f64).sqrt(), "KS statistic {d}");
    }
}
