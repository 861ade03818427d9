//! Rotations spread over SO(3): the initial hypotheses of the registration.

use nalgebra::{Rotation3, UnitQuaternion};

/// The 60 rotations of the icosahedral group as unit quaternions `[w, x, y, z]` (one of each `±q` pair): the
/// vertices of the 600-cell. Their covering radius on SO(3) is about 44°.
fn icosahedral_group() -> Vec<[f64; 4]> {
    let g = (1.0 + 5f64.sqrt()) / 2.0;
    let mut qs: Vec<[f64; 4]> = Vec::with_capacity(120);
    for i in 0..4 {
        for s in [1.0, -1.0] {
            let mut q = [0.0; 4];
            q[i] = s;
            qs.push(q);
        }
    }
    for m in 0..16 {
        qs.push([0, 1, 2, 3].map(|k| if m >> k & 1 == 1 { 0.5 } else { -0.5 }));
    }
    // ½(±φ, ±1, ±1/φ, 0) under the 12 even permutations.
    let even = [
        [0, 1, 2, 3],
        [0, 2, 3, 1],
        [0, 3, 1, 2],
        [1, 0, 3, 2],
        [1, 2, 0, 3],
        [1, 3, 2, 0],
        [2, 0, 1, 3],
        [2, 1, 3, 0],
        [2, 3, 0, 1],
        [3, 0, 2, 1],
        [3, 1, 0, 2],
        [3, 2, 1, 0],
    ];
    let base = [g / 2.0, 0.5, 0.5 / g, 0.0];
    for p in even {
        for m in 0..8 {
            let mut q = [0.0; 4];
            for k in 0..3 {
                q[p[k]] = if m >> k & 1 == 1 { -base[k] } else { base[k] };
            }
            qs.push(q);
        }
    }
    // Keep one of each antipodal pair (the first non-zero component positive).
    qs.retain(|q| q.iter().find(|v| v.abs() > 1e-12).is_some_and(|&v| v > 0.0));
    qs
}

/// Rotation angle between two unit quaternions.
fn quat_angle(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let d = (a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3]).abs().min(1.0);
    2.0 * d.acos()
}

/// Greedy farthest-point choice of `n` elements of `pool`, starting from its first element.
fn farthest_points(pool: &[[f64; 4]], n: usize, chosen: &mut Vec<[f64; 4]>) {
    let mut dmin: Vec<f64> =
        pool.iter().map(|p| chosen.iter().map(|c| quat_angle(p, c)).fold(f64::INFINITY, f64::min)).collect();
    while chosen.len() < n {
        let Some((i, _)) = dmin.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0))) else {
            return;
        };
        let q = pool[i];
        chosen.push(q);
        for (d, p) in dmin.iter_mut().zip(pool) {
            *d = d.min(quat_angle(p, &q));
        }
    }
}

/// `n` unit quaternions `[w, x, y, z]` on a super-Fibonacci spiral (Alexa 2022): a low-discrepancy cover of
/// SO(3) that costs nothing to build.
pub fn super_fibonacci(n: usize) -> Vec<[f64; 4]> {
    let (phi, psi) = (std::f64::consts::SQRT_2, 1.533_751_168_755_204_3_f64);
    (0..n)
        .map(|i| {
            let s = i as f64 + 0.5;
            let (r, big_r) = ((s / n as f64).sqrt(), (1.0 - s / n as f64).sqrt());
            let (alpha, beta) = (2.0 * std::f64::consts::PI * s / phi, 2.0 * std::f64::consts::PI * s / psi);
            [big_r * beta.cos(), r * alpha.sin(), r * alpha.cos(), big_r * beta.sin()]
        })
        .collect()
}

pub(super) fn quat_rotation(q: &[f64; 4]) -> Rotation3<f64> {
    UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(q[0], q[1], q[2], q[3])).to_rotation_matrix()
}

/// `n` rotations spread evenly over SO(3), deterministic: the identity first, then a farthest-point choice
/// among the 60 icosahedral rotations, and beyond 60 a farthest-point choice among 4 096 super-Fibonacci
/// rotations (Alexa 2022).
pub fn spread_rotations(n: usize) -> Vec<Rotation3<f64>> {
    let ico = icosahedral_group();
    let mut chosen = vec![ico[0]];
    if n == 0 {
        return Vec::new();
    }
    farthest_points(&ico, n.min(ico.len()), &mut chosen);
    if n > ico.len() {
        let m = 4096;
        let (phi, psi) = (std::f64::consts::SQRT_2, 1.533_751_168_755_204_3_f64);
        let pool: Vec<[f64; 4]> = (0..m)
            .map(|i| {
                let s = i as f64 + 0.5;
                let (r, big_r) = ((s / m as f64).sqrt(), (1.0 - s / m as f64).sqrt());
                let (alpha, beta) = (2.0 * std::f64::consts::PI * s / phi, 2.0 * std::f64::consts::PI * s / psi);
                [big_r * beta.cos(), r * alpha.sin(), r * alpha.cos(), big_r * beta.sin()]
            })
            .collect();
        farthest_points(&pool, n, &mut chosen);
    }
    chosen
        .iter()
        .map(|q| {
            UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(q[0], q[1], q[2], q[3])).to_rotation_matrix()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::so3;

    #[test]
    fn spread_rotations_cover_so3_better_than_random() {
        use rand::SeedableRng;
        let n = 60;
        let spread = spread_rotations(n);
        assert_eq!(icosahedral_group().len(), 60);
        assert_eq!(spread_rotations(100).len(), 100);
        assert_eq!(spread[0], Rotation3::identity());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let random: Vec<Rotation3<f64>> = (0..n).map(|_| so3::uniform(&mut rng)).collect();
        let probes: Vec<Rotation3<f64>> = (0..2000).map(|_| so3::uniform(&mut rng)).collect();
        let covering = |set: &[Rotation3<f64>]| {
            probes
                .iter()
                .map(|p| set.iter().map(|r| so3::distance(p, r)).fold(f64::INFINITY, f64::min))
                .fold(0.0, f64::max)
        };
        let (cs, cr) = (covering(&spread), covering(&random));
        assert!(cs < 0.75 * cr, "spread {cs} vs random {cr}");
        assert!(cs.to_degrees() < 46.0, "{}", cs.to_degrees());
        // The icosahedral rotations form a group: products stay in the set.
        let set: Vec<Rotation3<f64>> = spread.clone();
        let (a, b) = (set[5], set[17]);
        assert!(set.iter().any(|r| so3::distance(r, &(a * b)) < 1e-9));
    }
}
