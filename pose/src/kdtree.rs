//! Nearest-neighbour queries over a fixed set of 3-D points (a thin wrapper over kiddo's immutable k-d tree).
//!
//! The tree is built once per cloud and shared read-only by every ICP iteration and every hypothesis.

use std::num::NonZeroUsize;

use kiddo::{ImmutableKdTree, SquaredEuclidean};
use nalgebra::Point3;

use crate::error::{Error, Result};

/// A k-d tree over points; queries return indices into the slice it was built from.
pub struct KdTree {
    tree: ImmutableKdTree<f64, 3>,
    len: usize,
}

impl std::fmt::Debug for KdTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdTree").field("len", &self.len).finish()
    }
}

/// One neighbour: its index in the tree's points and its squared distance to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// Index into the points the tree was built from.
    pub index: usize,
    /// Squared Euclidean distance to the query point.
    pub dist2: f64,
}

impl KdTree {
    /// Builds the tree over `points` (at least one, all finite).
    pub fn new(points: &[Point3<f64>]) -> Result<Self> {
        if points.is_empty() {
            return Err(Error::EmptyCloud { what: "k-d tree input".into() });
        }
        if points.len() > u32::MAX as usize {
            return Err(Error::invalid("k-d tree input", format!("{} points exceed u32 indices", points.len())));
        }
        let coords: Vec<[f64; 3]> = points.iter().map(|p| [p.x, p.y, p.z]).collect();
        let tree = ImmutableKdTree::new_from_slice(&coords)
            .map_err(|e| Error::Numerical { op: "k-d tree construction", reason: format!("{e:?}") })?;
        Ok(KdTree { tree, len: points.len() })
    }

    /// Number of points in the tree.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a tree holds at least one point.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The nearest point to `q`.
    pub fn nearest(&self, q: &Point3<f64>) -> Neighbour {
        let r = self.tree.query(&[q.x, q.y, q.z]).nearest_one::<SquaredEuclidean<f64>>().execute();
        Neighbour { index: r.item as usize, dist2: r.distance }
    }

    /// The median distance from a point of `points` (the cloud the tree was built from) to its nearest other
    /// point, over at most about 500 of them: the cloud's typical sample gap (0 for a single point).
    pub fn median_gap(&self, points: &[Point3<f64>]) -> f64 {
        let stride = (points.len() / 500).max(1);
        let mut gaps: Vec<f64> =
            points.iter().step_by(stride).filter_map(|p| self.knn(p, 2).get(1).map(|n| n.dist2.sqrt())).collect();
        gaps.sort_by(f64::total_cmp);
        gaps.get(gaps.len() / 2).copied().unwrap_or(0.0)
    }

    /// The `k` nearest points to `q`, nearest first (fewer if the tree is smaller).
    pub fn knn(&self, q: &Point3<f64>, k: usize) -> Vec<Neighbour> {
        let Some(k) = NonZeroUsize::new(k.min(self.len)) else {
            return Vec::new();
        };
        self.tree
            .query(&[q.x, q.y, q.z])
            .nearest_n::<SquaredEuclidean<f64>>(k)
            .execute()
            .into_iter()
            .map(|r| Neighbour { index: r.item as usize, dist2: r.distance })
            .collect()
    }

    /// All points within distance `radius` of `q`, nearest first.
    pub fn within(&self, q: &Point3<f64>, radius: f64) -> Vec<Neighbour> {
        self.tree
            .query(&[q.x, q.y, q.z])
            .within::<SquaredEuclidean<f64>>(radius * radius)
            .execute()
            .into_iter()
            .map(|r| Neighbour { index: r.item as usize, dist2: r.distance })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn brute_knn(points: &[Point3<f64>], q: &Point3<f64>, k: usize) -> Vec<(usize, f64)> {
        let mut d: Vec<(usize, f64)> = points.iter().enumerate().map(|(i, p)| (i, (p - q).norm_squared())).collect();
        d.sort_by(|a, b| a.1.total_cmp(&b.1));
        d.truncate(k);
        d
    }

    #[test]
    fn queries_match_brute_force() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let points: Vec<Point3<f64>> =
            (0..1500).map(|_| Point3::new(rng.random(), rng.random::<f64>() * 2.0, rng.random())).collect();
        let tree = KdTree::new(&points).unwrap();
        for _ in 0..200 {
            let q = Point3::new(rng.random::<f64>() * 1.4 - 0.2, rng.random::<f64>() * 2.0, rng.random());
            let brute = brute_knn(&points, &q, 8);
            let nn = tree.nearest(&q);
            assert_eq!(nn.dist2, brute[0].1);
            let knn = tree.knn(&q, 8);
            let got: Vec<f64> = knn.iter().map(|n| n.dist2).collect();
            let want: Vec<f64> = brute.iter().map(|b| b.1).collect();
            assert_eq!(got, want);
            for n in &knn {
                assert_eq!((points[n.index] - q).norm_squared(), n.dist2);
            }
            let r = 0.1;
            let mut within: Vec<usize> = tree.within(&q, r).iter().map(|n| n.index).collect();
            within.sort();
            let mut want: Vec<usize> =
                points.iter().enumerate().filter(|(_, p)| (*p - q).norm() <= r).map(|(i, _)| i).collect();
            want.sort();
            assert_eq!(within, want);
        }
    }

    #[test]
    fn many_duplicate_points_and_tiny_trees_work() {
        let mut points = vec![Point3::new(1.0, 2.0, 3.0); 500];
        points.push(Point3::new(0.0, 0.0, 0.0));
        let tree = KdTree::new(&points).unwrap();
        assert_eq!(tree.nearest(&Point3::new(0.1, 0.0, 0.0)).index, 500);
        assert_eq!(tree.knn(&Point3::origin(), 3).len(), 3);
        let one = KdTree::new(&[Point3::new(1.0, 1.0, 1.0)]).unwrap();
        assert_eq!(one.knn(&Point3::origin(), 5).len(), 1);
        assert!(KdTree::new(&[]).is_err());
    }
}
