//! diffuse-pose: object pose from point clouds by diffusion on SE(3).
//!
//! - Geometry: [`so3`] and [`se3`] exponential/logarithm maps and Jacobians (twist order `[ω, v]`), and the
//!   isotropic Gaussian on SO(3) ([`igso3`]).
//! - Point clouds: [`cloud`] (downsampling, normals, outliers, normalisation), [`kdtree`], [`ply`] files,
//!   [`mesh`] surface sampling and a virtual depth camera, the shipped objects in [`shapes`].
//! - Registration: robust [`icp`], and [`registration`] — SE(3) diffusion with a [`registration::Surrogate`]
//!   denoiser on a cosine DDPM [`schedule`], many hypotheses in parallel, the best refined.
//! - Evaluation: [`metrics`] (symmetry-aware rotation error, ADD, ADD-S) and the synthetic [`bench`].
//!
//! The main entry point is [`registration::estimate_pose`]: an object model and a scan in, the object → scene
//! pose out. Here the scan is the object itself, turned by 120° and moved:
//!
//! ```
//! use diffuse_pose::nalgebra::{Point3, Rotation3, Vector3};
//! use diffuse_pose::registration::{EstimateConfig, IcpSurrogate, estimate_pose};
//! use diffuse_pose::{PointCloud, se3};
//!
//! // An L-shaped object from a robot's own list of points (metres).
//! let mut points: Vec<[f64; 3]> = Vec::new();
//! for i in 0..20 {
//!     for j in 0..20 {
//!         let (u, v) = (i as f64 / 19.0, j as f64 / 19.0);
//!         points.push([0.2 * u, 0.1 * v, 0.0]); // floor plate
//!         points.push([0.0, 0.1 * v, 0.05 * u]); // short wall
//!         points.push([0.2 * u, 0.0, 0.05 * v]); // long wall
//!     }
//! }
//! let object = PointCloud::new(points.iter().map(|p| Point3::new(p[0], p[1], p[2])).collect());
//! let truth = se3::pose(Rotation3::from_axis_angle(&Vector3::z_axis(), 2.1), Vector3::new(0.5, -0.2, 1.0));
//! let scene = object.transformed(&truth);
//!
//! let est = estimate_pose(&object, &scene, &EstimateConfig::default(), &IcpSurrogate::default())?;
//! let angle = (est.pose.rotation.inverse() * truth.rotation).angle();
//! let shift = (est.pose.translation.vector - truth.translation.vector).norm();
//! assert!(angle < 0.05 && shift < 0.005, "{angle} rad, {shift} m");
//! # Ok::<(), diffuse_pose::Error>(())
//! ```

pub mod bench;
pub mod category;
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
