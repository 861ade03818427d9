//! A restoration model: native safetensors weights of a [`UNet`] plus a JSON sidecar (`model.json` beside
//! `model.safetensors`) with everything needed to run it: task, core path ([`PathSpec`]), parameterization,
//! network, training recipe and default sampler. Loading validates the sidecar (bounded sizes, known names,
//! parameterization vs network outputs) and the weights (exact names and shapes) with errors naming the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diffuse_core::denoiser::{Conditioning, Denoiser};
use diffuse_core::path::{NoisePath, PathSpec};
use diffuse_core::search::Schedule;
use diffuse_core::spacing::Spacing;
use diffuse_core::{Parameterization, Prediction};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use crate::net::{NetConfig, UNet};
use diffuse_core::weights::named;

use crate::{Error, Result};

/// The sidecar's `format` value.
pub const FORMAT: &str = "diffuse-restoration-model";
/// The sidecar version this build writes and reads.
pub const VERSION: u32 = 1;
/// Largest sidecar read.
pub const MAX_SIDECAR_BYTES: u64 = 1 << 20;
/// Most steps of a sidecar's discrete path table (RDDM, IR-SDE, Resfusion, VP tables).
pub const MAX_PATH_STEPS: usize = 100_000;

/// The sampler a model runs with unless told otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerDefaults {
    /// A core solver name (`diffuse solvers list`), e.g. `dpm++2m`, `unipc-bh2`, `rddm`, `resfusion`.
    pub solver: String,
    /// Grid intervals (the last one a jump to x̂0).
    pub steps: usize,
    /// Time spacing of the grid.
    #[serde(default = "uniform_t")]
    pub spacing: Spacing,
    /// A searched schedule (`diffuse restore search`: its own solver, times and per-step orders), which replaces
    /// solver, steps and spacing when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

fn uniform_t() -> Spacing {
    Spacing::UniformT
}

impl Default for SamplerDefaults {
    fn default() -> Self {
        SamplerDefaults { solver: "dpm++2m".into(), steps: 10, spacing: Spacing::UniformT, schedule: None }
    }
}

/// The JSON sidecar of a restoration model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Always [`FORMAT`].
    pub format: String,
    /// Sidecar version ([`VERSION`]).
    pub version: u32,
    /// What the model restores: `denoise`, `deblur`, `lowlight` or another short name.
    pub task: String,
    /// The core path the model was trained on (anchor μ = the degraded image).
    pub path: PathSpec,
    /// What the network's output means.
    pub parameterization: Parameterization,
    /// The network's architecture.
    pub network: NetConfig,
    /// How it was trained (options, steps, the command), free-form JSON.
    #[serde(default)]
    pub training: serde_json::Value,
    /// The default sampler.
    #[serde(default)]
    pub sampler: SamplerDefaults,
    /// What the network's anchor μ is made from (absent: the degraded image itself).
    #[serde(default, skip_serializing_if = "ModelInput::is_degraded")]
    pub input: ModelInput,
}

/// What a model restores: the degraded image as it is (blind), or a classical inversion of it made with the
/// degradation's known parameters (`crate::known`), so that the model learns only what the inversion leaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelInput {
    /// The degraded image (blind restoration).
    #[default]
    Degraded,
    /// Low light: the degraded image with its known exposure curve inverted.
    InverseCurve,
    /// Blur: the Wiener deconvolution of the degraded image by its known kernel.
    Wiener {
        /// The filter's fixed noise-to-signal ratio.
        nsr: f64,
    },
}

impl ModelInput {
    /// True for the blind default.
    pub fn is_degraded(&self) -> bool {
        *self == ModelInput::Degraded
    }
}

impl ModelConfig {
    /// A sidecar for a new model (network outputs set from the parameterization).
    pub fn new(task: &str, path: PathSpec, parameterization: Parameterization, mut network: NetConfig) -> Self {
        network.outputs = outputs_of(parameterization);
        ModelConfig {
            format: FORMAT.into(),
            version: VERSION,
            task: task.into(),
            path,
            parameterization,
            network,
            training: serde_json::Value::Null,
            sampler: SamplerDefaults::default(),
            input: ModelInput::Degraded,
        }
    }

    /// Checks every field; returns the built path.
    pub fn validate(&self) -> Result<Arc<dyn NoisePath>> {
        if self.format != FORMAT {
            return Err(Error::invalid("format", format!("'{}' is not '{FORMAT}'", self.format)));
        }
        if self.version != VERSION {
            return Err(Error::invalid("version", format!("{} (this build reads version {VERSION})", self.version)));
        }
        if self.task.is_empty()
            || self.task.len() > 64
            || !self.task.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::invalid("task", format!("'{}' must be 1–64 letters, digits, '-' or '_'", self.task)));
        }
        if let Some(n) = path_steps(&self.path)
            && n > MAX_PATH_STEPS
        {
            return Err(Error::invalid("path.steps", format!("{n} is over the limit of {MAX_PATH_STEPS}")));
        }
        let path = self.path.build()?;
        self.network.validate()?;
        if self.network.outputs != outputs_of(self.parameterization) {
            return Err(Error::invalid(
                "network.outputs",
                format!("{} outputs do not fit the {:?} parameterization", self.network.outputs, self.parameterization),
            ));
        }
        match self.input {
            ModelInput::Degraded => {}
            ModelInput::InverseCurve if self.task == "lowlight" => {}
            ModelInput::Wiener { nsr } if self.task == "deblur" => {
                if !(nsr.is_finite() && nsr > 0.0 && nsr < 1.0) {
                    return Err(Error::invalid("input.nsr", format!("{nsr} is outside (0, 1)")));
                }
            }
            other => {
                return Err(Error::invalid("input", format!("{other:?} does not fit a '{}' model", self.task)));
            }
        }
        let s = &self.sampler;
        diffuse_core::solvers::build_solver(&s.solver, &Default::default())?;
        if let Some(schedule) = &s.schedule {
            schedule.validate(path.as_ref(), path.t_range().1)?;
        }
        if s.steps == 0 || s.steps > diffuse_core::limits::MAX_NFE {
            return Err(Error::invalid(
                "sampler.steps",
                format!("must be 1 to {}, got {}", diffuse_core::limits::MAX_NFE, s.steps),
            ));
        }
        Ok(path)
    }
}

/// Image-shaped network outputs of a parameterization (2 for RDDM's SM-Res-N).
pub fn outputs_of(p: Parameterization) -> usize {
    if p == Parameterization::ResidualNoise { 2 } else { 1 }
}

fn path_steps(spec: &PathSpec) -> Option<usize> {
    match spec {
        PathSpec::VpTable { steps, betas, .. } => Some(betas.as_ref().map_or(*steps, Vec::len)),
        PathSpec::IrSde { steps, .. } | PathSpec::Rddm { steps, .. } | PathSpec::Resfusion { steps, .. } => {
            Some(*steps)
        }
        _ => None,
    }
}

/// The sidecar file of a weights file: the same name with extension `json`.
pub fn sidecar_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// A restoration network with its sidecar; a core [`Denoiser`] working on values in [−1, 1] whose anchor
/// ([`Conditioning::anchor`]) is the degraded image.
#[derive(Debug)]
pub struct RestorationModel {
    vs: nn::VarStore,
    net: UNet,
    config: ModelConfig,
    path: Arc<dyn NoisePath>,
}

impl RestorationModel {
    /// A freshly initialised model (seed the generator with `tch::manual_seed` for reproducible weights).
    pub fn new(config: ModelConfig, device: Device) -> Result<Self> {
        let path = config.validate()?;
        let vs = nn::VarStore::new(device);
        let net = UNet::new(&vs.root(), &config.network)?;
        Ok(RestorationModel { vs, net, config, path })
    }

    /// Loads `weights` (`.safetensors`) and its sidecar (`.json` beside it).
    pub fn load(weights: &Path, device: Device) -> Result<Self> {
        let side = sidecar_path(weights);
        let text =
            diffuse_core::io::read_input(&side, MAX_SIDECAR_BYTES).map_err(|e| Error::model(&side, e.to_string()))?;
        let config: ModelConfig =
            serde_json::from_slice(&text).map_err(|e| Error::model(&side, format!("not a valid sidecar: {e}")))?;
        config.validate().map_err(|e| Error::model(&side, e.to_string()))?;
        let bytes = diffuse_core::io::read_input(weights, diffuse_core::weights::MAX_WEIGHTS_BYTES)?;
        Self::from_bytes(&bytes, config, weights, device)
    }

    /// A model from safetensors bytes and its sidecar (embedded models); `name` stands for the file in errors.
    pub fn from_bytes(bytes: &[u8], config: ModelConfig, name: &Path, device: Device) -> Result<Self> {
        let mut model = Self::new(config, device).map_err(|e| Error::model(name, e.to_string()))?;
        let (tensors, _) = diffuse_core::weights::from_bytes(bytes, name).map_err(as_model_error)?;
        load_vars(&mut model.vs, tensors, name)?;
        Ok(model)
    }

    /// Writes the weights (`.safetensors`) and the sidecar beside them, each atomically; existing files are kept
    /// unless `force`.
    pub fn save(&self, weights_path: &Path, force: bool) -> Result<()> {
        let bytes = self.to_bytes()?;
        let side = serde_json::to_vec_pretty(&self.config).map_err(|e| Error::invalid("sidecar", e.to_string()))?;
        diffuse_core::io::write_atomic(weights_path, force, |f| std::io::Write::write_all(f, &bytes))?;
        diffuse_core::io::write_atomic(&sidecar_path(weights_path), force, |f| std::io::Write::write_all(f, &side))?;
        Ok(())
    }

    /// The weights as safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(diffuse_core::weights::to_bytes(&named(&self.vs), Default::default())?)
    }

    /// Copies the weights of `src`, a model with the same network (fine-tuning from another task's model).
    pub fn copy_weights_from(&mut self, src: &RestorationModel) -> Result<()> {
        if src.config.network != self.config.network {
            return Err(Error::invalid("init", "the source model's network differs from this one's"));
        }
        let tensors = named(&src.vs).into_iter().map(|(k, t)| (k, t.detach().copy())).collect();
        load_vars(&mut self.vs, tensors, Path::new("init"))
    }

    /// The sidecar.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Mutable sidecar (training fills in the recipe and default sampler).
    pub fn config_mut(&mut self) -> &mut ModelConfig {
        &mut self.config
    }

    /// The core path.
    pub fn path(&self) -> Arc<dyn NoisePath> {
        self.path.clone()
    }

    /// The network.
    pub fn net(&self) -> &UNet {
        &self.net
    }

    /// The variables (weights) of the network.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Mutable variables (loading EMA weights, training).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// The network's raw output `[B, outputs·C, H, W]` at per-item times `t` `[B]`.
    pub fn forward(&self, x_t: &Tensor, y: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.net.forward(x_t, y, t)
    }

    /// The raw output as a core [`Prediction`] of the sidecar's parameterization.
    pub fn to_prediction(&self, out: Tensor) -> Result<Prediction> {
        wrap(self.config.parameterization, out, self.config.network.image_channels as i64)
    }
}

/// Splits a raw network output into a [`Prediction`] of kind `p` (`c` image channels per output).
pub fn wrap(p: Parameterization, out: Tensor, c: i64) -> Result<Prediction> {
    Ok(match p {
        Parameterization::Eps => Prediction::Eps(out),
        Parameterization::Data => Prediction::Data(out),
        Parameterization::V => Prediction::V(out),
        Parameterization::Score => Prediction::Score(out),
        Parameterization::Velocity => Prediction::Velocity(out),
        Parameterization::Residual => Prediction::Residual(out),
        Parameterization::Resnoise => Prediction::Resnoise(out),
        Parameterization::ResidualNoise => {
            Prediction::ResidualNoise { residual: out.f_narrow(1, 0, c)?, noise: out.f_narrow(1, c, c)? }
        }
    })
}

/// A prediction as the network's raw output layout (the training target; outputs stacked on the channel axis, −3).
pub fn unwrap(p: Prediction) -> Result<Tensor> {
    Ok(match p {
        Prediction::ResidualNoise { residual, noise } => Tensor::f_cat(&[residual, noise], -3)?,
        Prediction::Eps(t)
        | Prediction::Data(t)
        | Prediction::V(t)
        | Prediction::Score(t)
        | Prediction::Velocity(t)
        | Prediction::Residual(t)
        | Prediction::Resnoise(t) => t,
    })
}

impl Denoiser for RestorationModel {
    fn parameterization(&self) -> Parameterization {
        self.config.parameterization
    }
    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> diffuse_core::Result<Prediction> {
        let y = cond.anchor.as_ref().ok_or_else(|| {
            diffuse_core::Error::invalid("anchor", "a restoration model needs the degraded image as anchor")
        })?;
        let run = || -> Result<Prediction> {
            let b = x.size().first().copied().unwrap_or(1);
            let tt = Tensor::f_full([b], t, (Kind::Float, x.device()))?;
            let kind = x.kind();
            let out = self.net.forward(&x.f_to_kind(Kind::Float)?, &y.f_to_kind(Kind::Float)?, &tt)?;
            self.to_prediction(out.f_to_kind(kind)?)
        };
        run().map_err(|e| diffuse_core::Error::invalid("restoration model", e.to_string()))
    }
}

/// Copies `tensors` into the variables of `vs` by name ([`diffuse_core::nn::load_vars`]), as this crate's model
/// error naming `name`.
pub(crate) fn load_vars(vs: &mut nn::VarStore, tensors: Vec<(String, Tensor)>, name: &Path) -> Result<()> {
    diffuse_core::nn::load_vars(vs, tensors, name).map_err(|e| match e {
        diffuse_core::Error::File { path, reason } => Error::model(path, reason),
        other => other.into(),
    })
}

/// A core error about `name` as this crate's model error.
fn as_model_error(e: diffuse_core::Error) -> Error {
    match e {
        diffuse_core::Error::File { path, reason } => Error::model(path, reason),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(p: Parameterization) -> ModelConfig {
        ModelConfig::new("denoise", PathSpec::default_of("rddm").unwrap(), p, NetConfig::tiny(3, 1))
    }

    #[test]
    fn save_load_round_trip_gives_the_same_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("m.safetensors");
        tch::manual_seed(5);
        let model = RestorationModel::new(tiny(Parameterization::ResidualNoise), Device::Cpu).unwrap();
        assert_eq!(model.config().network.outputs, 2);
        model.save(&w, false).unwrap();
        assert!(model.save(&w, false).is_err(), "existing files are kept without force");
        let back = RestorationModel::load(&w, Device::Cpu).unwrap();
        assert_eq!(back.config(), model.config());
        let x = Tensor::randn([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let cond = Conditioning::with_anchor(x.shallow_clone());
        let (a, b) = (model.predict(&x, 0.4, &cond).unwrap(), back.predict(&x, 0.4, &cond).unwrap());
        match (a, b) {
            (
                Prediction::ResidualNoise { residual: r1, noise: n1 },
                Prediction::ResidualNoise { residual: r2, noise: n2 },
            ) => {
                assert_eq!(r1, r2);
                assert_eq!(n1, n2);
            }
            _ => panic!("wrong kinds"),
        }
    }

    #[test]
    fn bad_sidecars_and_weights_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("m.safetensors");
        let model = RestorationModel::new(tiny(Parameterization::Residual), Device::Cpu).unwrap();
        model.save(&w, false).unwrap();
        let side = sidecar_path(&w);
        let good = std::fs::read_to_string(&side).unwrap();
        let cases = [
            (good.replace("\"version\": 1", "\"version\": 9"), "version"),
            (good.replace("\"task\": \"denoise\"", "\"task\": \"../x\""), "task"),
            (good.replace("\"kind\": \"rddm\"", "\"kind\": \"nope\""), "m.json"),
            (good.replace("\"steps\": 1000", "\"steps\": 1000000000"), "over the limit"),
            (good.replace("\"outputs\": 1", "\"outputs\": 2"), "outputs"),
            (good.replace("\"solver\": \"dpm++2m\"", "\"solver\": \"magic\""), "magic"),
            ("{".to_string(), "not a valid sidecar"),
        ];
        for (text, want) in cases {
            std::fs::write(&side, &text).unwrap();
            let err = RestorationModel::load(&w, Device::Cpu).unwrap_err().to_string();
            assert!(err.contains("m.json") && err.contains(want), "{want}: {err}");
        }
        std::fs::write(&side, &good).unwrap();
        // Weights of another network, truncated weights.
        let other = RestorationModel::new(
            ModelConfig::new(
                "denoise",
                PathSpec::default_of("rddm").unwrap(),
                Parameterization::Residual,
                NetConfig::tiny(1, 1),
            ),
            Device::Cpu,
        )
        .unwrap();
        std::fs::write(&w, other.to_bytes().unwrap()).unwrap();
        let err = RestorationModel::load(&w, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("m.safetensors") && err.contains("shape"), "{err}");
        let bytes = model.to_bytes().unwrap();
        std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
        let err = RestorationModel::load(&w, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("m.safetensors") && err.contains("not a valid safetensors"), "{err}");
        std::fs::remove_file(&side).unwrap();
        let err = RestorationModel::load(&w, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("m.json"), "{err}");
    }

    #[test]
    fn default_model_file_is_at_most_25_mb() {
        let cfg = ModelConfig::new(
            "denoise",
            PathSpec::default_of("rddm").unwrap(),
            Parameterization::Residual,
            NetConfig::default(),
        );
        let bytes = RestorationModel::new(cfg, Device::Cpu).unwrap().to_bytes().unwrap();
        assert!(bytes.len() <= 25_000_000, "default model file: {} bytes", bytes.len());
    }
}
