//! The registration problem: both clouds validated, normalised (object diameter 1, centred), downsampled and
//! cleaned, with the object's k-d tree, the sensor's view and the fit score every stage uses.

use nalgebra::{Point3, Rotation3, Vector3};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::{EstimateConfig, MIN_POINTS, PROBES, SURFACE_ANGLE, ScaledPose, near_symmetries};
use crate::cloud::{Normalization, PointCloud};
use crate::error::{Error, Result};
use crate::icp::{self, Target};
use crate::se3::{self, Pose};
use crate::visibility::FreeSpace;

/// The registration problem as the surrogate sees it, in normalised coordinates (object diameter 1, both
/// clouds centred on their centroids).
#[derive(Debug)]
pub struct Problem {
    /// The object model with normals and its k-d tree.
    pub object: Target,
    /// The coarse scene points used by the reverse process.
    pub scene: Vec<Point3<f64>>,
    /// The finer scene points used for refinement and scoring.
    pub scene_fine: Vec<Point3<f64>>,
    /// The few scene points used by the initial rotation scan.
    pub scene_scan: Vec<Point3<f64>>,
    /// The sensor position when known (normalised scene frame).
    pub viewpoint: Option<Point3<f64>>,
    /// Free space seen by the sensor, when the viewpoint is known.
    pub free_space: Option<FreeSpace>,
    /// A few hundred object points (normalised object frame) probed against the free space.
    pub object_probe: Vec<Point3<f64>>,
    /// Their outward normals, when the object's normals are oriented (given with the model).
    pub object_probe_normals: Option<Vec<Vector3<f64>>>,
    /// Distance `τ` of the fit score.
    pub score_distance: f64,
    /// Weight of the free-space violations in the score.
    pub free_space_weight: f64,
    /// Weight of the missing surface (facing the sensor, outside the scan's footprint) in the score.
    pub missing_weight: f64,
    /// Rigid motions that map the object nearly onto itself (normalised object frame; see [`near_symmetries`]),
    /// tried on the final pose (see [`resolve_ambiguities`]).
    pub near_symmetries: Vec<Pose>,
}

impl Problem {
    /// The fit score of `pose` (object → scene) on `points`: the mean point-to-plane truncated quadratic
    /// `max(0, 1 − r²/τ²)` (against model surface facing the sensor, when the viewpoint is known) minus the
    /// [`Problem::view_penalty`] of the probed object points. Higher is better.
    pub fn score(&self, points: &[Point3<f64>], pose: &Pose) -> f64 {
        let tau = self.score_distance;
        let inv = pose.inverse();
        let view = self.viewpoint.map(|v| inv * v);
        let fit = icp::plane_score(points, &self.object, &inv, tau, 3.0 * tau, view.as_ref());
        fit - self.view_penalty(pose, self.object_probe.len())
    }

    /// What the sensor's view says against `pose`, from the first `probes` probed object points (0 without a
    /// viewpoint): `free_space_weight` × the fraction of them the sensor saw through, plus `missing_weight` × the
    /// fraction of those facing it that project outside the scan's footprint (see [`FreeSpace::check`]).
    pub fn view_penalty(&self, pose: &Pose, probes: usize) -> f64 {
        let Some(fs) = &self.free_space else {
            return 0.0;
        };
        let n = probes.min(self.object_probe.len());
        let points: Vec<Point3<f64>> = self.object_probe[..n].iter().map(|p| pose * p).collect();
        let normals: Option<Vec<Vector3<f64>>> = match &self.object_probe_normals {
            Some(ns) if self.missing_weight > 0.0 => Some(ns[..n].iter().map(|m| pose.rotation * m).collect()),
            _ => None,
        };
        let c = fs.check(&points, normals.as_deref(), self.score_distance);
        self.free_space_weight * c.in_front_fraction() + self.missing_weight * c.missing_fraction()
    }

    /// The initial pose of a hypothesis with rotation `r`: the object's centroid on the scene's, or, when the
    /// viewpoint is known and the object's normals are oriented, the centroid the scan of the object would have
    /// on the scene's: a depth sensor samples a surface element `dA` facing it with density ∝ `n·v̂ dA`, so the
    /// object's points are weighted by `max(0, n·v̂)` (self-occlusion ignored).
    pub fn initial_pose(&self, r: &Rotation3<f64>) -> Pose {
        let offset = match self.viewpoint {
            Some(v) if self.object.oriented => {
                // Direction from the object towards the sensor, in the object frame.
                let to_view = (r.inverse() * v.coords).normalize();
                let normals = self.object.cloud.normals.as_deref().unwrap_or(&[]);
                // Every few points suffice for a centroid (this runs once per scanned rotation).
                let stride = (self.object.cloud.len() / 1000).max(1);
                let (sum, w) = self.object.cloud.points.iter().zip(normals).step_by(stride).fold(
                    (Vector3::zeros(), 0.0),
                    |(a, w), (p, n)| {
                        let c = n.dot(&to_view);
                        if c > 0.0 { (a + p.coords * c, w + c) } else { (a, w) }
                    },
                );
                if w > 0.0 { r * (sum / w) } else { Vector3::zeros() }
            }
            _ => Vector3::zeros(),
        };
        se3::pose(*r, -offset)
    }
}

/// Keeps at most `max` items, chosen at random with `seed` (order preserved), when there are more.
fn cap<T: Copy>(points: Vec<T>, max: usize, seed: u64) -> Vec<T> {
    if points.len() <= max {
        return points;
    }
    let mut idx: Vec<usize> = (0..points.len()).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    idx.truncate(max);
    idx.sort_unstable();
    idx.into_iter().map(|i| points[i]).collect()
}

/// An object whose diameter is more than this many times the scene's extent cannot be in the scan: refused.
pub const MAX_OBJECT_TO_SCENE: f64 = 20.0;
/// Above this ratio of object diameter to scene extent the result is kept but flagged: a partial view rarely
/// spans less than half of the object.
pub const WARN_OBJECT_TO_SCENE: f64 = 2.5;

/// Refuses an object far larger than the whole scene: no pose can put it inside the scan, and every scene point
/// would count as an inlier of its huge inlier distance (a 10× object reported fitness 0.98). Names the likely
/// cause (units) rather than blaming the scene.
fn check_scale(object_diameter: f64, scene_diameter: f64) -> Result<()> {
    let ratio = object_diameter / scene_diameter;
    if ratio > MAX_OBJECT_TO_SCENE {
        return Err(Error::invalid(
            "scale",
            format!(
                "the object (diameter {object_diameter:.4}) is {ratio:.0}× larger than the whole scene (extent \
                 {scene_diameter:.4}), so it cannot be in the scan: are the two in the same units (m vs mm)? Rescale \
                 one of them"
            ),
        ));
    }
    Ok(())
}

/// Warnings when object and scene sizes differ so much that their units probably differ.
fn scale_warnings(object_diameter: f64, scene_diameter: f64) -> Vec<String> {
    let ratio = scene_diameter / object_diameter;
    let mut w = Vec::new();
    if ratio > 5.0 {
        w.push(format!(
            "the scene (extent {scene_diameter:.4}) is {ratio:.1}× larger than the object (diameter {object_diameter:.4}): \
             are they in the same units? The estimator expects a scan cropped to the object"
        ));
    } else if ratio < 1.0 / WARN_OBJECT_TO_SCENE {
        w.push(format!(
            "the object (diameter {object_diameter:.4}) is {:.1}× larger than the whole scene (extent \
             {scene_diameter:.4}): are they in the same units? The fitness of such a pose means little, since every \
             scene point lies within the object's inlier distance",
            1.0 / ratio
        ));
    }
    w
}

/// Both clouds prepared for registration, and the maps between normalised and scene-unit poses.
#[derive(Debug)]
pub struct Prepared {
    /// The normalised problem the surrogate sees.
    pub problem: Problem,
    /// Object centroid (object units).
    pub object_centre: Point3<f64>,
    /// Centroid of the cleaned scene, in scene units divided by the diameter.
    pub scene_centre: Point3<f64>,
    /// All scene points in the normalised scene frame (for the reported fitness).
    pub scene_all: Vec<Point3<f64>>,
    /// Object diameter (the normalisation scale).
    pub diameter: f64,
    /// Scale warnings.
    pub warnings: Vec<String>,
}

impl Prepared {
    /// Maps a scene-unit pose to the normalised frames: `t' = (t − d·c_s + R·c_o)/d`.
    pub fn from_scene(&self, h: &Pose) -> Pose {
        let r = h.rotation;
        let t = (h.translation.vector - self.scene_centre.coords * self.diameter + r * self.object_centre.coords)
            / self.diameter;
        se3::pose(r, t)
    }

    /// Maps a normalised pose back to scene units: `p_s = R'·p_o + (d·c_s − R'·c_o + d·t')`.
    pub fn to_scene(&self, h: &Pose) -> Pose {
        let r = h.rotation;
        let t = self.scene_centre.coords * self.diameter - r * self.object_centre.coords
            + h.translation.vector * self.diameter;
        se3::pose(r, t)
    }

    /// Maps a normalised scaled pose back to scene units: `p_s = R·diag(s)·p_o + (d·c_s − R·diag(s)·c_o + d·t')`
    /// (the scale is a ratio, the same in both frames).
    pub fn to_scene_scaled(&self, h: &ScaledPose) -> Pose {
        let r = h.pose.rotation;
        let t = self.scene_centre.coords * self.diameter - r * self.object_centre.coords.component_mul(&h.scale())
            + h.pose.translation.vector * self.diameter;
        se3::pose(r, t)
    }

    /// Maps a scene-unit pose with scale `scale` to the normalised frames (the inverse of
    /// [`Prepared::to_scene_scaled`]).
    pub fn from_scene_scaled(&self, h: &Pose, scale: &Vector3<f64>) -> ScaledPose {
        let r = h.rotation;
        let t = (h.translation.vector - self.scene_centre.coords * self.diameter
            + r * self.object_centre.coords.component_mul(scale))
            / self.diameter;
        ScaledPose { pose: se3::pose(r, t), log_scale: scale.map(f64::ln) }
    }
}

/// Validates, normalises, downsamples and cleans both clouds and builds the object's k-d tree.
pub fn prepare(object: &PointCloud, scene: &PointCloud, cfg: &EstimateConfig) -> Result<Prepared> {
    cfg.check()?;
    object.validate("object", MIN_POINTS)?;
    scene.validate("scene", MIN_POINTS)?;
    let diameter = object.diameter();
    let scene_diameter = scene.diameter();
    check_scale(diameter, scene_diameter)?;
    let warnings = scale_warnings(diameter, scene_diameter);
    let object_centre = object.centroid();
    let obj_norm = Normalization { centre: object_centre, scale: 1.0 / diameter };
    // The two sides of thin walls stay apart (with oriented normals; plain averaging otherwise).
    let object_n = object.normalized(&obj_norm).voxel_downsample_surfaces(cfg.object_voxel, SURFACE_ANGLE)?;
    if object_n.len() < MIN_POINTS {
        return Err(Error::TooFewPoints {
            what: "object".into(),
            have: object_n.len(),
            need: MIN_POINTS,
            context: " after voxel downsampling".into(),
        });
    }
    let target = Target::new(object_n, 12)?;
    let scene_scaled = scene.normalized(&Normalization { centre: Point3::origin(), scale: 1.0 / diameter });
    let fine = scene_scaled.voxel_downsample(cfg.fine_voxel)?;
    let (fine, _) = fine.remove_statistical_outliers(12, 2.0)?;
    if fine.len() < MIN_POINTS {
        return Err(Error::TooFewPoints {
            what: "scene".into(),
            have: fine.len(),
            need: MIN_POINTS,
            context: " after downsampling and outlier removal".into(),
        });
    }
    let scene_centre = fine.centroid();
    let centre = |c: &PointCloud| c.points.iter().map(|p| Point3::from(p - scene_centre)).collect::<Vec<_>>();
    let coarse = centre(&fine.voxel_downsample(cfg.coarse_voxel)?);
    let scene_fine = cap(centre(&fine), cfg.fine_points, cfg.seed ^ 0xF14E);
    let viewpoint = match cfg.viewpoint {
        Some(v) if v.iter().all(|x| x.is_finite()) => Some(Point3::from(v.coords / diameter - scene_centre.coords)),
        Some(v) => return Err(Error::invalid("viewpoint", format!("{v} is not finite"))),
        None => None,
    };
    // Every scan point but the outliers: the denser the sampling of the rays, the narrower the gaps (an opening,
    // a rim seen from above) in which free space shows, and the fewer rays on sparsely sampled, grazing surface
    // that look through to the surface behind.
    let free_space = match viewpoint {
        Some(v) => FreeSpace::new(&centre(&scene_scaled.remove_statistical_outliers(12, 2.0)?.0), v),
        None => None,
    };
    // In random order, so that any prefix (the rotation scan's) is spread over the object too.
    let mut probe_idx: Vec<usize> = (0..target.cloud.len()).collect();
    probe_idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0x9B0B));
    probe_idx.truncate(PROBES);
    let object_probe: Vec<Point3<f64>> = probe_idx.iter().map(|&i| target.cloud.points[i]).collect();
    let object_probe_normals: Option<Vec<Vector3<f64>>> = match (&target.cloud.normals, target.oriented) {
        (Some(ns), true) => Some(probe_idx.iter().map(|&i| ns[i]).collect()),
        _ => None,
    };
    let scene_scan = cap(coarse.clone(), cfg.scan_points.max(MIN_POINTS), cfg.seed ^ 0x5CA2);
    let near_symmetries = if cfg.resolve_ambiguities {
        near_symmetries(&target, &object_probe, object_probe_normals.as_deref(), cfg.threads)?
    } else {
        Vec::new()
    };
    Ok(Prepared {
        problem: Problem {
            object: target,
            scene: cap(coarse, cfg.coarse_points, cfg.seed ^ 0xC0A5),
            scene_fine,
            scene_scan,
            viewpoint,
            free_space,
            object_probe,
            object_probe_normals,
            score_distance: cfg.score_distance,
            free_space_weight: cfg.free_space_weight,
            missing_weight: cfg.missing_weight,
            near_symmetries,
        },
        object_centre,
        scene_centre,
        scene_all: centre(&scene_scaled),
        diameter,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_mismatch_is_reported_with_the_larger_side() {
        assert!(scale_warnings(0.1, 100.0)[0].contains("scene"));
        assert!(scale_warnings(100.0, 0.1)[0].starts_with("the object"));
        assert!(scale_warnings(1.0, 0.8).is_empty());
        // Issue 23: an object 10× the scene is flagged, one 1000× larger is refused naming the units.
        assert!(scale_warnings(10.0, 1.0)[0].contains("larger than the whole scene"));
        assert!(check_scale(10.0, 1.0).is_ok());
        assert!(check_scale(1000.0, 1.0).unwrap_err().to_string().contains("same units"));
    }
}
