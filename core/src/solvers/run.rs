//! What a solver works with while it runs: the model evaluator (NFE count, anchor handling, conversions),
//! the noise source and the observer.

use tch::Tensor;

use crate::denoiser::{Conditioning, Denoiser};
use crate::param::{At, Prediction, lin2, tilde};
use crate::path::{NoisePath, Point};
use crate::seed::SampleSeeds;
use crate::{Error, Result};

/// Standard normal noise for stochastic solvers. Deterministic solvers never ask for any.
pub trait NoiseSource {
    /// Noise for draw number `draw` (a step, a corrector iteration, …) with the shape, dtype and device of `like`.
    fn normal(&mut self, draw: u64, like: &Tensor) -> Result<Tensor>;

    /// A Brownian increment `W(s1) − W(s0)` (any time variable; `s1 > s0` or `s1 < s0`). The default draws
    /// fresh noise scaled by `√|s1 − s0|`; a Brownian tree returns increments of one fixed path instead.
    fn brownian(&mut self, draw: u64, s0: f64, s1: f64, like: &Tensor) -> Result<Tensor> {
        Ok(self.normal(draw, like)?.f_mul_scalar((s1 - s0).abs().sqrt())?)
    }
}

/// Seeded per-sample noise: sample i of the batch draws from its own stream, whatever the batch size.
pub struct SeededNoise {
    seeds: SampleSeeds,
    /// Added to every draw number, so two uses of one seed set (prior and sampler) draw different noise.
    offset: u64,
}

impl SeededNoise {
    /// Noise for the samples of `seeds`.
    pub fn new(seeds: SampleSeeds) -> Self {
        SeededNoise { seeds, offset: 1 }
    }

    /// The per-sample seeds.
    pub fn seeds(&self) -> &SampleSeeds {
        &self.seeds
    }
}

impl NoiseSource for SeededNoise {
    fn normal(&mut self, draw: u64, like: &Tensor) -> Result<Tensor> {
        let size = like.size();
        if size.first().copied() != Some(self.seeds.len() as i64) {
            return Err(Error::Shape {
                op: "noise",
                expected: format!("batch of {}", self.seeds.len()),
                got: format!("{size:?}"),
            });
        }
        Ok(self.seeds.normal(draw + self.offset, &size[1..], like.kind(), like.device()))
    }
}

/// A noise source for deterministic solvers: asking it for noise is an error.
pub struct NoNoise;

impl NoiseSource for NoNoise {
    fn normal(&mut self, _draw: u64, _like: &Tensor) -> Result<Tensor> {
        Err(Error::invalid("noise", "this run has no noise source; stochastic solvers need a seeded one"))
    }
}

/// What an observer sees after every step.
pub struct StepInfo<'a> {
    /// Steps done so far (1-based).
    pub step: usize,
    /// Steps in the run (0 for adaptive solvers, which do not know in advance).
    pub steps: usize,
    /// Where the trajectory now is.
    pub point: Point,
    /// The state `x̃ = x − γ·μ` (add `γ·μ` for x).
    pub x_tilde: &'a Tensor,
    /// Model evaluations so far.
    pub nfe: usize,
}

/// Called after every step (progress bars, trajectory capture). Returning an error stops the run.
pub trait Observer {
    /// One step is done.
    fn on_step(&mut self, info: &StepInfo<'_>) -> Result<()>;
}

impl Observer for () {
    fn on_step(&mut self, _info: &StepInfo<'_>) -> Result<()> {
        Ok(())
    }
}

impl<F: FnMut(&StepInfo<'_>) -> Result<()>> Observer for F {
    fn on_step(&mut self, info: &StepInfo<'_>) -> Result<()> {
        self(info)
    }
}

/// One sampling run: evaluates the model on the anchor-free state `x̃` (adding `γ·μ` for the model input and
/// converting its output), counts model evaluations, and hands out noise and progress reports.
pub struct Run<'a> {
    path: &'a dyn NoisePath,
    model: &'a dyn Denoiser,
    cond: &'a Conditioning,
    noise: &'a mut dyn NoiseSource,
    observer: &'a mut dyn Observer,
    nfe: usize,
}

impl<'a> Run<'a> {
    /// A run of `model` on `path`.
    pub fn new(
        path: &'a dyn NoisePath,
        model: &'a dyn Denoiser,
        cond: &'a Conditioning,
        noise: &'a mut dyn NoiseSource,
        observer: &'a mut dyn Observer,
    ) -> Self {
        Run { path, model, cond, noise, observer, nfe: 0 }
    }

    /// The path.
    pub fn path(&self) -> &'a dyn NoisePath {
        self.path
    }

    /// The conditioning.
    pub fn cond(&self) -> &'a Conditioning {
        self.cond
    }

    /// Model evaluations so far.
    pub fn nfe(&self) -> usize {
        self.nfe
    }

    /// The path's point at time t.
    pub fn point(&self, t: f64) -> Point {
        self.path.point(t)
    }

    /// The path's point at λ.
    pub fn point_at_lambda(&self, lambda: f64) -> Point {
        self.path.point(self.path.t_of_lambda(lambda))
    }

    /// `x̃ = x − γ·μ` at point p.
    pub fn to_tilde(&self, x: &Tensor, p: &Point) -> Result<Tensor> {
        tilde(x, p.gamma, self.cond.anchor.as_ref())
    }

    /// `x = x̃ + γ·μ` at point p.
    pub fn from_tilde(&self, x_tilde: &Tensor, p: &Point) -> Result<Tensor> {
        match &self.cond.anchor {
            Some(mu) if p.gamma != 0.0 => Ok(lin2(1.0, x_tilde, p.gamma, mu)?),
            _ => Ok(x_tilde.shallow_clone()),
        }
    }

    fn predict(&mut self, x_tilde: &Tensor, p: &Point) -> Result<(Prediction, Tensor)> {
        if p.is_data() {
            return Err(Error::invalid("time", "a model is never evaluated at the data (σ = 0)"));
        }
        let x = self.from_tilde(x_tilde, p)?;
        self.nfe += 1;
        crate::threads::rebalance();
        let pred = self.model.predict(&x, p.t, self.cond)?;
        Ok((pred, x))
    }

    fn at<'x>(&self, p: &Point, x: &'x Tensor) -> At<'x>
    where
        'a: 'x,
    {
        At {
            point: *p,
            rates: Some((self.path.d_alpha(p.t), self.path.d_sigma(p.t), self.path.d_gamma(p.t))),
            x,
            anchor: self.cond.anchor.as_ref(),
            resnoise_weight: Some(self.path.resnoise_weight(p.t)),
        }
    }

    /// The model's x̂0 at (x̃, p).
    pub fn data(&mut self, x_tilde: &Tensor, p: &Point) -> Result<Tensor> {
        let (pred, x) = self.predict(x_tilde, p)?;
        if let Prediction::Data(x0) = pred {
            return Ok(x0);
        }
        pred.into_data(&self.at(p, &x))
    }

    /// The model's ε̂ at (x̃, p).
    pub fn eps(&mut self, x_tilde: &Tensor, p: &Point) -> Result<Tensor> {
        let (pred, x) = self.predict(x_tilde, p)?;
        if let Prediction::Eps(e) = pred {
            return Ok(e);
        }
        pred.into_eps(&self.at(p, &x))
    }

    /// The model's (x̂0, ε̂) at (x̃, p).
    pub fn both(&mut self, x_tilde: &Tensor, p: &Point) -> Result<(Tensor, Tensor)> {
        let (pred, x) = self.predict(x_tilde, p)?;
        pred.into_both(&self.at(p, &x))
    }

    /// The model's score `∇ₓ log p_t = −ε̂/σ` at (x̃, p).
    pub fn score(&mut self, x_tilde: &Tensor, p: &Point) -> Result<Tensor> {
        let (pred, x) = self.predict(x_tilde, p)?;
        if let Prediction::Score(s) = pred {
            return Ok(s);
        }
        if !(p.sigma > 0.0) {
            return Err(Error::invalid("time", "the score is undefined where σ = 0"));
        }
        Ok(pred.into_eps(&self.at(p, &x))?.f_mul_scalar(-1.0 / p.sigma)?)
    }

    /// Noise for draw `draw`, shaped like `like`.
    pub fn noise(&mut self, draw: u64, like: &Tensor) -> Result<Tensor> {
        self.noise.normal(draw, like)
    }

    /// A Brownian increment between `s0` and `s1`, shaped like `like`.
    pub fn brownian(&mut self, draw: u64, s0: f64, s1: f64, like: &Tensor) -> Result<Tensor> {
        self.noise.brownian(draw, s0, s1, like)
    }

    /// Reports a finished step to the observer.
    pub fn observe(&mut self, step: usize, steps: usize, point: Point, x_tilde: &Tensor) -> Result<()> {
        let nfe = self.nfe;
        self.observer.on_step(&StepInfo { step, steps, point, x_tilde, nfe })
    }
}
