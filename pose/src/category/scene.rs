//! Single-view scans of a category instance standing on a table, as a depth camera and a 2D detector would give
//! them: the instance rests on the plane `y = 0` under a random turn about the vertical, the camera looks at it
//! from a random side 15–65° above the table and 0.5–1.0 m away, and the scan is the part of the depth image
//! inside the object's detection box (enlarged by 10–25 % per side, so the table shows around the object), with
//! sensor noise and outliers. Coordinates are metres in the camera frame (x right, y down, z forward).

use nalgebra::{Matrix3, Point3, Rotation3, Vector3};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::shapes::Instance;
use crate::cloud::PointCloud;
use crate::error::{Error, Result};
use crate::mesh::{Camera, TriMesh};
use crate::se3::{self, Pose};

/// How the scans are made.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneConfig {
    /// The depth camera.
    pub camera: Camera,
    /// Points kept per scan (outliers included).
    pub points: usize,
    /// Gaussian noise per coordinate (metres).
    pub noise: f64,
    /// Fraction of the points replaced by outliers uniform in the scan's bounding box.
    pub outliers: f64,
    /// Camera elevation above the table, degrees (range).
    pub elevation_deg: (f64, f64),
    /// Camera distance to the object, metres (range).
    pub distance: (f64, f64),
}

impl Default for SceneConfig {
    fn default() -> Self {
        SceneConfig {
            camera: Camera { width: 640, height: 480, fx: 600.0, fy: 600.0, cx: 320.0, cy: 240.0 },
            points: 2048,
            noise: 0.001,
            outliers: 0.03,
            elevation_deg: (15.0, 65.0),
            distance: (0.5, 1.0),
        }
    }
}

/// One scan with its truth.
#[derive(Debug, Clone)]
pub struct CategoryScene {
    /// The scan (camera frame, metres): object, table around it, noise and outliers.
    pub scan: PointCloud,
    /// True pose canonical → camera.
    pub truth: Pose,
    /// True size `[w, h, d]` (metres).
    pub size: Vector3<f64>,
    /// For a mug: whether its handle covers at least 2 % of the object's pixels.
    pub handle_visible: Option<bool>,
}

/// The camera pose (world → camera) of an eye looking at `target`, world y up.
fn look_at(eye: &Point3<f64>, target: &Point3<f64>) -> Pose {
    let z = (target - eye).normalize();
    let x = z.cross(&Vector3::y()).normalize();
    let y = z.cross(&x);
    let r = Rotation3::from_matrix_unchecked(Matrix3::from_rows(&[x.transpose(), y.transpose(), z.transpose()]));
    se3::pose(r, -(r * eye.coords))
}

/// The table: a square of side `side` at `y = 0` centred under the origin.
fn table(side: f64) -> TriMesh {
    let h = side / 2.0;
    TriMesh {
        vertices: vec![
            Point3::new(-h, 0.0, -h),
            Point3::new(h, 0.0, -h),
            Point3::new(h, 0.0, h),
            Point3::new(-h, 0.0, h),
        ],
        triangles: vec![[0, 2, 1], [0, 3, 2]],
    }
}

/// A scan of `instance` drawn from `seed`.
pub fn make_scene(instance: &Instance, seed: u64, cfg: &SceneConfig) -> Result<CategoryScene> {
    if !(cfg.noise >= 0.0 && (0.0..1.0).contains(&cfg.outliers) && cfg.points >= 10) {
        return Err(Error::invalid(
            "category scene",
            "noise ≥ 0, outliers in [0, 1) and at least 10 points are needed",
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let uniform = |rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)| lo + (hi - lo) * rng.random::<f64>();
    // World: the table is y = 0, the instance stands on it turned about the vertical.
    let yaw = uniform(&mut rng, (0.0, std::f64::consts::TAU));
    let world_object =
        se3::pose(Rotation3::from_axis_angle(&Vector3::y_axis(), yaw), Vector3::new(0.0, instance.size.y / 2.0, 0.0));
    let elevation = uniform(&mut rng, cfg.elevation_deg).to_radians();
    let azimuth = uniform(&mut rng, (0.0, std::f64::consts::TAU));
    let distance = uniform(&mut rng, cfg.distance);
    let target = Point3::new(0.0, instance.size.y / 2.0, 0.0);
    let eye = target
        + Vector3::new(elevation.cos() * azimuth.sin(), elevation.sin(), elevation.cos() * azimuth.cos()) * distance;
    let camera_world = look_at(&eye, &target);
    let truth = camera_world * world_object;
    let object_triangles = instance.mesh.triangles.len();
    let mut mesh = instance.mesh.transformed(&truth);
    mesh.append(&table(4.0 * instance.size.norm()).transformed(&camera_world));
    let image = cfg.camera.render(&mesh);
    // The detection box: the object's pixels, enlarged on each side.
    let c = &cfg.camera;
    let object_pixels: Vec<usize> =
        (0..image.depth.len()).filter(|&k| (image.triangle[k] as usize) < object_triangles).collect();
    if object_pixels.len() < 50 {
        return Err(Error::TooFewPoints {
            what: format!("rendered {}", instance.category),
            have: object_pixels.len(),
            need: 50,
            context: " (object pixels)".into(),
        });
    }
    let (mut x0, mut x1, mut y0, mut y1) = (usize::MAX, 0, usize::MAX, 0);
    for &k in &object_pixels {
        let (x, y) = (k % c.width, k / c.width);
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let grow = |rng: &mut ChaCha8Rng, span: usize| (span as f64 * uniform(rng, (0.1, 0.25))).round() as usize;
    let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
    let (gx0, gx1, gy0, gy1) = (grow(&mut rng, w), grow(&mut rng, w), grow(&mut rng, h), grow(&mut rng, h));
    let (x0, x1, y0, y1) =
        (x0.saturating_sub(gx0), (x1 + gx1).min(c.width - 1), y0.saturating_sub(gy0), (y1 + gy1).min(c.height - 1));
    let mut pixels: Vec<usize> = (y0..=y1)
        .flat_map(|y| (x0..=x1).map(move |x| y * c.width + x))
        .filter(|&k| image.depth[k].is_finite())
        .collect();
    let handle_visible = instance.handle.map(|(s, e)| {
        let on = object_pixels.iter().filter(|&&k| (s..e).contains(&(image.triangle[k] as usize))).count();
        on as f64 >= 0.02 * object_pixels.len() as f64
    });
    let n_out = (cfg.outliers * cfg.points as f64).round() as usize;
    pixels.shuffle(&mut rng);
    pixels.truncate(cfg.points - n_out);
    let mut scan: Vec<Point3<f64>> = pixels
        .iter()
        .map(|&k| {
            let (px, py) = ((k % c.width) as f64 + 0.5, (k / c.width) as f64 + 0.5);
            let z = image.depth[k];
            let noise = Vector3::from_fn(|_, _| -> f64 { StandardNormal.sample(&mut rng) }) * cfg.noise;
            Point3::new((px - c.cx) * z / c.fx, (py - c.cy) * z / c.fy, z) + noise
        })
        .collect();
    let (lo, hi) = PointCloud::new(scan.clone()).bounding_box();
    for _ in 0..n_out {
        scan.push(Point3::from(lo.coords + (hi - lo).component_mul(&Vector3::from_fn(|_, _| rng.random::<f64>()))));
    }
    scan.shuffle(&mut rng);
    Ok(CategoryScene { scan: PointCloud::new(scan), truth, size: instance.size, handle_visible })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::shapes::instance;
    use crate::category::{CATEGORIES, Category};

    #[test]
    fn scans_show_the_object_on_its_table_in_front_of_the_camera() {
        let cfg = SceneConfig::default();
        for c in CATEGORIES {
            let inst = instance(c, 7);
            let s = make_scene(&inst, 3, &cfg).unwrap();
            assert_eq!(s.scan.len(), cfg.points);
            // The object's centre is in front of the camera, within the set distances.
            let centre = s.truth.translation.vector;
            assert!(centre.z > 0.3 && centre.norm() < 1.2, "{c}: {centre:?}");
            // Points near the posed object's box and points on the table both appear.
            let inv = s.truth.inverse();
            let half = inst.size / 2.0 + Vector3::repeat(0.005);
            let inside = s
                .scan
                .points
                .iter()
                .filter(|p| (inv * *p).coords.iter().zip(half.iter()).all(|(v, h)| v.abs() <= *h))
                .count();
            let table = s.scan.points.iter().filter(|p| ((inv * *p).y + inst.size.y / 2.0).abs() < 0.004).count();
            assert!(inside > 200 && table > 100, "{c}: {inside} in the box, {table} on the table");
            // The camera looks down on the table: the canonical up axis points up in the image (−y).
            assert!((s.truth.rotation * Vector3::y()).y < -0.2, "{c}");
        }
        let mug = make_scene(&instance(Category::Mug, 1), 2, &cfg).unwrap();
        assert!(mug.handle_visible.is_some());
        // Seeded: the same seed gives the same scan.
        let a = make_scene(&instance(Category::Can, 1), 9, &cfg).unwrap();
        let b = make_scene(&instance(Category::Can, 1), 9, &cfg).unwrap();
        assert_eq!(a.scan, b.scan);
    }
}
