//! diffuse-discrete: masked (absorbing) and uniform discrete diffusion for token sequences.
//!
//! - [`schedule`]: α(t), α′(t) and ELBO weights (log-linear, cosine, linear);
//! - [`process`]: forward kernels and exact posterior bridges q(x_s | x_t, x0) for hard and soft x0;
//! - [`param`]: clean-data, leave-one-out and concrete-score parameterizations and their exact conversions;
//! - [`denoiser`]: the [`Denoiser`] contract (tokens `[B, L]` → logits `[B, L, W]`);
//! - [`loss`]: MDLM ELBO, uniform ELBO (plug-in and leave-one-out), score entropy, CDLM consistency objective;
//! - [`sampler`]: ancestral (with caching), τ-leaping, Tweedie, predictor–corrector, ReMDM, AUDM, consistency,
//!   and [`sampler::exact_law`], the exact output distribution of any of them on small problems;
//! - [`categorical`]: f64 categorical sampling, temperature, top-k, top-p;
//! - [`exact`]: known target distributions and their exact denoisers by enumeration;
//! - [`check`]: the sampler check behind `diffuse text check`.
//!
//! Sampling math runs in f64 on the CPU whatever the model's dtype; models stay in tch. See docs/discrete.md.
//!
//! The main entry point is [`sampler::sample`]: a [`Denoiser`], a schedule and a sampler configuration draw
//! token sequences, one per seed. Here the denoiser is exact for a small Markov chain, so the masked ancestral
//! sampler draws from it almost exactly:
//!
//! ```
//! use std::sync::Arc;
//! use diffuse_core::SampleSeeds;
//! use diffuse_discrete::exact::{ExactDenoiser, Target};
//! use diffuse_discrete::schedule::LogLinear;
//! use diffuse_discrete::{Output, Process, SamplerConfig, SamplerKind, sampler};
//!
//! // Two tokens; a chain of length 4 that mostly repeats its last token.
//! let target = Arc::new(Target::markov(2, 4, &[0.5, 0.5], &[vec![0.9, 0.1], vec![0.1, 0.9]])?);
//! let schedule = Arc::new(LogLinear::default());
//! let process = Process::Masked { vocab: 2 };
//! let den = ExactDenoiser::new(target.clone(), process, Output::Clean, schedule.clone())?;
//! let cfg = SamplerConfig::new(SamplerKind::Ancestral, 32);
//! let out = sampler::sample(&den, schedule.as_ref(), &cfg, 4, &SampleSeeds::new(0, 0, 2000), tch::Device::Cpu)?;
//! // Most sequences are constant, as the chain prefers: p(0000) + p(1111) = 0.729.
//! let constant = out.tokens.chunks(4).filter(|s| s.iter().all(|&t| t == s[0])).count();
//! assert!((constant as f64 / 2000.0 - 0.729).abs() < 0.05, "{constant}");
//! # Ok::<(), diffuse_discrete::Error>(())
//! ```

pub mod categorical;
pub mod check;
#[cfg(feature = "default-model")]
pub mod default_model;
pub mod denoiser;
pub mod error;
pub mod exact;
pub mod loss;
pub mod param;
pub mod process;
pub mod sampler;
pub mod schedule;
pub mod text;

pub use denoiser::Denoiser;
pub use error::{Error, Result};
pub use param::Output;
pub use process::{Process, ProcessKind};
pub use sampler::{SamplerConfig, SamplerKind};
pub use schedule::Schedule;
