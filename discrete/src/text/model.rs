//! A byte-level text model: [`Transformer`] weights (safetensors) plus a JSON sidecar (`model.json` beside them)
//! naming its kind (masked or uniform diffusion, or the autoregressive baseline), tokenizer, schedule, network,
//! default sampler and how it was trained. Diffusion models are [`Denoiser`]s, so every sampler of the crate runs
//! them; the autoregressive model gives exact log-likelihoods.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use crate::denoiser::Denoiser;
use crate::param::Output;
use crate::process::Process;
use crate::schedule::{Schedule, ScheduleKind};
use crate::text::net::{Transformer, TransformerConfig};
use crate::{Error, Result};

/// The sidecar's format tag.
pub const FORMAT: &str = "diffuse-text/1";
/// Byte vocabulary size.
pub const BYTES: usize = 256;
/// The extra input token: the mask (masked diffusion) or the start of a sequence (autoregressive).
pub const SPECIAL: i64 = 256;
/// Largest sidecar read.
const MAX_SIDECAR_BYTES: u64 = 1 << 20;

/// What a model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Masked (absorbing) diffusion; outputs clean-data logits (SUBS).
    Masked,
    /// Uniform diffusion; outputs leave-one-out logits.
    Uniform,
    /// The causal baseline: next-byte logits.
    Autoregressive,
}

impl ModelKind {
    /// The network's input and output widths for bytes.
    fn vocab(self) -> (usize, usize) {
        match self {
            ModelKind::Masked => (BYTES + 1, BYTES + 1),
            ModelKind::Uniform => (BYTES, BYTES),
            ModelKind::Autoregressive => (BYTES + 1, BYTES),
        }
    }
}

/// The tokenizer: raw bytes (no vocabulary file, nothing out of vocabulary), with the mask or start token 256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokenizer {
    /// Always `bytes` in this version.
    pub kind: String,
    /// Clean tokens (256).
    pub vocab: usize,
    /// The mask token's id, for masked diffusion.
    pub mask: Option<usize>,
    /// The start token's id, for the autoregressive model.
    pub start: Option<usize>,
}

/// The default sampler of a diffusion model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerDefaults {
    /// Sampler name (`ancestral`, `consistency`, …).
    pub sampler: String,
    /// Steps.
    pub steps: usize,
}

/// The sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// [`FORMAT`].
    pub format: String,
    /// Model kind.
    pub kind: ModelKind,
    /// Tokenizer.
    pub tokenizer: Tokenizer,
    /// Noise schedule name (`log-linear`, `cosine`, `linear`; default parameters).
    pub schedule: String,
    /// The network.
    pub network: TransformerConfig,
    /// Default sampler.
    pub sampler: SamplerDefaults,
    /// How it was trained (recipe, corpus, command, time, machine).
    #[serde(default)]
    pub training: serde_json::Value,
}

impl TextConfig {
    /// A configuration of `kind` with a network of `width`, `depth`, `heads` and `context`.
    pub fn new(kind: ModelKind, width: usize, depth: usize, heads: usize, context: usize) -> Self {
        let (vocab_in, vocab_out) = kind.vocab();
        TextConfig {
            format: FORMAT.into(),
            kind,
            tokenizer: Tokenizer {
                kind: "bytes".into(),
                vocab: BYTES,
                mask: (kind == ModelKind::Masked).then_some(SPECIAL as usize),
                start: (kind == ModelKind::Autoregressive).then_some(SPECIAL as usize),
            },
            schedule: "log-linear".into(),
            network: TransformerConfig {
                vocab_in,
                vocab_out,
                width,
                depth,
                heads,
                context,
                causal: kind == ModelKind::Autoregressive,
                // A masked model's posterior does not depend on t given x_t (MDLM): leaving t out makes caching
                // across unchanged sampler steps exact.
                time_conditioning: kind == ModelKind::Uniform,
            },
            sampler: SamplerDefaults { sampler: "ancestral".into(), steps: 128 },
            training: serde_json::Value::Null,
        }
    }

    /// Checks the sidecar: format, tokenizer and network consistent with the kind.
    pub fn validate(&self) -> Result<()> {
        let bad = |r: String| Err(Error::invalid("text model sidecar", r));
        if self.format != FORMAT {
            return bad(format!("format '{}' is not '{FORMAT}' (not a text model of this version)", self.format));
        }
        if self.tokenizer.kind != "bytes" || self.tokenizer.vocab != BYTES {
            return bad(format!("tokenizer {:?}: this version reads byte tokenizers (256)", self.tokenizer));
        }
        let (vin, vout) = self.kind.vocab();
        if (self.network.vocab_in, self.network.vocab_out) != (vin, vout) {
            return bad(format!("a {:?} model needs vocabularies {vin}/{vout}", self.kind));
        }
        if self.network.causal != (self.kind == ModelKind::Autoregressive) {
            return bad("only the autoregressive model is causal".into());
        }
        self.schedule_kind()?;
        self.network.validate()
    }

    /// The schedule.
    pub fn schedule_kind(&self) -> Result<ScheduleKind> {
        self.schedule.parse()
    }
}

/// The sidecar of a weights file.
pub fn sidecar_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// A text model: network, variables and sidecar.
#[derive(Debug)]
pub struct TextModel {
    vs: nn::VarStore,
    net: Transformer,
    config: TextConfig,
    schedule: ScheduleKind,
}

impl TextModel {
    /// A freshly initialised model (seed with `tch::manual_seed` for reproducible weights).
    pub fn new(config: TextConfig, device: Device) -> Result<Self> {
        config.validate()?;
        let vs = nn::VarStore::new(device);
        let net = Transformer::new(&vs.root(), &config.network)?;
        let schedule = config.schedule_kind()?;
        Ok(TextModel { vs, net, config, schedule })
    }

    /// Loads `weights` (`.safetensors`) and the sidecar beside it.
    pub fn load(weights: &Path, device: Device) -> Result<Self> {
        let side = sidecar_path(weights);
        let text = diffuse_core::io::read_input(&side, MAX_SIDECAR_BYTES)?;
        let config: TextConfig =
            serde_json::from_slice(&text).map_err(|e| Error::file(&side, format!("not a text model sidecar: {e}")))?;
        config.validate().map_err(|e| Error::file(&side, e.to_string()))?;
        let bytes = diffuse_core::io::read_input(weights, diffuse_core::weights::MAX_WEIGHTS_BYTES)?;
        Self::from_bytes(&bytes, config, weights, device)
    }

    /// A model from safetensors bytes and its sidecar; `name` stands for the file in errors.
    pub fn from_bytes(bytes: &[u8], config: TextConfig, name: &Path, device: Device) -> Result<Self> {
        let mut model = Self::new(config, device).map_err(|e| Error::file(name, e.to_string()))?;
        let (tensors, _) = diffuse_core::weights::from_bytes(bytes, name)?;
        diffuse_core::nn::load_vars(&mut model.vs, tensors, name)?;
        Ok(model)
    }

    /// Writes the weights and the sidecar atomically (existing files kept unless `force`).
    pub fn save(&self, weights: &Path, force: bool) -> Result<()> {
        let bytes = diffuse_core::weights::to_bytes(&diffuse_core::weights::named(&self.vs), Default::default())?;
        let side = serde_json::to_vec_pretty(&self.config).map_err(|e| Error::invalid("sidecar", e.to_string()))?;
        diffuse_core::io::write_atomic(weights, force, |f| std::io::Write::write_all(f, &bytes))?;
        diffuse_core::io::write_atomic(&sidecar_path(weights), force, |f| std::io::Write::write_all(f, &side))?;
        Ok(())
    }

    /// The sidecar.
    pub fn config(&self) -> &TextConfig {
        &self.config
    }

    /// Mutable sidecar (training fills in the recipe).
    pub fn config_mut(&mut self) -> &mut TextConfig {
        &mut self.config
    }

    /// The variables.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The schedule.
    pub fn schedule(&self) -> &dyn Schedule {
        self.schedule.as_schedule()
    }

    /// The device of the weights.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Longest sequence.
    pub fn context(&self) -> usize {
        self.config.network.context
    }

    /// Whether the samplers' cache is exact for this model (a masked model without time input).
    pub fn time_independent_cache(&self) -> bool {
        self.config.kind == ModelKind::Masked && !self.config.network.time_conditioning
    }

    /// Raw network logits `[B, L, W]` for tokens `[B, L]` at times `t` `[B]`.
    pub fn logits(&self, tokens: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.net.forward(&tokens.f_to_device(self.device())?, &t.f_to_device(self.device())?)
    }

    /// Per-byte negative log-likelihood in nats `[B, L]` of `x` `[B, L]` under the autoregressive model (the
    /// first byte is predicted from the start token).
    pub fn ar_nll(&self, x: &Tensor) -> Result<Tensor> {
        if self.config.kind != ModelKind::Autoregressive {
            return Err(Error::not_applicable("exact log-likelihood", "it needs the autoregressive model"));
        }
        let x = x.f_to_device(self.device())?;
        let (b, l) = x.size2()?;
        let start = Tensor::f_full([b, 1], SPECIAL, (Kind::Int64, x.device()))?;
        let input = Tensor::f_cat(&[start, x.f_narrow(1, 0, l - 1)?], 1)?;
        let logp =
            self.logits(&input, &Tensor::f_zeros([b], (Kind::Float, x.device()))?)?.f_log_softmax(-1, Kind::Float)?;
        Ok(logp.f_gather(-1, &x.f_unsqueeze(-1)?, false)?.f_squeeze_dim(-1)?.f_neg()?)
    }
}

impl Denoiser for TextModel {
    fn process(&self) -> Process {
        match self.config.kind {
            ModelKind::Uniform => Process::Uniform { vocab: BYTES },
            _ => Process::Masked { vocab: BYTES },
        }
    }

    fn output(&self) -> Output {
        match self.config.kind {
            ModelKind::Uniform => Output::LeaveOneOut,
            _ => Output::Clean,
        }
    }

    fn time_independent(&self) -> bool {
        !self.config.network.time_conditioning
    }

    fn forward(&self, x_t: &Tensor, t: f64, _noise: Option<&Tensor>) -> Result<Tensor> {
        if self.config.kind == ModelKind::Autoregressive {
            return Err(Error::not_applicable("diffusion sampling", "this is the autoregressive model"));
        }
        let b = x_t.size().first().copied().unwrap_or(1);
        let tt = Tensor::f_full([b], t, (Kind::Float, self.device()))?;
        let logits = self.logits(x_t, &tt)?;
        if self.config.kind == ModelKind::Masked {
            // SUBS: the mask is never a clean token.
            let mut mask_col = logits.f_narrow(-1, SPECIAL, 1)?;
            let _ = mask_col.f_fill_(f64::NEG_INFINITY)?;
        }
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_files() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [ModelKind::Masked, ModelKind::Uniform, ModelKind::Autoregressive] {
            tch::manual_seed(1);
            let m = TextModel::new(TextConfig::new(kind, 16, 1, 2, 8), Device::Cpu).unwrap();
            let file = dir.path().join(format!("{kind:?}.safetensors"));
            m.save(&file, false).unwrap();
            assert!(m.save(&file, false).is_err(), "an existing model is not overwritten without force");
            let back = TextModel::load(&file, Device::Cpu).unwrap();
            assert_eq!(back.config(), m.config());
            let x = Tensor::from_slice(&[65i64, 66, 67]).view([1, 3]);
            let t = Tensor::from_slice(&[0.3f32]);
            assert!(back.logits(&x, &t).unwrap().equal(&m.logits(&x, &t).unwrap()));
        }
    }

    #[test]
    fn a_sidecar_of_another_kind_of_model_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.safetensors");
        std::fs::write(&file, b"x").unwrap();
        std::fs::write(sidecar_path(&file), br#"{"task": "denoise", "path": {}}"#).unwrap();
        let err = TextModel::load(&file, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("m.json") && err.contains("not a text model sidecar"), "{err}");
        let mut c = TextConfig::new(ModelKind::Masked, 16, 1, 2, 8);
        c.network.causal = true;
        assert!(c.validate().is_err());
    }

    #[test]
    fn masked_outputs_never_put_mass_on_the_mask_and_ar_nll_is_per_byte() {
        let m = TextModel::new(TextConfig::new(ModelKind::Masked, 16, 1, 2, 8), Device::Cpu).unwrap();
        let x = Tensor::from_slice(&[256i64, 66, 256]).view([1, 3]);
        let out = m.forward(&x, 0.5, None).unwrap();
        assert_eq!(out.size(), [1, 3, 257]);
        assert_eq!(out.double_value(&[0, 0, 256]), f64::NEG_INFINITY);
        let ar = TextModel::new(TextConfig::new(ModelKind::Autoregressive, 16, 1, 2, 8), Device::Cpu).unwrap();
        let nll = ar.ar_nll(&Tensor::from_slice(&[1i64, 2, 3, 4]).view([1, 4])).unwrap();
        // Zero-initialised output: uniform over 256 bytes.
        assert!((nll.double_value(&[0, 2]) - 256f64.ln()).abs() < 1e-5);
        assert!(ar.forward(&x, 0.5, None).is_err());
    }
}
