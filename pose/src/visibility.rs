//! Free-space reasoning for single-view scans: a sensor at a known viewpoint saw *through* the space in front
//! of every measured point, so a posed model that puts surface there contradicts the scan. This separates poses
//! that fit the measured points equally well, such as a plate matched by its back face instead of its front.
//!
//! The converse holds for a scan cropped to the object: surface of the posed model that faces the sensor but
//! projects where the scan has no measurement at all would have been measured, so it contradicts the scan too
//! ([`ViewCheck::missing`]). This bounds what the measured points leave free: a mug's handle hidden behind its
//! body can only turn as far as the body's shadow reaches before it would show beside the body.

use nalgebra::{Point3, Vector3};

use crate::kdtree::KdTree;

/// The scan as the sensor saw it, binned by viewing direction on a grid of the image plane one sample gap wide.
#[derive(Debug, Clone)]
pub struct FreeSpace {
    viewpoint: Point3<f64>,
    axes: [Vector3<f64>; 3],
    origin: (f64, f64),
    /// Cell size: the typical angular gap between neighbouring samples (median nearest-neighbour distance on
    /// the image plane).
    gap: f64,
    cols: usize,
    rows: usize,
    /// Smallest measured depth over the cell and its 8 neighbours (∞ where none holds a sample): the depth a
    /// model point is compared with. A ray between a near and a far surface (a rim and the wall behind it) is
    /// only free in front of the nearer.
    near_depth: Vec<f64>,
    /// The scan's footprint: a sample within [`FOOTPRINT_CELLS`] cells.
    covered: Vec<bool>,
}

/// Cells (sample gaps) by which the footprint of the scan is widened, so that the gaps of random sampling and
/// the noise at the silhouette do not count as places where nothing was measured.
pub const FOOTPRINT_CELLS: usize = 2;

/// Most cells along either side of the grid.
const MAX_CELLS: usize = 1024;

/// Cells of grid around the scan's extent, so that model surface just beside the scan lands in a cell.
const PAD_CELLS: usize = 4;

/// Smallest cosine between a model normal and the direction to the sensor for the surface to count as one the
/// sensor would have measured: grazing surface is sampled too sparsely to expect a measurement there.
pub const MIN_FACING_COS: f64 = 0.25;

/// The smallest value over the `(2r+1)²` neighbourhood of every cell of a `cols × rows` grid.
fn neighbourhood_min(v: &[f64], cols: usize, rows: usize, r: usize) -> Vec<f64> {
    // Separable: along rows, then along columns.
    let mut h = vec![f64::INFINITY; v.len()];
    for j in 0..rows {
        for i in 0..cols {
            h[j * cols + i] =
                (i.saturating_sub(r)..(i + r + 1).min(cols)).map(|ii| v[j * cols + ii]).fold(f64::INFINITY, f64::min);
        }
    }
    let mut out = vec![f64::INFINITY; v.len()];
    for j in 0..rows {
        for i in 0..cols {
            out[j * cols + i] =
                (j.saturating_sub(r)..(j + r + 1).min(rows)).map(|jj| h[jj * cols + i]).fold(f64::INFINITY, f64::min);
        }
    }
    out
}

/// A posed model compared with the scan along the sensor's rays (counts of model points; see
/// [`FreeSpace::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ViewCheck {
    /// Points on measured rays.
    pub seen: usize,
    /// Of those, the points in front of the measured surface: in space the sensor saw through.
    pub in_front: usize,
    /// Points whose surface faces the sensor (by more than [`MIN_FACING_COS`]).
    pub facing: usize,
    /// Of those, the points outside the scan's footprint: surface the sensor would have measured but did not.
    pub missing: usize,
}

impl ViewCheck {
    /// `in_front / seen` (0 when nothing was seen).
    pub fn in_front_fraction(&self) -> f64 {
        if self.seen == 0 { 0.0 } else { self.in_front as f64 / self.seen as f64 }
    }

    /// `missing / facing` (0 when nothing faces the sensor).
    pub fn missing_fraction(&self) -> f64 {
        if self.facing == 0 { 0.0 } else { self.missing as f64 / self.facing as f64 }
    }
}

impl FreeSpace {
    /// Bins `scan` as seen from `viewpoint`; `None` when the scan does not lie in front of the viewpoint or is
    /// too small to tell its sampling density.
    pub fn new(scan: &[Point3<f64>], viewpoint: Point3<f64>) -> Option<Self> {
        if scan.len() < 10 {
            return None;
        }
        let mean = scan.iter().fold(Vector3::zeros(), |a, p| a + (p - viewpoint)) / scan.len() as f64;
        let e3 = mean.try_normalize(1e-12)?;
        let helper = if e3.x.abs() < 0.9 { Vector3::x() } else { Vector3::y() };
        let e1 = e3.cross(&helper).normalize();
        let e2 = e3.cross(&e1);
        let proj: Vec<(f64, f64, f64)> = scan
            .iter()
            .filter_map(|p| {
                let d = p - viewpoint;
                let z = d.dot(&e3);
                (z > 1e-9).then(|| (d.dot(&e1) / z, d.dot(&e2) / z, z))
            })
            .collect();
        if proj.len() * 10 < scan.len() * 9 {
            return None; // most of the scan is behind the viewpoint: it is not a view from there
        }
        let flat: Vec<Point3<f64>> = proj.iter().map(|&(a, b, _)| Point3::new(a, b, 0.0)).collect();
        let tree = KdTree::new(&flat).ok()?;
        let mut gaps: Vec<f64> = flat
            .iter()
            .step_by((flat.len() / 300).max(1))
            .filter_map(|p| tree.knn(p, 2).get(1).map(|n| n.dist2.sqrt()))
            .collect();
        gaps.sort_by(f64::total_cmp);
        let gap = gaps[gaps.len() / 2];
        if !(gap > 0.0 && gap.is_finite()) {
            return None;
        }
        let (mut lo_a, mut lo_b, mut hi_a, mut hi_b) =
            (f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
        for &(a, b, _) in &proj {
            lo_a = lo_a.min(a);
            lo_b = lo_b.min(b);
            hi_a = hi_a.max(a);
            hi_b = hi_b.max(b);
        }
        // Coarser cells where a fine grid would be huge (a scan spread far beyond its sampling density).
        let gap = gap.max((hi_a - lo_a).max(hi_b - lo_b) / MAX_CELLS as f64);
        let pad = PAD_CELLS as f64 * gap;
        let cols = ((hi_a - lo_a) / gap).ceil() as usize + 1 + 2 * PAD_CELLS;
        let rows = ((hi_b - lo_b) / gap).ceil() as usize + 1 + 2 * PAD_CELLS;
        let mut fs = FreeSpace {
            viewpoint,
            axes: [e1, e2, e3],
            origin: (lo_a - pad, lo_b - pad),
            gap,
            cols,
            rows,
            near_depth: Vec::new(),
            covered: Vec::new(),
        };
        let mut depth = vec![f64::INFINITY; cols * rows];
        for &(a, b, z) in &proj {
            if let Some(k) = fs.index(a, b) {
                depth[k] = depth[k].min(z);
            }
        }
        fs.near_depth = neighbourhood_min(&depth, cols, rows, 1);
        fs.covered = neighbourhood_min(&depth, cols, rows, FOOTPRINT_CELLS).iter().map(|d| d.is_finite()).collect();
        Some(fs)
    }

    /// The typical angular gap between neighbouring scan samples (radians, roughly): the grid's cell size.
    pub fn gap(&self) -> f64 {
        self.gap
    }

    fn index(&self, a: f64, b: f64) -> Option<usize> {
        let i = ((a - self.origin.0) / self.gap).floor();
        let j = ((b - self.origin.1) / self.gap).floor();
        (i >= 0.0 && j >= 0.0 && (i as usize) < self.cols && (j as usize) < self.rows)
            .then(|| j as usize * self.cols + i as usize)
    }

    /// Depth of `p` along the optical axis and its cell (`None` beyond the grid), or `None` behind the viewpoint.
    fn ray(&self, p: &Point3<f64>) -> Option<(f64, Option<usize>)> {
        let d = p - self.viewpoint;
        let z = d.dot(&self.axes[2]);
        (z > 1e-9).then(|| (z, self.index(d.dot(&self.axes[0]) / z, d.dot(&self.axes[1]) / z)))
    }

    /// The depth of `p` along the optical axis and the measured depth of its ray (the smallest over its cell and
    /// the 8 around it); `None` when no measurement covers that ray.
    pub fn depths(&self, p: &Point3<f64>) -> Option<(f64, f64)> {
        let (z, k) = self.ray(p)?;
        let m = self.near_depth[k?];
        m.is_finite().then_some((z, m))
    }

    /// Whether a surface point at `p` would lie more than `margin` in front of the measured depth along its ray.
    /// `None` when no measurement covers that ray.
    pub fn violates(&self, p: &Point3<f64>, margin: f64) -> Option<bool> {
        self.depths(p).map(|(z, m)| z < m - margin)
    }

    /// Fraction of `points` (already posed in the scan frame) that lie in measured free space, among those whose
    /// ray was measured; 0 when none was.
    pub fn violation_fraction(&self, points: impl Iterator<Item = Point3<f64>>, margin: f64) -> f64 {
        let (mut seen, mut bad) = (0usize, 0usize);
        for p in points {
            if let Some(v) = self.violates(&p, margin) {
                seen += 1;
                bad += v as usize;
            }
        }
        if seen == 0 { 0.0 } else { bad as f64 / seen as f64 }
    }

    /// Compares model `points` posed in the scan frame, with their posed outward `normals` when known, with the
    /// scan: how many lie in front of the measured depth of their ray by more than `margin` (see
    /// [`FreeSpace::violates`]), and, with normals, how many face the sensor but project outside the scan's
    /// footprint (beyond the grid counts as outside). Without normals nothing counts as facing.
    pub fn check(&self, points: &[Point3<f64>], normals: Option<&[Vector3<f64>]>, margin: f64) -> ViewCheck {
        let mut c = ViewCheck::default();
        for (i, p) in points.iter().enumerate() {
            let Some((z, k)) = self.ray(p) else {
                continue;
            };
            if let Some(k) = k
                && self.near_depth[k].is_finite()
            {
                c.seen += 1;
                c.in_front += (z < self.near_depth[k] - margin) as usize;
            }
            if let Some(n) = normals.and_then(|ns| ns.get(i)) {
                let d = p - self.viewpoint;
                if -n.dot(&d) > MIN_FACING_COS * d.norm() {
                    c.facing += 1;
                    c.missing += !k.is_some_and(|k| self.covered[k]) as usize;
                }
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plate 2 units in front of the camera, sampled on a grid.
    fn plate(z: f64) -> Vec<Point3<f64>> {
        (0..40)
            .flat_map(|i| (0..40).map(move |j| Point3::new(i as f64 * 0.025 - 0.5, j as f64 * 0.025 - 0.5, z)))
            .collect()
    }

    #[test]
    fn points_in_front_of_the_measured_surface_violate() {
        let fs = FreeSpace::new(&plate(2.0), Point3::origin()).unwrap();
        assert_eq!(fs.violates(&Point3::new(0.1, 0.1, 1.5), 0.05), Some(true));
        assert_eq!(fs.violates(&Point3::new(0.1, 0.1, 1.98), 0.05), Some(false));
        assert_eq!(fs.violates(&Point3::new(0.1, 0.1, 3.0), 0.05), Some(false));
        // Off to the side: nothing was measured along that ray.
        assert_eq!(fs.violates(&Point3::new(5.0, 0.0, 2.0), 0.05), None);
        assert_eq!(fs.violates(&Point3::new(0.0, 0.0, -1.0), 0.05), None);
        let front = plate(1.8);
        assert!(fs.violation_fraction(front.into_iter(), 0.05) > 0.95);
        let same = plate(2.0);
        assert_eq!(fs.violation_fraction(same.into_iter(), 0.05), 0.0);
    }

    #[test]
    fn surface_facing_the_sensor_outside_the_footprint_is_missing() {
        let fs = FreeSpace::new(&plate(2.0), Point3::origin()).unwrap();
        let towards = Vector3::new(0.0, 0.0, -1.0);
        // The measured plate itself: seen, not in front, facing, not missing.
        let same = plate(2.0);
        let c = fs.check(&same, Some(&vec![towards; same.len()]), 0.05);
        assert_eq!((c.seen, c.in_front, c.facing, c.missing), (same.len(), 0, same.len(), 0));
        // The plate slid sideways by 60 % of its width: the part beside the scan is missing.
        let slid: Vec<Point3<f64>> = same.iter().map(|p| p + Vector3::new(0.6, 0.0, 0.0)).collect();
        let c = fs.check(&slid, Some(&vec![towards; slid.len()]), 0.05);
        assert!((c.missing_fraction() - 0.6).abs() < 0.1, "{c:?}");
        assert_eq!(c.in_front, 0);
        // Facing away, or grazing, it would not have been measured: not missing.
        let away = fs.check(&slid, Some(&vec![-towards; slid.len()]), 0.05);
        // Grazing: at cosine 0.1 to each point's own viewing direction.
        let grazing_normals: Vec<Vector3<f64>> = slid
            .iter()
            .map(|p| {
                let d = p.coords.normalize();
                let side = (Vector3::y() - d * d.y).normalize();
                -d * 0.1 + side * 0.99f64.sqrt()
            })
            .collect();
        let grazing = fs.check(&slid, Some(&grazing_normals), 0.05);
        assert_eq!((away.facing, away.missing, grazing.facing), (0, 0, 0));
        // Without normals only the free-space test runs.
        let c = fs.check(&plate(1.8), None, 0.05);
        assert!(c.in_front_fraction() > 0.95 && c.facing == 0, "{c:?}");
        // Just beside the silhouette (within the footprint's margin) is not missing.
        let edge: Vec<Point3<f64>> = same.iter().map(|p| p + Vector3::new(0.02, 0.0, 0.0)).collect();
        assert_eq!(fs.check(&edge, Some(&vec![towards; edge.len()]), 0.05).missing, 0);
    }

    #[test]
    fn a_scan_all_around_the_viewpoint_is_not_a_view() {
        let mut around = plate(2.0);
        around.extend(plate(-2.0));
        around.extend(plate(2.0).into_iter().map(|p| Point3::new(p.z, p.y, p.x)));
        around.extend(plate(-2.0).into_iter().map(|p| Point3::new(p.z, p.y, p.x)));
        assert!(FreeSpace::new(&around, Point3::origin()).is_none());
        assert!(FreeSpace::new(&plate(2.0)[..5], Point3::origin()).is_none());
    }
}
