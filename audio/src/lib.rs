//! diffuse-audio: SGMSE+ score-based speech enhancement on complex STFT spectrograms.
//!
//! Built on diffuse-core; see docs/ARCHITECTURE.md.
