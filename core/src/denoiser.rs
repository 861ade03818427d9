//! The `Denoiser` trait every model implements, and wrappers around it: closures, TorchScript modules with a
//! JSON sidecar, classifier-free guidance, dynamic thresholding and an x0-correction hook.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::param::{At, Parameterization, Prediction};
use crate::path::{NoisePath, PathSpec};
use crate::{Error, Result};

/// What a model is conditioned on besides `x_t` and `t`.
#[derive(Debug, Default)]
pub struct Conditioning {
    /// The anchor μ of paths with γ ≠ 0 (noisy spectrogram, degraded image); also a model input.
    pub anchor: Option<Tensor>,
    /// Any other conditioning (class labels, embeddings); dropped for the unconditional branch of guidance.
    pub context: Option<Tensor>,
}

impl Conditioning {
    /// No conditioning.
    pub fn none() -> Self {
        Conditioning::default()
    }

    /// Conditioning on an anchor only.
    pub fn with_anchor(anchor: Tensor) -> Self {
        Conditioning { anchor: Some(anchor), context: None }
    }

    /// The same anchor without the context (the unconditional branch of classifier-free guidance).
    pub fn unconditional(&self) -> Self {
        Conditioning { anchor: self.anchor.as_ref().map(Tensor::shallow_clone), context: None }
    }
}

/// A model of the data: given `x_t` at time t (and conditioning) it predicts x0, ε, v, score, velocity or the
/// residual. Solvers convert whatever it returns (see [`crate::param`]).
pub trait Denoiser {
    /// The parameterization [`Denoiser::predict`] returns.
    fn parameterization(&self) -> Parameterization;

    /// The prediction at (`x`, `t`); `x` is the model input `x_t` (batch first).
    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Prediction>;
}

impl<D: Denoiser + ?Sized> Denoiser for &D {
    fn parameterization(&self) -> Parameterization {
        (**self).parameterization()
    }
    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Prediction> {
        (**self).predict(x, t, cond)
    }
}

impl<D: Denoiser + ?Sized> Denoiser for Box<D> {
    fn parameterization(&self) -> Parameterization {
        (**self).parameterization()
    }
    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Prediction> {
        (**self).predict(x, t, cond)
    }
}

/// A denoiser from a closure returning one tensor in a fixed parameterization (for native `tch::nn` modules:
/// `FnDenoiser::new(Parameterization::Eps, |x, t, c| Ok(net.forward_t(x, t)))`).
pub struct FnDenoiser<F> {
    kind: Parameterization,
    f: F,
}

impl<F: Fn(&Tensor, f64, &Conditioning) -> Result<Tensor>> FnDenoiser<F> {
    /// Wraps `f`, whose output means `kind` (not `residual_noise`, which has two outputs).
    pub fn new(kind: Parameterization, f: F) -> Self {
        FnDenoiser { kind, f }
    }
}

impl<F: Fn(&Tensor, f64, &Conditioning) -> Result<Tensor>> Denoiser for FnDenoiser<F> {
    fn parameterization(&self) -> Parameterization {
        self.kind
    }
    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Prediction> {
        let out = (self.f)(x, t, cond)?;
        wrap_output(self.kind, out, None)
    }
}

fn wrap_output(kind: Parameterization, out: Tensor, second: Option<Tensor>) -> Result<Prediction> {
    Ok(match kind {
        Parameterization::Eps => Prediction::Eps(out),
        Parameterization::Data => Prediction::Data(out),
        Parameterization::V => Prediction::V(out),
        Parameterization::Score => Prediction::Score(out),
        Parameterization::Velocity => Prediction::Velocity(out),
        Parameterization::Residual => Prediction::Residual(out),
        Parameterization::Resnoise => Prediction::Resnoise(out),
        Parameterization::ResidualNoise => match second {
            Some(noise) => Prediction::ResidualNoise { residual: out, noise },
            None => {
                return Err(Error::invalid("parameterization", "residual_noise needs two outputs (residual, noise)"));
            }
        },
    })
}

/// Classifier-free guidance: `uncond + scale·(cond − uncond)`, the unconditional branch dropping
/// [`Conditioning::context`]. Scale 1 is the conditional model.
pub struct ClassifierFree<D> {
    /// The model (conditional and unconditional in one).
    pub model: D,
    /// Guidance scale w (≥ 0).
    pub scale: f64,
}

impl<D: Denoiser> Denoiser for ClassifierFree<D> {
    fn parameterization(&self) -> Parameterization {
        self.model.parameterization()
    }
    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Prediction> {
        if self.scale == 1.0 || cond.context.is_none() {
            return self.model.predict(x, t, cond);
        }
        let c = self.model.predict(x, t, cond)?;
        let u = self.model.predict(x, t, &cond.unconditional())?;
        Prediction::combine(c, self.scale, u, 1.0 - self.scale)
    }
}

/// Dynamic thresholding (Saharia et al. 2022): per sample, `s = clamp(quantile(|x̂0|, q), 1, max)` and
/// `x̂0 ← clamp(x̂0, −s, s)/s`. Returns data predictions.
pub struct Thresholded<D> {
    /// The model.
    pub model: D,
    /// The path (to convert the model's output to x0).
    pub path: Arc<dyn NoisePath>,
    /// Quantile q of |x̂0| (Imagen: 0.995).
    pub quantile: f64,
    /// Largest threshold s (diffusers' `sample_max_value`, 1 for images in [−1, 1]).
    pub max: f64,
}

impl<D: Denoiser> Denoiser for Thresholded<D> {
    fn parameterization(&self) -> Parameterization {
        Parameterization::Data
    }
    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Prediction> {
        let at = At::new(self.path.as_ref(), t, x, cond.anchor.as_ref());
        let x0 = self.model.predict(x, t, cond)?.into_data(&at)?;
        let b = x0.size().first().copied().unwrap_or(1);
        let flat = x0.f_reshape([b, -1])?.f_abs()?.f_to_kind(Kind::Double)?;
        let s = flat.f_quantile_scalar(self.quantile, Some(1), true, "linear")?.f_clamp(1.0, self.max.max(1.0))?;
        let mut shape = vec![b];
        shape.resize(x0.dim(), 1);
        let s = s.f_reshape(shape.as_slice())?.f_to_kind(x0.kind())?;
        let clipped = x0.f_clamp_tensor(Some(&s.f_neg()?), Some(&s))?.f_div(&s)?;
        Ok(Prediction::Data(clipped))
    }
}

/// A user hook applied to every x̂0 (projection onto constraints, inpainting masks, clipping).
pub struct Corrected<D, F> {
    /// The model.
    pub model: D,
    /// The path (to convert the model's output to x0).
    pub path: Arc<dyn NoisePath>,
    /// `hook(x̂0, t, cond) → corrected x̂0`.
    pub hook: F,
}

impl<D: Denoiser, F: Fn(&Tensor, f64, &Conditioning) -> Result<Tensor>> Denoiser for Corrected<D, F> {
    fn parameterization(&self) -> Parameterization {
        Parameterization::Data
    }
    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Prediction> {
        let at = At::new(self.path.as_ref(), t, x, cond.anchor.as_ref());
        let x0 = self.model.predict(x, t, cond)?.into_data(&at)?;
        Ok(Prediction::Data((self.hook)(&x0, t, cond)?))
    }
}

/// How a TorchScript model receives time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TimeInput {
    /// The path's t as is.
    T,
    /// `factor·t` (e.g. 1000·t for continuous models trained on [0, 1000]).
    Scaled {
        /// The factor.
        factor: f64,
    },
    /// The integer step of a discrete table, `N·t − 1` (dpm-solver's convention).
    DiscreteStep,
    /// σ(t).
    Sigma,
    /// EDM's `c_noise = ln(σ)/4`.
    EdmCNoise,
    /// ln t.
    LogT,
}

/// How a TorchScript model receives the anchor μ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnchorInput {
    /// Not at all.
    #[default]
    None,
    /// Concatenated to x on dimension 1 (channels): `forward(cat[x, μ], t)`.
    Concat,
    /// As a third argument: `forward(x, t, μ)`.
    Argument,
}

/// The JSON sidecar next to a TorchScript model (`model.pt` ↔ `model.json`): everything needed to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptSidecar {
    /// Sidecar format version (1).
    pub version: u32,
    /// What the output means.
    pub parameterization: Parameterization,
    /// The path the model was trained on.
    pub path: PathSpec,
    /// How time is fed.
    pub time_input: TimeInput,
    /// How the anchor is fed.
    #[serde(default)]
    pub anchor_input: AnchorInput,
    /// Input dtype: "float32", "float64" or "float16".
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Shape of one sample (without batch), for the load-time probe call.
    #[serde(default)]
    pub sample_shape: Option<Vec<i64>>,
    /// Free-form provenance: how the model was trained or exported.
    #[serde(default)]
    pub notes: Option<String>,
}

fn default_dtype() -> String {
    "float32".into()
}

/// Largest number of values in one probe sample (`sample_shape`): 2^26 (256 MiB of float32).
pub const MAX_PROBE_ELEMENTS: i64 = 1 << 26;

impl ScriptSidecar {
    /// Reads and checks a sidecar file (errors name it).
    pub fn read(path: &FsPath) -> Result<ScriptSidecar> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::file(path, format!("cannot read the model's sidecar: {e}")))?;
        ScriptSidecar::parse(&text, path)
    }

    /// Parses and checks sidecar JSON: version, dtype, path (it must build) and sample shape; `path` names the
    /// file in errors.
    pub fn parse(text: &str, path: &FsPath) -> Result<ScriptSidecar> {
        let sidecar: ScriptSidecar = serde_json::from_str(text).map_err(|e| Error::file(path, e))?;
        if sidecar.version != 1 {
            return Err(Error::file(
                path,
                format!("sidecar version {} is not supported (expected 1)", sidecar.version),
            ));
        }
        sidecar.kind().map_err(|e| Error::file(path, e))?;
        sidecar.path.build().map_err(|e| Error::file(path, e))?;
        if let Some(shape) = &sidecar.sample_shape {
            let elements = shape.iter().try_fold(1i64, |n, &d| if d >= 1 { n.checked_mul(d) } else { None });
            if elements.is_none_or(|n| n > MAX_PROBE_ELEMENTS) {
                return Err(Error::file(
                    path,
                    format!(
                        "sample_shape {shape:?}: dimensions must be ≥ 1 and hold at most {MAX_PROBE_ELEMENTS} values \
                         (the load-time probe allocates one sample)"
                    ),
                ));
            }
        }
        Ok(sidecar)
    }

    /// The tensor kind of `dtype`.
    pub fn kind(&self) -> Result<Kind> {
        match self.dtype.as_str() {
            "float32" => Ok(Kind::Float),
            "float64" => Ok(Kind::Double),
            "float16" => Ok(Kind::Half),
            other => Err(Error::invalid("dtype", format!("'{other}': expected float32, float64 or float16"))),
        }
    }
}

/// A TorchScript module (`torch.jit.script`/`trace`) behind its [`ScriptSidecar`].
pub struct TorchScriptDenoiser {
    module: CModule,
    sidecar: ScriptSidecar,
    path: Arc<dyn NoisePath>,
    kind: Kind,
    device: Device,
}

impl TorchScriptDenoiser {
    /// Loads `model.pt` and its sidecar `model.json`, checks the sidecar, and probes the model once when the
    /// sidecar gives a sample shape (a model that does not match its sidecar fails here, naming the file).
    pub fn load(model: impl AsRef<FsPath>, device: Device) -> Result<Self> {
        let model = model.as_ref();
        let sidecar = ScriptSidecar::read(&sidecar_path(model))?;
        let kind = sidecar.kind()?;
        let path = sidecar.path.build()?;
        let module = CModule::load_on_device(model, device).map_err(|e| {
            Error::file(model, format!("not a loadable TorchScript module: {}", crate::error::torch_message(&e)))
        })?;
        let me = TorchScriptDenoiser { module, sidecar, path, kind, device };
        if let Some(shape) = me.sidecar.sample_shape.clone() {
            me.probe(&shape)
                .map_err(|e| Error::file(model, format!("probe call with sample shape {shape:?} failed: {e}")))?;
        }
        Ok(me)
    }

    /// The sidecar.
    pub fn sidecar(&self) -> &ScriptSidecar {
        &self.sidecar
    }

    /// The path the model was trained on.
    pub fn path(&self) -> Arc<dyn NoisePath> {
        self.path.clone()
    }

    fn probe(&self, shape: &[i64]) -> Result<()> {
        let mut full = vec![1i64];
        full.extend_from_slice(shape);
        let x = Tensor::f_zeros(full.as_slice(), (self.kind, self.device))?;
        let (lo, hi) = self.path.t_range();
        let cond = Conditioning { anchor: Some(x.shallow_clone()), context: None };
        let out = self.predict(&x, 0.5 * (lo + hi), &cond)?;
        let got = match &out {
            Prediction::ResidualNoise { residual, .. } => residual.size(),
            Prediction::Eps(t)
            | Prediction::Data(t)
            | Prediction::V(t)
            | Prediction::Score(t)
            | Prediction::Velocity(t)
            | Prediction::Residual(t)
            | Prediction::Resnoise(t) => t.size(),
        };
        if got != full {
            return Err(Error::Shape { op: "model output", expected: format!("{full:?}"), got: format!("{got:?}") });
        }
        Ok(())
    }

    fn time_value(&self, t: f64) -> f64 {
        match &self.sidecar.time_input {
            TimeInput::T => t,
            TimeInput::Scaled { factor } => factor * t,
            TimeInput::DiscreteStep => self.path.train_steps().map_or(t, |n| n as f64 * t - 1.0),
            TimeInput::Sigma => self.path.sigma(t),
            TimeInput::EdmCNoise => self.path.sigma(t).ln() / 4.0,
            TimeInput::LogT => t.ln(),
        }
    }
}

/// `dir/name.json` for `dir/name.pt`.
pub fn sidecar_path(model: &FsPath) -> PathBuf {
    model.with_extension("json")
}

impl Denoiser for TorchScriptDenoiser {
    fn parameterization(&self) -> Parameterization {
        self.sidecar.parameterization
    }

    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Prediction> {
        let in_kind = x.kind();
        let x_in = x.f_to_device(self.device)?.f_to_kind(self.kind)?;
        let b = x.size().first().copied().unwrap_or(1);
        // tch panics (instead of returning the error) when a fill value does not fit the dtype.
        let tv = self.time_value(t);
        let max = match self.kind {
            Kind::Half => 65504.0,
            Kind::Float => f64::from(f32::MAX),
            _ => f64::MAX,
        };
        if !(tv.abs() <= max) {
            return Err(Error::invalid(
                "time_input",
                format!("the model's time input at t = {t} is {tv}, which {} cannot hold", self.sidecar.dtype),
            ));
        }
        let t_in = Tensor::f_full([b], tv, (self.kind, self.device))?;
        let anchor = || -> Result<Tensor> {
            let mu = cond
                .anchor
                .as_ref()
                .ok_or_else(|| Error::invalid("anchor", "this model takes the anchor μ as input"))?;
            Ok(mu.f_to_device(self.device)?.f_to_kind(self.kind)?)
        };
        let inputs: Vec<IValue> = match self.sidecar.anchor_input {
            AnchorInput::None => vec![IValue::Tensor(x_in), IValue::Tensor(t_in)],
            AnchorInput::Concat => vec![IValue::Tensor(Tensor::f_cat(&[x_in, anchor()?], 1)?), IValue::Tensor(t_in)],
            AnchorInput::Argument => vec![IValue::Tensor(x_in), IValue::Tensor(t_in), IValue::Tensor(anchor()?)],
        };
        // Gradients flow when the caller enables them (likelihood); samplers run under no_grad (`solvers::sample`).
        let out = self.module.method_is("forward", &inputs)?;
        let back = |v: Tensor| -> Result<Tensor> { Ok(v.f_to_device(x.device())?.f_to_kind(in_kind)?) };
        match out {
            IValue::Tensor(y) => wrap_output(self.sidecar.parameterization, back(y)?, None),
            IValue::Tuple(mut items) if items.len() == 2 => {
                let second = match items.pop() {
                    Some(IValue::Tensor(v)) => back(v)?,
                    _ => return Err(Error::invalid("model output", "expected a tuple of two tensors")),
                };
                let first = match items.pop() {
                    Some(IValue::Tensor(v)) => back(v)?,
                    _ => return Err(Error::invalid("model output", "expected a tuple of two tensors")),
                };
                wrap_output(self.sidecar.parameterization, first, Some(second))
            }
            other => {
                Err(Error::invalid("model output", format!("expected a tensor or a pair of tensors, got {other:?}")))
            }
        }
    }
}
