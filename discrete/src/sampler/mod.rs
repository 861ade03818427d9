//! Samplers for masked and uniform discrete diffusion, each usable with any denoiser parameterization that
//! converts exactly into what it needs ([`crate::param::Converter`]).
//!
//! | sampler | process | per step | reference |
//! |---|---|---|---|
//! | `ancestral` | masked, uniform | exact bridge with the predicted x0 (masked: MDLM "ddpm"; `cache` reuses the model output while a sequence is unchanged: "ddpm_cache"; uniform: DUO/UDLM bridge with the leave-one-out posterior) | MDLM, DUO |
//! | `tau-leaping` | both | Euler step of the reverse rates `σ′·Q·s` (SEDD "euler"); last step Tweedie to t = 0 | SEDD |
//! | `tweedie` | both | exact reverse step from the concrete score (SEDD "analytic") | SEDD |
//! | `pc` | uniform | ancestral predictor + Gibbs corrector sweeps with `p_s(x^i | x^{−i}) = α π + (1 − α)/K` on the least confident (or random) positions | rev_udm |
//! | `remdm` | masked | ancestral with remasking probability σ_t (cap / rescale, optional switch time) | ReMDM |
//! | `audm` | uniform | absorbing reformulation: noise tokens u drawn up front, x = u counts as masked, carry-over | rev_udm |
//! | `consistency` | both | draw a whole x̂0 from the model, then x_s from the hard bridge `q(x_s | x_t, x̂0)` (CDLM) | CDLM |
//!
//! Masked `ancestral` and `consistency` reveal random positions (the reverse process) or, opt-in, the most
//! confident first ([`Unmasking`]; MaskGIT, LLaDA).
//!
//! Every sampler: temperature on raw logits, top-k / top-p on the predicted clean (or leave-one-out)
//! distribution, optional greedy final step (argmax of the clean posterior), categorical draws in f64 by
//! inverse CDF. Each sequence draws from its own stream ([`SampleSeeds`]): draw 0 for the prior, draw
//! k + 1 for sub-step k, so a sequence's result does not depend on the batch.
//!
//! [`exact_law`] computes the exact output distribution of the same sampler by enumerating states, which
//! tests and `diffuse text check` use to separate discretisation error from sampling noise.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use diffuse_core::SampleSeeds;
use rand::RngCore;
use tch::Device;

use crate::categorical::{self, Precision, Truncation, argmax, exp_noise_f64, normalize};
use crate::denoiser::{Denoiser, call_rows};
use crate::param::{Converter, Output, Position, Rows};
use crate::process::{Process, ProcessKind};
use crate::schedule::{Schedule, time_grid};
use crate::{Error, Result};

/// The samplers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// Ancestral sampling through the exact bridge (MDLM / DUO).
    Ancestral,
    /// τ-leaping (Euler) on the reverse rates from the concrete score (SEDD).
    TauLeaping,
    /// Exact reverse step from the concrete score (SEDD "analytic").
    Tweedie,
    /// Predictor–corrector with leave-one-out Gibbs sweeps (uniform).
    PredictorCorrector,
    /// ReMDM remasking (masked).
    Remdm,
    /// Absorbing reformulation of uniform diffusion (AUDM).
    Audm,
    /// Few-step consistency sampling through the bridge (CDLM).
    Consistency,
}

impl SamplerKind {
    /// The accepted names.
    pub const NAMES: [&'static str; 7] = ["ancestral", "tau-leaping", "tweedie", "pc", "remdm", "audm", "consistency"];

    /// The processes it applies to.
    pub fn processes(&self) -> &'static [ProcessKind] {
        match self {
            SamplerKind::PredictorCorrector | SamplerKind::Audm => &[ProcessKind::Uniform],
            SamplerKind::Remdm => &[ProcessKind::Masked],
            _ => &[ProcessKind::Masked, ProcessKind::Uniform],
        }
    }

    /// The denoiser output it is most naturally used with.
    pub fn natural_output(&self, process: ProcessKind) -> Output {
        match (self, process) {
            (SamplerKind::TauLeaping | SamplerKind::Tweedie, _) => Output::LogScore,
            (SamplerKind::Audm, _) => Output::AudmClean,
            (SamplerKind::Ancestral | SamplerKind::PredictorCorrector, ProcessKind::Uniform) => Output::LeaveOneOut,
            _ => Output::Clean,
        }
    }
}

impl FromStr for SamplerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "ancestral" | "mdlm" | "ddpm" => SamplerKind::Ancestral,
            "tau-leaping" | "euler" => SamplerKind::TauLeaping,
            "tweedie" | "analytic" => SamplerKind::Tweedie,
            "pc" | "predictor-corrector" => SamplerKind::PredictorCorrector,
            "remdm" => SamplerKind::Remdm,
            "audm" => SamplerKind::Audm,
            "consistency" | "cdlm" => SamplerKind::Consistency,
            _ => {
                return Err(Error::invalid("sampler", format!("'{s}'; valid: {}", Self::NAMES.join(", "))));
            }
        })
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = match self {
            SamplerKind::Ancestral => 0,
            SamplerKind::TauLeaping => 1,
            SamplerKind::Tweedie => 2,
            SamplerKind::PredictorCorrector => 3,
            SamplerKind::Remdm => 4,
            SamplerKind::Audm => 5,
            SamplerKind::Consistency => 6,
        };
        f.write_str(Self::NAMES[i])
    }
}

/// How ReMDM sets the remasking probability σ_t ≤ σ_max = min(1, (1 − α_s)/α_t).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Remask {
    /// σ_t = min(η, σ_max) ("cap").
    Cap(f64),
    /// σ_t = η·σ_max with η ∈ [0, 1] ("rescale").
    Rescale(f64),
    /// ReMDM-loop: α follows the schedule rescaled to reach `alpha_on` at `t_on`, stays at `alpha_on` on the
    /// plateau `t_off < t ≤ t_on` while tokens are remasked with σ = min(η, σ_max) and unmasked again (a
    /// corrector at fixed α), then rises linearly to 1 at t = 0. σ = 0 off the plateau.
    Loop {
        /// Start of the plateau (0 < t_off < t_on ≤ 1).
        t_on: f64,
        /// End of the plateau.
        t_off: f64,
        /// α on the plateau, in (0, 1).
        alpha_on: f64,
        /// Remasking probability on the plateau.
        eta: f64,
    },
}

/// ReMDM schedule: the rule and an optional switch time (σ_t = 0 while t > t_switch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemaskSchedule {
    /// The rule.
    pub rule: Remask,
    /// Remask only once t ≤ t_switch.
    pub t_switch: Option<f64>,
}

impl Default for RemaskSchedule {
    fn default() -> Self {
        RemaskSchedule { rule: Remask::Cap(0.02), t_switch: None }
    }
}

impl RemaskSchedule {
    /// σ_t for a step from t to s.
    pub fn sigma(&self, t: f64, alpha_t: f64, alpha_s: f64) -> f64 {
        if self.t_switch.is_some_and(|ts| t > ts) {
            return 0.0;
        }
        let max = if alpha_t > 0.0 { ((1.0 - alpha_s) / alpha_t).min(1.0) } else { 1.0 };
        match self.rule {
            Remask::Cap(eta) => eta.min(max),
            Remask::Rescale(eta) => eta * max,
            Remask::Loop { t_on, t_off, eta, .. } => {
                if t > t_off && t <= t_on {
                    eta.min(max)
                } else {
                    0.0
                }
            }
        }
    }

    /// (α_t, α_s) of a step from t to s: the schedule's, except under [`Remask::Loop`] (rev_udm `loop_alphas`).
    fn alphas(&self, t: f64, s: f64, schedule: (f64, f64)) -> (f64, f64) {
        let Remask::Loop { t_on, t_off, alpha_on, .. } = self.rule else {
            return schedule;
        };
        let a = |t: f64| {
            if t > t_on {
                (1.0 - t) * alpha_on / (1.0 - t_on)
            } else if t <= t_off {
                1.0 - t * (1.0 - alpha_on) / t_off
            } else {
                alpha_on
            }
        };
        (a(t), a(s))
    }

    fn validate(&self) -> Result<()> {
        let eta = match self.rule {
            Remask::Cap(e) | Remask::Rescale(e) => e,
            Remask::Loop { t_on, t_off, alpha_on, eta } => {
                if !(0.0 < t_off && t_off < t_on && t_on <= 1.0) {
                    return Err(Error::invalid(
                        "remask.t_on/t_off",
                        format!("need 0 < t_off < t_on <= 1, got t_off {t_off}, t_on {t_on}"),
                    ));
                }
                if !(alpha_on > 0.0 && alpha_on < 1.0) {
                    return Err(Error::invalid("remask.alpha_on", format!("{alpha_on} must lie in (0, 1)")));
                }
                eta
            }
        };
        if !(0.0..=1.0).contains(&eta) {
            return Err(Error::invalid("remask.eta", format!("{eta} must lie in [0, 1]")));
        }
        match self.t_switch {
            Some(ts) if !(0.0..=1.0).contains(&ts) => {
                Err(Error::invalid("remask.t_switch", format!("{ts} must lie in [0, 1]")))
            }
            _ => Ok(()),
        }
    }
}

/// How the corrector picks positions to resample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Selection {
    /// Uniformly at random (exact Gibbs: leaves p_s invariant).
    Random,
    /// Sampled without replacement with weights `p_s(x^i | x^{−i})^{−1/τ}`: low-confidence positions first
    /// (rev_udm "lowest_current_prob"; τ → 0 is deterministic least-confident).
    LeastConfident {
        /// Selection temperature τ > 0.
        tau: f64,
    },
}

/// Gibbs corrector of the predictor–corrector sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Corrector {
    /// Corrector sweeps after each predictor step (each one model call).
    pub sweeps: usize,
    /// Positions resampled per sweep.
    pub positions: usize,
    /// How they are chosen.
    pub selection: Selection,
}

/// The default is exact Gibbs (one random position per sweep), which keeps p_s invariant and so is never worse
/// than no corrector; least-confident selection and several positions per sweep are opt-in, because they are
/// biased towards likely sequences (issue 19: TV 0.25 from the target on a chain where ancestral is at 0.005).
impl Default for Corrector {
    fn default() -> Self {
        Corrector { sweeps: 1, positions: 1, selection: Selection::Random }
    }
}

/// A complete sampler configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// Which sampler.
    pub kind: SamplerKind,
    /// Number of predictor steps (≥ 1) on an even grid from t = 1 to 0.
    pub steps: usize,
    /// Reuse the model output while a sequence is unchanged (masked `ancestral` with a time-independent denoiser).
    pub cache: bool,
    /// Temperature, top-k and top-p.
    pub truncation: Truncation,
    /// Take the argmax of the clean posterior at the last step instead of drawing.
    pub greedy_final: bool,
    /// Precision of the categorical draws.
    pub precision: Precision,
    /// ReMDM remasking.
    pub remask: RemaskSchedule,
    /// PC corrector.
    pub corrector: Corrector,
    /// Which masked positions a step reveals (masked `ancestral` and `consistency`).
    pub unmasking: Unmasking,
}

impl SamplerConfig {
    /// Defaults for `kind` with `steps` steps.
    pub fn new(kind: SamplerKind, steps: usize) -> Self {
        SamplerConfig {
            kind,
            steps,
            cache: false,
            truncation: Truncation::default(),
            greedy_final: false,
            precision: Precision::F64,
            remask: RemaskSchedule::default(),
            corrector: Corrector::default(),
            unmasking: Unmasking::Random,
        }
    }

    /// Fails when the sampler does not apply to the process.
    pub fn applies_to(&self, process: ProcessKind) -> Result<()> {
        if !self.kind.processes().contains(&process) {
            return Err(Error::not_applicable(
                format!("sampler '{}'", self.kind),
                format!("it applies to the {} process only, not {process}", self.kind.processes()[0]),
            ));
        }
        Ok(())
    }

    /// Checks the configuration against the denoiser; errors name the field or the sampler.
    pub fn validate(&self, den: &dyn Denoiser, len: usize) -> Result<()> {
        let process = den.process();
        process.validate()?;
        if self.steps < 1 {
            return Err(Error::invalid("steps", "must be at least 1"));
        }
        diffuse_core::limits::at_most("steps", self.steps, diffuse_core::limits::MAX_NFE)?;
        if len < 1 {
            return Err(Error::invalid("length", "must be at least 1"));
        }
        self.applies_to(process.kind())?;
        self.truncation.validate()?;
        let output = den.output();
        if (self.kind == SamplerKind::Audm) != (output == Output::AudmClean) {
            return Err(Error::not_applicable(
                format!("sampler '{}' with a '{output}' denoiser", self.kind),
                "the AUDM sampler needs an AUDM denoiser (output 'audm') and that denoiser fits no other sampler",
            ));
        }
        if output == Output::LogScore && self.truncation.temperature != 1.0 {
            return Err(Error::not_applicable("temperature", "it acts on logits; this denoiser outputs log scores"));
        }
        if matches!(self.kind, SamplerKind::TauLeaping | SamplerKind::Tweedie)
            && (self.truncation.top_k.is_some() || self.truncation.top_p.is_some())
        {
            return Err(Error::not_applicable(
                "top_k/top_p",
                format!("sampler '{}' works on scores, not a clean distribution", self.kind),
            ));
        }
        if self.cache
            && !(self.kind == SamplerKind::Ancestral && process.kind() == ProcessKind::Masked && den.time_independent())
        {
            return Err(Error::not_applicable(
                "cache",
                "reusing model outputs is exact only for masked ancestral sampling with a time-independent denoiser",
            ));
        }
        self.unmasking.validate(self.kind, process.kind())?;
        if self.kind == SamplerKind::Remdm {
            self.remask.validate()?;
        }
        if self.kind == SamplerKind::PredictorCorrector {
            let c = self.corrector;
            if c.positions < 1 || c.positions > len {
                return Err(Error::invalid("corrector.positions", format!("{} must lie in 1..={len}", c.positions)));
            }
            if let Selection::LeastConfident { tau } = c.selection
                && !(tau > 0.0 && tau.is_finite())
            {
                return Err(Error::invalid("corrector.tau", format!("{tau} must be > 0")));
            }
        }
        Ok(())
    }
}

/// The result of [`sample`].
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// Tokens `[batch·len]`, row-major.
    pub tokens: Vec<i64>,
    /// Sequence length.
    pub len: usize,
    /// Batched model calls made.
    pub model_calls: usize,
    /// Sequence evaluations (sequences passed to the model, summed over calls).
    pub evaluations: usize,
}

#[derive(Debug, Clone, Copy)]
enum Sub {
    Predict { t: f64, s: f64, last: bool },
    Correct { s: f64 },
}

fn substeps(cfg: &SamplerConfig) -> Vec<Sub> {
    let grid = time_grid(cfg.steps);
    let mut subs = Vec::new();
    for k in 0..cfg.steps {
        let (t, s) = (grid[k], grid[k + 1]);
        subs.push(Sub::Predict { t, s, last: k + 1 == cfg.steps });
        if cfg.kind == SamplerKind::PredictorCorrector && s > 0.0 {
            subs.extend((0..cfg.corrector.sweeps).map(|_| Sub::Correct { s }));
        }
    }
    subs
}

/// The law of one sequence for one sub-step: a product over positions, or a mixture of products.
enum SeqLaw {
    Product(Vec<f64>),
    Mixture(Vec<(f64, Vec<f64>)>),
}

struct Engine<'a> {
    schedule: &'a dyn Schedule,
    cfg: SamplerConfig,
    process: Process,
    conv: Converter,
    len: usize,
    width: usize,
}

impl<'a> Engine<'a> {
    fn new(den: &'a dyn Denoiser, schedule: &'a dyn Schedule, cfg: &SamplerConfig, len: usize) -> Result<Self> {
        cfg.validate(den, len)?;
        let process = den.process();
        let conv = Converter {
            process,
            output: den.output(),
            temperature: cfg.truncation.temperature,
            rows: Rows::prepared(den.output()),
        };
        Ok(Engine { schedule, cfg: *cfg, process, conv, len, width: process.width() })
    }

    /// The denoiser's rows for the sequences `tokens` (and AUDM's `noise`) at time t, in the form the converter
    /// reads, written into `out` (`tokens.len()·W` entries).
    fn rows_into(
        &self,
        den: &dyn Denoiser,
        tokens: &[i64],
        noise: Option<&[i64]>,
        t: f64,
        device: Device,
        out: &mut [f64],
    ) -> Result<()> {
        let n = tokens.len() / self.len.max(1);
        call_rows(den, tokens, noise, n, self.len, t, device, (self.conv.rows, self.conv.temperature), out)
    }

    fn alpha(&self, t: f64) -> f64 {
        // The last step removes all noise whatever α(0) the schedule has.
        if t <= 0.0 { 1.0 } else { self.schedule.alpha(t) }
    }

    fn known(&self, x: usize, u: Option<usize>) -> bool {
        match (self.cfg.kind, self.process) {
            (SamplerKind::Audm, _) => u.is_some_and(|u| u != x),
            (_, Process::Masked { vocab }) => x != vocab,
            _ => false,
        }
    }

    /// Clean posterior at a position, truncated.
    fn clean(&self, pos: Position<'_>, alpha: f64, out: &mut [f64]) {
        self.conv.clean(pos, alpha, out);
        if !pos.known {
            self.cfg.truncation.truncate(out);
        }
    }

    /// Per-position laws `[L·W]` of a predictor step for one sequence.
    fn predict_law(&self, rows: &[f64], x: &[i64], u: Option<&[i64]>, t: f64, s: f64, last: bool) -> Vec<f64> {
        let (l, w, k) = (self.len, self.width, self.process.vocab());
        let (a_t, a_s) = if self.cfg.kind == SamplerKind::Remdm {
            self.cfg.remask.alphas(t, s, (self.alpha(t), self.alpha(s)))
        } else {
            (self.alpha(t), self.alpha(s))
        };
        let mut law = vec![0.0; l * w];
        let mut buf = vec![0.0; w];
        for i in 0..l {
            let xi = x[i] as usize;
            let known = self.known(xi, u.map(|u| u[i] as usize));
            let pos = Position { row: &rows[i * w..(i + 1) * w], x_t: xi, known };
            let out = &mut law[i * w..(i + 1) * w];
            if known && self.cfg.kind != SamplerKind::Remdm {
                out[xi] = 1.0;
                continue;
            }
            if last && self.cfg.greedy_final {
                self.conv.clean(pos, a_t, &mut buf);
                out[argmax(&buf[..k])] = 1.0;
                continue;
            }
            match (self.cfg.kind, self.process) {
                (SamplerKind::Ancestral | SamplerKind::PredictorCorrector, Process::Uniform { .. }) => {
                    self.conv.loo(pos, a_t, &mut buf);
                    self.cfg.truncation.truncate(&mut buf);
                    self.process.bridge_prior(xi, &buf, a_s, a_t, out);
                }
                (SamplerKind::Ancestral | SamplerKind::Consistency, _) => {
                    self.clean(pos, a_t, &mut buf);
                    self.process.bridge_posterior(xi, &buf, a_s, a_t, out);
                }
                (SamplerKind::Audm, _) => {
                    // x = u plays the mask: stay on u with (1 − α_s)/(1 − α_t), else take x0 (possibly u itself).
                    self.clean(pos, a_t, &mut buf);
                    let a = if a_t < 1.0 { (a_s - a_t) / (1.0 - a_t) } else { 1.0 };
                    for v in 0..k {
                        out[v] = a * buf[v];
                    }
                    out[xi] += 1.0 - a;
                }
                (SamplerKind::Remdm, _) => {
                    let sigma = self.cfg.remask.sigma(t, a_t, a_s);
                    if known {
                        out[xi] = 1.0 - sigma;
                        out[k] += sigma;
                    } else {
                        self.clean(pos, a_t, &mut buf);
                        let stay =
                            if a_t < 1.0 { ((1.0 - a_s - sigma * a_t) / (1.0 - a_t)).clamp(0.0, 1.0) } else { 0.0 };
                        for v in 0..k {
                            out[v] = (1.0 - stay) * buf[v];
                        }
                        out[k] = stay;
                    }
                }
                (SamplerKind::Tweedie, _) | (SamplerKind::TauLeaping, _)
                    if last || self.cfg.kind == SamplerKind::Tweedie =>
                {
                    self.conv.score(pos, a_t, &mut buf);
                    self.tweedie(&buf, xi, a_s, a_t, out);
                }
                (SamplerKind::TauLeaping, _) => {
                    self.conv.score(pos, a_t, &mut buf);
                    let rate = self.schedule.rate(t) * (t - s);
                    // Each move's rate times Δt; staying (on the mask, or on x_t) takes the rest, and only where
                    // the moves exceed 1 (Δt too long for the rates) is the law renormalised.
                    let (stay, per_move) = match self.process {
                        Process::Masked { vocab } => (vocab, rate),
                        Process::Uniform { vocab } => (xi, rate / vocab as f64),
                    };
                    for v in 0..k {
                        out[v] = per_move * buf[v];
                    }
                    out[stay] = 0.0;
                    let moves: f64 = out.iter().sum();
                    out[stay] = (1.0 - moves).max(0.0);
                    if moves > 1.0 {
                        normalize(out);
                    }
                }
                _ => unreachable!("validate() rejects other sampler/process pairs"),
            }
        }
        law
    }

    /// Exact reverse step from a concrete score `sc` (SEDD "analytic").
    fn tweedie(&self, sc: &[f64], x: usize, a_s: f64, a_t: f64, out: &mut [f64]) {
        match self.process {
            Process::Masked { vocab } => {
                // p(x0 = v | x_t) = (1 − α_t)/α_t·s_v, then the masked bridge.
                for v in 0..vocab {
                    out[v] = (a_s - a_t) / a_t * sc[v];
                }
                out[vocab] = (1.0 - a_s) / (1.0 - a_t);
            }
            Process::Uniform { vocab } => {
                // m_t ∝ s; m_s = (α_s/α_t)m_t + (1 − α_s/α_t)/K; times q(x_t | x_s).
                let z: f64 = sc.iter().sum();
                let (r, kf) = (a_t / a_s, vocab as f64);
                // m_s(v) = f·s_v + c; q(x_t | x_s = v) = r·1[v = x_t] + (1 − r)/K.
                let (f, c, stay) = ((a_s / a_t) / z, (1.0 - a_s / a_t) / kf, (1.0 - r) / kf);
                for v in 0..vocab {
                    out[v] = (f * sc[v] + c).max(0.0) * stay;
                }
                out[x] += (f * sc[x] + c).max(0.0) * r;
            }
        }
        normalize(out);
    }

    /// Gibbs conditionals `[L·W]` at time s and log selection weights `[L]` for one sequence.
    fn corrector_parts(&self, rows: &[f64], x: &[i64], s: f64) -> (Vec<f64>, Vec<f64>) {
        let (l, w) = (self.len, self.width);
        let mut cond = vec![0.0; l * w];
        for i in 0..l {
            self.gibbs_conditional(rows, x, s, i, &mut cond[i * w..(i + 1) * w]);
        }
        let logw = (0..l).map(|i| self.selection_logw(&cond[i * w..(i + 1) * w], x[i] as usize)).collect();
        (cond, logw)
    }

    /// The Gibbs conditional `p_s(x^i | x^{−i})` of position i at time s into `out` (width W).
    fn gibbs_conditional(&self, rows: &[f64], x: &[i64], s: f64, i: usize, out: &mut [f64]) {
        let (w, a) = (self.width, self.alpha(s));
        let pos = Position { row: &rows[i * w..(i + 1) * w], x_t: x[i] as usize, known: false };
        self.conv.loo(pos, a, out);
        out.iter_mut().for_each(|p| *p = a * *p + (1.0 - a) / w as f64);
        normalize(out);
    }

    /// The log selection weight of a position whose Gibbs conditional is `cond` and token `xi`.
    fn selection_logw(&self, cond: &[f64], xi: usize) -> f64 {
        match self.cfg.corrector.selection {
            Selection::Random => 0.0,
            Selection::LeastConfident { tau } => -cond[xi].max(1e-300).ln() / tau,
        }
    }

    /// The positions the corrector resamples in one sequence, each with its Gibbs conditional. A random selection
    /// needs no conditional but those of the chosen positions (the draws are the same as from [`corrector_parts`]).
    fn correct<R: RngCore>(&self, rows: &[f64], x: &[i64], s: f64, rng: &mut R) -> Vec<(usize, Vec<f64>)> {
        let (l, w) = (self.len, self.width);
        match self.cfg.corrector.selection {
            Selection::Random => run::draw_positions(&vec![0.0; l], self.cfg.corrector.positions, rng)
                .into_iter()
                .map(|i| {
                    let mut cond = vec![0.0; w];
                    self.gibbs_conditional(rows, x, s, i, &mut cond);
                    (i, cond)
                })
                .collect(),
            Selection::LeastConfident { .. } => {
                let (cond, logw) = self.corrector_parts(rows, x, s);
                run::draw_positions(&logw, self.cfg.corrector.positions, rng)
                    .into_iter()
                    .map(|i| (i, cond[i * w..(i + 1) * w].to_vec()))
                    .collect()
            }
        }
    }

    fn laws(&self, sub: Sub, rows: &[f64], tokens: &[i64], noise: Option<&[i64]>, n: usize) -> Vec<SeqLaw> {
        let (l, w) = (self.len, self.width);
        (0..n)
            .map(|b| {
                let x = &tokens[b * l..(b + 1) * l];
                let r = &rows[b * l * w..(b + 1) * l * w];
                match (sub, self.cfg.unmasking) {
                    (Sub::Predict { t, s, last }, Unmasking::Confident { tau }) => {
                        self.reveal(r, x, t, s, last, tau).law(x, w)
                    }
                    (Sub::Predict { t, s, last }, _) => {
                        SeqLaw::Product(self.predict_law(r, x, noise.map(|u| &u[b * l..(b + 1) * l]), t, s, last))
                    }
                    (Sub::Correct { s }, _) => {
                        let (cond, logw) = self.corrector_parts(r, x, s);
                        let comps = subsets_plackett_luce(&logw, self.cfg.corrector.positions)
                            .into_iter()
                            .map(|(p, set)| {
                                (p, keep_but(x, w, set.into_iter().map(|i| (i, &cond[i * w..(i + 1) * w]))))
                            })
                            .collect();
                        SeqLaw::Mixture(comps)
                    }
                }
            })
            .collect()
    }

    fn sub_time(sub: Sub) -> f64 {
        match sub {
            Sub::Predict { t, .. } => t,
            Sub::Correct { s } => s,
        }
    }
}

/// The product law `[L·W]` that keeps every token of `x` but at the positions of `changed`, which take their law.
fn keep_but<'a>(x: &[i64], w: usize, changed: impl IntoIterator<Item = (usize, &'a [f64])>) -> Vec<f64> {
    let mut law = vec![0.0; x.len() * w];
    for (i, &xi) in x.iter().enumerate() {
        law[i * w + xi as usize] = 1.0;
    }
    for (i, row) in changed {
        law[i * w..(i + 1) * w].copy_from_slice(row);
    }
    law
}

/// Probabilities of each k-subset chosen by sampling without replacement with weights e^{logw} (Plackett–Luce),
/// by enumerating ordered draws (exact law only: L is small there).
fn subsets_plackett_luce(logw: &[f64], k: usize) -> Vec<(f64, Vec<usize>)> {
    let m = logw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logw.iter().map(|v| (v - m).exp()).collect();
    let mut acc: HashMap<Vec<usize>, f64> = HashMap::new();
    fn rec(w: &[f64], k: usize, chosen: &mut Vec<usize>, p: f64, acc: &mut HashMap<Vec<usize>, f64>) {
        if chosen.len() == k {
            let mut s = chosen.clone();
            s.sort_unstable();
            *acc.entry(s).or_default() += p;
            return;
        }
        let rest: f64 = (0..w.len()).filter(|i| !chosen.contains(i)).map(|i| w[i]).sum();
        for i in 0..w.len() {
            if !chosen.contains(&i) && w[i] > 0.0 {
                chosen.push(i);
                rec(w, k, chosen, p * w[i] / rest, acc);
                chosen.pop();
            }
        }
    }
    rec(&w, k.min(w.len()), &mut Vec::new(), 1.0, &mut acc);
    acc.into_iter().map(|(s, p)| (p, s)).collect()
}

mod law;
mod run;
mod unmask;

pub use law::exact_law;
pub use run::{sample, sample_template, sample_with};
pub use unmask::{DEFAULT_TAU, Unmasking};
