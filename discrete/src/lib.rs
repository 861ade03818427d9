//! diffuse-discrete: masked (absorbing) and uniform discrete diffusion for token sequences.
//!
//! - [`schedule`]: α(t), α′(t) and ELBO weights (log-linear, cosine, linear);
//! - [`process`]: forward kernels and exact posterior bridges q(x_s | x_t, x0) for hard and soft x0;
//! - [`param`]: clean-data, leave-one-out and concrete-score parameterizations and their exact conversions;
//! - [`denoiser`]: the [`Denoiser`] contract (tokens `[B, L]` → logits `[B, L, W]`);
//! - [`loss`]: MDLM ELBO, uniform ELBO (plug-in and leave-one-out), score entropy, CDLM consistency objective;
//! - [`sampler`]: ancestral (with caching), τ-leaping, Tweedie, predictor–corrector, ReMDM, AUDM, consistency,
//!   and [`sampler::exact_law`], the exact output distribution of any of them on small problems;
//! - [`categorical`]: f64 exponential-race sampling, temperature, top-k, top-p;
//! - [`exact`]: known target distributions and their exact denoisers by enumeration;
//! - [`check`]: the sampler check behind `diffuse text check`.
//!
//! Sampling math runs in f64 on the CPU whatever the model's dtype; models stay in tch. See docs/discrete.md.

pub mod categorical;
pub mod check;
pub mod denoiser;
pub mod error;
pub mod exact;
pub mod loss;
pub mod param;
pub mod process;
pub mod sampler;
pub mod schedule;

pub use denoiser::Denoiser;
pub use error::{Error, Result};
pub use param::Output;
pub use process::{Process, ProcessKind};
pub use sampler::{SamplerConfig, SamplerKind};
pub use schedule::Schedule;
