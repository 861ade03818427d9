//! The built-in text model: a byte-level masked diffusion model trained by `diffuse text train` on the offline
//! English corpus of tools/make_text_corpus.py (its sidecar, discrete/models/masked.json, holds the corpus, the
//! command, the time and the machine). Compiled in (feature `default-model`, on by default), so
//! `diffuse text sample` works without a download. Weights are stored in float16 and widened on load.

use std::path::Path;

use tch::Device;

use crate::text::{TextConfig, TextModel};
use crate::{Error, Result};

/// The weights (safetensors, float16).
pub const WEIGHTS: &[u8] = include_bytes!("../models/masked.safetensors");
/// The sidecar.
pub const SIDECAR: &str = include_str!("../models/masked.json");
/// How the built-in model is named in messages.
pub const NAME: &str = "builtin:text-masked";

/// The built-in model's sidecar.
pub fn config() -> Result<TextConfig> {
    let config: TextConfig =
        serde_json::from_str(SIDECAR).map_err(|e| Error::file(NAME, format!("bad sidecar: {e}")))?;
    config.validate()?;
    Ok(config)
}

/// Loads the built-in model onto `device`.
///
/// ```
/// let model = diffuse_discrete::default_model::load(tch::Device::Cpu)?;
/// assert_eq!(model.config().kind, diffuse_discrete::text::ModelKind::Masked);
/// # Ok::<(), diffuse_discrete::Error>(())
/// ```
pub fn load(device: Device) -> Result<TextModel> {
    TextModel::from_bytes(WEIGHTS, config()?, Path::new(NAME), device)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_built_in_model_loads_is_small_and_says_how_it_was_trained() {
        assert!(super::WEIGHTS.len() <= 25 * 1024 * 1024);
        let m = super::load(tch::Device::Cpu).unwrap();
        for key in ["command", "corpus", "seconds", "machine"] {
            assert!(m.config().training.get(key).is_some(), "the sidecar's training lacks '{key}'");
        }
    }
}
