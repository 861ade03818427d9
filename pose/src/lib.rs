//! diffuse-pose: object pose from point clouds by diffusion on SE(3).
//!
//! - Geometry: [`so3`] and [`se3`] exponential/logarithm maps and Jacobians (twist order `[ω, v]`), and the
//!   isotropic Gaussian on SO(3) ([`igso3`]).
//! - Point clouds: [`cloud`] (downsampling, normals, outliers, normalisation), [`kdtree`], [`ply`] files,
//!   [`mesh`] surface sampling and a virtual depth camera, the shipped objects in [`shapes`].
//! - Registration: robust [`icp`], and [`registration`] — SE(3) diffusion with a [`registration::Surrogate`]
//!   denoiser on a cosine DDPM [`schedule`], many hypotheses in parallel, the best refined.
//! - Evaluation: [`metrics`] (symmetry-aware rotation error, ADD, ADD-S) and the synthetic [`bench`].

pub mod bench;
pub mod cloud;
pub mod error;
pub mod icp;
pub mod igso3;
pub mod kdtree;
pub mod mesh;
pub mod metrics;
pub mod ply;
pub mod registration;
pub mod schedule;
pub mod se3;
pub mod shapes;
pub mod so3;
pub mod visibility;

pub use cloud::PointCloud;
pub use error::{Error, Result};
/// The linear-algebra crate of the public types (poses, points), re-exported.
pub use nalgebra;
pub use registration::{Estimate, EstimateConfig, IcpSurrogate, Surrogate, estimate_pose};
pub use se3::Pose;
