//! diffuse-core: the shared numerical heart of diffuse.
//!
//! Every continuous method in diffuse corrupts data along an affine Gaussian path
//! `x_t = α(t)·x0 + γ(t)·μ + σ(t)·ε` (μ an optional anchor). Solvers and parameterization conversions are
//! written once here, on the anchor-free variable `x̃ = x − γ·μ`; domain crates add a path and a network.
//! This crate also holds device selection and seeded per-sample noise used by every crate.
//!
//! The main entry point is [`solvers::sample`]: a solver, a path, a [`Denoiser`] and a start. Here the model
//! is the exact denoiser of a two-component Gaussian mixture, and ten model evaluations of DPM-Solver++(2M)
//! bring noise to data:
//!
//! ```
//! use diffuse_core::exact::GaussianMixture;
//! use diffuse_core::solvers::{Budget, NoNoise, SolverOptions, build_solver, sample};
//! use diffuse_core::{Conditioning, End, GridSpec, PathSpec, SampleSeeds, Spacing};
//!
//! let path = PathSpec::default_of("edm")?.build()?;
//! let means = vec![vec![2.0, 0.0], vec![-2.0, 0.0]];
//! let model = GaussianMixture::new(vec![0.5, 0.5], means, vec![0.1, 0.1], path.clone())?;
//! let start = path.point(path.t_range().1);
//! let x_t = model.sample_marginal(&start, &SampleSeeds::new(0, 0, 64), None)?; // 64 draws of pure noise
//! let solver = build_solver("dpm++2m", &SolverOptions::default())?;
//! let grid = GridSpec::new(Spacing::Karras { rho: 7.0 }, End::Zero);
//! let cond = Conditioning::none();
//! let out = sample(solver.as_ref(), path.as_ref(), &model, &cond, &x_t, &grid, Budget::Nfe(10), &mut NoNoise, &mut ())?;
//! assert_eq!(out.nfe, 10);
//! // Every sample lands next to one of the two means (|x₀| ≈ 2).
//! let first = f64::try_from(out.x.abs().select(1, 0).min())?;
//! assert!(first > 1.5, "{first}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod adjoint;
pub mod batch;
pub mod bench;
pub mod denoiser;
pub mod device;
pub mod diagnostics;
pub mod error;
pub mod exact;
pub mod io;
pub mod likelihood;
pub mod limits;
pub mod mcmc;
pub mod models;
pub mod nn;
pub mod obc;
pub mod optim;
pub mod param;
pub mod path;
pub mod search;
pub mod seed;
pub mod solvers;
pub mod spacing;
pub mod threads;
pub mod weights;

pub use denoiser::{Conditioning, Denoiser};
pub use device::{DeviceSpec, RuntimeReport};
pub use error::{Error, Result};
pub use param::{Parameterization, Prediction};
pub use path::{NoisePath, PathSpec, Point};
pub use seed::SampleSeeds;
pub use spacing::{End, GridSpec, Spacing};
