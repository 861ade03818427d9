//! diffuse-audio: SGMSE+ score-based speech enhancement on complex STFT spectrograms.
//!
//! - [`wav`]: WAV reading/writing (atomic) for 8/16/24/32-bit integer and 32-bit float PCM.
//! - [`resample`]: model-rate conversion (rubato's FFT resampler).
//! - [`stft`]: `torch.stft`/`torch.istft`-compatible STFT on realfft.
//! - [`transform`]: the SGMSE+ magnitude compression, normalisation and frame padding, with inverses.
//! - [`config`] and [`model`]: the TorchScript model contract and its JSON sidecar.
//! - [`pipeline`]: the whole chain around a sampler callback, with chunking for long files.
//! - [`net`], [`weights`], [`train`]: the native NCSN++-family score network, its safetensors weights, and
//!   training with the reference's denoising score-matching loss.
//! - [`metrics`]: SI-SDR and ESTOI.
//!
//! Complex spectrograms are real tensors `[B, 2, F, T]` (real part, imaginary part). Solvers and the SDE paths
//! live in diffuse-core; see docs/audio.md and docs/models.md.

pub mod config;
pub mod default_model;
pub mod error;
pub mod eval;
pub mod metrics;
pub mod model;
pub mod net;
pub mod pipeline;
pub mod resample;
pub mod sampling;
pub mod stft;
pub mod train;
pub mod transform;
pub mod wav;
pub mod weights;

pub use config::ModelConfig;
pub use error::{Error, Result};
pub use model::ScoreModel;
pub use pipeline::{Chunking, EnhanceReport, Enhancer, Passthrough, SpectrogramSampler};
