//! diffuse-core: the shared numerical heart of diffuse.
//!
//! Every continuous method in diffuse corrupts data along an affine Gaussian path
//! `x_t = α(t)·x0 + γ(t)·μ + σ(t)·ε` (μ an optional anchor). Solvers and parameterization conversions are
//! written once here, on the anchor-free variable `x̃ = x − γ·μ`; domain crates add a path and a network.
//! This crate also holds device selection and seeded per-sample noise used by every crate.

pub mod batch;
pub mod bench;
pub mod denoiser;
pub mod device;
pub mod error;
pub mod exact;
pub mod io;
pub mod likelihood;
pub mod limits;
pub mod models;
pub mod obc;
pub mod param;
pub mod path;
pub mod seed;
pub mod solvers;
pub mod spacing;

pub use denoiser::{Conditioning, Denoiser};
pub use device::{DeviceSpec, RuntimeReport};
pub use error::{Error, Result};
pub use param::{Parameterization, Prediction};
pub use path::{NoisePath, PathSpec, Point};
pub use seed::SampleSeeds;
pub use spacing::{End, GridSpec, Spacing};
