//! The shipped objects: the Stanford bunny (examples/bunny.ply, embedded) and procedural meshes — a box, a
//! cylinder, an asymmetric L-shaped plate and a mug — each with its rotational symmetry, which the benchmark's
//! symmetry-aware errors use. Every object is centred on its bounding-box centre; sizes are in metres except
//! the bunny, which keeps the units of its source (about 10 units tall).

use std::f64::consts::PI;
use std::path::Path;

use nalgebra::{Point3, Rotation3, Unit, Vector3};
use rand::SeedableRng;

use crate::cloud::PointCloud;
use crate::error::{Error, Result};
use crate::mesh::TriMesh;
use crate::so3;

/// Names of the built-in objects, in benchmark order.
pub const BUILTIN: [&str; 5] = ["bunny", "box", "cylinder", "l-shape", "mug"];

/// The bunny mesh as shipped (see scripts/pose-bunny-to-ply.sh).
const BUNNY_PLY: &[u8] = include_bytes!("../data/bunny.ply");

/// The proper rotations that map an object onto itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Symmetry {
    /// Only the identity.
    None,
    /// A finite group, listed in full (identity included).
    Discrete(Vec<Rotation3<f64>>),
    /// Every rotation about `axis`; with `flip`, also the half-turns about axes perpendicular to it.
    Axial {
        /// The symmetry axis in the object frame.
        axis: Unit<Vector3<f64>>,
        /// Whether the two ends are alike (a capped cylinder) or not (a cup).
        flip: bool,
    },
}

impl Symmetry {
    /// Symmetry-aware rotation error (radians) of an estimate against the truth: the smallest angle between
    /// `est` and any `truth·S` with `S` in the group.
    pub fn rotation_error(&self, est: &Rotation3<f64>, truth: &Rotation3<f64>) -> f64 {
        match self {
            Symmetry::None => so3::distance(est, truth),
            Symmetry::Discrete(group) => {
                group.iter().map(|s| so3::distance(est, &(truth * s))).fold(f64::INFINITY, f64::min)
            }
            Symmetry::Axial { axis, flip } => {
                // min over φ of |log(est⁻¹·truth·Rot(axis, φ))| is the angle between est·axis and truth·axis.
                let a = est * axis.as_ref();
                let b = truth * axis.as_ref();
                let cos = a.dot(&b).clamp(-1.0, 1.0);
                let cos = if *flip { cos.abs() } else { cos };
                cos.acos()
            }
        }
    }

    /// Short description for reports ("none", "4 rotations", "axial about z, ends alike").
    pub fn describe(&self) -> String {
        match self {
            Symmetry::None => "none".into(),
            Symmetry::Discrete(g) => format!("{} rotations", g.len()),
            Symmetry::Axial { flip, .. } => {
                if *flip {
                    "axial, ends alike".into()
                } else {
                    "axial".into()
                }
            }
        }
    }
}

/// A known object: its mesh (object frame) and its symmetry.
#[derive(Debug, Clone)]
pub struct ObjectModel {
    /// Short name ("bunny", "box", ...).
    pub name: String,
    /// Surface mesh in the object frame.
    pub mesh: TriMesh,
    /// Rotations that leave the object unchanged.
    pub symmetry: Symmetry,
    /// Triangles `[start, end)` of a part whose visibility the benchmark reports (the mug's handle).
    pub feature: Option<(usize, usize)>,
    /// Where the object frame's origin lies in the source file's coordinates (the bunny is re-centred on its
    /// bounding box; procedural objects are built in place): `p_source = p_object + source_offset`.
    pub source_offset: Vector3<f64>,
}

impl ObjectModel {
    /// A pose of this object's frame expressed for its source coordinates: `H·T(−offset)`.
    pub fn pose_for_source(&self, h: &crate::se3::Pose) -> crate::se3::Pose {
        crate::se3::pose(h.rotation, h.translation.vector - h.rotation * self.source_offset)
    }
}

impl ObjectModel {
    /// The largest distance between two vertices (the mesh's diameter: extreme points are vertices).
    pub fn diameter(&self) -> f64 {
        let v = &self.mesh.vertices;
        let mut best = 0.0f64;
        for (i, a) in v.iter().enumerate() {
            for b in &v[i + 1..] {
                best = best.max((a - b).norm_squared());
            }
        }
        best.sqrt()
    }

    /// `n` surface samples with face normals, drawn with a fixed seed (the registration model).
    pub fn model_cloud(&self, n: usize, seed: u64) -> Result<PointCloud> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        self.mesh.sample_surface(n, &mut rng)
    }
}

/// A built-in object by name (see [`BUILTIN`]).
pub fn builtin(name: &str) -> Result<ObjectModel> {
    match name {
        "bunny" => bunny(),
        "box" => Ok(box_object()),
        "cylinder" => Ok(cylinder()),
        "l-shape" => Ok(l_shape()),
        "mug" => Ok(mug()),
        _ => Err(Error::invalid("object", format!("unknown built-in object '{name}'; valid: {}", BUILTIN.join(", ")))),
    }
}

fn centred(mesh: TriMesh) -> (TriMesh, Vector3<f64>) {
    let c = mesh.bbox_centre().coords;
    (mesh.recentred(&c, 1.0), c)
}

/// Appends the quad `a b c d` (counter-clockwise seen from its front) as two triangles.
pub(crate) fn quad(m: &mut TriMesh, pts: [Point3<f64>; 4]) {
    let o = m.vertices.len() as u32;
    m.vertices.extend_from_slice(&pts);
    m.triangles.push([o, o + 1, o + 2]);
    m.triangles.push([o, o + 2, o + 3]);
}

/// An axis-aligned box with half-extents `h`, centred at the origin.
pub(crate) fn cuboid(h: Vector3<f64>, m: &mut TriMesh) {
    let p = |x: f64, y: f64, z: f64| Point3::new(x * h.x, y * h.y, z * h.z);
    quad(m, [p(-1., -1., 1.), p(1., -1., 1.), p(1., 1., 1.), p(-1., 1., 1.)]);
    quad(m, [p(-1., 1., -1.), p(1., 1., -1.), p(1., -1., -1.), p(-1., -1., -1.)]);
    quad(m, [p(1., -1., -1.), p(1., 1., -1.), p(1., 1., 1.), p(1., -1., 1.)]);
    quad(m, [p(-1., -1., 1.), p(-1., 1., 1.), p(-1., 1., -1.), p(-1., -1., -1.)]);
    quad(m, [p(-1., 1., -1.), p(-1., 1., 1.), p(1., 1., 1.), p(1., 1., -1.)]);
    quad(m, [p(-1., -1., -1.), p(1., -1., -1.), p(1., -1., 1.), p(-1., -1., 1.)]);
}

/// A 16 × 10 × 6 cm box: symmetric under the three half-turns about its axes.
pub fn box_object() -> ObjectModel {
    let mut mesh = TriMesh::default();
    cuboid(Vector3::new(0.08, 0.05, 0.03), &mut mesh);
    let half_turn = |a: Vector3<f64>| so3::exp(&(a * PI));
    ObjectModel {
        name: "box".into(),
        mesh,
        symmetry: Symmetry::Discrete(vec![
            Rotation3::identity(),
            half_turn(Vector3::x()),
            half_turn(Vector3::y()),
            half_turn(Vector3::z()),
        ]),
        feature: None,
        source_offset: Vector3::zeros(),
    }
}

/// Revolves a profile of `(radius, z)` points about the z axis with `segments` facets.
pub(crate) fn revolve(profile: &[(f64, f64)], segments: usize, m: &mut TriMesh) {
    for w in profile.windows(2) {
        let ((r0, z0), (r1, z1)) = (w[0], w[1]);
        for s in 0..segments {
            let a0 = 2.0 * PI * s as f64 / segments as f64;
            let a1 = 2.0 * PI * (s + 1) as f64 / segments as f64;
            let p = |r: f64, z: f64, a: f64| Point3::new(r * a.cos(), r * a.sin(), z);
            quad(m, [p(r0, z0, a0), p(r0, z0, a1), p(r1, z1, a1), p(r1, z1, a0)]);
        }
    }
}

/// A capped cylinder, radius 3.5 cm and height 12 cm, axis z: symmetric about z and end over end.
pub fn cylinder() -> ObjectModel {
    let (r, h) = (0.035, 0.06);
    let mut mesh = TriMesh::default();
    revolve(&[(0.0, -h), (r, -h), (r, h), (0.0, h)], 48, &mut mesh);
    ObjectModel {
        name: "cylinder".into(),
        mesh,
        symmetry: Symmetry::Axial { axis: Vector3::z_axis(), flip: true },
        feature: None,
        source_offset: Vector3::zeros(),
    }
}

/// An L-shaped plate 2.5 cm thick with arms 15 cm and 10 cm long and 4 cm wide: no rotational symmetry.
pub fn l_shape() -> ObjectModel {
    let outline = [(0.0, 0.0), (0.15, 0.0), (0.15, 0.04), (0.04, 0.04), (0.04, 0.10), (0.0, 0.10)];
    let t = 0.025;
    let mut mesh = TriMesh::default();
    for i in 0..outline.len() {
        let (x0, y0) = outline[i];
        let (x1, y1) = outline[(i + 1) % outline.len()];
        quad(
            &mut mesh,
            [Point3::new(x0, y0, 0.0), Point3::new(x1, y1, 0.0), Point3::new(x1, y1, t), Point3::new(x0, y0, t)],
        );
    }
    for (z, flip) in [(0.0, true), (t, false)] {
        for rect in [
            [(0.0, 0.0), (0.15, 0.0), (0.15, 0.04), (0.0, 0.04)],
            [(0.0, 0.04), (0.04, 0.04), (0.04, 0.10), (0.0, 0.10)],
        ] {
            let mut pts = rect.map(|(x, y)| Point3::new(x, y, z));
            if flip {
                pts.reverse();
            }
            quad(&mut mesh, pts);
        }
    }
    // Procedural: the centred mesh is its own source.
    ObjectModel {
        name: "l-shape".into(),
        mesh: centred(mesh).0,
        symmetry: Symmetry::None,
        feature: None,
        source_offset: Vector3::zeros(),
    }
}

/// A mug: an open cylinder (radius 4 cm, height 9.5 cm, 4 mm wall) with a ring handle; the handle breaks the
/// axial symmetry, and views from behind the handle cannot tell the rotation about the axis.
pub fn mug() -> ObjectModel {
    let (r, h, wall, bottom) = (0.04, 0.0475, 0.004, 0.006);
    let ri = r - wall;
    let mut mesh = TriMesh::default();
    revolve(&[(0.0, -h), (r, -h), (r, h), (ri, h), (ri, -h + bottom), (0.0, -h + bottom)], 48, &mut mesh);
    let start = mesh.triangles.len();
    // Handle: a tube of radius b around a half-circle of radius a centred on the wall, in the xz plane.
    let (a, b) = (0.028, 0.007);
    let (nu, nv) = (24, 12);
    let centre = |u: f64| Vector3::new(r + a * u.cos(), 0.0, a * u.sin());
    let point = |i: usize, j: usize| {
        let u = -0.55 * PI + 1.1 * PI * i as f64 / nu as f64;
        let v = 2.0 * PI * j as f64 / nv as f64;
        let radial = Vector3::new(u.cos(), 0.0, u.sin());
        Point3::from(centre(u) + (radial * v.cos() + Vector3::y() * v.sin()) * b)
    };
    for i in 0..nu {
        for j in 0..nv {
            quad(&mut mesh, [point(i, j), point(i, j + 1), point(i + 1, j + 1), point(i + 1, j)]);
        }
    }
    let end = mesh.triangles.len();
    ObjectModel {
        name: "mug".into(),
        mesh,
        symmetry: Symmetry::None,
        feature: Some((start, end)),
        source_offset: Vector3::zeros(),
    }
}

/// The Stanford bunny from examples/bunny.ply (embedded at build time), centred; y is up.
pub fn bunny() -> Result<ObjectModel> {
    let data = crate::ply::read_ply_bytes(BUNNY_PLY, Path::new("examples/bunny.ply"))?;
    let mesh = TriMesh::new(data.cloud.points, data.triangles)?;
    let (mesh, source_offset) = centred(mesh);
    Ok(ObjectModel { name: "bunny".into(), mesh, symmetry: Symmetry::None, feature: None, source_offset })
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn every_builtin_loads_and_is_centred() {
        for name in BUILTIN {
            let o = builtin(name).unwrap();
            assert!(o.mesh.area() > 0.0, "{name}");
            // The mug's frame sits on its axis; the others are centred on their bounding box.
            let off = if name == "mug" {
                o.mesh.bbox_centre().coords.yz().norm()
            } else {
                o.mesh.bbox_centre().coords.norm()
            };
            assert!(off < 1e-9, "{name}: {off}");
            let c = o.model_cloud(500, 1).unwrap();
            c.validate(name, 100).unwrap();
        }
        assert!(builtin("teapot").unwrap_err().to_string().contains("valid: bunny, box"));
    }

    #[test]
    fn poses_carry_over_to_the_source_frame() {
        let b = bunny().unwrap();
        let source = crate::ply::read_ply_bytes(BUNNY_PLY, Path::new("bunny.ply")).unwrap().cloud.points;
        let h = crate::se3::pose(so3::exp(&Vector3::new(0.3, -1.0, 2.0)), Vector3::new(1.0, 2.0, 3.0));
        let hs = b.pose_for_source(&h);
        for (p, q) in b.mesh.vertices.iter().zip(&source).take(50) {
            assert_relative_eq!(h * p, hs * q, epsilon = 1e-5);
        }
    }

    #[test]
    fn analytic_areas_and_diameters() {
        let b = box_object();
        assert_relative_eq!(b.mesh.area(), 2.0 * (0.16 * 0.10 + 0.16 * 0.06 + 0.10 * 0.06), epsilon = 1e-12);
        assert_relative_eq!(b.diameter(), (0.16f64.powi(2) + 0.1f64.powi(2) + 0.06f64.powi(2)).sqrt(), epsilon = 1e-12);
        let c = cylinder();
        // A 48-gon has area (48/2)·sin(2π/48)·r² ≈ 0.9971 πr².
        let polygon = 24.0 * (2.0 * PI / 48.0).sin() * 0.035f64.powi(2);
        let side = 48.0 * 2.0 * 0.035 * (PI / 48.0).sin() * 0.12;
        assert_relative_eq!(c.mesh.area(), 2.0 * polygon + side, epsilon = 1e-12);
        let l = l_shape();
        let cap = 0.15 * 0.04 + 0.04 * 0.06;
        let perimeter = 2.0 * (0.15 + 0.10);
        assert_relative_eq!(l.mesh.area(), 2.0 * cap + perimeter * 0.025, epsilon = 1e-12);
    }

    /// Signed volume `Σ a·(b × c)/6`: positive when the faces wind counter-clockwise seen from outside.
    fn signed_volume(m: &TriMesh, tris: &[[u32; 3]]) -> f64 {
        signed_volume_about(m, tris, Vector3::zeros())
    }

    /// Signed volume with the cones drawn from `o` (matters only for open surfaces).
    fn signed_volume_about(m: &TriMesh, tris: &[[u32; 3]], o: Vector3<f64>) -> f64 {
        tris.iter()
            .map(|t| {
                let [a, b, c] = t.map(|k| m.vertices[k as usize].coords - o);
                a.dot(&b.cross(&c)) / 6.0
            })
            .sum()
    }

    #[test]
    fn face_normals_point_outwards() {
        // Closed meshes wound outwards enclose their analytic volume with a positive sign.
        let vol = |o: &ObjectModel| signed_volume(&o.mesh, &o.mesh.triangles);
        assert_relative_eq!(vol(&box_object()), 0.16 * 0.10 * 0.06, max_relative = 1e-12);
        let polygon = 24.0 * (2.0 * PI / 48.0).sin() * 0.035f64.powi(2);
        assert_relative_eq!(vol(&cylinder()), polygon * 0.12, max_relative = 1e-12);
        assert_relative_eq!(vol(&l_shape()), (0.15 * 0.04 + 0.04 * 0.06) * 0.025, max_relative = 1e-12);
        assert!(vol(&bunny().unwrap()) > 0.0);
        // The mug's handle is an open tube bent around (0.04, 0, 0): seen from there its missing end caps add
        // nothing, so it encloses its tube volume π·b²·(arc length) with a positive sign.
        let mug = mug();
        let (a, b) = mug.feature.unwrap();
        let handle = signed_volume_about(&mug.mesh, &mug.mesh.triangles[a..b], Vector3::new(0.04, 0.0, 0.0));
        let polygon_tube = 6.0 * (2.0 * PI / 12.0).sin() * 0.007f64.powi(2);
        assert_relative_eq!(handle, polygon_tube * 1.1 * PI * 0.028, max_relative = 0.02);
        let body = signed_volume(&mug.mesh, &mug.mesh.triangles[..a]);
        let ring = 24.0 * (2.0 * PI / 48.0).sin();
        let want = ring * (0.04f64.powi(2) * 0.095 - 0.036f64.powi(2) * 0.089);
        assert_relative_eq!(body, want, max_relative = 1e-9);
    }

    #[test]
    fn symmetric_rotation_errors() {
        let r = so3::exp(&Vector3::new(0.3, -0.2, 1.0));
        let b = box_object();
        let Symmetry::Discrete(group) = &b.symmetry else { panic!() };
        // Every group element really maps the box's vertices onto its vertices.
        for s in group {
            for v in &b.mesh.vertices {
                let w = s * v;
                assert!(b.mesh.vertices.iter().any(|u| (u - w).norm() < 1e-12));
            }
            assert!(b.symmetry.rotation_error(&(r * s), &r) < 1e-7);
        }
        let small = so3::exp(&Vector3::new(0.0, 0.05, 0.0));
        assert_relative_eq!(b.symmetry.rotation_error(&(r * small), &r), 0.05, epsilon = 1e-9);
        let c = cylinder();
        let spin = so3::exp(&Vector3::new(0.0, 0.0, 2.0));
        let flip = so3::exp(&Vector3::new(PI, 0.0, 0.0));
        assert!(c.symmetry.rotation_error(&(r * spin * flip), &r) < 1e-7);
        assert_relative_eq!(c.symmetry.rotation_error(&(r * small), &r), 0.05, epsilon = 1e-9);
        assert_relative_eq!(Symmetry::None.rotation_error(&(r * spin), &r), 2.0, epsilon = 1e-9);
    }
}
