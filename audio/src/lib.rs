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
//! - [`search`]: solver schedules searched for a model on (clean, noisy) pairs.
//!
//! Complex spectrograms are real tensors `[B, 2, F, T]` (real part, imaginary part). Solvers and the SDE paths
//! live in diffuse-core; see docs/audio.md and docs/models.md.
//!
//! The main entry point is [`Enhancer`]: a model (the built-in one, with the default `default-model` feature, or
//! any file through [`ScoreModel::load`]), a sampler and chunking; it enhances WAV files of any rate and channel
//! count:
//!
//! ```
//! use std::path::Path;
//! use diffuse_audio::wav::{self, Audio, SampleFormat};
//! use diffuse_audio::{Chunking, Enhancer, default_model, sampling::build_sampler};
//!
//! let dir = std::env::temp_dir().join(format!("diffuse-audio-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! // Half a second of a 220 Hz tone in white noise at 16 kHz.
//! let noisy: Vec<f32> = (0..8000u32)
//!     .map(|i| 0.3 * (i as f32 * 0.0864).sin() + 0.05 * (((i * 7919) % 1000) as f32 / 500.0 - 1.0))
//!     .collect();
//! let input = dir.join("noisy.wav");
//! wav::write_wav(&input, &Audio { sample_rate: 16000, channels: vec![noisy], format: SampleFormat::Int(16) }, SampleFormat::Int(16))?;
//!
//! let model = default_model::load(tch::Device::Cpu)?;
//! let sampler = build_sampler("dpm++2m", Some(4), None, model.config())?;
//! let enhancer = Enhancer::new(&model, sampler.as_ref(), Chunking::default(), 0)?;
//! let output = dir.join("enhanced.wav");
//! let report = enhancer.enhance_file(&input, &output, true, &mut || {})?;
//! assert_eq!(wav::read_wav(&output)?.len(), 8000);
//! assert!(report.nfe > 0);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
#[cfg(feature = "default-model")]
pub mod default_model;
pub mod diagnose;
pub mod ems;
pub mod error;
pub mod eval;
pub mod metrics;
pub mod model;
pub mod net;
pub mod pipeline;
pub mod resample;
pub mod sampling;
pub mod search;
pub mod stft;
pub mod train;
pub mod transform;
pub mod wav;
pub mod weights;

pub use config::ModelConfig;
pub use error::{Error, Result};
pub use model::ScoreModel;
pub use pipeline::{Chunking, EnhanceReport, Enhancer, Passthrough, SpectrogramSampler};
