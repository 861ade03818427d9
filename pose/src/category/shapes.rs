//! Procedural instances of each category, in the NOCS canonical frame (metres): +y up, the origin at the centre
//! of the tight box. Every instance is drawn from a seed with wide variation of proportions, profiles, wall
//! thickness and handles. Instances for testing are drawn from seeds at or above [`TEST_SEEDS`], which training
//! never uses.

use std::f64::consts::PI;

use nalgebra::{Matrix3, Point3, Rotation3, Vector3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Category;
use crate::mesh::TriMesh;
use crate::se3;
use crate::shapes::{cuboid, quad, revolve};

/// Seeds from here on are test instances; training and validation draw below it.
pub const TEST_SEEDS: u64 = 1 << 40;

/// Segments around a revolved profile.
const SEGMENTS: usize = 40;

/// One object of a category.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Its category.
    pub category: Category,
    /// The surface in the canonical frame.
    pub mesh: TriMesh,
    /// Extents `[w, h, d]` of the tight box along x, y, z.
    pub size: Vector3<f64>,
    /// Triangles `[start, end)` of the mug's handle.
    pub handle: Option<(usize, usize)>,
}

impl Instance {
    /// The 8 corners of the tight box in the canonical frame.
    pub fn corners(&self) -> [Point3<f64>; 8] {
        box_corners(&self.size)
    }
}

/// The 8 corners of a box of extents `size` centred at the origin.
pub fn box_corners(size: &Vector3<f64>) -> [Point3<f64>; 8] {
    let h = size / 2.0;
    std::array::from_fn(|i| {
        let s = |bit: usize| if i >> bit & 1 == 1 { 1.0 } else { -1.0 };
        Point3::new(s(0) * h.x, s(1) * h.y, s(2) * h.z)
    })
}

/// A uniform draw in `[lo, hi)`.
fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// The instance of `category` drawn from `seed`.
pub fn instance(category: Category, seed: u64) -> Instance {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (category as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut handle = None;
    let mesh = match category {
        Category::Can => {
            let (r, hh) = (uniform(&mut rng, 0.028, 0.045), uniform(&mut rng, 0.045, 0.085));
            let lip = uniform(&mut rng, 0.0, 0.004);
            upright(&[(0.0, -hh), (r - lip, -hh), (r, -hh + lip), (r, hh - lip), (r - lip, hh), (0.0, hh)])
        }
        Category::Bottle => {
            let height = uniform(&mut rng, 0.16, 0.32);
            let body = uniform(&mut rng, 0.028, 0.05);
            let neck = (body * uniform(&mut rng, 0.3, 0.5)).max(0.01);
            let (fb, fs) = (uniform(&mut rng, 0.45, 0.7), uniform(&mut rng, 0.08, 0.2));
            let y = |f: f64| height * (f - 0.5);
            upright(&[(0.0, y(0.0)), (body, y(0.0)), (body, y(fb)), (neck, y(fb + fs)), (neck, y(1.0)), (0.0, y(1.0))])
        }
        Category::Bowl => {
            let radius = uniform(&mut rng, 0.06, 0.11);
            let height = radius * uniform(&mut rng, 0.35, 0.6);
            let wall = uniform(&mut rng, 0.004, 0.008);
            let foot = radius * uniform(&mut rng, 0.35, 0.55);
            let steps = 10;
            let curve = |k: usize| {
                let a = PI / 2.0 * k as f64 / steps as f64;
                (foot + (radius - foot) * a.sin(), height * (1.0 - a.cos()))
            };
            let mut profile = vec![(0.0, 0.0)];
            profile.extend((0..=steps).map(curve));
            // Back down the inside, a wall's thickness in.
            profile.extend((0..=steps).rev().map(|k| {
                let (r, z) = curve(k);
                (r - wall, wall + z * (height - wall) / height)
            }));
            profile.push((0.0, wall));
            upright(&profile.iter().map(|&(r, z)| (r, z - height / 2.0)).collect::<Vec<_>>())
        }
        Category::Mug => {
            let (r, h) = (uniform(&mut rng, 0.035, 0.05), uniform(&mut rng, 0.04, 0.06));
            let (wall, bottom) = (uniform(&mut rng, 0.003, 0.006), uniform(&mut rng, 0.005, 0.009));
            let ri = r - wall;
            let mut m = TriMesh::default();
            revolve(&[(0.0, -h), (r, -h), (r, h), (ri, h), (ri, -h + bottom), (0.0, -h + bottom)], SEGMENTS, &mut m);
            let start = m.triangles.len();
            // A tube of radius b around a bent arc of half-height a, on the wall towards +x (z is up here).
            let (a, b) = (h * uniform(&mut rng, 0.5, 0.8), uniform(&mut rng, 0.005, 0.009));
            let reach = uniform(&mut rng, 0.6, 1.0);
            let (nu, nv) = (20, 10);
            let point = |i: usize, j: usize| {
                let u = -0.55 * PI + 1.1 * PI * i as f64 / nu as f64;
                let v = 2.0 * PI * j as f64 / nv as f64;
                let centre = Vector3::new(r - 0.5 * b + a * reach * u.cos(), 0.0, a * u.sin());
                let radial = Vector3::new(u.cos(), 0.0, u.sin());
                Point3::from(centre + (radial * v.cos() + Vector3::y() * v.sin()) * b)
            };
            for i in 0..nu {
                for j in 0..nv {
                    quad(&mut m, [point(i, j), point(i, j + 1), point(i + 1, j + 1), point(i + 1, j)]);
                }
            }
            handle = Some((start, m.triangles.len()));
            z_up_to_y_up(&m)
        }
        Category::Box => {
            let w = uniform(&mut rng, 0.06, 0.3);
            let d = uniform(&mut rng, 0.04, w);
            let h = uniform(&mut rng, 0.03, 0.25);
            let mut m = TriMesh::default();
            cuboid(Vector3::new(w, h, d) / 2.0, &mut m);
            m
        }
        Category::Laptop => laptop(&mut rng),
    };
    // The origin at the centre of the tight box.
    let (lo, hi) = crate::cloud::PointCloud::new(mesh.vertices.clone()).bounding_box();
    let centre = (lo.coords + hi.coords) / 2.0;
    let mesh = mesh.recentred(&centre, 1.0);
    Instance { category, mesh, size: hi - lo, handle }
}

/// A profile `(r, z)` revolved about z, turned so that z becomes +y.
fn upright(profile: &[(f64, f64)]) -> TriMesh {
    let mut m = TriMesh::default();
    revolve(profile, SEGMENTS, &mut m);
    z_up_to_y_up(&m)
}

/// Turns a mesh built with z up so that z becomes +y (and +x stays +x).
fn z_up_to_y_up(m: &TriMesh) -> TriMesh {
    m.transformed(&se3::pose(Rotation3::from_axis_angle(&Vector3::x_axis(), -PI / 2.0), Vector3::zeros()))
}

/// A laptop: a base on the table and a lid hinged along x at the back (−z), opened by 80–130°.
fn laptop(rng: &mut ChaCha8Rng) -> TriMesh {
    let (w, d) = (uniform(rng, 0.28, 0.4), uniform(rng, 0.19, 0.28));
    let (base, lid) = (uniform(rng, 0.012, 0.025), uniform(rng, 0.006, 0.012));
    let angle = uniform(rng, 80.0, 130.0).to_radians();
    let mut m = TriMesh::default();
    cuboid(Vector3::new(w, base, d) / 2.0, &mut m);
    // The lid: a slab along u = (0, sin α, cos α) from the hinge, its thickness behind it.
    let u = Vector3::new(0.0, angle.sin(), angle.cos());
    let n = Vector3::new(0.0, angle.cos(), -angle.sin());
    let frame = Rotation3::from_matrix_unchecked(Matrix3::from_columns(&[Vector3::x(), u, -n]));
    let mut slab = TriMesh::default();
    cuboid(Vector3::new(w, d, lid) / 2.0, &mut slab);
    let hinge = Vector3::new(0.0, base / 2.0, -d / 2.0);
    let placed = slab.transformed(&se3::pose(frame, hinge + u * (d / 2.0) - n * (lid / 2.0)));
    m.append(&placed);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::CATEGORIES;

    #[test]
    fn instances_are_centred_upright_and_vary() {
        for c in CATEGORIES {
            let a = instance(c, 1);
            let b = instance(c, 2);
            let (lo, hi) = crate::cloud::PointCloud::new(a.mesh.vertices.clone()).bounding_box();
            assert!((lo.coords + hi.coords).norm() < 1e-9, "{c}: centred");
            assert!(((hi - lo) - a.size).norm() < 1e-12);
            assert!(a.size.iter().all(|&s| (0.005..0.6).contains(&s)), "{c}: {:?}", a.size);
            assert!((a.size - b.size).norm() > 1e-3, "{c}: two seeds, two shapes");
            // Same seed, same instance.
            assert_eq!(instance(c, 1).mesh, a.mesh);
        }
        // Upright: the bottle and the can are taller than wide, their axis along y.
        for seed in 0..20 {
            let bottle = instance(Category::Bottle, seed);
            assert!(bottle.size.y > bottle.size.x && (bottle.size.x - bottle.size.z).abs() < 0.01 * bottle.size.x);
        }
        // The mug's handle is towards +x: the box reaches farther along +x than −x before centring.
        let mug = instance(Category::Mug, 5);
        let (s, e) = mug.handle.unwrap();
        let handle_x: f64 =
            mug.mesh.triangles[s..e].iter().map(|t| mug.mesh.vertices[t[0] as usize].x).sum::<f64>() / (e - s) as f64;
        assert!(handle_x > 0.0 && mug.size.x > mug.size.z, "{handle_x} {:?}", mug.size);
        // A laptop's lid stands up from a base at least 28 cm wide.
        let laptop = instance(Category::Laptop, 3);
        assert!(laptop.size.x >= 0.28 && laptop.size.y > 0.1, "{:?}", laptop.size);
    }
}
