//! Free-space reasoning for single-view scans: a sensor at a known viewpoint saw *through* the space in front
//! of every measured point, so a posed model that puts surface there contradicts the scan. This separates poses
//! that fit the measured points equally well, such as a plate matched by its back face instead of its front.

use nalgebra::{Point3, Vector3};

use crate::kdtree::KdTree;

/// The measured depth along each viewing direction, binned on a grid of the image plane.
#[derive(Debug, Clone)]
pub struct FreeSpace {
    viewpoint: Point3<f64>,
    axes: [Vector3<f64>; 3],
    origin: (f64, f64),
    cell: f64,
    cols: usize,
    rows: usize,
    /// Smallest measured depth per cell (∞ where nothing was measured).
    depth: Vec<f64>,
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
        let axes = [e1, e2, e3];
        let project = |p: &Point3<f64>| -> Option<(f64, f64, f64)> {
            let d = p - viewpoint;
            let z = d.dot(&e3);
            (z > 1e-9).then(|| (d.dot(&e1) / z, d.dot(&e2) / z, z))
        };
        let proj: Vec<(f64, f64, f64)> = scan.iter().filter_map(project).collect();
        if proj.len() * 10 < scan.len() * 9 {
            return None; // most of the scan is behind the viewpoint: it is not a view from there
        }
        // Angular sampling: median nearest-neighbour gap divided by depth; cells two gaps wide.
        let tree = KdTree::new(scan).ok()?;
        let mut gaps: Vec<f64> = scan
            .iter()
            .step_by((scan.len() / 200).max(1))
            .map(|p| tree.knn(p, 2).get(1).map(|n| n.dist2.sqrt() / (p - viewpoint).dot(&e3).max(1e-9)).unwrap_or(0.0))
            .collect();
        gaps.sort_by(f64::total_cmp);
        let cell = 2.0 * gaps[gaps.len() / 2];
        if !(cell > 0.0 && cell.is_finite()) {
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
        let cols = (((hi_a - lo_a) / cell).ceil() as usize + 1).min(4096);
        let rows = (((hi_b - lo_b) / cell).ceil() as usize + 1).min(4096);
        let mut fs = FreeSpace {
            viewpoint,
            axes,
            origin: (lo_a, lo_b),
            cell,
            cols,
            rows,
            depth: vec![f64::INFINITY; cols * rows],
        };
        for &(a, b, z) in &proj {
            if let Some(k) = fs.index(a, b) {
                fs.depth[k] = fs.depth[k].min(z);
            }
        }
        Some(fs)
    }

    fn index(&self, a: f64, b: f64) -> Option<usize> {
        let i = ((a - self.origin.0) / self.cell).floor();
        let j = ((b - self.origin.1) / self.cell).floor();
        (i >= 0.0 && j >= 0.0 && (i as usize) < self.cols && (j as usize) < self.rows)
            .then(|| j as usize * self.cols + i as usize)
    }

    /// Whether a surface point at `p` would lie more than `margin` in front of the measured depth along its ray.
    /// `None` when no measurement covers that ray.
    pub fn violates(&self, p: &Point3<f64>, margin: f64) -> Option<bool> {
        let d = p - self.viewpoint;
        let z = d.dot(&self.axes[2]);
        if z <= 1e-9 {
            return None;
        }
        let k = self.index(d.dot(&self.axes[0]) / z, d.dot(&self.axes[1]) / z)?;
        let measured = self.depth[k];
        measured.is_finite().then_some(z < measured - margin)
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
    fn a_scan_all_around_the_viewpoint_is_not_a_view() {
        let mut around = plate(2.0);
        around.extend(plate(-2.0));
        around.extend(plate(2.0).into_iter().map(|p| Point3::new(p.z, p.y, p.x)));
        around.extend(plate(-2.0).into_iter().map(|p| Point3::new(p.z, p.y, p.x)));
        assert!(FreeSpace::new(&around, Point3::origin()).is_none());
        assert!(FreeSpace::new(&plate(2.0)[..5], Point3::origin()).is_none());
    }
}
