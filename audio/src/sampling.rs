//! Samplers for the pipeline, built on diffuse-core's solvers (no solver code here): the model as a core
//! [`Denoiser`], the prior `x_T = y + σ(T)·z`, and the choice of solver by name.
//!
//! Convention: complex spectrograms are real tensors `[B, 2, F, T]`; the reference's noise z is complex with
//! variance ½ in each of the real and imaginary parts (E|z|² = 1), and core's OUVE path uses the reference's
//! σ(t) (σ(1) = 0.388983). Deterministic solvers only need `σ·ε` and are exact in this convention; the prior
//! draw and the stochastic samplers' draws scale core's standard normal noise by `1/√2` ([`ComplexNoise`]).

use diffuse_core::denoiser::{Conditioning, Denoiser};
use diffuse_core::param::{Parameterization, Prediction};
use std::sync::Arc;

use diffuse_core::path::NoisePath;
use diffuse_core::search::Schedule;
use diffuse_core::solvers::{self, Budget, NoNoise, NoiseSource, PredictorCorrector, Solver, SolverOptions, StepInfo};
use diffuse_core::spacing::{End, GridSpec, Spacing};
use tch::{Kind, Tensor};

use crate::config::{ModelConfig, OutputKind};
use crate::model::ScoreModel;
use crate::pipeline::{FrameNoise, Passthrough, SpectrogramSampler};
use crate::{Error, Result};

/// An SGMSE model seen as a diffuse-core denoiser: input `x_t`, anchor `y` (the conditioning), output the score
/// (OUVE models) or x̂0 (data-prediction models).
pub struct SgmseDenoiser<'a> {
    model: &'a ScoreModel,
    differentiable: bool,
}

impl<'a> SgmseDenoiser<'a> {
    /// Wraps a loaded model (no autograd graph: for sampling).
    pub fn new(model: &'a ScoreModel) -> Self {
        SgmseDenoiser { model, differentiable: false }
    }

    /// Wraps a loaded model whose calls keep the autograd graph where gradients are enabled.
    pub fn differentiable(model: &'a ScoreModel) -> Self {
        SgmseDenoiser { model, differentiable: true }
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
        let out = if self.differentiable {
            self.model.forward_differentiable(x, y, &tt)
        } else {
            self.model.forward(x, y, &tt)
        };
        let out = out.map_err(|e| match e {
            Error::Torch(e) => diffuse_core::Error::Torch(e),
            other => diffuse_core::Error::file(self.model.path(), other),
        })?;
        Ok(match self.model.output_kind() {
            OutputKind::Score => Prediction::Score(out),
            OutputKind::DataPrediction => Prediction::Data(out),
        })
    }
}

/// The reference's noise convention for a core [`NoiseSource`]: complex noise with variance ½ in each of the real
/// and imaginary parts, i.e. the inner source's standard normal draws times `1/√2`. (An I/O convention between
/// the reference's complex tensors and core's real ones, not solver code.)
pub struct ComplexNoise<N> {
    inner: N,
}

impl<N: NoiseSource> ComplexNoise<N> {
    /// Wraps a standard normal source.
    pub fn new(inner: N) -> Self {
        ComplexNoise { inner }
    }
}

impl<N: NoiseSource> NoiseSource for ComplexNoise<N> {
    fn normal(&mut self, draw: u64, like: &Tensor) -> diffuse_core::Result<Tensor> {
        Ok(self.inner.normal(draw, like)?.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?)
    }
}

/// The frame-indexed streams of [`FrameNoise`] as a core noise source: solver draw `d` is the frames' draw
/// `d + 1` (draw 0 is the prior), standard normal, shaped `[1, 2, F, T]`.
pub struct FrameNoiseSource {
    noise: FrameNoise,
}

impl FrameNoiseSource {
    /// The solver's draws for one chunk.
    pub fn new(noise: FrameNoise) -> Self {
        FrameNoiseSource { noise }
    }
}

impl NoiseSource for FrameNoiseSource {
    fn normal(&mut self, draw: u64, like: &Tensor) -> diffuse_core::Result<Tensor> {
        let size = like.size();
        if size.len() != 4 || size[0] != 1 || size[1] != 2 {
            return Err(diffuse_core::Error::Shape {
                op: "frame noise",
                expected: "[1, 2, F, T]".into(),
                got: format!("{size:?}"),
            });
        }
        let z = self.noise.normal(draw + 1, size[2], size[3], like.device()).map_err(|e| match e {
            Error::Torch(t) => diffuse_core::Error::Torch(t),
            other => diffuse_core::Error::invalid("noise", other.to_string()),
        })?;
        Ok(z.f_to_kind(like.kind())?)
    }
}

/// A diffuse-core solver on the model's path (OUVE or the SBVE bridge), from the prior at T: deterministic
/// solvers, the reference's predictor–corrector sampler and its adaptive probability-flow ODE sampler.
pub struct CoreSampler {
    name: String,
    solver: Box<dyn Solver>,
    path: Arc<dyn NoisePath>,
    grid: GridSpec,
    budget: Budget,
    /// Explicit per-interval orders (a schedule's), instead of the solver's plan for the budget.
    orders: Option<Vec<u32>>,
    nfe: usize,
    stochastic: bool,
}

impl CoreSampler {
    /// `solver` by core's registry name with `steps` intervals, ending at the data (a final x̂0 step from t_eps),
    /// uniform in λ = ln(α/σ) (uniform in t from a bridge's pinned start, where λ is undefined).
    pub fn new(solver: &str, steps: usize, config: &ModelConfig) -> Result<Self> {
        let path = config.noise_path()?;
        let built = solvers::build_solver(solver, &SolverOptions::default())?;
        if built.info().stochastic {
            return Err(Error::invalid(
                "sampler",
                format!("'{solver}' is stochastic; of the stochastic samplers, audio enhance runs 'pc'"),
            ));
        }
        let orders = built.plan_steps(steps, true)?;
        let nfe = solvers::plan_cost(built.as_ref(), &orders, true);
        Ok(CoreSampler {
            name: solver.into(),
            solver: built,
            grid: default_grid(path.as_ref()),
            path,
            budget: Budget::Steps(steps),
            orders: None,
            nfe,
            stochastic: false,
        })
    }

    /// A searched solver schedule (`diffuse audio search`): its solver (or per-step strategies) on its times, with
    /// its orders, then to the data. The schedule must start at the path's end (where the prior is drawn).
    pub fn from_schedule(schedule: &Schedule, config: &ModelConfig) -> Result<Self> {
        let path = config.noise_path()?;
        schedule.validate(path.as_ref(), path.t_range().1)?;
        let solver = schedule.build_solver(&SolverOptions::default())?;
        let orders = schedule.orders(solver.as_ref())?;
        let nfe = solvers::plan_cost(solver.as_ref(), &orders, true);
        Ok(CoreSampler {
            name: format!("{} (schedule)", schedule.solver),
            solver,
            path,
            grid: schedule.grid(),
            budget: Budget::Steps(orders.len()),
            orders: Some(orders),
            nfe,
            stochastic: false,
        })
    }

    /// The reference predictor–corrector sampler (sgmse `get_pc_sampler("reverse_diffusion", "ald")`): core's
    /// [`PredictorCorrector`] with the reverse-diffusion predictor and the annealed Langevin corrector,
    /// `corrector_steps` corrector steps of signal-to-noise ratio `snr` per step, `steps` times uniform in t from
    /// 1 to t_eps and a last step of size t_eps; `steps·(corrector_steps + 1)` network evaluations. It returns the
    /// last predictor mean.
    pub fn pc(steps: usize, snr: f64, corrector_steps: usize, config: &ModelConfig) -> Result<Self> {
        if steps == 0 {
            return Err(Error::invalid("steps", "need at least 1"));
        }
        let path = config.noise_path()?;
        let pc = PredictorCorrector { snr, corrector_steps, ..PredictorCorrector::sgmse() };
        let orders = pc.plan_steps(steps, true)?; // validates snr and corrector steps
        let nfe = solvers::plan_cost(&pc, &orders, true);
        Ok(CoreSampler {
            name: format!("pc (N {steps}, snr {snr}, {corrector_steps} corrector step{})", plural(corrector_steps)),
            solver: Box::new(pc),
            path,
            grid: GridSpec::new(Spacing::UniformT, End::Zero),
            budget: Budget::Steps(steps),
            orders: None,
            nfe,
            stochastic: true,
        })
    }

    /// The reference's probability-flow ODE sampler: adaptive Dormand–Prince (rtol = atol = 1e-5) from t = 1 to
    /// t_eps, returning the state at t_eps (sgmse `get_ode_sampler`, whose final denoising step is broken).
    pub fn reference_ode(config: &ModelConfig) -> Result<Self> {
        let path = config.noise_path()?;
        let opts = SolverOptions { rtol: 1e-5, atol: 1e-5, ..SolverOptions::default() };
        let built = solvers::build_solver("dopri5", &opts)?;
        Ok(CoreSampler {
            name: "ode".into(),
            solver: built,
            path,
            grid: GridSpec::new(Spacing::UniformT, End::Time(config.t_eps())),
            budget: Budget::Steps(1),
            orders: None,
            // An estimate for progress bars: the reference reports about 140 on its test network.
            nfe: 150,
            stochastic: false,
        })
    }

    /// The path the sampler walks.
    pub fn path(&self) -> &dyn NoisePath {
        self.path.as_ref()
    }

    /// The prior `x_T = (α_T + γ_T)·y + σ_T·z` (OUVE: `y + σ(T)·z`; the bridge: `y`), z complex standard normal
    /// (variance ½ per part), `y` of shape `[1, 2, F, T]`.
    pub fn prior(&self, y: &Tensor, noise: FrameNoise) -> Result<Tensor> {
        let size = y.size();
        let z = noise.normal(0, size[2], size[3], y.device())?;
        self.prior_with(y, &z.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?)
    }

    /// The prior for a given complex noise z (variance ½ per part).
    pub fn prior_with(&self, y: &Tensor, z: &Tensor) -> Result<Tensor> {
        let p = self.path.point(self.path.t_range().1);
        let anchor = p.alpha + p.gamma;
        let mean = if anchor == 1.0 { y.shallow_clone() } else { y.f_mul_scalar(anchor)? };
        Ok(mean.f_add(&z.f_mul_scalar(p.sigma)?)?)
    }

    /// Runs the solver from `x_t` (at t = 1) with `denoiser` conditioned on `y`, drawing noise (stochastic
    /// samplers) from `noise` in the reference's convention (see [`ComplexNoise`]).
    pub fn solve(
        &self,
        denoiser: &dyn Denoiser,
        y: &Tensor,
        x_t: &Tensor,
        noise: &mut dyn NoiseSource,
        observer: &mut dyn solvers::Observer,
    ) -> Result<solvers::Sample> {
        self.run(denoiser, y, x_t, noise, observer, false)
    }

    /// [`CoreSampler::solve`] for deterministic solvers, keeping the autograd graph through every network call
    /// (training through the sampler); returns the output.
    pub fn solve_differentiable(&self, denoiser: &dyn Denoiser, y: &Tensor, x_t: &Tensor) -> Result<Tensor> {
        if self.orders.is_some() {
            return Err(Error::invalid("sampler", "training runs through a solver's own plan, not a schedule"));
        }
        if self.stochastic {
            return Err(Error::invalid(
                "sampler",
                format!("'{}' is stochastic; train through a deterministic one", self.name),
            ));
        }
        Ok(self.run(denoiser, y, x_t, &mut NoNoise, &mut (), true)?.x)
    }

    /// Runs the solver without a graph from `x_t` (at t = 1) to the path's last time before the data, `t_eps`
    /// (σ > 0), over the intervals of its grid but the jump onto the data; returns x there and that point. For
    /// gradients by the adjoint ([`crate::train::Crp::adjoint`]), which differentiates the jump itself.
    pub fn solve_before_data(
        &self,
        denoiser: &dyn Denoiser,
        y: &Tensor,
        x_t: &Tensor,
    ) -> Result<(Tensor, diffuse_core::Point)> {
        if self.orders.is_some() || self.stochastic {
            return Err(Error::invalid("sampler", "the adjoint runs a deterministic solver's own plan"));
        }
        let path = self.path.as_ref();
        let end = path.point(path.t_range().0);
        let grid = GridSpec { end: End::Time(end.t), ..self.grid.clone() };
        let steps = match self.budget {
            Budget::Steps(n) | Budget::Nfe(n) => n.saturating_sub(1).max(1),
        };
        let cond = Conditioning::with_anchor(y.shallow_clone());
        let out = solvers::sample(
            self.solver.as_ref(),
            path,
            denoiser,
            &cond,
            x_t,
            &grid,
            Budget::Steps(steps),
            &mut NoNoise,
            &mut (),
        )?;
        Ok((out.x, end))
    }

    fn run(
        &self,
        denoiser: &dyn Denoiser,
        y: &Tensor,
        x_t: &Tensor,
        noise: &mut dyn NoiseSource,
        observer: &mut dyn solvers::Observer,
        differentiable: bool,
    ) -> Result<solvers::Sample> {
        let cond = Conditioning::with_anchor(y.shallow_clone());
        if let Some(orders) = &self.orders {
            let path = self.path.as_ref();
            return Ok(solvers::sample_with_orders(
                self.solver.as_ref(),
                path,
                denoiser,
                &cond,
                x_t,
                &self.grid,
                orders,
                noise,
                observer,
            )?);
        }
        let sample = if differentiable { solvers::sample_differentiable } else { solvers::sample };
        Ok(sample(
            self.solver.as_ref(),
            self.path.as_ref(),
            denoiser,
            &cond,
            x_t,
            &self.grid,
            self.budget,
            noise,
            observer,
        )?)
    }
}

/// The grid core solvers walk by default: uniform in λ = ln(α/σ) from the path's end to the data, or uniform in
/// t from a bridge's pinned start, where λ is undefined.
pub fn default_grid(path: &dyn NoisePath) -> GridSpec {
    let start = path.point(path.t_range().1);
    let spacing = if start.sigma > 0.0 && start.alpha > 0.0 { Spacing::UniformLambda } else { Spacing::UniformT };
    GridSpec::new(spacing, End::Zero)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl SpectrogramSampler for CoreSampler {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn nfe(&self) -> usize {
        self.nfe
    }
    fn sample(
        &self,
        model: &ScoreModel,
        y: &Tensor,
        noise: FrameNoise,
        step: &mut dyn FnMut(),
    ) -> Result<(Tensor, usize)> {
        let x_t = self.prior(y, noise)?;
        let denoiser = SgmseDenoiser::new(model);
        let mut reported = 0usize;
        let mut observer = |info: &StepInfo<'_>| -> diffuse_core::Result<()> {
            while reported < info.nfe {
                step();
                reported += 1;
            }
            Ok(())
        };
        let out = if self.stochastic {
            let mut source = ComplexNoise::new(FrameNoiseSource::new(noise));
            self.solve(&denoiser, y, &x_t, &mut source, &mut observer)?
        } else {
            self.solve(&denoiser, y, &x_t, &mut NoNoise, &mut observer)?
        };
        Ok((out.x, out.nfe))
    }
}

/// Sampler names `diffuse audio enhance --sampler` accepts besides core's solver names.
pub const SPECIAL_SAMPLERS: &[&str] = &["pc", "ode", "sb-ode", "passthrough"];

/// Builds the sampler `name` for a model: `pc` (the reference predictor–corrector; `snr` and the corrector steps
/// default to the sidecar's), `ode` (the reference probability-flow ODE), `passthrough` (no model call), or any
/// deterministic diffuse-core solver (`dpm++2m`, `unipc-bh2`, `heun`, ...) with `steps` intervals (default: the
/// sidecar's steps for its own sampler, 10 otherwise).
pub fn build_sampler(
    name: &str,
    steps: Option<usize>,
    snr: Option<f64>,
    config: &ModelConfig,
) -> Result<Box<dyn SpectrogramSampler>> {
    let own = (name == config.sampler.name).then_some(config.sampler.steps);
    if let Some(schedule) = &config.sampler.schedule
        && own.is_some()
        && (steps.is_none() || steps == own)
    {
        return Ok(Box::new(CoreSampler::from_schedule(schedule, config)?));
    }
    let steps = steps.or(own);
    if steps == Some(0) {
        return Err(Error::invalid("steps", "need at least 1"));
    }
    match name {
        "passthrough" => Ok(Box::new(Passthrough)),
        // sgmse's Schrödinger-bridge ODE sampler is the first-order data-prediction step on the bridge: core's ddim.
        "sb-ode" => Ok(Box::new(CoreSampler::new("ddim", steps.unwrap_or(10), config)?)),
        "sb-sde" => Err(Error::invalid(
            "sampler",
            "sb-sde (the bridge's stochastic sampler) is not available; use sb-ode or a deterministic core solver",
        )),
        "pc" => {
            let (default_snr, corrector) = if config.sampler.name == "pc" {
                (config.sampler.snr, config.sampler.corrector_steps.max(1))
            } else {
                (0.5, 1)
            };
            Ok(Box::new(CoreSampler::pc(steps.unwrap_or(30), snr.unwrap_or(default_snr), corrector, config)?))
        }
        "ode" => Ok(Box::new(CoreSampler::reference_ode(config)?)),
        solver => Ok(Box::new(CoreSampler::new(solver, steps.unwrap_or(10), config)?)),
    }
}

#[cfg(all(test, feature = "default-model"))]
mod tests {
    use super::*;

    /// A schedule holding the default grid's own times and no orders is the named solver itself, bit for bit;
    /// other times change the result.
    #[test]
    fn a_schedule_of_the_default_grid_is_the_plain_solver() {
        let model = crate::default_model::load(tch::Device::Cpu).unwrap();
        let config = model.config();
        let path = config.noise_path().unwrap();
        let points = default_grid(path.as_ref()).build(path.as_ref(), 4).unwrap();
        let schedule = |times: Vec<f64>| Schedule {
            nfe: 4,
            solver: "dpm++2m".into(),
            times,
            orders: None,
            strategies: None,
            search_error: 0.0,
            baseline_error: 0.0,
            objective: "rms".into(),
            evaluations: 0,
        };
        let times: Vec<f64> = points[..4].iter().map(|p| p.t).collect();
        // Deterministic inputs: the global RNG is shared with other tests running in parallel.
        let wave = |phase: f64| {
            Tensor::arange(2 * 256 * 32, (Kind::Float, tch::Device::Cpu))
                .f_mul_scalar(0.37)
                .and_then(|t| t.f_add_scalar(phase))
                .unwrap()
                .sin()
                .view([1, 2, 256, 32])
        };
        let y = wave(0.0).f_mul_scalar(0.3).unwrap();
        let x_t = CoreSampler::new("dpm++2m", 4, config).unwrap().prior_with(&y, &wave(1.0)).unwrap();
        let denoiser = SgmseDenoiser::new(&model);
        let run = |s: &CoreSampler| s.solve(&denoiser, &y, &x_t, &mut NoNoise, &mut ()).unwrap();
        let plain = run(&CoreSampler::new("dpm++2m", 4, config).unwrap());
        let same = run(&CoreSampler::from_schedule(&schedule(times.clone()), config).unwrap());
        assert_eq!(plain.nfe, 4);
        assert_eq!(same.nfe, 4);
        assert!(plain.x.equal(&same.x), "the schedule of the default grid differs from the plain solver");
        let moved = [times[0], times[1] * 0.8, times[2], times[3]];
        let other = run(&CoreSampler::from_schedule(&schedule(moved.to_vec()), config).unwrap());
        assert!(!plain.x.equal(&other.x));
        let mut ordered = schedule(times);
        ordered.orders = Some(vec![1, 1, 1, 1]);
        let ddim = run(&CoreSampler::new("ddim", 4, config).unwrap());
        assert!(ddim.x.equal(&run(&CoreSampler::from_schedule(&ordered, config).unwrap()).x));
    }
}
