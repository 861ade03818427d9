//! Samplers that inject noise: DDIM with η (η = 1 is ancestral DDPM), Euler–Maruyama on the reverse SDE, the
//! predictor–corrector sampler of score_sde / SGMSE (predictors: Euler–Maruyama, reverse diffusion, ancestral;
//! correctors: Langevin, annealed Langevin), SDE-DPM-Solver++(2M/3M) with η, and EDM's stochastic Heun (churn).
//! All work on every affine path, including anchored ones. Noise comes from the run's [`NoiseSource`]
//! (per-sample seeded streams, a Brownian tree, or recorded tensors: see [`super::NoiseSource`]).
//!
//! Draw numbering (for replaying recorded noise): step i of a sampler with one draw per step uses draw i; the PC
//! sampler with c corrector steps uses draws `i·(c+1) + j` for corrector step j and `i·(c+1) + c` for the predictor.

use tch::Tensor;

use super::common::{data_step, weighted_sum};
use super::driver::{FinalPrediction, Interval, Stepper, Stepping};
use super::rk::{HEUN, Variable, rk_interval};
use super::run::Run;
use super::{Solver, SolverInfo};
use crate::param::lin2;
use crate::path::Point;
use crate::{Error, Result};

/// `e^{−h} = (α_s σ_t)/(σ_s α_t)` for a step s → t, 0 where it is a limit (α_s = 0, a bridge start, or the data).
fn exp_neg_h(s: &Point, t: &Point) -> f64 {
    if t.sigma == 0.0 || s.alpha == 0.0 || s.sigma == 0.0 { 0.0 } else { (s.alpha * t.sigma) / (s.sigma * t.alpha) }
}

/// A standard normal draw from a Brownian increment over `[s0, s1]` (so runs at different step counts with a
/// Brownian tree share one path).
fn brownian_normal(run: &mut Run<'_>, draw: u64, s0: f64, s1: f64, like: &Tensor) -> Result<Tensor> {
    let dw = run.brownian(draw, s0, s1, like)?;
    Ok(dw.f_div_scalar((s1 - s0).abs().sqrt())?)
}

/// DDIM with stochasticity η (Song et al. 2021, eq. 12): `x̃_t = α_t x̂0 + σ_t√(1 − η²(1 − e^{−2h}))·ε̂ + η σ_t√(1 − e^{−2h})·z`.
/// η = 1 is ancestral sampling from the exact Gaussian posterior q(x_t | x_s, x̂0) (DDPM); η = 0 is DDIM.
#[derive(Debug, Clone)]
pub struct DdimEta {
    /// η ≥ 0.
    pub eta: f64,
}

impl Solver for DdimEta {
    fn info(&self) -> SolverInfo {
        let (name, description) = if self.eta == 1.0 {
            (
                "ddpm".to_string(),
                "ancestral DDPM: exact Gaussian posterior q(x_t | x_s, x̂0) at every step (Ho et al. 2020)",
            )
        } else {
            (format!("ddim-eta:eta={}", self.eta), "DDIM with stochasticity η (η = 1: DDPM, η = 0: DDIM)")
        };
        SolverInfo {
            name,
            description: description.into(),
            order: 1,
            strong_order: Some(0.5),
            stochastic: self.eta > 0.0,
            adaptive: false,
        }
    }
    fn plan_steps(&self, steps: usize, _to_data: bool) -> Result<Vec<u32>> {
        Ok(vec![1; steps])
    }
    fn cost(&self, _index: usize, _order: u32, _to_data: bool) -> usize {
        1
    }
    fn stepper<'s>(&'s self, _run: &Run<'_>, _grid: &[Point], _orders: &[u32]) -> Result<Stepping<'s>> {
        Ok(Stepping::Fixed(Box::new(self)))
    }
}

impl Stepper for &DdimEta {
    fn step(&mut self, run: &mut Run<'_>, x: &Tensor, iv: &Interval) -> Result<Tensor> {
        let (s, t) = (&iv.s, &iv.t);
        let (x0, eps) = run.both(x, s)?;
        let e2 = exp_neg_h(s, t).powi(2);
        let noise_sd = self.eta * t.sigma * (1.0 - e2).max(0.0).sqrt();
        let eps_coef = t.sigma * (1.0 - self.eta * self.eta * (1.0 - e2)).max(0.0).sqrt();
        let xt = lin2(t.alpha, &x0, eps_coef, &eps)?;
        if noise_sd > 0.0 {
            let z = brownian_normal(run, iv.index as u64, s.t, t.t, &xt)?;
            return Ok(xt.f_add(&z.f_mul_scalar(noise_sd)?)?);
        }
        Ok(xt)
    }

    fn final_prediction(&mut self, run: &mut Run<'_>, x: &Tensor, s: &Point) -> Result<FinalPrediction> {
        Ok(FinalPrediction::Data(run.both(x, s)?.0))
    }
}

/// Euler–Maruyama on the reverse SDE in t, on x̃: `x̃ ← x̃ + (f·x̃ − g²·score)·dt + g·ΔW` (strong order 1 for the
/// additive noise of diffusion models, ½ in general). The step onto the data is the usual jump to x̂0.
#[derive(Debug, Clone)]
pub struct EulerMaruyama;

impl Solver for EulerMaruyama {
    fn info(&self) -> SolverInfo {
        SolverInfo {
            name: "euler-maruyama".into(),
            description: "Euler–Maruyama on the reverse-time SDE in t (Song et al. 2021)".into(),
            order: 1,
            strong_order: Some(1.0),
            stochastic: true,
            adaptive: false,
        }
    }
    fn plan_steps(&self, steps: usize, to_data: bool) -> Result<Vec<u32>> {
        Ok(plan_with_jump(steps, to_data))
    }
    fn cost(&self, _index: usize, _order: u32, _to_data: bool) -> usize {
        1
    }
    fn stepper<'s>(&'s self, run: &Run<'_>, grid: &[Point], _orders: &[u32]) -> Result<Stepping<'s>> {
        needs_sde_form(run, &grid[0], "euler-maruyama")?;
        Ok(Stepping::Fixed(Box::new(self)))
    }
}

impl Stepper for &EulerMaruyama {
    fn step(&mut self, run: &mut Run<'_>, x: &Tensor, iv: &Interval) -> Result<Tensor> {
        let (s, t) = (&iv.s, &iv.t);
        let path = run.path();
        let dt = t.t - s.t;
        let (f, g2) = (path.drift(s.t), path.diffusion2(s.t));
        let score = run.score(x, s)?;
        let dw = run.brownian(iv.index as u64, s.t, t.t, x)?;
        weighted_sum(&[(1.0 + f * dt, x), (-g2 * dt, &score), (g2.sqrt(), &dw)])
    }
}

/// The SDE form (drift f = d ln α/dt, g²) is infinite where α = 0: SDE integrators must start below that.
fn needs_sde_form(run: &Run<'_>, start: &Point, name: &str) -> Result<()> {
    let path = run.path();
    if start.alpha > 0.0 && path.drift(start.t).is_finite() && path.diffusion2(start.t).is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(
            "solver",
            format!(
                "{name} needs the SDE form, which is singular at t = {} (α = {}); start lower (t_start) or use ddpm / sde-dpm++2m",
                start.t, start.alpha
            ),
        ))
    }
}

fn plan_with_jump(steps: usize, to_data: bool) -> Vec<u32> {
    let mut o = vec![1; steps];
    if to_data {
        o[steps - 1] = 1;
    }
    o
}

/// The predictor of the PC sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcPredictor {
    /// `x_mean = x − (drift − g²·score)·Δt`, noise `g√Δt` (score_sde's and SGMSE's `euler_maruyama`).
    EulerMaruyama,
    /// Reverse diffusion (`x_mean = x − f + G²·score`, noise G) with SGMSE's default Euler discretization
    /// `f = drift·Δt`, `G = g√Δt`; with `kernel`, score_sde's exact transition kernel (its VE/VP discretize).
    ReverseDiffusion {
        /// Use the exact forward transition kernel of the path instead of the Euler discretization.
        kernel: bool,
    },
    /// Ancestral sampling from the exact posterior q(x_t | x_s, x̂0).
    Ancestral,
    /// No predictor (corrector only).
    None,
}

/// The corrector of the PC sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcCorrector {
    /// Langevin with step `2(snr·√D/‖score‖)²` per sample (D values per sample; the references use the drawn
    /// noise's norm and average both norms over the batch, which makes a sample depend on its batch). The step
    /// follows the sample's score norm, which concentrates only in several dimensions: prefer `Ald` for low D.
    Langevin,
    /// Annealed Langevin dynamics with step `2(snr·σ(t))²` (SGMSE's `ald`).
    Ald,
    /// No corrector.
    None,
}

/// The predictor–corrector sampler in the step order and conventions of score_sde and SGMSE: at each time
/// (uniform from T to t_min), `corrector_steps` corrector steps, then one predictor step of size Δt to the next
/// time; the last step goes from t_min to t = 0 with Δt = t_min. It returns the last predictor's mean (`denoise`).
/// Works in x (model) space, where the drift is `f·x + (γ′ − fγ)·μ`.
#[derive(Debug, Clone)]
pub struct PredictorCorrector {
    /// The predictor.
    pub predictor: PcPredictor,
    /// The corrector.
    pub corrector: PcCorrector,
    /// Signal-to-noise ratio of the corrector (> 0).
    pub snr: f64,
    /// Corrector steps per time step.
    pub corrector_steps: usize,
}

impl PredictorCorrector {
    /// SGMSE's defaults: reverse diffusion + annealed Langevin, snr 0.5, one corrector step.
    pub fn sgmse() -> Self {
        PredictorCorrector {
            predictor: PcPredictor::ReverseDiffusion { kernel: false },
            corrector: PcCorrector::Ald,
            snr: 0.5,
            corrector_steps: 1,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.corrector != PcCorrector::None {
            if !(self.snr > 0.0 && self.snr.is_finite()) {
                return Err(Error::invalid("snr", format!("must be > 0, got {}", self.snr)));
            }
            if self.corrector_steps == 0 {
                return Err(Error::invalid("corrector steps", "a corrector is named but corrector steps is 0"));
            }
        }
        if self.predictor == PcPredictor::None && self.corrector == PcCorrector::None {
            return Err(Error::invalid("pc", "needs a predictor or a corrector"));
        }
        Ok(())
    }

    fn draws_per_step(&self) -> u64 {
        self.corrector_steps as u64 + 1
    }
}

impl Solver for PredictorCorrector {
    fn info(&self) -> SolverInfo {
        let p = match self.predictor {
            PcPredictor::EulerMaruyama => "euler_maruyama",
            PcPredictor::ReverseDiffusion { kernel: false } => "reverse_diffusion",
            PcPredictor::ReverseDiffusion { kernel: true } => "reverse_diffusion_kernel",
            PcPredictor::Ancestral => "ancestral",
            PcPredictor::None => "none",
        };
        let c = match self.corrector {
            PcCorrector::Langevin => "langevin",
            PcCorrector::Ald => "ald",
            PcCorrector::None => "none",
        };
        SolverInfo {
            name: format!("pc:predictor={p},corrector={c},snr={},steps={}", self.snr, self.corrector_steps),
            description: "predictor–corrector sampler (score_sde / SGMSE step order: corrector, then predictor)".into(),
            order: 1,
            strong_order: Some(0.5),
            stochastic: true,
            adaptive: false,
        }
    }
    fn plan_steps(&self, steps: usize, _to_data: bool) -> Result<Vec<u32>> {
        self.validate()?;
        Ok(vec![1; steps])
    }
    fn cost(&self, _index: usize, _order: u32, _to_data: bool) -> usize {
        let c = if self.corrector == PcCorrector::None { 0 } else { self.corrector_steps };
        c + usize::from(self.predictor != PcPredictor::None)
    }
    fn stepper<'s>(&'s self, run: &Run<'_>, grid: &[Point], _orders: &[u32]) -> Result<Stepping<'s>> {
        self.validate()?;
        needs_sde_form(run, &grid[0], "pc")?;
        Ok(Stepping::Fixed(Box::new(PcStepper { solver: self, x_mean: None })))
    }
}

/// A PC run in model space; the result is the last predictor's mean.
struct PcStepper<'s> {
    solver: &'s PredictorCorrector,
    x_mean: Option<Tensor>,
}

impl Stepper for PcStepper<'_> {
    fn step(&mut self, run: &mut Run<'_>, x_tilde: &Tensor, iv: &Interval) -> Result<Tensor> {
        let pc = self.solver;
        let (s, t) = (&iv.s, &iv.t);
        let path = run.path();
        let mu = run.cond().anchor.as_ref().map(Tensor::shallow_clone);
        let drift = |x: &Tensor, t: f64| -> Result<Tensor> {
            let mut d = x.f_mul_scalar(path.drift(t))?;
            if let Some(mu) = &mu {
                let a = path.anchor_drift(t);
                if a != 0.0 {
                    d = d.f_add(&mu.f_mul_scalar(a)?)?;
                }
            }
            Ok(d)
        };
        let mut x = run.from_tilde(x_tilde, s)?;
        let mut x_mean = x.shallow_clone();
        let base = iv.index as u64 * pc.draws_per_step();
        if pc.corrector != PcCorrector::None {
            for j in 0..pc.corrector_steps {
                let xt = run.to_tilde(&x, s)?;
                let grad = run.score(&xt, s)?;
                let z = run.noise(base + j as u64, &x)?;
                let step = match pc.corrector {
                    PcCorrector::Ald => Tensor::from(2.0 * (pc.snr * s.sigma).powi(2)).f_to_kind(x.kind())?,
                    _ => {
                        // 2(snr·√D/‖score‖)² per sample: √D is the expected ‖z‖. Using the drawn ‖z‖ (the
                        // references, averaged over the batch) per sample would couple step and noise and
                        // inflate the variance by (D + 2)/D.
                        let b = x.size()[0];
                        let d = (x.numel() as f64 / b as f64).sqrt();
                        let norm = grad
                            .f_reshape([b, -1])?
                            .f_square()?
                            .f_sum_dim_intlist(Some(&[1i64][..]), false, None)?
                            .f_sqrt()?;
                        let ratio = norm.f_clamp_min(1e-30)?.f_reciprocal()?.f_mul_scalar(pc.snr * d)?;
                        let mut shape = vec![b];
                        shape.resize(x.dim(), 1);
                        ratio.f_square()?.f_mul_scalar(2.0)?.f_reshape(shape.as_slice())?
                    }
                };
                x_mean = x.f_add(&grad.f_mul(&step)?)?;
                x = x_mean.f_add(&z.f_mul(&step.f_mul_scalar(2.0)?.f_sqrt()?)?)?;
            }
        }
        let dt = s.t - t.t; // positive; onto the data t.t = 0 and Δt = t_min, as the references
        match pc.predictor {
            PcPredictor::None => {}
            PcPredictor::Ancestral => {
                let xt = run.to_tilde(&x, s)?;
                let (x0, eps) = run.both(&xt, s)?;
                let e = exp_neg_h(s, t);
                let mean = lin2(t.alpha, &x0, t.sigma * e, &eps)?;
                x_mean = run.from_tilde(&mean, t)?;
                let sd = t.sigma * (1.0 - e * e).max(0.0).sqrt();
                x = if sd > 0.0 {
                    x_mean.f_add(&run.noise(base + pc.corrector_steps as u64, &x)?.f_mul_scalar(sd)?)?
                } else {
                    x_mean.shallow_clone()
                };
            }
            PcPredictor::EulerMaruyama | PcPredictor::ReverseDiffusion { kernel: false } => {
                let xt = run.to_tilde(&x, s)?;
                let score = run.score(&xt, s)?;
                let g2 = path.diffusion2(s.t);
                // x_mean = x − drift·Δt + g²·score·Δt; x = x_mean + g√Δt·z.
                x_mean = weighted_sum(&[(1.0, &x), (-dt, &drift(&x, s.t)?), (g2 * dt, &score)])?;
                let z = run.noise(base + pc.corrector_steps as u64, &x)?;
                x = x_mean.f_add(&z.f_mul_scalar((g2 * dt).sqrt())?)?;
            }
            PcPredictor::ReverseDiffusion { kernel: true } => {
                // Forward kernel t → s: x_s = a·x_t + (γ_s − a·γ_t)μ + b·z; reverse: x_mean = x − f + b²·score.
                let xt = run.to_tilde(&x, s)?;
                let score = run.score(&xt, s)?;
                let (a, b2) = if t.is_data() {
                    (s.alpha, s.sigma * s.sigma)
                } else {
                    (s.alpha / t.alpha, (s.sigma * s.sigma - (s.alpha / t.alpha).powi(2) * t.sigma * t.sigma).max(0.0))
                };
                let mut f = x.f_mul_scalar(a - 1.0)?;
                if let Some(mu) = &mu {
                    f = f.f_add(&mu.f_mul_scalar(s.gamma - a * t.gamma)?)?;
                }
                x_mean = weighted_sum(&[(1.0, &x), (-1.0, &f), (b2, &score)])?;
                let z = run.noise(base + pc.corrector_steps as u64, &x)?;
                x = x_mean.f_add(&z.f_mul_scalar(b2.sqrt())?)?;
            }
        }
        self.x_mean = Some(x_mean);
        run.to_tilde(&x, t)
    }

    fn takes_final_jump(&self) -> bool {
        // score_sde / SGMSE: the last predictor step goes to t = 0 with Δt = t_min, and the mean is the result.
        true
    }

    fn output(&mut self, run: &mut Run<'_>, x: Tensor, end: &Point) -> Result<Tensor> {
        match self.x_mean.take() {
            Some(mean) => Ok(mean),
            None => run.from_tilde(&x, end),
        }
    }
}

/// SDE-DPM-Solver++(2M/3M) with stochasticity η (Lu et al. 2022; k-diffusion's `sample_dpmpp_2m_sde` with the
/// midpoint correction and `sample_dpmpp_3m_sde`): `x̃_t = (σ_t/σ_s)e^{−ηh}x̃_s + α_t(1 − e^{−(1+η)h})x̂0 + … +
/// σ_t√(1 − e^{−2ηh})·z`. η = 0 gives the deterministic multistep solver. The 3M second difference is weighed by
/// 2·φ3 (see the DPM-Solver++(3M) note in docs/solvers.md).
#[derive(Debug, Clone)]
pub struct SdeDpmPlusPlus {
    /// Order 2 or 3.
    pub order: u32,
    /// η ≥ 0 (1: the SDE solver of the paper).
    pub eta: f64,
}

impl Solver for SdeDpmPlusPlus {
    fn info(&self) -> SolverInfo {
        SolverInfo {
            name: format!("sde-dpm++{}m", self.order),
            description: format!(
                "SDE-DPM-Solver++({}M) with η = {} (Lu et al. 2022; k-diffusion dpmpp_{}m_sde)",
                self.order, self.eta, self.order
            ),
            order: self.order,
            strong_order: Some(1.0),
            stochastic: self.eta > 0.0,
            adaptive: false,
        }
    }
    fn plan_steps(&self, steps: usize, to_data: bool) -> Result<Vec<u32>> {
        Ok(super::multistep::multistep_orders(self.order, steps, to_data, super::LowerOrderFinal::Auto))
    }
    fn cost(&self, _index: usize, _order: u32, _to_data: bool) -> usize {
        1
    }
    fn stepper<'s>(&'s self, _run: &Run<'_>, _grid: &[Point], _orders: &[u32]) -> Result<Stepping<'s>> {
        Ok(Stepping::Fixed(Box::new(SdeDpmStepper { solver: self, hist: Vec::new() })))
    }
}

/// An SDE-DPM-Solver++ run: the earlier data predictions with their λ (newest first).
struct SdeDpmStepper<'s> {
    solver: &'s SdeDpmPlusPlus,
    hist: Vec<(f64, Tensor)>,
}

impl Stepper for SdeDpmStepper<'_> {
    fn step(&mut self, run: &mut Run<'_>, x: &Tensor, iv: &Interval) -> Result<Tensor> {
        let (s, t) = (&iv.s, &iv.t);
        let m0 = run.data(x, s)?;
        let e = exp_neg_h(s, t); // e^{−h}
        let (lam_s, lam_t) = (s.lambda(), t.lambda());
        let h = lam_t - lam_s;
        let e_eta = e.powf(self.solver.eta); // e^{−ηh}
        let a = if s.sigma > 0.0 { t.sigma / s.sigma * e_eta } else { 0.0 };
        let one_minus = 1.0 - e * e_eta; // 1 − e^{−(1+η)h}
        let mut terms: Vec<(f64, Tensor)> = vec![(a, x.shallow_clone()), (t.alpha * one_minus, m0.shallow_clone())];
        let usable = self.hist.iter().take_while(|(l, _)| l.is_finite()).count();
        let k = (iv.order as usize).min(usable + 1);
        if h.is_finite() && k >= 2 {
            let h_eta = (1.0 + self.solver.eta) * h;
            let (l1, m1) = (&self.hist[0].0, &self.hist[0].1);
            let r0 = (lam_s - l1) / h;
            let d1_0 = lin2(1.0 / r0, &m0, -1.0 / r0, m1)?;
            if k == 2 {
                terms.push((0.5 * t.alpha * one_minus, d1_0));
            } else {
                let (l2, m2) = (&self.hist[1].0, &self.hist[1].1);
                let r1 = (l1 - l2) / h;
                let d1_1 = lin2(1.0 / r1, m1, -1.0 / r1, m2)?;
                let c = r0 / (r0 + r1);
                let d1 = lin2(1.0 + c, &d1_0, -c, &d1_1)?;
                let d2 = lin2(1.0 / (r0 + r1), &d1_0, -1.0 / (r0 + r1), &d1_1)?;
                let phi2 = (-h_eta).exp_m1() / h_eta + 1.0;
                let phi3 = phi2 / h_eta - 0.5;
                terms.push((t.alpha * phi2, d1));
                terms.push((-2.0 * t.alpha * phi3, d2));
            }
        }
        let refs: Vec<(f64, &Tensor)> = terms.iter().map(|(c, v)| (*c, v)).collect();
        let mut xt = weighted_sum(&refs)?;
        let sd = t.sigma * (1.0 - e.powf(2.0 * self.solver.eta)).max(0.0).sqrt();
        if self.solver.eta > 0.0 && sd > 0.0 {
            let z = brownian_normal(run, iv.index as u64, s.t, t.t, &xt)?;
            xt = xt.f_add(&z.f_mul_scalar(sd)?)?;
        }
        self.hist.insert(0, (lam_s, m0));
        self.hist.truncate(2);
        Ok(xt)
    }
}

/// EDM's stochastic sampler (Karras et al. 2022, Algorithm 2) in σ̄ = σ/α: at σ̄_i ∈ [S_min, S_max], raise the noise
/// to σ̂ = σ̄_i(1 + γ) with γ = min(S_churn/N, √2 − 1) by adding `√(σ̂² − σ̄_i²)·S_noise·z`, then take a Heun step
/// to σ̄_{i+1} (Euler onto the data).
#[derive(Debug, Clone)]
pub struct EdmChurn {
    /// S_churn.
    pub churn: f64,
    /// S_min (in σ/α).
    pub s_min: f64,
    /// S_max (in σ/α).
    pub s_max: f64,
    /// S_noise.
    pub s_noise: f64,
}

impl Default for EdmChurn {
    /// EDM's ImageNet settings: S_churn 40, S_min 0.05, S_max 50, S_noise 1.003.
    fn default() -> Self {
        EdmChurn { churn: 40.0, s_min: 0.05, s_max: 50.0, s_noise: 1.003 }
    }
}

impl Solver for EdmChurn {
    fn info(&self) -> SolverInfo {
        SolverInfo {
            name: format!(
                "edm-churn:churn={},tmin={},tmax={},noise={}",
                self.churn, self.s_min, self.s_max, self.s_noise
            ),
            description: "EDM stochastic Heun sampler with churn (Karras et al. 2022, Alg. 2)".into(),
            order: 2,
            strong_order: Some(0.5),
            stochastic: self.churn > 0.0,
            adaptive: false,
        }
    }
    fn plan_steps(&self, steps: usize, to_data: bool) -> Result<Vec<u32>> {
        let mut o = vec![2; steps];
        if to_data {
            o[steps - 1] = 1;
        }
        Ok(o)
    }
    fn cost(&self, _index: usize, order: u32, to_data: bool) -> usize {
        if to_data || order == 1 { 1 } else { 2 }
    }
    fn stepper<'s>(&'s self, _run: &Run<'_>, grid: &[Point], _orders: &[u32]) -> Result<Stepping<'s>> {
        if !(grid[0].alpha > 0.0) {
            return Err(Error::invalid("solver", "edm-churn works in σ/α and needs α > 0 at the start"));
        }
        Ok(Stepping::Fixed(Box::new(self)))
    }
}

impl Stepper for &EdmChurn {
    fn step(&mut self, run: &mut Run<'_>, x: &Tensor, iv: &Interval) -> Result<Tensor> {
        let (s0, t) = (iv.s, iv.t);
        let gamma_max = (self.churn / iv.steps as f64).min(std::f64::consts::SQRT_2 - 1.0);
        let sb = s0.sigma_bar();
        let gamma = if (self.s_min..=self.s_max).contains(&sb) { gamma_max } else { 0.0 };
        // Churn: raise the noise level to σ̂ and move there (x̄ += √(σ̂² − σ̄²)·S_noise·z).
        let (xt, s) = if gamma > 0.0 {
            let hat = sb * (1.0 + gamma);
            let p = run.point_at_lambda(-hat.ln());
            let z = run.noise(iv.index as u64, x)?;
            let xbar = x
                .f_div_scalar(s0.alpha)?
                .f_add(&z.f_mul_scalar((hat * hat - sb * sb).max(0.0).sqrt() * self.s_noise)?)?;
            (xbar.f_mul_scalar(p.alpha)?, p)
        } else {
            (x.shallow_clone(), s0)
        };
        if t.is_data() {
            let x0 = run.data(&xt, &s)?;
            return data_step(&xt, &x0, &s, &t);
        }
        rk_interval(run, &HEUN, Variable::SigmaBar, &xt, &s, &t)
    }

    fn takes_final_jump(&self) -> bool {
        // The churn comes before the last step too; the jump onto the data starts from the churned point.
        true
    }
}
