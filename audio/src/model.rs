//! The SGMSE model contract: a TorchScript module or a native network's safetensors weights, plus the JSON
//! sidecar ([`ModelConfig`]; a native model's sidecar carries its architecture in `network`).
//!
//! The module's `forward(x: Tensor[B, 4, F, T] float32, t: Tensor[B] float32) -> Tensor[B, 2, F, T]` takes the
//! channels `[Re x_t, Im x_t, Re y, Im y]` and returns `[Re, Im]` of the quantity the sidecar names (score or
//! data prediction, times `output.sign`). Complex spectrograms are real tensors `[B, 2, F, T]` everywhere in
//! this crate (channel 0 real part, channel 1 imaginary part).
//!
//! Loading checks the sidecar, then the module against it: a probe call with the sidecar's shape must succeed
//! and return `[1, 2, F, 64]` finite values, and a sidecar copy embedded in the module (method
//! `diffuse_sidecar() -> str`, written by tools/export_sgmse.py) must agree with the file.

use std::path::{Path, PathBuf};

use tch::{CModule, Device, IValue, Kind, Tensor, nn};

use crate::config::{ModelConfig, OutputKind, sidecar_path};
use crate::net::ScoreNet;
use crate::{Error, Result};

/// The network behind a model.
enum Backend {
    /// A TorchScript module.
    Script(CModule),
    /// A native network and the variables it uses.
    Native { net: Box<ScoreNet>, _vs: nn::VarStore },
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Script(_) => f.write_str("TorchScript"),
            Backend::Native { net, .. } => write!(f, "native {:?}", net.config().channels),
        }
    }
}

/// A loaded, validated SGMSE model (TorchScript or native).
#[derive(Debug)]
pub struct ScoreModel {
    backend: Backend,
    config: ModelConfig,
    path: PathBuf,
    device: Device,
}

/// Whether a path names native weights (`.safetensors`) rather than a TorchScript module.
pub fn is_native(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

impl ScoreModel {
    /// Loads `path` (a TorchScript `.pt` or native `.safetensors`) and its sidecar (`path` with extension
    /// `.json`) onto `device` and validates them.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let config = ModelConfig::read(&sidecar_path(path))?;
        Self::load_with_config(path, config, device)
    }

    /// Loads `path` with an already-read sidecar.
    pub fn load_with_config(path: &Path, config: ModelConfig, device: Device) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::model(path, "no such file"));
        }
        if is_native(path) {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            return Self::native_from_bytes(&bytes, config, path, device);
        }
        let mut module = CModule::load_on_device(path, device)
            .map_err(|e| Error::model(path, format!("not a loadable TorchScript module: {}", first_line(&e))))?;
        module.f_set_eval()?;
        let model = ScoreModel { backend: Backend::Script(module), config, path: path.to_path_buf(), device };
        model.check_embedded_sidecar()?;
        model.probe()?;
        Ok(model)
    }

    /// A native model from safetensors bytes and its sidecar (the embedded default model); `name` stands for
    /// the file in messages.
    pub fn native_from_bytes(bytes: &[u8], config: ModelConfig, name: &Path, device: Device) -> Result<Self> {
        let (tensors, _) = crate::weights::from_bytes(bytes, name)?;
        Self::native_from_tensors(tensors, config, name, device)
    }

    /// A native model from named tensors (the weights) and its sidecar; `name` stands for the file in messages.
    pub fn native_from_tensors(
        tensors: Vec<(String, Tensor)>,
        config: ModelConfig,
        name: &Path,
        device: Device,
    ) -> Result<Self> {
        let net_config = config
            .network
            .clone()
            .ok_or_else(|| Error::model(name, "native weights (.safetensors) need a sidecar with a `network` field"))?;
        let mut vs = nn::VarStore::new(device);
        let net = ScoreNet::new(&vs.root(), &net_config).map_err(|e| Error::model(name, e.to_string()))?;
        load_vars(&mut vs, tensors, name)?;
        vs.freeze();
        let model = ScoreModel {
            backend: Backend::Native { net: Box::new(net), _vs: vs },
            config,
            path: name.to_path_buf(),
            device,
        };
        model.probe()?;
        Ok(model)
    }

    /// The sidecar.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The module file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device the module runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Whether the output is a score or a data prediction.
    pub fn output_kind(&self) -> OutputKind {
        self.config.output.kind
    }

    /// One network call: `x_t`, `y` are `[B, 2, F, T]`, `t` is `[B]`; returns `sign × output`, `[B, 2, F, T]`
    /// float32 on the model's device (the quantity named by `output.kind`).
    pub fn forward(&self, x_t: &Tensor, y: &Tensor, t: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        self.forward_differentiable(x_t, y, t)
    }

    /// [`ScoreModel::forward`] keeping the autograd graph (where gradients are enabled): for derivatives of the
    /// output with respect to the input, as the score diagnostics take.
    pub fn forward_differentiable(&self, x_t: &Tensor, y: &Tensor, t: &Tensor) -> Result<Tensor> {
        let size = x_t.size();
        let bins = self.config.bins() as i64;
        let ok = |s: &[i64]| s.len() == 4 && s[1] == 2 && s[2] == bins;
        if !ok(&size) || y.size() != size {
            return Err(Error::Shape {
                op: "model input",
                expected: format!("x_t and y both [B, 2, {bins}, T]"),
                got: format!("x_t {size:?}, y {:?}", y.size()),
            });
        }
        if t.size() != [size[0]] {
            return Err(Error::Shape {
                op: "model time",
                expected: format!("[{}]", size[0]),
                got: format!("{:?}", t.size()),
            });
        }
        let input = Tensor::f_cat(&[x_t, y], 1)?.f_to_kind(Kind::Float)?.f_to_device(self.device)?;
        let t = t.f_to_kind(Kind::Float)?.f_to_device(self.device)?;
        let out = match &self.backend {
            Backend::Script(module) => module
                .forward_ts(&[input, t])
                .map_err(|e| Error::model(&self.path, format!("forward failed: {}", first_line(&e))))?,
            Backend::Native { net, .. } => native_output(net, &self.config, &input, &t)
                .map_err(|e| Error::model(&self.path, format!("forward failed: {e}")))?,
        };
        if out.size() != size {
            return Err(Error::model(
                &self.path,
                format!("returned shape {:?} for input {:?}; the contract is [B, 2, F, T]", out.size(), size),
            ));
        }
        let out = out.f_to_kind(Kind::Float)?;
        Ok(if self.config.output.sign < 0.0 { out.f_neg()? } else { out })
    }

    /// The score ∇ log p_t(x_t | y) in the reference's complex convention (see docs/models.md); an error for
    /// data-prediction models.
    pub fn score(&self, x_t: &Tensor, y: &Tensor, t: &Tensor) -> Result<Tensor> {
        if self.config.output.kind != OutputKind::Score {
            return Err(Error::model(&self.path, "this model predicts data, not the score"));
        }
        self.forward(x_t, y, t)
    }

    /// Compares the sidecar copy embedded in the module, if any, with the sidecar file.
    fn check_embedded_sidecar(&self) -> Result<()> {
        let Backend::Script(module) = &self.backend else { return Ok(()) };
        let embedded = match module.method_is::<IValue>("diffuse_sidecar", &[]) {
            Ok(IValue::String(s)) => s,
            // Modules not made by our exporter have no such method: the probe call is the only check then.
            _ => return Ok(()),
        };
        let embedded: ModelConfig = serde_json::from_str(&embedded)
            .map_err(|e| Error::model(&self.path, format!("the module's embedded sidecar is not valid: {e}")))?;
        let diff = self.config.contract_differences(&embedded);
        if !diff.is_empty() {
            return Err(Error::model(
                &self.path,
                format!(
                    "the sidecar {} does not match the module (it was exported with different {}); use the sidecar \
                     written with this module",
                    sidecar_path(&self.path).display(),
                    diff.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Runs the module once on the sidecar's shape and checks the answer.
    fn probe(&self) -> Result<()> {
        let bins = self.config.bins() as i64;
        let frames = (self.config.pad.multiple.max(1) as i64).max(64);
        // Smooth deterministic values of spectrogram size, not zeros (normalisation layers divide by their spread).
        let grid = Tensor::f_arange(2 * bins * frames, (Kind::Float, Device::Cpu))?;
        let x = grid.f_mul_scalar(0.37)?.f_sin()?.f_mul_scalar(0.1)?.f_view([1, 2, bins, frames])?;
        let y = grid.f_mul_scalar(0.11)?.f_cos()?.f_mul_scalar(0.1)?.f_view([1, 2, bins, frames])?;
        let t = Tensor::from_slice(&[0.5f32]);
        let out = self.forward(&x, &y, &t).map_err(|e| match e {
            Error::Model { reason, .. } => Error::model(
                &self.path,
                format!(
                    "does not match its sidecar {} (n_fft {} → {bins} bins, probe [1, 4, {bins}, {frames}]): {reason}",
                    sidecar_path(&self.path).display(),
                    self.config.stft.n_fft
                ),
            ),
            other => other,
        })?;
        let finite = out.f_isfinite()?.f_all()?.f_int64_value(&[])? != 0;
        if !finite {
            return Err(Error::model(&self.path, "the probe call returned NaN or Inf"));
        }
        Ok(())
    }
}

/// The output of a native network for input `[B, 4, F, T]` (`[x_t, y]`): the score `−ẑ/σ(t)` of a network that
/// estimates the complex noise ẑ, or the preconditioned x̂0 of a data-prediction network
/// ([`crate::net::DataPrecond`]).
pub(crate) fn native_output(net: &ScoreNet, config: &ModelConfig, input: &Tensor, t: &Tensor) -> Result<Tensor> {
    let path = config.noise_path()?;
    match config.output.kind {
        OutputKind::Score => {
            let z = net.forward(input, t)?;
            let sigma = diffuse_core::path::BatchPoint::at(path.as_ref(), t)?.sigma.f_view([-1, 1, 1, 1])?;
            Ok(z.f_div(&sigma)?.f_neg()?)
        }
        OutputKind::DataPrediction => {
            let x_t = input.f_narrow(1, 0, 2)?;
            let y = input.f_narrow(1, 2, 2)?;
            Ok(net.denoise(&x_t, &y, t, path.as_ref())?.0)
        }
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

fn first_line(e: &tch::TchError) -> String {
    diffuse_core::error::torch_message(e)
}
