//! The built-in model: a native NCSN++-family network trained by `diffuse audio train` on the offline corpus of
//! scripts/make-speech-corpus.py plus the noise of scripts/make-opensfx-noise.py and make-random-noise.py (its
//! sidecar, audio/models/default/sgmse-s.json, says how). It is compiled into the library, so
//! `diffuse audio enhance noisy.wav` works without any download.

use std::path::Path;

use tch::Device;

use crate::config::ModelConfig;
use crate::{Result, ScoreModel};

/// The weights (safetensors, float32).
pub const WEIGHTS: &[u8] = include_bytes!("../models/default/sgmse-s.safetensors");
/// The sidecar.
pub const SIDECAR: &str = include_str!("../models/default/sgmse-s.json");
/// How the built-in model is named in messages and by `--model`.
pub const NAME: &str = "builtin:sgmse-s";

/// The built-in model's sidecar.
pub fn config() -> Result<ModelConfig> {
    ModelConfig::parse(SIDECAR, Path::new(NAME))
}

/// Loads the built-in model onto `device`.
pub fn load(device: Device) -> Result<ScoreModel> {
    ScoreModel::native_from_bytes(WEIGHTS, config()?, Path::new(NAME), device)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_built_in_model_loads_and_is_small() {
        assert!(super::WEIGHTS.len() <= 25 * 1024 * 1024);
        let m = super::load(tch::Device::Cpu).unwrap();
        assert!(m.config().network.is_some());
        assert_eq!(m.config().sample_rate, 16000);
    }
}
