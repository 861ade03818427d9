//! The JSON sidecar that travels with every SGMSE TorchScript model (`model.pt` → `model.json`): everything
//! needed to turn a waveform into the network's input and its output back into audio. See docs/models.md.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use diffuse_core::path::{NoisePath, PathSpec};
use diffuse_core::search::Schedule;

use crate::stft::Window;
use crate::transform::{PadMode, SpecTransform};
use crate::{Error, Result};

/// The value of the sidecar's `format` field.
pub const FORMAT: &str = "diffuse-sgmse";
/// The sidecar version this build writes; it also reads version 1 (the process as `sde`, t_eps in `sampler`).
pub const VERSION: u32 = 2;
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

/// The process of a version-1 sidecar (`"sde": {"name": …}`, names as in sgmse); read and turned into a core
/// [`PathSpec`] with the sampler's `t_eps`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase", deny_unknown_fields)]
enum LegacySde {
    Ouve {
        theta: f64,
        sigma_min: f64,
        sigma_max: f64,
    },
    /// `eps` is the reference's guard against division by zero; core's bridge has closed forms and needs none.
    Sbve {
        k: f64,
        c: f64,
        #[serde(default)]
        #[allow(dead_code)]
        eps: f64,
    },
}

impl LegacySde {
    fn path(self, t_eps: f64) -> PathSpec {
        match self {
            LegacySde::Ouve { theta, sigma_min, sigma_max } => {
                PathSpec::Ouve { theta, sigma_min, sigma_max, t_eps, t_max: 1.0 }
            }
            LegacySde::Sbve { k, c, .. } => PathSpec::Sbve { k, c, t_eps },
        }
    }
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
    /// A searched solver schedule (`diffuse audio search`): the default sampler then runs its solver on its times
    /// and orders; `name` and `steps` must be the schedule's solver and interval count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// The sampler section as written in any version (version 1 kept `t_eps` here).
#[derive(Debug, Clone, Deserialize)]
struct SamplerJson {
    name: String,
    steps: usize,
    #[serde(default)]
    snr: f64,
    #[serde(default)]
    corrector_steps: usize,
    #[serde(default)]
    t_eps: Option<f64>,
    #[serde(default)]
    schedule: Option<Schedule>,
}

/// Everything the sidecar says about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SidecarJson")]
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
    /// The noise path (core's [`PathSpec`]: `ouve` or `sbve`), with the smallest time t_eps the reverse process
    /// runs to.
    pub path: PathSpec,
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

/// A sidecar as written, in any version this build reads.
#[derive(Deserialize)]
struct SidecarJson {
    format: String,
    version: u32,
    sample_rate: u32,
    stft: StftConfig,
    transform: SpecTransform,
    pad: PadConfig,
    #[serde(default)]
    path: Option<PathSpec>,
    #[serde(default)]
    sde: Option<LegacySde>,
    output: OutputConfig,
    sampler: SamplerJson,
    #[serde(default)]
    network: Option<crate::net::NetConfig>,
    #[serde(default)]
    source: Option<serde_json::Value>,
}

impl TryFrom<SidecarJson> for ModelConfig {
    type Error = String;

    /// Version 1 (`sde` plus `sampler.t_eps`) becomes the current form; the version check itself is
    /// [`ModelConfig::validate`]'s, so that its message names the file.
    fn try_from(j: SidecarJson) -> std::result::Result<Self, String> {
        let (path, version) = match (j.path, j.sde, j.sampler.t_eps) {
            (Some(path), None, None) => (path, j.version),
            (None, Some(sde), Some(t_eps)) if j.version == 1 => (sde.path(t_eps), VERSION),
            (None, Some(_), None) => return Err("`sde` needs `sampler.t_eps` (version 1 sidecars)".into()),
            (None, Some(_), Some(_)) => {
                return Err(format!("`sde` is read in version 1 sidecars; this is version {}", j.version));
            }
            (Some(_), Some(_), _) => return Err("give `path` or (version 1) `sde`, not both".into()),
            (Some(_), None, Some(_)) => return Err("`sampler.t_eps` is version 1's; give it as `path.t_eps`".into()),
            (None, None, _) => return Err("missing field `path` (the noise path, e.g. {\"kind\": \"ouve\"})".into()),
        };
        let s = j.sampler;
        Ok(ModelConfig {
            format: j.format,
            version,
            sample_rate: j.sample_rate,
            stft: j.stft,
            transform: j.transform,
            pad: j.pad,
            path,
            output: j.output,
            sampler: SamplerDefaults {
                name: s.name,
                steps: s.steps,
                snr: s.snr,
                corrector_steps: s.corrector_steps,
                schedule: s.schedule,
            },
            network: j.network,
            source: j.source,
        })
    }
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
            path: PathSpec::Ouve { theta: 1.5, sigma_min: 0.05, sigma_max: 0.5, t_eps: 0.03, t_max: 1.0 },
            output: OutputConfig { kind: OutputKind::Score, sign: 1.0 },
            sampler: SamplerDefaults { name: "pc".into(), steps: 30, snr: 0.5, corrector_steps: 1, schedule: None },
            network: None,
            source: None,
        }
    }

    /// Frequency bins F = n_fft/2 + 1.
    pub fn bins(&self) -> usize {
        self.stft.n_fft / 2 + 1
    }

    /// The model's noise path, built by core.
    pub fn noise_path(&self) -> Result<std::sync::Arc<dyn NoisePath>> {
        Ok(self.path.build()?)
    }

    /// The smallest time the reverse process runs to (the path's `t_eps`).
    pub fn t_eps(&self) -> f64 {
        match self.path {
            PathSpec::Ouve { t_eps, .. } | PathSpec::Sbve { t_eps, .. } => t_eps,
            _ => self.path.build().map_or(f64::NAN, |p| p.t_range().0),
        }
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
        match self.path {
            PathSpec::Ouve { theta, sigma_min, sigma_max, .. }
                if !(pos(theta) && pos(sigma_min) && pos(sigma_max) && sigma_min < sigma_max) =>
            {
                return bad(format!(
                    "path ouve: need θ > 0 and 0 < σmin < σmax, got θ {theta}, σmin {sigma_min}, σmax {sigma_max}"
                ));
            }
            PathSpec::Ouve { .. } | PathSpec::Sbve { .. } => {
                self.path.build().map_err(|e| Error::model(path, format!("path: {e}")))?;
            }
            _ => {
                let kind = serde_json::to_value(&self.path).ok().and_then(|v| v["kind"].as_str().map(String::from));
                return bad(format!("path '{}': SGMSE models run on the ouve or sbve path", kind.unwrap_or_default()));
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
            if matches!(self.path, PathSpec::Sbve { .. }) && self.output.kind == OutputKind::Score {
                return bad(
                    "a native network on the sbve path predicts data (σ is 0 at both ends of the bridge)".into()
                );
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
        if self.sampler.steps == 0 || !(self.t_eps() > 0.0 && self.t_eps() < 1.0) {
            return bad(format!(
                "sampler: need steps ≥ 1 and 0 < t_eps < 1, got {} and {}",
                self.sampler.steps,
                self.t_eps()
            ));
        }
        if let Some(schedule) = &self.sampler.schedule {
            if schedule.solver != self.sampler.name || schedule.times.len() != self.sampler.steps {
                return bad(format!(
                    "sampler.schedule runs {} with {} steps, but sampler says {} with {}",
                    schedule.solver,
                    schedule.times.len(),
                    self.sampler.name,
                    self.sampler.steps
                ));
            }
            let noise_path = self.noise_path().map_err(|e| Error::model(path, e.to_string()))?;
            schedule
                .validate(noise_path.as_ref(), noise_path.t_range().1)
                .map_err(|e| Error::model(path, format!("sampler.schedule: {e}")))?;
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
        if self.path != other.path {
            d.push("path");
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
        assert!(text.contains(r#""path":{"kind":"ouve","theta":1.5"#), "{text}");
        assert!(text.contains(r#""transform":{"kind":"exponent","alpha":0.5,"beta":0.15}"#), "{text}");
        let back: ModelConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(c.bins(), 256);
    }

    #[test]
    fn invalid_values_name_the_sidecar() {
        let mut c = ModelConfig::sgmse_16k();
        c.path = PathSpec::Ouve { theta: 1.5, sigma_min: 0.5, sigma_max: 0.05, t_eps: 0.03, t_max: 1.0 };
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
    fn a_sidecar_schedule_must_match_the_sampler_and_the_path() {
        let schedule = |solver: &str, times: Vec<f64>| Schedule {
            nfe: times.len(),
            solver: solver.into(),
            times,
            orders: None,
            strategies: None,
            search_error: -14.0,
            baseline_error: -13.0,
            objective: "-si_sdr_db".into(),
            evaluations: 10,
        };
        let with = |s: Schedule, name: &str, steps: usize| {
            let mut c = ModelConfig::sgmse_16k();
            c.sampler.name = name.into();
            c.sampler.steps = steps;
            c.sampler.schedule = Some(s);
            c
        };
        let good = with(schedule("ddim", vec![1.0, 0.5, 0.1]), "ddim", 3);
        good.validate(Path::new("m.json")).unwrap();
        let text = serde_json::to_string(&good).unwrap();
        assert_eq!(ModelConfig::parse(&text, Path::new("m.json")).unwrap(), good);
        let cases = [
            (with(schedule("ddim", vec![1.0, 0.5, 0.1]), "dpm++2m", 3), "runs ddim with 3 steps"),
            (with(schedule("ddim", vec![1.0, 0.5, 0.1]), "ddim", 4), "runs ddim with 3 steps"),
            (with(schedule("ddim", vec![0.9, 0.5, 0.1]), "ddim", 3), "starts at t = 0.9"),
            (with(schedule("ddim", vec![1.0, 0.1, 0.5]), "ddim", 3), "decrease strictly"),
            (with(schedule("ddim", vec![1.0, 0.5, 0.01]), "ddim", 3), "decrease strictly"),
            (with(schedule("pc", vec![1.0, 0.5, 0.1]), "pc", 3), "pc"),
        ];
        for (c, why) in cases {
            let err = c.validate(Path::new("dir/m.json")).unwrap_err().to_string();
            assert!(err.contains("dir/m.json") && err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn version_1_sidecars_are_read_into_core_paths() {
        let v1 = |sde: &str, sampler: &str| {
            format!(
                r#"{{"format": "diffuse-sgmse", "version": 1, "sample_rate": 16000,
                "stft": {{"n_fft": 510, "hop": 128, "window": "hann"}},
                "transform": {{"kind": "exponent", "alpha": 0.5, "beta": 0.15}}, "pad": {{"multiple": 64, "mode": "zero"}},
                {sde} "output": {{"kind": "score"}}, "sampler": {sampler}}}"#
            )
        };
        let ouve = r#""sde": {"name": "ouve", "theta": 1.5, "sigma_min": 0.05, "sigma_max": 0.5},"#;
        let pc = r#"{"name": "pc", "steps": 30, "snr": 0.5, "corrector_steps": 1, "t_eps": 0.03}"#;
        let c = ModelConfig::parse(&v1(ouve, pc), Path::new("m.json")).unwrap();
        assert_eq!(c, ModelConfig::sgmse_16k());
        assert_eq!((c.version, c.t_eps()), (VERSION, 0.03));
        let sbve = r#""sde": {"name": "sbve", "k": 2.6, "c": 0.4, "eps": 1e-8},"#;
        let ode = r#"{"name": "sb-ode", "steps": 50, "t_eps": 1e-4}"#;
        let c = ModelConfig::parse(&v1(sbve, ode), Path::new("m.json")).unwrap();
        assert_eq!(c.path, PathSpec::Sbve { k: 2.6, c: 0.4, t_eps: 1e-4 });
        // Written back, it is version 2: the path in core's form, t_eps in it.
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains(r#""path":{"kind":"sbve","k":2.6,"c":0.4,"t_eps":0.0001}"#), "{text}");
        assert!(!text.contains("\"sde\"") && text.contains(r#""version":2"#), "{text}");
        assert_eq!(ModelConfig::parse(&text, Path::new("m.json")).unwrap(), c);
        // Mixed or incomplete forms are refused, naming the file and the field.
        let no_eps = r#"{"name": "pc", "steps": 30}"#;
        let err = ModelConfig::parse(&v1(ouve, no_eps), Path::new("m.json")).unwrap_err().to_string();
        assert!(err.contains("m.json") && err.contains("t_eps"), "{err}");
        let both = format!("{ouve} \"path\": {{\"kind\": \"ouve\"}},");
        let err = ModelConfig::parse(&v1(&both, pc), Path::new("m.json")).unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
        let ve = r#""path": {"kind": "edm"},"#;
        let err =
            ModelConfig::parse(&v1(ve, no_eps).replace(r#""version": 1"#, r#""version": 2"#), Path::new("m.json"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("m.json") && err.contains("ouve or sbve"), "{err}");
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
