//! Samplers for the pipeline, built on diffuse-core's solvers (no solver code here): the model as a core
//! [`Denoiser`], the prior `x_T = y + σ(T)·z`, and the choice of solver by name.
//!
//! Convention: complex spectrograms are real tensors `[B, 2, F, T]`; the reference's noise z is complex with
//! variance ½ in each of the real and imaginary parts (E|z|² = 1), and core's OUVE path uses the reference's
//! σ(t) (σ(1) = 0.388983). Deterministic solvers only need `σ·ε` and are exact in this convention; the prior
//! draw scales core's standard normal noise by `1/√2`.

use diffuse_core::denoiser::{Conditioning, Denoiser};
use diffuse_core::param::{Parameterization, Prediction};
use diffuse_core::path::{NoisePath, Ouve};
use diffuse_core::solvers::{self, Budget, NoNoise, Solver, SolverOptions, StepInfo};
use diffuse_core::spacing::{End, GridSpec, Spacing};
use tch::{Kind, Tensor};

use crate::config::{ModelConfig, OutputKind, SdeConfig};
use crate::model::ScoreModel;
use crate::pipeline::{FrameNoise, Passthrough, SpectrogramSampler};
use crate::{Error, Result};

/// An SGMSE model seen as a diffuse-core denoiser: input `x_t`, anchor `y` (the conditioning), output the score
/// (OUVE models) or x̂0 (data-prediction models).
pub struct SgmseDenoiser<'a> {
    model: &'a ScoreModel,
}

impl<'a> SgmseDenoiser<'a> {
    /// Wraps a loaded model.
    pub fn new(model: &'a ScoreModel) -> Self {
        SgmseDenoiser { model }
    }
}

impl Denoiser for SgmseDenoiser<'_> {
    fn parameterization(&self) -> Parameterization {
        match self.model.output_kind() {
            OutputKind::Score => Parameterization::Score,
            OutputKind::DataPrediction => Parameterization::Data,
        }
    }

    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> diffuse_core::Result<Prediction> {
        let y = cond.anchor.as_ref().ok_or_else(|| {
            diffuse_core::Error::invalid("conditioning", "SGMSE models need the noisy spectrogram y as anchor")
        })?;
        let batch = x.size().first().copied().unwrap_or(1);
        let tt = Tensor::f_full([batch], t, (Kind::Float, x.device()))?;
        let out = self.model.forward(x, y, &tt).map_err(|e| match e {
            Error::Torch(e) => diffuse_core::Error::Torch(e),
            other => diffuse_core::Error::file(self.model.path(), other),
        })?;
        Ok(match self.model.output_kind() {
            OutputKind::Score => Prediction::Score(out),
            OutputKind::DataPrediction => Prediction::Data(out),
        })
    }
}

/// The core OUVE path of a sidecar (t from `t_eps` to 1).
pub fn ouve_path(config: &ModelConfig) -> Result<Ouve> {
    match config.sde {
        SdeConfig::Ouve { theta, sigma_min, sigma_max } => {
            Ok(Ouve::new(theta, sigma_min, sigma_max, config.sampler.t_eps, 1.0)?)
        }
        SdeConfig::Sbve { .. } => Err(Error::SamplerUnavailable {
            name: "sbve".into(),
            reason: "Schrödinger-bridge (SBVE) models are not wired to core's solvers yet".into(),
        }),
    }
}

/// A deterministic diffuse-core solver on the OUVE path, from the prior at t = 1.
pub struct CoreSampler {
    name: String,
    solver: Box<dyn Solver>,
    path: Ouve,
    grid: GridSpec,
    budget: Budget,
    nfe: usize,
}

impl CoreSampler {
    /// `solver` by core's registry name with `steps` intervals, ending at the data (a final x̂0 step from t_eps),
    /// uniform in λ = ln(α/σ).
    pub fn new(solver: &str, steps: usize, config: &ModelConfig) -> Result<Self> {
        let path = ouve_path(config)?;
        let built = solvers::build_solver(solver, &SolverOptions::default())?;
        let orders = built.plan_steps(steps, true)?;
        let nfe = solvers::plan_cost(built.as_ref(), &orders, true);
        Ok(CoreSampler {
            name: solver.into(),
            solver: built,
            path,
            grid: GridSpec::new(Spacing::UniformLambda, End::Zero),
            budget: Budget::Steps(steps),
            nfe,
        })
    }

    /// The reference's probability-flow ODE sampler: adaptive Dormand–Prince (rtol = atol = 1e-5) from t = 1 to
    /// t_eps, returning the state at t_eps (sgmse `get_ode_sampler`, whose final denoising step is broken).
    pub fn reference_ode(config: &ModelConfig) -> Result<Self> {
        let path = ouve_path(config)?;
        let opts = SolverOptions { rtol: 1e-5, atol: 1e-5, ..SolverOptions::default() };
        let built = solvers::build_solver("dopri5", &opts)?;
        Ok(CoreSampler {
            name: "ode".into(),
            solver: built,
            path,
            grid: GridSpec::new(Spacing::UniformT, End::Time(config.sampler.t_eps)),
            budget: Budget::Steps(1),
            nfe: 150,
        })
    }

    /// The prior `x_T = y + σ(T)·z`, z complex standard normal (variance ½ per part), `y` of shape
    /// `[1, 2, F, T]`.
    pub fn prior(&self, y: &Tensor, noise: FrameNoise) -> Result<Tensor> {
        let size = y.size();
        let z = noise.normal(0, size[2], size[3], y.device())?;
        let sigma_t = self.path.sigma(self.path.t_range().1);
        Ok(y.f_add(&z.f_mul_scalar(sigma_t * std::f64::consts::FRAC_1_SQRT_2)?)?)
    }
}

impl SpectrogramSampler for CoreSampler {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn nfe(&self) -> usize {
        self.nfe
    }
    fn sample(&self, model: &ScoreModel, y: &Tensor, noise: FrameNoise, step: &mut dyn FnMut()) -> Result<Tensor> {
        let x_t = self.prior(y, noise)?;
        let denoiser = SgmseDenoiser::new(model);
        let cond = Conditioning::with_anchor(y.shallow_clone());
        let mut reported = 0usize;
        let mut observer = |info: &StepInfo<'_>| -> diffuse_core::Result<()> {
            while reported < info.nfe.min(self.nfe) {
                step();
                reported += 1;
            }
            Ok(())
        };
        let out = solvers::sample(
            self.solver.as_ref(),
            &self.path,
            &denoiser,
            &cond,
            &x_t,
            &self.grid,
            self.budget,
            &mut NoNoise,
            &mut observer,
        )?;
        Ok(out.x)
    }
}

/// Sampler names `diffuse audio enhance --sampler` accepts besides core's solver names.
pub const SPECIAL_SAMPLERS: &[&str] = &["pc", "ode", "passthrough"];

/// Builds the sampler `name` for a model: `pc` (the reference predictor–corrector), `ode` (the reference
/// probability-flow ODE), `passthrough` (no model call), or any deterministic diffuse-core solver (`dpm++2m`,
/// `unipc-bh2`, `heun`, ...) with `steps` intervals.
pub fn build_sampler(name: &str, steps: Option<usize>, config: &ModelConfig) -> Result<Box<dyn SpectrogramSampler>> {
    match name {
        "passthrough" => Ok(Box::new(Passthrough)),
        "pc" => Err(Error::SamplerUnavailable {
            name: "pc".into(),
            reason: "the reference predictor–corrector sampler needs diffuse-core's stochastic samplers, which are \
                     not merged yet; use --sampler ode or a deterministic solver such as dpm++2m"
                .into(),
        }),
        "ode" => Ok(Box::new(CoreSampler::reference_ode(config)?)),
        solver => {
            let steps = steps.unwrap_or(10);
            if steps == 0 {
                return Err(Error::invalid("steps", "need at least 1"));
            }
            Ok(Box::new(CoreSampler::new(solver, steps, config)?))
        }
    }
}
