//! What an estimate returns: the pose (with its scale), its fit, the candidates and the stage timings.

use nalgebra::Vector3;

use super::Dof;
use crate::se3::Pose;

/// One refined candidate pose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Which hypothesis it came from.
    pub hypothesis: usize,
    /// Object → scene, in scene units (rigid part).
    pub pose: Pose,
    /// Its scale per object axis.
    pub scale: Vector3<f64>,
    /// The truncated-quadratic score that ranked it (higher is better).
    pub score: f64,
}

/// Wall-clock time of the stages, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// Validation, downsampling, normals, trees.
    pub prepare_ms: f64,
    /// The reverse process over all hypotheses.
    pub hypotheses_ms: f64,
    /// Refinement of the best candidates and final scoring.
    pub refine_ms: f64,
    /// Everything.
    pub total_ms: f64,
}

/// The result of [`estimate_pose`].
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// The rigid pose object → scene: `p_scene = R·diag(scale)·p_object + t` (`scale` 1 in 6 DoF).
    pub pose: Pose,
    /// The object's scale per axis of its own frame (all three equal in 7 DoF, 1 in 6 DoF).
    pub scale: Vector3<f64>,
    /// The registration mode that ran.
    pub dof: Dof,
    /// Fraction of scene points within `inlier_distance` of the posed object.
    pub fitness: f64,
    /// RMS distance of those inliers (scene units).
    pub inlier_rmse: f64,
    /// The inlier distance used (scene units).
    pub inlier_distance: f64,
    /// The object's diameter (scene units).
    pub object_diameter: f64,
    /// The refined candidates, best first.
    pub candidates: Vec<Candidate>,
    /// Problems worth telling the user about (scale mismatch, ...).
    pub warnings: Vec<String>,
    /// Time per stage.
    pub timings: Timings,
    /// Hypotheses and steps used, and the surrogate's name.
    pub hypotheses: usize,
    /// Reverse steps per hypothesis.
    pub steps: usize,
    /// The surrogate that ran.
    pub surrogate: String,
}
