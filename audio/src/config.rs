//! The JSON sidecar that travels with every SGMSE TorchScript model (`model.pt` → `model.json`): everything
//! needed to turn a waveform into the network's input and its output back into audio. See docs/models.md.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::stft::Window;
use crate::transform::{PadMode, SpecTransform};
use crate::{Error, Result};

/// The value of the sidecar's `format` field.
pub const FORMAT: &str = "diffuse-sgmse";
/// The sidecar version this build reads.
pub const VERSION: u32 = 1;
/// Largest frame-count multiple a sidecar may ask the input to be padded to (NCSN++ needs 64).
pub const MAX_PAD_MULTIPLE: usize = 4096;

/// STFT settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StftConfig {
    /// FFT length (even); F = n_fft/2 + 1 bins.
    pub n_fft: usize,
    /// Hop between frames in samples.
    pub hop: usize,
    /// Analysis/synthesis window.
    pub window: Window,
}

/// Frame padding before the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PadConfig {
    /// The frame count is padded to a multiple of this (64 for NCSN++).
    pub multiple: usize,
    /// How the padded frames are filled.
    pub mode: PadMode,
}

/// The stochastic process the model was trained on, with its parameters (names as in sgmse).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum SdeConfig {
    /// Ornstein–Uhlenbeck variance-exploding SDE: `dx = θ(y − x)dt + σmin(σmax/σmin)^t·√(2 ln(σmax/σmin)) dw`.
    Ouve {
        /// Stiffness θ.
        theta: f64,
        /// σmin.
        sigma_min: f64,
        /// σmax.
        sigma_max: f64,
    },
    /// Schrödinger bridge with variance-exploding diffusion `g(t) = √c·k^t`.
    Sbve {
        /// k.
        k: f64,
        /// c.
        c: f64,
        /// Small constant of the reference formulas.
        #[serde(default = "default_sb_eps")]
        eps: f64,
    },
}

fn default_sb_eps() -> f64 {
    1e-8
}

/// What the network's output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// The score ∇ log p(x_t | y) in the reference's complex convention (see docs/models.md).
    Score,
    /// An estimate of the clean spectrogram x0 (Schrödinger-bridge models).
    DataPrediction,
}

/// The network's output and its sign.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OutputConfig {
    /// Score or data prediction.
    pub kind: OutputKind,
    /// The quantity named by `kind` is `sign × output` (+1 for modules exported by tools/export_sgmse.py; −1 for a
    /// bare sgmse `ncsnpp` backbone, whose output is the negative score).
    #[serde(default = "one")]
    pub sign: f64,
}

fn one() -> f64 {
    1.0
}

/// The reference's sampler settings for this model (defaults of `diffuse audio enhance`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerDefaults {
    /// Sampler name (`pc`, `ode`, `sb-ode`, ...).
    pub name: String,
    /// Number of steps N.
    pub steps: usize,
    /// Corrector signal-to-noise ratio (PC sampler).
    #[serde(default)]
    pub snr: f64,
    /// Corrector steps per step (PC sampler).
    #[serde(default)]
    pub corrector_steps: usize,
    /// Smallest time the reverse process runs to.
    pub t_eps: f64,
}

/// Everything the sidecar says about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Always [`FORMAT`].
    pub format: String,
    /// Sidecar version ([`VERSION`]).
    pub version: u32,
    /// Sample rate the model works at.
    pub sample_rate: u32,
    /// STFT settings.
    pub stft: StftConfig,
    /// Spectrogram transform.
    pub transform: SpecTransform,
    /// Frame padding.
    pub pad: PadConfig,
    /// The SDE and its parameters.
    pub sde: SdeConfig,
    /// What the output means.
    pub output: OutputConfig,
    /// Default sampler settings.
    pub sampler: SamplerDefaults,
    /// The architecture of a native network (models stored as `.safetensors`); absent for TorchScript modules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::net::NetConfig>,
    /// Free-form provenance (checkpoint, backbone, exporter); not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<serde_json::Value>,
}

impl ModelConfig {
    /// The published SGMSE+ 16 kHz setting (VoiceBank-DEMAND / WSJ0-CHiME3 checkpoints, backbone `ncsnpp`).
    pub fn sgmse_16k() -> Self {
        ModelConfig {
            format: FORMAT.into(),
            version: VERSION,
            sample_rate: 16000,
            stft: StftConfig { n_fft: 510, hop: 128, window: Window::Hann },
            transform: SpecTransform::SGMSE_16K,
            pad: PadConfig { multiple: 64, mode: PadMode::Zero },
            sde: SdeConfig::Ouve { theta: 1.5, sigma_min: 0.05, sigma_max: 0.5 },
            output: OutputConfig { kind: OutputKind::Score, sign: 1.0 },
            sampler: SamplerDefaults { name: "pc".into(), steps: 30, snr: 0.5, corrector_steps: 1, t_eps: 0.03 },
            network: None,
            source: None,
        }
    }

    /// Frequency bins F = n_fft/2 + 1.
    pub fn bins(&self) -> usize {
        self.stft.n_fft / 2 + 1
    }

    /// Checks every value; `path` names the sidecar in the error.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| Err(Error::model(path, reason));
        if self.format != FORMAT {
            return bad(format!("format is '{}', expected '{FORMAT}'", self.format));
        }
        if self.version != VERSION {
            return bad(format!(
                "sidecar version {} is not supported (this build reads version {VERSION})",
                self.version
            ));
        }
        if self.sample_rate == 0 {
            return bad("sample_rate is 0".into());
        }
        crate::wav::check_sample_rate(self.sample_rate).map_err(|why| Error::model(path, why.to_string()))?;
        crate::stft::Stft::new(self.stft.n_fft, self.stft.hop, self.stft.window)
            .map_err(|e| Error::model(path, format!("stft: {e}")))?;
        self.transform.validate().map_err(|e| Error::model(path, e.to_string()))?;
        if self.pad.multiple == 0 {
            return bad("pad.multiple is 0".into());
        }
        if self.pad.multiple > MAX_PAD_MULTIPLE {
            return bad(format!("pad.multiple {} is over the limit of {MAX_PAD_MULTIPLE}", self.pad.multiple));
        }
        let pos = |v: f64| v.is_finite() && v > 0.0;
        match self.sde {
            SdeConfig::Ouve { theta, sigma_min, sigma_max } => {
                if !(pos(theta) && pos(sigma_min) && pos(sigma_max) && sigma_min < sigma_max) {
                    return bad(format!(
                        "sde ouve: need θ > 0 and 0 < σmin < σmax, got θ {theta}, σmin {sigma_min}, σmax {sigma_max}"
                    ));
                }
            }
            SdeConfig::Sbve { k, c, eps } => {
                if !(pos(k) && k != 1.0 && pos(c) && eps.is_finite() && eps >= 0.0) {
                    return bad(format!("sde sbve: need k > 0, k ≠ 1, c > 0, eps ≥ 0; got k {k}, c {c}, eps {eps}"));
                }
            }
        }
        if let Some(net) = &self.network {
            net.validate().map_err(|e| Error::model(path, e.to_string()))?;
            if !self.pad.multiple.is_multiple_of(net.frame_multiple()) {
                return bad(format!(
                    "pad.multiple {} is not a multiple of {}, which the network's {} levels need",
                    self.pad.multiple,
                    net.frame_multiple(),
                    net.channels.len()
                ));
            }
            if !matches!(self.sde, SdeConfig::Ouve { .. }) {
                return bad("native networks run on the OUVE path (sde ouve)".into());
            }
            match (self.output.kind, net.sigma_data) {
                (OutputKind::Score, Some(_)) => {
                    return bad("network.sigma_data is for data-prediction networks; this one outputs a score".into());
                }
                (OutputKind::DataPrediction, None) => {
                    return bad(
                        "a native data-prediction network needs network.sigma_data (its preconditioning)".into()
                    );
                }
                _ => {}
            }
            if self.output.sign != 1.0 {
                return bad("native networks have output.sign 1".into());
            }
        }
        if !(self.output.sign == 1.0 || self.output.sign == -1.0) {
            return bad(format!("output.sign must be 1 or -1, got {}", self.output.sign));
        }
        if self.sampler.steps == 0 || !(self.sampler.t_eps > 0.0 && self.sampler.t_eps < 1.0) {
            return bad(format!(
                "sampler: need steps ≥ 1 and 0 < t_eps < 1, got {} and {}",
                self.sampler.steps, self.sampler.t_eps
            ));
        }
        Ok(())
    }

    /// Parses and validates sidecar JSON text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let config: ModelConfig =
            serde_json::from_str(text).map_err(|e| Error::model(path, format!("invalid sidecar JSON: {e}")))?;
        config.validate(path)?;
        Ok(config)
    }

    /// Reads and validates a sidecar file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::model(path, "the JSON sidecar is missing (it must sit beside the module, same name, .json)")
            }
            _ => Error::io(path, e),
        })?;
        Self::parse(&text, path)
    }

    /// Writes the sidecar as pretty JSON (atomically).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::invalid("sidecar", e.to_string()))?;
        crate::weights::write_file(path, text.as_bytes())
    }

    /// The fields that must agree between a sidecar file and the copy embedded in the module.
    pub(crate) fn contract_differences(&self, other: &ModelConfig) -> Vec<&'static str> {
        let mut d = Vec::new();
        if self.sample_rate != other.sample_rate {
            d.push("sample_rate");
        }
        if self.stft != other.stft {
            d.push("stft");
        }
        if self.transform != other.transform {
            d.push("transform");
        }
        if self.pad != other.pad {
            d.push("pad");
        }
        if self.sde != other.sde {
            d.push("sde");
        }
        if self.output != other.output {
            d.push("output");
        }
        if self.network != other.network {
            d.push("network");
        }
        d
    }
}

/// The sidecar path of a module: same folder and stem, extension `.json`.
pub fn sidecar_path(module: &Path) -> PathBuf {
    module.with_extension("json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_setting_round_trips_through_json() {
        let c = ModelConfig::sgmse_16k();
        c.validate(Path::new("x.json")).unwrap();
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains(r#""sde":{"name":"ouve","theta":1.5"#), "{text}");
        assert!(text.contains(r#""transform":{"kind":"exponent","alpha":0.5,"beta":0.15}"#), "{text}");
        let back: ModelConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(c.bins(), 256);
    }

    #[test]
    fn invalid_values_name_the_sidecar() {
        let mut c = ModelConfig::sgmse_16k();
        c.sde = SdeConfig::Ouve { theta: 1.5, sigma_min: 0.5, sigma_max: 0.05 };
        let err = c.validate(Path::new("dir/m.json")).unwrap_err().to_string();
        assert!(err.contains("dir/m.json") && err.contains("σmin < σmax"), "{err}");
        let mut c = ModelConfig::sgmse_16k();
        c.stft.n_fft = 511;
        assert!(c.validate(Path::new("m.json")).unwrap_err().to_string().contains("n_fft"));
        // Issue 23: n_fft = 10^9 drove enhancement to 13.7 GB; it is refused before any window is built.
        let mut c = ModelConfig::sgmse_16k();
        c.stft.n_fft = 1_000_000_000;
        let err = c.validate(Path::new("m.json")).unwrap_err().to_string();
        assert!(err.contains("n_fft") && err.contains("limit"), "{err}");
        let mut c = ModelConfig::sgmse_16k();
        c.sample_rate = 1;
        assert!(c.validate(Path::new("m.json")).unwrap_err().to_string().contains("1 Hz"));
        let mut c = ModelConfig::sgmse_16k();
        c.version = 7;
        assert!(c.validate(Path::new("m.json")).unwrap_err().to_string().contains("version 7"));
    }

    #[test]
    fn reading_reports_missing_and_malformed_sidecars() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        assert!(ModelConfig::read(&p).unwrap_err().to_string().contains("sidecar is missing"));
        std::fs::write(&p, "{\"format\": \"diffuse-sgmse\"").unwrap();
        let err = ModelConfig::read(&p).unwrap_err().to_string();
        assert!(err.contains("m.json") && err.contains("invalid sidecar JSON"), "{err}");
        ModelConfig::sgmse_16k().write(&p).unwrap();
        assert_eq!(ModelConfig::read(&p).unwrap(), ModelConfig::sgmse_16k());
        assert_eq!(sidecar_path(Path::new("a/b.pt")), Path::new("a/b.json"));
    }
}
