//! Point clouds: validation, centring and scale, voxel downsampling, normal estimation, statistical outlier
//! removal and rigid transformation. Operations return new clouds; inputs are never modified.

use std::collections::HashMap;

use nalgebra::{Matrix3, Point3, SymmetricEigen, Vector3};

use crate::error::{Error, Result};
use crate::kdtree::KdTree;
use crate::se3::Pose;

/// 3-D points with optional per-point unit normals and RGB colours.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PointCloud {
    /// Point coordinates.
    pub points: Vec<Point3<f64>>,
    /// Unit normals, one per point, when known.
    pub normals: Option<Vec<Vector3<f64>>>,
    /// RGB colours, one per point, when known.
    pub colors: Option<Vec<[u8; 3]>>,
}

/// How estimated normals are oriented (a PCA normal has no sign of its own).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NormalOrientation {
    /// Leave the sign as PCA gives it.
    None,
    /// Point towards a sensor position (for scans).
    Towards(Point3<f64>),
    /// Point away from the centroid (for closed, roughly convex objects).
    AwayFromCentroid,
}

/// A centring and isotropic scaling `p ↦ (p − centre)·scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// The point mapped to the origin.
    pub centre: Point3<f64>,
    /// The factor applied after centring.
    pub scale: f64,
}

impl Normalization {
    /// Maps a point into the normalised frame.
    pub fn apply(&self, p: &Point3<f64>) -> Point3<f64> {
        Point3::from((p - self.centre) * self.scale)
    }

    /// Maps a point from the normalised frame back.
    pub fn invert(&self, p: &Point3<f64>) -> Point3<f64> {
        self.centre + p.coords / self.scale
    }
}

/// The eigen-decomposition of a point set's covariance: eigenvalues ascending with their unit eigenvectors.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// Eigenvalues, ascending.
    pub values: [f64; 3],
    /// Unit eigenvectors matching `values`.
    pub vectors: [Vector3<f64>; 3],
}

/// Covariance eigen-decomposition of `points` (which must not be empty).
pub fn spread(points: &[Point3<f64>]) -> Spread {
    let n = points.len().max(1) as f64;
    let c = points.iter().fold(Vector3::zeros(), |a, p| a + p.coords) / n;
    let cov = points.iter().fold(Matrix3::zeros(), |a, p| {
        let d = p.coords - c;
        a + d * d.transpose()
    }) / n;
    let eig = SymmetricEigen::new(cov);
    let mut idx = [0usize, 1, 2];
    idx.sort_by(|&a, &b| eig.eigenvalues[a].total_cmp(&eig.eigenvalues[b]));
    Spread {
        values: idx.map(|i| eig.eigenvalues[i].max(0.0)),
        vectors: idx.map(|i| eig.eigenvectors.column(i).into_owned()),
    }
}

impl PointCloud {
    /// A cloud of bare points.
    pub fn new(points: Vec<Point3<f64>>) -> Self {
        PointCloud { points, normals: None, colors: None }
    }

    /// A cloud from single-precision points, as sensor drivers give them.
    pub fn from_f32(points: &[[f32; 3]]) -> Self {
        PointCloud::new(points.iter().map(|p| Point3::new(p[0] as f64, p[1] as f64, p[2] as f64)).collect())
    }

    /// The points in single precision.
    pub fn to_f32(&self) -> Vec<[f32; 3]> {
        self.points.iter().map(|p| [p.x as f32, p.y as f32, p.z as f32]).collect()
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when there are no points.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Checks that the cloud can be registered: at least `min_points` points, all coordinates and normals
    /// finite, and not all identical or collinear. `what` names the cloud in the error.
    pub fn validate(&self, what: &str, min_points: usize) -> Result<()> {
        if self.points.is_empty() {
            return Err(Error::EmptyCloud { what: what.into() });
        }
        for (i, p) in self.points.iter().enumerate() {
            if let Some(v) = p.iter().find(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what: what.into(),
                    index: i,
                    field: "coordinate",
                    value: v.to_string(),
                });
            }
        }
        if let Some(normals) = &self.normals {
            for (i, n) in normals.iter().enumerate() {
                if let Some(v) = n.iter().find(|v| !v.is_finite()) {
                    return Err(Error::NonFinite {
                        what: what.into(),
                        index: i,
                        field: "normal",
                        value: v.to_string(),
                    });
                }
            }
        }
        if self.points.len() < min_points {
            return Err(Error::TooFewPoints {
                what: what.into(),
                have: self.points.len(),
                need: min_points,
                context: String::new(),
            });
        }
        let s = spread(&self.points);
        let extent = s.values[2].sqrt();
        let centre = self.centroid().coords.norm();
        if extent <= 1e-12 * (1.0 + centre) {
            return Err(Error::Degenerate { what: what.into(), reason: "all points are identical".into() });
        }
        if s.values[1].sqrt() <= 1e-6 * extent {
            return Err(Error::Degenerate {
                what: what.into(),
                reason: "all points lie on one line, so a rotation about it cannot be determined".into(),
            });
        }
        Ok(())
    }

    /// The mean of the points (the origin for an empty cloud).
    pub fn centroid(&self) -> Point3<f64> {
        if self.points.is_empty() {
            return Point3::origin();
        }
        Point3::from(self.points.iter().fold(Vector3::zeros(), |a, p| a + p.coords) / self.points.len() as f64)
    }

    /// The axis-aligned bounding box `(min, max)` (origin twice for an empty cloud).
    pub fn bounding_box(&self) -> (Point3<f64>, Point3<f64>) {
        let mut it = self.points.iter();
        let Some(first) = it.next() else {
            return (Point3::origin(), Point3::origin());
        };
        it.fold((*first, *first), |(lo, hi), p| (lo.inf(p), hi.sup(p)))
    }

    /// The diameter: the largest distance between two points. Exact up to 1 000 points; larger clouds use
    /// every k-th point (so the result may fall short by about the sampling gap).
    pub fn diameter(&self) -> f64 {
        let stride = self.points.len().div_ceil(1000).max(1);
        let sub: Vec<&Point3<f64>> = self.points.iter().step_by(stride).collect();
        let mut best = 0.0f64;
        for (i, a) in sub.iter().enumerate() {
            for b in &sub[i + 1..] {
                best = best.max((*a - *b).norm_squared());
            }
        }
        best.sqrt()
    }

    /// The normalisation that centres the cloud on its centroid and scales its diameter to 1.
    pub fn unit_normalization(&self) -> Normalization {
        let d = self.diameter();
        Normalization { centre: self.centroid(), scale: if d > 0.0 { 1.0 / d } else { 1.0 } }
    }

    /// The cloud mapped by a normalisation (normals unchanged: the scaling is isotropic).
    pub fn normalized(&self, n: &Normalization) -> PointCloud {
        PointCloud { points: self.points.iter().map(|p| n.apply(p)).collect(), ..self.clone() }
    }

    /// The cloud moved by a rigid transformation (normals rotated).
    pub fn transformed(&self, g: &Pose) -> PointCloud {
        PointCloud {
            points: self.points.iter().map(|p| g * p).collect(),
            normals: self.normals.as_ref().map(|ns| ns.iter().map(|n| g.rotation * n).collect()),
            colors: self.colors.clone(),
        }
    }

    /// The cloud stretched by `scale` along its own axes (`p ↦ diag(s)·p`); normals follow the surface
    /// (`n ↦ diag(s)⁻¹·n`, renormalised).
    pub fn scaled(&self, scale: &Vector3<f64>) -> PointCloud {
        PointCloud {
            points: self.points.iter().map(|p| Point3::from(p.coords.component_mul(scale))).collect(),
            normals: self.normals.as_ref().map(|ns| ns.iter().map(|n| n.component_div(scale).normalize()).collect()),
            colors: self.colors.clone(),
        }
    }

    /// The points at `indices`, with their normals and colours.
    pub fn select(&self, indices: &[usize]) -> PointCloud {
        PointCloud {
            points: indices.iter().map(|&i| self.points[i]).collect(),
            normals: self.normals.as_ref().map(|ns| indices.iter().map(|&i| ns[i]).collect()),
            colors: self.colors.as_ref().map(|cs| indices.iter().map(|&i| cs[i]).collect()),
        }
    }

    /// Averages the points (normals, colours) falling into each cube of side `voxel`; voxels appear in the order
    /// of their first point, so the result is deterministic.
    pub fn voxel_downsample(&self, voxel: f64) -> Result<PointCloud> {
        if !(voxel.is_finite() && voxel > 0.0) {
            return Err(Error::invalid("voxel size", format!("{voxel} must be positive and finite")));
        }
        let mut slots: HashMap<[i64; 3], usize> = HashMap::with_capacity(self.points.len() / 4 + 1);
        // Per voxel: sum of points, of (sign-aligned) normals, of colours, and the count.
        type VoxelSum = (Vector3<f64>, Vector3<f64>, [u32; 3], u32);
        let mut sums: Vec<VoxelSum> = Vec::new();
        for (i, p) in self.points.iter().enumerate() {
            let key = [(p.x / voxel).floor() as i64, (p.y / voxel).floor() as i64, (p.z / voxel).floor() as i64];
            let slot = *slots.entry(key).or_insert_with(|| {
                sums.push((Vector3::zeros(), Vector3::zeros(), [0; 3], 0));
                sums.len() - 1
            });
            let s = &mut sums[slot];
            s.0 += p.coords;
            if let Some(ns) = &self.normals {
                // Align with the voxel's running normal so that opposite signs do not cancel.
                let n = ns[i];
                s.1 += if s.1.dot(&n) < 0.0 { -n } else { n };
            }
            if let Some(cs) = &self.colors {
                for k in 0..3 {
                    s.2[k] += cs[i][k] as u32;
                }
            }
            s.3 += 1;
        }
        Ok(PointCloud {
            points: sums.iter().map(|s| Point3::from(s.0 / s.3 as f64)).collect(),
            normals: self
                .normals
                .as_ref()
                .map(|_| sums.iter().map(|s| s.1.try_normalize(1e-12).unwrap_or_else(Vector3::z)).collect()),
            colors: self
                .colors
                .as_ref()
                .map(|_| sums.iter().map(|s| s.2.map(|c| (c as f64 / s.3 as f64).round() as u8)).collect()),
        })
    }

    /// Voxel downsampling that keeps differently facing surfaces apart: within a voxel, points whose oriented
    /// normals lie within `max_angle` (radians) of a group's first normal are averaged into that group, the others
    /// start groups of their own. The two sides of a wall thinner than a voxel (a mug's), and the faces meeting at
    /// an edge, stay separate surfaces instead of merging into points inside the wall with meaningless normals.
    /// Without normals this is [`PointCloud::voxel_downsample`]. Deterministic: groups follow the point order.
    pub fn voxel_downsample_surfaces(&self, voxel: f64, max_angle: f64) -> Result<PointCloud> {
        let Some(normals) = &self.normals else {
            return self.voxel_downsample(voxel);
        };
        if !(voxel.is_finite() && voxel > 0.0) {
            return Err(Error::invalid("voxel size", format!("{voxel} must be positive and finite")));
        }
        if !(max_angle.is_finite() && max_angle >= 0.0) {
            return Err(Error::invalid("normal angle", format!("{max_angle} must be finite and non-negative")));
        }
        let min_cos = max_angle.min(std::f64::consts::PI).cos();
        // Per voxel: its groups, each (first normal, sum of points, sum of normals, sum of colours, count).
        type Group = (Vector3<f64>, Vector3<f64>, Vector3<f64>, [u32; 3], u32);
        let mut slots: HashMap<[i64; 3], Vec<usize>> = HashMap::with_capacity(self.points.len() / 4 + 1);
        let mut groups: Vec<Group> = Vec::new();
        for (i, p) in self.points.iter().enumerate() {
            let key = [(p.x / voxel).floor() as i64, (p.y / voxel).floor() as i64, (p.z / voxel).floor() as i64];
            let n = normals[i];
            let members = slots.entry(key).or_default();
            let g = match members.iter().copied().find(|&g| groups[g].0.dot(&n) >= min_cos) {
                Some(g) => g,
                None => {
                    groups.push((n, Vector3::zeros(), Vector3::zeros(), [0; 3], 0));
                    members.push(groups.len() - 1);
                    groups.len() - 1
                }
            };
            let s = &mut groups[g];
            s.1 += p.coords;
            s.2 += n;
            if let Some(cs) = &self.colors {
                for k in 0..3 {
                    s.3[k] += cs[i][k] as u32;
                }
            }
            s.4 += 1;
        }
        Ok(PointCloud {
            points: groups.iter().map(|g| Point3::from(g.1 / g.4 as f64)).collect(),
            normals: Some(groups.iter().map(|g| g.2.try_normalize(1e-12).unwrap_or(g.0)).collect()),
            colors: self
                .colors
                .as_ref()
                .map(|_| groups.iter().map(|g| g.3.map(|c| (c as f64 / g.4 as f64).round() as u8)).collect()),
        })
    }

    /// A copy with normals estimated by PCA of each point's `k` nearest neighbours (itself included), oriented
    /// as asked. Needs at least 3 points.
    pub fn with_estimated_normals(&self, k: usize, orientation: NormalOrientation) -> Result<PointCloud> {
        if self.points.len() < 3 {
            return Err(Error::TooFewPoints {
                what: "cloud".into(),
                have: self.points.len(),
                need: 3,
                context: " to estimate normals".into(),
            });
        }
        let tree = KdTree::new(&self.points)?;
        let centroid = self.centroid();
        let k = k.max(3);
        let normals = self
            .points
            .iter()
            .map(|p| {
                let nb: Vec<Point3<f64>> = tree.knn(p, k).iter().map(|n| self.points[n.index]).collect();
                let mut n = spread(&nb).vectors[0];
                let flip = match orientation {
                    NormalOrientation::None => false,
                    NormalOrientation::Towards(v) => n.dot(&(v - p)) < 0.0,
                    NormalOrientation::AwayFromCentroid => n.dot(&(p - centroid)) < 0.0,
                };
                if flip {
                    n = -n;
                }
                n
            })
            .collect();
        Ok(PointCloud { normals: Some(normals), ..self.clone() })
    }

    /// Removes points whose mean distance to their `k` nearest neighbours exceeds the mean of that statistic
    /// by more than `std_ratio` standard deviations. Returns the kept cloud and the kept indices.
    pub fn remove_statistical_outliers(&self, k: usize, std_ratio: f64) -> Result<(PointCloud, Vec<usize>)> {
        if k == 0 || !(std_ratio.is_finite() && std_ratio > 0.0) {
            return Err(Error::invalid(
                "outlier removal",
                format!("k = {k} and std_ratio = {std_ratio} must be positive"),
            ));
        }
        if self.points.len() <= k {
            let all: Vec<usize> = (0..self.points.len()).collect();
            return Ok((self.clone(), all));
        }
        let tree = KdTree::new(&self.points)?;
        let mean_d: Vec<f64> = self
            .points
            .iter()
            .map(|p| {
                let nb = tree.knn(p, k + 1);
                nb.iter().skip(1).map(|n| n.dist2.sqrt()).sum::<f64>() / k as f64
            })
            .collect();
        let n = mean_d.len() as f64;
        let mu = mean_d.iter().sum::<f64>() / n;
        let sd = (mean_d.iter().map(|d| (d - mu) * (d - mu)).sum::<f64>() / n).sqrt();
        let limit = mu + std_ratio * sd;
        let keep: Vec<usize> = (0..self.points.len()).filter(|&i| mean_d[i] <= limit).collect();
        Ok((self.select(&keep), keep))
    }

    /// Colours that show how well `reference` supports each point: green within `near` of a reference point,
    /// shading through yellow to red at `3·near` and beyond.
    pub fn support_colours(&self, reference: &PointCloud, near: f64) -> Result<Vec<[u8; 3]>> {
        let tree = KdTree::new(&reference.points)?;
        Ok(self
            .points
            .iter()
            .map(|p| {
                let d = tree.nearest(p).dist2.sqrt();
                let u = ((d - near) / (2.0 * near)).clamp(0.0, 1.0);
                let (r, g) = if u < 0.5 { (2.0 * u, 1.0) } else { (1.0, 2.0 * (1.0 - u)) };
                [(r * 255.0).round() as u8, (g * 200.0).round() as u8, 40]
            })
            .collect())
    }

    /// Appends another cloud; normals/colours are kept only when both clouds have them.
    pub fn extend(&mut self, other: &PointCloud) {
        self.points.extend_from_slice(&other.points);
        self.normals = match (self.normals.take(), &other.normals) {
            (Some(mut a), Some(b)) => {
                a.extend_from_slice(b);
                Some(a)
            }
            _ => None,
        };
        self.colors = match (self.colors.take(), &other.colors) {
            (Some(mut a), Some(b)) => {
                a.extend_from_slice(b);
                Some(a)
            }
            _ => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn sphere(n: usize, seed: u64) -> PointCloud {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        PointCloud::new(
            (0..n)
                .map(|_| {
                    let v =
                        Vector3::new(rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5);
                    Point3::from(v.normalize() * 2.0)
                })
                .collect(),
        )
    }

    #[test]
    fn validation_names_the_problem() {
        let empty = PointCloud::default();
        assert!(matches!(empty.validate("scene", 3), Err(Error::EmptyCloud { .. })));
        let mut c = sphere(10, 0);
        assert!(matches!(c.validate("scene", 20), Err(Error::TooFewPoints { have: 10, need: 20, .. })));
        c.points[4].y = f64::NAN;
        let e = c.validate("scene", 3).unwrap_err().to_string();
        assert!(e.contains("point 4") && e.contains("NaN"), "{e}");
        c.points[4].y = f64::INFINITY;
        assert!(c.validate("scene", 3).unwrap_err().to_string().contains("inf"));
        let same = PointCloud::new(vec![Point3::new(1.0, 2.0, 3.0); 50]);
        assert!(same.validate("object", 3).unwrap_err().to_string().contains("identical"));
        let line = PointCloud::new((0..50).map(|i| Point3::new(i as f64, 2.0 * i as f64, 1.0)).collect());
        assert!(line.validate("object", 3).unwrap_err().to_string().contains("line"));
        let plane = PointCloud::new((0..50).map(|i| Point3::new((i % 7) as f64, (i / 7) as f64, 0.0)).collect());
        plane.validate("object", 3).unwrap();
    }

    #[test]
    fn diameter_centroid_and_normalization() {
        let c =
            PointCloud::new(vec![Point3::new(0.0, 0.0, 0.0), Point3::new(3.0, 4.0, 0.0), Point3::new(1.0, 1.0, 0.0)]);
        assert_relative_eq!(c.diameter(), 5.0);
        let n = c.unit_normalization();
        let u = c.normalized(&n);
        assert_relative_eq!(u.diameter(), 1.0, epsilon = 1e-12);
        assert_relative_eq!(u.centroid().coords.norm(), 0.0, epsilon = 1e-12);
        assert_relative_eq!(n.invert(&u.points[1]), c.points[1], epsilon = 1e-12);
    }

    #[test]
    fn voxel_downsampling_averages_per_voxel() {
        let c = PointCloud {
            points: vec![Point3::new(0.1, 0.1, 0.1), Point3::new(0.3, 0.3, 0.3), Point3::new(1.5, 0.2, 0.2)],
            normals: Some(vec![Vector3::z(), -Vector3::z(), Vector3::x()]),
            colors: Some(vec![[0, 0, 0], [255, 255, 255], [10, 20, 30]]),
        };
        let d = c.voxel_downsample(1.0).unwrap();
        assert_eq!(d.len(), 2);
        assert_relative_eq!(d.points[0], Point3::new(0.2, 0.2, 0.2), epsilon = 1e-12);
        assert_relative_eq!(d.normals.as_ref().unwrap()[0].z.abs(), 1.0, epsilon = 1e-12);
        assert_eq!(d.colors.as_ref().unwrap()[0], [128, 128, 128]);
        assert_eq!(d.colors.as_ref().unwrap()[1], [10, 20, 30]);
        assert!(c.voxel_downsample(0.0).is_err());
        // Dense sphere of area 16π: one point per occupied voxel, about area/voxel² of them.
        let s = sphere(20000, 1).voxel_downsample(0.2).unwrap();
        assert!(s.len() > 1000 && s.len() < 2500, "{}", s.len());
    }

    #[test]
    fn surface_downsampling_keeps_the_two_sides_of_a_thin_wall_apart() {
        // A wall 0.004 thick sampled on both sides, with outward normals ±z; voxels 0.02 straddle it.
        let mut points = Vec::new();
        let mut normals = Vec::new();
        for i in 0..20 {
            for j in 0..20 {
                for (z, nz) in [(0.0095, 1.0), (0.0055, -1.0)] {
                    points.push(Point3::new(i as f64 * 0.005, j as f64 * 0.005, z));
                    normals.push(Vector3::new(0.0, 0.0, nz));
                }
            }
        }
        let wall = PointCloud { points, normals: Some(normals), colors: None };
        // Plain voxel averaging merges the sides into points inside the wall.
        let merged = wall.voxel_downsample(0.02).unwrap();
        assert!(merged.points.iter().all(|p| (p.z - 0.0075).abs() < 1e-9), "{:?}", merged.points[0]);
        let kept = wall.voxel_downsample_surfaces(0.02, 1.0).unwrap();
        assert_eq!(kept.len(), 2 * merged.len());
        for (p, n) in kept.points.iter().zip(kept.normals.as_ref().unwrap()) {
            let want = if n.z > 0.0 { 0.0095 } else { 0.0055 };
            assert!((p.z - want).abs() < 1e-9 && (n.z.abs() - 1.0).abs() < 1e-12, "{p:?} {n:?}");
        }
        // Without normals it is plain voxel averaging; bad sizes are errors.
        let bare = PointCloud::new(wall.points.clone());
        assert_eq!(bare.voxel_downsample_surfaces(0.02, 1.0).unwrap(), bare.voxel_downsample(0.02).unwrap());
        assert!(wall.voxel_downsample_surfaces(0.0, 1.0).is_err());
        assert!(wall.voxel_downsample_surfaces(0.02, f64::NAN).is_err());
    }

    #[test]
    fn normals_of_a_sphere_point_outwards() {
        let s = sphere(3000, 2).with_estimated_normals(12, NormalOrientation::AwayFromCentroid).unwrap();
        let worst = s
            .points
            .iter()
            .zip(s.normals.as_ref().unwrap())
            .map(|(p, n)| n.dot(&p.coords.normalize()))
            .fold(1.0, f64::min);
        assert!(worst > 0.95, "{worst}");
        let towards = s.with_estimated_normals(12, NormalOrientation::Towards(Point3::new(0.0, 0.0, 10.0))).unwrap();
        let ok = towards
            .points
            .iter()
            .zip(towards.normals.as_ref().unwrap())
            .all(|(p, n)| n.dot(&(Point3::new(0.0, 0.0, 10.0) - p)) >= 0.0);
        assert!(ok);
    }

    #[test]
    fn outlier_removal_drops_far_points_only() {
        let mut c = sphere(2000, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..40 {
            c.points.push(Point3::new(rng.random::<f64>() * 20.0 - 10.0, rng.random::<f64>() * 20.0 - 10.0, 8.0));
        }
        let (kept, idx) = c.remove_statistical_outliers(16, 2.0).unwrap();
        let outliers_kept = idx.iter().filter(|&&i| i >= 2000).count();
        let inliers_dropped = 2000 - idx.iter().filter(|&&i| i < 2000).count();
        assert_eq!(outliers_kept, 0);
        assert!(inliers_dropped < 40, "{inliers_dropped}");
        assert_eq!(kept.len(), idx.len());
    }

    #[test]
    fn support_colours_go_from_green_to_red() {
        let c =
            PointCloud::new(vec![Point3::new(0.0, 0.0, 0.0), Point3::new(0.2, 0.0, 0.0), Point3::new(5.0, 0.0, 0.0)]);
        let r = PointCloud::new(vec![Point3::origin()]);
        let col = c.support_colours(&r, 0.1).unwrap();
        assert_eq!(col[0], [0, 200, 40]);
        assert_eq!(col[1], [255, 200, 40]);
        assert_eq!(col[2], [255, 0, 40]);
    }

    #[test]
    fn transform_moves_points_and_rotates_normals() {
        let c =
            PointCloud { points: vec![Point3::new(1.0, 0.0, 0.0)], normals: Some(vec![Vector3::x()]), colors: None };
        let g = crate::se3::pose(
            crate::so3::exp(&Vector3::new(0.0, 0.0, std::f64::consts::FRAC_PI_2)),
            Vector3::new(0.0, 0.0, 5.0),
        );
        let t = c.transformed(&g);
        assert_relative_eq!(t.points[0], Point3::new(0.0, 1.0, 5.0), epsilon = 1e-12);
        assert_relative_eq!(t.normals.unwrap()[0], Vector3::y(), epsilon = 1e-12);
    }
}
