//! Triangle meshes: area-weighted surface sampling and a virtual depth camera (z-buffer rasterisation), used to
//! build object models and synthetic partial scans.

use nalgebra::{Point2, Point3, Vector3};
use rand::Rng;

use crate::cloud::PointCloud;
use crate::error::{Error, Result};
use crate::se3::Pose;

/// A triangle mesh (counter-clockwise winding seen from outside gives outward face normals).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriMesh {
    /// Vertex positions.
    pub vertices: Vec<Point3<f64>>,
    /// Triangles as indices into `vertices`.
    pub triangles: Vec<[u32; 3]>,
}

impl TriMesh {
    /// A mesh from vertices and triangles; every index must be in range.
    pub fn new(vertices: Vec<Point3<f64>>, triangles: Vec<[u32; 3]>) -> Result<Self> {
        let n = vertices.len();
        if let Some((i, t)) = triangles.iter().enumerate().find(|(_, t)| t.iter().any(|&k| k as usize >= n)) {
            return Err(Error::invalid("mesh", format!("triangle {i} {t:?} indexes past {n} vertices")));
        }
        Ok(TriMesh { vertices, triangles })
    }

    fn corners(&self, t: &[u32; 3]) -> [Point3<f64>; 3] {
        t.map(|k| self.vertices[k as usize])
    }

    /// Total surface area.
    pub fn area(&self) -> f64 {
        self.triangles
            .iter()
            .map(|t| {
                let [a, b, c] = self.corners(t);
                0.5 * (b - a).cross(&(c - a)).norm()
            })
            .sum()
    }

    /// Appends another mesh (indices shifted).
    pub fn append(&mut self, other: &TriMesh) {
        let off = self.vertices.len() as u32;
        self.vertices.extend_from_slice(&other.vertices);
        self.triangles.extend(other.triangles.iter().map(|t| t.map(|k| k + off)));
    }

    /// The mesh moved by a rigid transformation.
    pub fn transformed(&self, g: &Pose) -> TriMesh {
        TriMesh { vertices: self.vertices.iter().map(|p| g * p).collect(), triangles: self.triangles.clone() }
    }

    /// The mesh stretched by `scale` along its own axes (`p ↦ diag(s)·p`).
    pub fn scaled(&self, scale: &Vector3<f64>) -> TriMesh {
        TriMesh {
            vertices: self.vertices.iter().map(|p| Point3::from(p.coords.component_mul(scale))).collect(),
            triangles: self.triangles.clone(),
        }
    }

    /// Moves the vertices by `-offset` and scales them by `scale` (for recentring/rescaling models).
    pub fn recentred(&self, offset: &Vector3<f64>, scale: f64) -> TriMesh {
        TriMesh {
            vertices: self.vertices.iter().map(|p| Point3::from((p.coords - offset) * scale)).collect(),
            triangles: self.triangles.clone(),
        }
    }

    /// The centre of the vertices' bounding box.
    pub fn bbox_centre(&self) -> Point3<f64> {
        let (lo, hi) = PointCloud::new(self.vertices.clone()).bounding_box();
        Point3::from((lo.coords + hi.coords) * 0.5)
    }

    /// `n` points drawn uniformly over the surface (area-weighted), with the face normals.
    pub fn sample_surface<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Result<PointCloud> {
        let mut cumulative = Vec::with_capacity(self.triangles.len());
        let mut total = 0.0;
        for t in &self.triangles {
            let [a, b, c] = self.corners(t);
            total += 0.5 * (b - a).cross(&(c - a)).norm();
            cumulative.push(total);
        }
        if !(total > 0.0 && total.is_finite()) {
            return Err(Error::Degenerate { what: "mesh".into(), reason: "its surface area is zero".into() });
        }
        let mut points = Vec::with_capacity(n);
        let mut normals = Vec::with_capacity(n);
        for _ in 0..n {
            let u = rng.random::<f64>() * total;
            let i = cumulative.partition_point(|&c| c < u).min(self.triangles.len() - 1);
            let [a, b, c] = self.corners(&self.triangles[i]);
            let (mut r1, mut r2) = (rng.random::<f64>(), rng.random::<f64>());
            if r1 + r2 > 1.0 {
                r1 = 1.0 - r1;
                r2 = 1.0 - r2;
            }
            points.push(a + (b - a) * r1 + (c - a) * r2);
            normals.push((b - a).cross(&(c - a)).try_normalize(0.0).unwrap_or_else(Vector3::z));
        }
        Ok(PointCloud { points, normals: Some(normals), colors: None })
    }
}

/// A pinhole depth camera at the origin looking along +z (x right, y down in the image).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Focal length in pixels, x.
    pub fx: f64,
    /// Focal length in pixels, y.
    pub fy: f64,
    /// Principal point, x.
    pub cx: f64,
    /// Principal point, y.
    pub cy: f64,
}

impl Camera {
    /// A 320×240 camera with 300-pixel focal length (a 56° horizontal field of view).
    pub fn default_depth() -> Self {
        Camera { width: 320, height: 240, fx: 300.0, fy: 300.0, cx: 160.0, cy: 120.0 }
    }

    fn project(&self, p: &Point3<f64>) -> Point2<f64> {
        Point2::new(self.fx * p.x / p.z + self.cx, self.fy * p.y / p.z + self.cy)
    }

    /// Renders a mesh given in the camera frame: per pixel the nearest depth (∞ where empty) and triangle.
    pub fn render(&self, mesh: &TriMesh) -> DepthImage {
        let (w, h) = (self.width, self.height);
        let mut depth = vec![f64::INFINITY; w * h];
        let mut triangle = vec![u32::MAX; w * h];
        const NEAR: f64 = 1e-6;
        for (ti, t) in mesh.triangles.iter().enumerate() {
            let v = t.map(|k| mesh.vertices[k as usize]);
            if v.iter().any(|p| p.z <= NEAR) {
                continue; // behind or at the camera: the scenes here never straddle it
            }
            let s = v.map(|p| self.project(&p));
            let area = (s[1] - s[0]).perp(&(s[2] - s[0]));
            if area.abs() < 1e-12 {
                continue;
            }
            let lo_x = s.iter().map(|p| p.x).fold(f64::INFINITY, f64::min).floor().max(0.0) as usize;
            let hi_x = (s.iter().map(|p| p.x).fold(f64::NEG_INFINITY, f64::max).ceil() as isize).min(w as isize - 1);
            let lo_y = s.iter().map(|p| p.y).fold(f64::INFINITY, f64::min).floor().max(0.0) as usize;
            let hi_y = (s.iter().map(|p| p.y).fold(f64::NEG_INFINITY, f64::max).ceil() as isize).min(h as isize - 1);
            if hi_x < 0 || hi_y < 0 {
                continue;
            }
            for py in lo_y..=hi_y as usize {
                for px in lo_x..=hi_x as usize {
                    let q = Point2::new(px as f64 + 0.5, py as f64 + 0.5);
                    let l0 = (s[2] - s[1]).perp(&(q - s[1])) / area;
                    let l1 = (s[0] - s[2]).perp(&(q - s[2])) / area;
                    let l2 = 1.0 - l0 - l1;
                    if l0 < 0.0 || l1 < 0.0 || l2 < 0.0 {
                        continue;
                    }
                    // Perspective-correct depth: 1/z is affine in screen space.
                    let z = 1.0 / (l0 / v[0].z + l1 / v[1].z + l2 / v[2].z);
                    let k = py * w + px;
                    if z < depth[k] {
                        depth[k] = z;
                        triangle[k] = ti as u32;
                    }
                }
            }
        }
        DepthImage { camera: *self, depth, triangle }
    }
}

/// A rendered depth image with the triangle seen at each pixel.
#[derive(Debug, Clone)]
pub struct DepthImage {
    /// The camera that took it.
    pub camera: Camera,
    /// Depth (z) per pixel, row-major; ∞ where nothing was hit.
    pub depth: Vec<f64>,
    /// Index of the visible triangle per pixel; `u32::MAX` where nothing was hit.
    pub triangle: Vec<u32>,
}

impl DepthImage {
    /// The back-projected points of all hit pixels and the triangle each came from.
    pub fn to_points(&self) -> (Vec<Point3<f64>>, Vec<u32>) {
        let c = &self.camera;
        let mut points = Vec::new();
        let mut tris = Vec::new();
        for (k, &z) in self.depth.iter().enumerate() {
            if z.is_finite() {
                let (px, py) = ((k % c.width) as f64 + 0.5, (k / c.width) as f64 + 0.5);
                points.push(Point3::new((px - c.cx) * z / c.fx, (py - c.cy) * z / c.fy, z));
                tris.push(self.triangle[k]);
            }
        }
        (points, tris)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use rand::SeedableRng;

    fn quad(z: f64, half: f64) -> TriMesh {
        TriMesh::new(
            vec![
                Point3::new(-half, -half, z),
                Point3::new(half, -half, z),
                Point3::new(half, half, z),
                Point3::new(-half, half, z),
            ],
            vec![[0, 1, 2], [0, 2, 3]],
        )
        .unwrap()
    }

    #[test]
    fn surface_samples_are_area_weighted_and_on_the_surface() {
        let mut m = quad(0.0, 1.0); // area 4
        m.append(&quad(1.0, 0.5)); // area 1
        assert_relative_eq!(m.area(), 5.0, epsilon = 1e-12);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let c = m.sample_surface(10000, &mut rng).unwrap();
        let upper = c.points.iter().filter(|p| p.z == 1.0).count() as f64 / 10000.0;
        assert!((upper - 0.2).abs() < 0.02, "{upper}");
        assert!(c.points.iter().all(|p| p.x.abs() <= 1.0 && p.y.abs() <= 1.0 && (p.z == 0.0 || p.z == 1.0)));
        assert!(c.normals.unwrap().iter().all(|n| (n.z - 1.0).abs() < 1e-12));
    }

    #[test]
    fn the_nearer_surface_hides_the_farther_one() {
        let mut m = quad(2.0, 0.5);
        m.append(&quad(3.0, 0.5));
        let cam = Camera::default_depth();
        let img = cam.render(&m);
        let (points, tris) = img.to_points();
        assert!(!points.is_empty());
        assert!(points.iter().all(|p| (p.z - 2.0).abs() < 1e-9), "far quad leaked through");
        assert!(tris.iter().all(|&t| t < 2));
        // A 1×1 quad at depth 2 spans 150×150 pixels.
        assert!((points.len() as i64 - 22500).abs() < 400, "{}", points.len());
        // Back-projected points lie on the quad.
        assert!(points.iter().all(|p| p.x.abs() <= 0.5 + 1e-9 && p.y.abs() <= 0.5 + 1e-9));
    }

    #[test]
    fn depth_is_perspective_correct_on_a_slanted_triangle() {
        let m = TriMesh::new(
            vec![Point3::new(-1.0, -1.0, 2.0), Point3::new(1.0, -1.0, 4.0), Point3::new(0.0, 1.0, 3.0)],
            vec![[0, 1, 2]],
        )
        .unwrap();
        let (points, _) = Camera::default_depth().render(&m).to_points();
        // Plane through the three vertices: n·p = d.
        let n = (m.vertices[1] - m.vertices[0]).cross(&(m.vertices[2] - m.vertices[0])).normalize();
        let d = n.dot(&m.vertices[0].coords);
        assert!(points.iter().all(|p| (n.dot(&p.coords) - d).abs() < 1e-9));
    }

    #[test]
    fn bad_indices_are_rejected() {
        assert!(TriMesh::new(vec![Point3::origin()], vec![[0, 0, 1]]).is_err());
    }
}
