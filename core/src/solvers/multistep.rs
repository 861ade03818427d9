//! Multistep exponential integrators: DDIM, DPM-Solver++(2M/3M), DPM-Solver(2M/3M) on ε̂, UniPC (bh1/bh2, any
//! order) with the UniC corrector (also after DPM-Solver++), and DEIS tAB. One model evaluation per step; the history of model
//! outputs lives in the solve loop, and the first steps fall back to lower orders.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::common::{data_step, data_step_coeffs, regular, solve_linear, step_h, weighted_sum};
use super::driver::{FinalPrediction, Interval, Stepper, Stepping, cached};
use super::run::Run;
use super::singlestep::{Form, singlestep_update};
use super::{Solver, SolverInfo};
use crate::path::Point;
use crate::{Error, Result};

/// When multistep solvers lower their order on the last steps (dpm-solver's `lower_order_final`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LowerOrderFinal {
    /// Below 15 steps, as diffusers (stabilises very short runs without costing order on long ones).
    #[default]
    Auto,
    /// Always: order ≤ steps remaining.
    Always,
    /// Never.
    Never,
}

impl LowerOrderFinal {
    fn applies(self, steps: usize) -> bool {
        match self {
            LowerOrderFinal::Auto => steps < 15,
            LowerOrderFinal::Always => true,
            LowerOrderFinal::Never => false,
        }
    }
}

/// Orders of a multistep run: warm-up `1, 2, …`, optional lower order at the end, first order onto the data.
pub(crate) fn multistep_orders(order: u32, steps: usize, to_data: bool, lof: LowerOrderFinal) -> Vec<u32> {
    (0..steps)
        .map(|i| {
            let mut o = order.min(i as u32 + 1);
            if lof.applies(steps) {
                o = o.min((steps - i) as u32);
            }
            if to_data && i + 1 == steps { 1 } else { o }
        })
        .collect()
}

/// How a multistep solver takes its first step, before it has any history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Warmup {
    /// Lower orders while the history fills (dpm-solver, diffusers, UniPC references). The first-order first
    /// step limits a method of order ≥ 3 to order 2 as the step shrinks.
    #[default]
    LowerOrder,
    /// The first step by a singlestep DPM-Solver(++) of order q − 1 (at most 3), so a method of order q ≥ 3 keeps
    /// its order; costs q − 2 extra evaluations.
    Singlestep,
}

impl Warmup {
    /// The singlestep order used for the first step of a method of order q, if any.
    pub(crate) fn starter(self, q: u32) -> Option<u32> {
        (self == Warmup::Singlestep && q >= 3).then(|| (q - 1).min(3))
    }
}

/// The B(h) variant of UniPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UniVariant {
    /// B(h) = h (better for unconditional sampling).
    Bh1,
    /// B(h) = e^h − 1 (better for guided sampling; the default).
    Bh2,
}

/// How a data-form multistep solver predicts the next state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Predictor {
    /// DPM-Solver++ multistep (orders 1–3; order 1 is DDIM).
    #[serde(rename = "dpm++")]
    DpmPlusPlus,
    /// UniPC's predictor UniP-p (any order).
    #[serde(rename = "unip")]
    UniP(UniVariant),
    /// DPM-Solver multistep on ε̂ (the noise form, dpm-solver's `algorithm_type="dpmsolver"`; orders 1–3, the
    /// third with the same corrected second-difference weight as DPM-Solver++(3M)). Needs α > 0.
    #[serde(rename = "dpm")]
    DpmNoise,
}

/// One step's strategy in a unified (USF-style) schedule of the data-form multistep family: the order of the
/// prediction (how many past model outputs it uses), the predictor, and whether the UniC corrector refines the
/// result with the next model output. Every choice costs the same one model evaluation per step, so a schedule
/// may mix them freely; each named solver of the family is one constant strategy ([`DataMultistep::strategy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStrategy {
    /// Prediction order (1 is DDIM's step; lowered while the history is shorter).
    pub order: u32,
    /// The predictor.
    pub predictor: Predictor,
    /// The corrector after the step, if any (never after the last step, which has no next model output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrector: Option<UniVariant>,
    /// The derivative estimate from evaluations inside the step — a singlestep DPM-Solver(++) of the step's order
    /// on the predictor's form (order 2: the midpoint), costing `order` evaluations — instead of earlier outputs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub singlestep: bool,
}

impl StepStrategy {
    /// A multistep strategy (its derivative estimate from earlier outputs).
    pub fn multistep(order: u32, predictor: Predictor, corrector: Option<UniVariant>) -> Self {
        StepStrategy { order, predictor, corrector, singlestep: false }
    }

    /// A singlestep strategy of `order` (2 or 3) on the predictor's form (DPM-Solver++ or DPM-Solver on ε̂).
    pub fn singlestep(order: u32, predictor: Predictor) -> Self {
        StepStrategy { order, predictor, corrector: None, singlestep: true }
    }

    /// Model evaluations of the step when it does not end at the data.
    pub fn cost(&self) -> usize {
        if self.singlestep { self.order as usize } else { 1 }
    }

    /// Checks the order against the predictor (DPM-Solver++ has orders 1–3, UniP here 1–4) and a singlestep
    /// estimate against its order (2–3), predictor (not UniP) and corrector (none).
    pub fn validate(&self) -> Result<()> {
        if self.singlestep
            && (!(2..=3).contains(&self.order)
                || matches!(self.predictor, Predictor::UniP(_))
                || self.corrector.is_some())
        {
            return Err(Error::invalid(
                "strategy",
                format!("a singlestep step has order 2 or 3, a DPM-Solver predictor and no corrector: {self:?}"),
            ));
        }
        // UniP takes any order; schedules stop at 4, as explicit order plans do.
        let most = match self.predictor {
            Predictor::DpmPlusPlus | Predictor::DpmNoise => 3,
            Predictor::UniP(_) => 4,
        };
        if !(1..=most).contains(&self.order) {
            return Err(Error::invalid("strategy", format!("order {} of {:?}: from 1 to {most}", self.order, self)));
        }
        Ok(())
    }
}

/// A data-prediction multistep solver: DDIM, DPM-Solver++(2M/3M), UniPC, optionally with the UniC corrector.
#[derive(Debug, Clone)]
pub struct DataMultistep {
    name: String,
    predictor: Predictor,
    order: u32,
    corrector: Option<UniVariant>,
    lower_order_final: LowerOrderFinal,
    warmup: Warmup,
    reference_3m: bool,
    /// Per-step strategies (a USF schedule), overriding predictor and corrector step by step.
    strategies: Option<Vec<StepStrategy>>,
}

impl DataMultistep {
    /// The solver's strategy at a step of the given order (its predictor and corrector).
    pub fn strategy(&self, order: u32) -> StepStrategy {
        StepStrategy::multistep(order, self.predictor, self.corrector)
    }

    /// A solver running `strategies`, one per interval (the orders of a run are the strategies' orders).
    pub fn with_strategies(strategies: Vec<StepStrategy>, warmup: Warmup) -> Result<Self> {
        if strategies.is_empty() {
            return Err(Error::invalid("strategy", "need one strategy per step"));
        }
        for s in &strategies {
            s.validate()?;
        }
        let order = strategies.iter().map(|s| s.order).max().unwrap_or(1);
        Ok(DataMultistep {
            name: "usf".into(),
            predictor: Predictor::UniP(UniVariant::Bh2),
            order,
            corrector: None,
            lower_order_final: LowerOrderFinal::Never,
            warmup,
            reference_3m: false,
            strategies: Some(strategies),
        })
    }

    /// DPM-Solver++(3M) with the reference implementations' D2 weight (second order; for parity checks).
    pub fn dpmpp3m_reference(lower_order_final: LowerOrderFinal) -> Self {
        let mut s = Self::dpmpp(3, None, lower_order_final);
        s.reference_3m = true;
        s.name = "dpm++3m-ref".into();
        s
    }

    /// The same solver with another warm-up policy.
    pub fn with_warmup(mut self, warmup: Warmup) -> Self {
        self.warmup = warmup;
        self
    }

    fn convergence_order(&self) -> u32 {
        // The reference 3M formula is second order (see dpmpp_step).
        let predictor = if self.reference_3m { 2 } else { self.order };
        predictor + u32::from(self.corrector.is_some())
    }

    /// DDIM (= DPM-Solver-1 = DPM-Solver++(1)).
    pub fn ddim() -> Self {
        Self::dpmpp(1, None, LowerOrderFinal::Auto)
    }

    /// DPM-Solver++(kM) of order 1–3, optionally followed by UniC (`+unic`, order + 1).
    pub fn dpmpp(order: u32, corrector: Option<UniVariant>, lower_order_final: LowerOrderFinal) -> Self {
        let order = order.clamp(1, 3);
        let base = if order == 1 { "ddim".to_string() } else { format!("dpm++{order}m") };
        let name = if corrector.is_some() { format!("{base}+unic") } else { base };
        DataMultistep {
            name,
            predictor: Predictor::DpmPlusPlus,
            order,
            corrector,
            lower_order_final,
            warmup: Warmup::LowerOrder,
            reference_3m: false,
            strategies: None,
        }
    }

    /// DPM-Solver multistep on ε̂ of order 1–3 (`dpm-solver-2m`, `dpm-solver-3m`; order 1 is DDIM).
    pub fn dpm_noise(order: u32, lower_order_final: LowerOrderFinal) -> Self {
        let order = order.clamp(1, 3);
        DataMultistep {
            name: format!("dpm-solver-{order}m"),
            predictor: Predictor::DpmNoise,
            order,
            corrector: None,
            lower_order_final,
            warmup: Warmup::LowerOrder,
            reference_3m: false,
            strategies: None,
        }
    }

    /// Whether any step may predict in the noise form (the history then keeps the states, to derive ε̂).
    fn uses_noise_form(&self) -> bool {
        match &self.strategies {
            Some(st) => st.iter().any(|s| s.predictor == Predictor::DpmNoise),
            None => self.predictor == Predictor::DpmNoise,
        }
    }

    /// UniPC with predictor order p ≥ 1 and the UniC corrector (order p + 1).
    pub fn unipc(variant: UniVariant, order: u32, lower_order_final: LowerOrderFinal) -> Self {
        let v = if variant == UniVariant::Bh1 { "bh1" } else { "bh2" };
        let name = if order == 2 { format!("unipc-{v}") } else { format!("unipc-{v}-{order}") };
        DataMultistep {
            name,
            predictor: Predictor::UniP(variant),
            order: order.max(1),
            corrector: Some(variant),
            lower_order_final,
            warmup: Warmup::LowerOrder,
            reference_3m: false,
            strategies: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn predict(
        &self,
        predictor: Predictor,
        x: &Tensor,
        s: &Point,
        t: &Point,
        m0: &Tensor,
        hist: &[(Point, Tensor)],
        k: u32,
    ) -> Result<Tensor> {
        if k == 1 {
            return data_step(x, m0, s, t);
        }
        match predictor {
            Predictor::DpmPlusPlus => dpmpp_step(x, s, t, m0, hist, k, self.reference_3m),
            Predictor::UniP(v) => unipc_update(x, s, t, m0, hist, k, v, None),
            Predictor::DpmNoise => {
                Err(Error::invalid("strategy", "the noise-form predictor needs ε̂ (the stepper converts the history)"))
            }
        }
    }
}

/// DPM-Solver++(2M) / (3M) step from s to t with data predictions m0 (at s) and `hist` (newest first). The update is
/// linear in (x, m0, m1, m2): its coefficients are computed in f64 and the tensors combined in one pass.
fn dpmpp_step(
    x: &Tensor,
    s: &Point,
    t: &Point,
    m0: &Tensor,
    hist: &[(Point, Tensor)],
    k: u32,
    reference_3m: bool,
) -> Result<Tensor> {
    let h = step_h(s, t);
    let (a, _) = data_step_coeffs(s, t);
    let phi1 = (-h).exp_m1(); // e^{−h} − 1
    let (p1, m1) = (&hist[0].0, &hist[0].1);
    let r0 = (s.lambda() - p1.lambda()) / h;
    if k == 2 {
        // D = (1 + 1/(2r))·m0 − 1/(2r)·m1;  x_t = (σ_t/σ_s)x − α_t(e^{−h} − 1)·D.
        let c = -t.alpha * phi1;
        return weighted_sum(&[(a, x), (c * (1.0 + 0.5 / r0), m0), (-c * 0.5 / r0, m1)]);
    }
    let (p2, m2) = (&hist[1].0, &hist[1].1);
    let r1 = (p1.lambda() - p2.lambda()) / h;
    // D1_0 = (m0 − m1)/r0, D1_1 = (m1 − m2)/r1; D1 = D1_0 + r0/(r0 + r1)(D1_0 − D1_1); D2 = (D1_0 − D1_1)/(r0 + r1).
    let phi2 = phi1 / h + 1.0;
    let phi3 = phi2 / h - 0.5;
    // D2 ≈ h²·m''/2, while the exact update weighs h²·m'' by −α_t·φ3: hence 2·φ3. The dpm-solver, diffusers and
    // k-diffusion implementations use φ3·D2, which leaves an O(h³) local error (a second-order method; measured
    // in tests/solver_order.rs); `reference_3m` keeps that formula for parity.
    let c2 = if reference_3m { 1.0 } else { 2.0 };
    let c = r0 / (r0 + r1);
    // Coefficients of D1_0 and D1_1 in x_t.
    let w10 = t.alpha * phi2 * (1.0 + c) - c2 * t.alpha * phi3 / (r0 + r1);
    let w11 = -t.alpha * phi2 * c + c2 * t.alpha * phi3 / (r0 + r1);
    let (cm0, cm1, cm2) = (-t.alpha * phi1 + w10 / r0, -w10 / r0 + w11 / r1, -w11 / r1);
    weighted_sum(&[(a, x), (cm0, m0), (cm1, m1), (cm2, m2)])
}

/// DPM-Solver multistep step of order 2 or 3 on ε̂ from s to t: `e0` at s and `ehist` (newest first). With
/// φ1 = e^h − 1, φ2 = φ1/h − 1, φ3 = φ2/h − ½ the exact update is `x̃_t = (α_t/α_s)x̃ − σ_t(φ1·ε + hφ2·ε′ + h²φ3·ε″)`;
/// order 2 uses dpm-solver's `dpmsolver` form (½φ1 on the first difference), order 3 weighs the second difference
/// D2 ≈ h²ε″/2 by 2φ3 (the reference's φ3 leaves an O(h³) local error, as for DPM-Solver++(3M)).
fn dpm_noise_step(x: &Tensor, s: &Point, t: &Point, e0: &Tensor, ehist: &[(Point, Tensor)], k: u32) -> Result<Tensor> {
    let h = step_h(s, t);
    let a = t.alpha / s.alpha;
    let phi1 = h.exp_m1();
    let (p1, e1) = (&ehist[0].0, &ehist[0].1);
    let r0 = (s.lambda() - p1.lambda()) / h;
    if k == 2 {
        let c = t.sigma * phi1;
        return weighted_sum(&[(a, x), (-c * (1.0 + 0.5 / r0), e0), (c * 0.5 / r0, e1)]);
    }
    let (p2, e2) = (&ehist[1].0, &ehist[1].1);
    let r1 = (p1.lambda() - p2.lambda()) / h;
    let phi2 = phi1 / h - 1.0;
    let phi3 = phi2 / h - 0.5;
    let c = r0 / (r0 + r1);
    // x̃_t = a·x − σφ1·e0 − σφ2·D1 − 2σφ3·D2, D1 = (1 + c)·D1_0 − c·D1_1, D2 = (D1_0 − D1_1)/(r0 + r1),
    // D1_0 = (e0 − e1)/r0, D1_1 = (e1 − e2)/r1: coefficients of D1_0 and D1_1, then of e0, e1, e2.
    let w10 = -t.sigma * phi2 * (1.0 + c) - 2.0 * t.sigma * phi3 / (r0 + r1);
    let w11 = t.sigma * phi2 * c + 2.0 * t.sigma * phi3 / (r0 + r1);
    let (ce0, ce1, ce2) = (-t.sigma * phi1 + w10 / r0, -w10 / r0 + w11 / r1, -w11 / r1);
    weighted_sum(&[(a, x), (ce0, e0), (ce1, e1), (ce2, e2)])
}

/// ε̂ from x̂0 at a noisy point: `(x̃ − α·x̂0)/σ`.
fn eps_of(x: &Tensor, m: &Tensor, p: &Point) -> Result<Tensor> {
    crate::param::lin2(1.0 / p.sigma, x, -p.alpha / p.sigma, m)
}

/// UniPC's coefficients for one step (data form): `(B(h), R, b)` with R[i][k] = r_k^i, b_i = φ_{i+1}·i!/B(h).
fn unipc_system(h: f64, rks: &[f64], v: UniVariant) -> (f64, Vec<Vec<f64>>, Vec<f64>) {
    let hh = -h;
    let h_phi_1 = hh.exp_m1();
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let b_h = match v {
        UniVariant::Bh1 => hh,
        UniVariant::Bh2 => h_phi_1,
    };
    let (mut r, mut b) = (Vec::new(), Vec::new());
    let mut factorial = 1.0;
    for i in 1..=rks.len() {
        r.push(rks.iter().map(|rk| rk.powi(i as i32 - 1)).collect());
        b.push(h_phi_k * factorial / b_h);
        factorial *= (i + 1) as f64;
        h_phi_k = h_phi_k / hh - 1.0 / factorial;
    }
    (b_h, r, b)
}

/// UniP-k prediction (`m_t` None) or UniC-k correction with the model value `m_t` at the predicted point. The
/// update is linear in x, m0, the history and m_t: coefficients first, one fused combination.
#[allow(clippy::too_many_arguments)]
fn unipc_update(
    x: &Tensor,
    s: &Point,
    t: &Point,
    m0: &Tensor,
    hist: &[(Point, Tensor)],
    k: u32,
    v: UniVariant,
    m_t: Option<&Tensor>,
) -> Result<Tensor> {
    let h = step_h(s, t);
    let k = k as usize;
    let rks: Vec<f64> = hist.iter().take(k - 1).map(|(p, _)| (p.lambda() - s.lambda()) / h).chain([1.0]).collect();
    let (b_h, r, b) = unipc_system(h, &rks, v);
    let (a, bx) = data_step_coeffs(s, t);
    // x_t = a·x + bx·m0 − α_t·B(h)·Σ_k ρ_k·D1_k with D1_k = (m_k − m0)/r_k (and D1_t = m_t − m0 for the corrector).
    let rhos: Vec<f64> = match m_t {
        None if k == 1 => Vec::new(),
        None if k == 2 => vec![0.5],
        None => solve_linear(r[..k - 1].iter().map(|row| row[..k - 1].to_vec()).collect(), b[..k - 1].to_vec())?,
        Some(_) if k == 1 => vec![0.5],
        Some(_) => solve_linear(r, b)?,
    };
    let scale = -t.alpha * b_h;
    let mut c_m0 = bx;
    let mut terms: Vec<(f64, &Tensor)> = vec![(a, x)];
    for (j, (_, m)) in hist.iter().take(k - 1).enumerate() {
        let w = scale * rhos[j] / rks[j];
        c_m0 -= w;
        terms.push((w, m));
    }
    if let Some(m_t) = m_t {
        let w = scale * rhos[k - 1];
        c_m0 -= w;
        terms.push((w, m_t));
    }
    terms.push((c_m0, m0));
    weighted_sum(&terms)
}

impl Solver for DataMultistep {
    fn info(&self) -> SolverInfo {
        let order = self.convergence_order();
        if self.strategies.is_some() {
            let description = "USF schedule: per-step order, predictor (DPM-Solver++/UniP/DPM-Solver on ε̂), derivative \
                               estimate (multistep or singlestep) and UniC corrector";
            return SolverInfo::deterministic(&self.name, description, self.order);
        }
        let description = match (self.predictor, self.corrector.is_some(), self.order) {
            (Predictor::DpmPlusPlus, false, 1) => "DDIM = DPM-Solver-1 (first-order exponential integrator, data form)",
            (Predictor::DpmPlusPlus, false, 2) => {
                "DPM-Solver++(2M): second-order multistep, data prediction (Lu et al. 2022)"
            }
            (Predictor::DpmPlusPlus, false, _) if self.reference_3m => {
                "DPM-Solver++(3M) exactly as dpm-solver/diffusers/k-diffusion (their D2 weight makes it second order)"
            }
            (Predictor::DpmPlusPlus, false, _) => {
                "DPM-Solver++(3M): third-order multistep, data prediction (D2 weight corrected, see docs)"
            }
            (Predictor::DpmPlusPlus, true, _) => {
                "DPM-Solver++ multistep followed by the UniC corrector (order + 1, no extra NFE)"
            }
            (Predictor::UniP(UniVariant::Bh1), _, _) => {
                "UniPC, B(h) = h: UniP predictor + UniC corrector (Zhao et al. 2023)"
            }
            (Predictor::UniP(UniVariant::Bh2), _, _) => {
                "UniPC, B(h) = e^h − 1: UniP predictor + UniC corrector (Zhao et al. 2023)"
            }
            (Predictor::DpmNoise, _, _) => {
                "DPM-Solver multistep on ε̂ (noise form, Lu et al. 2022; 3M with the corrected D2 weight); needs α > 0"
            }
        };
        SolverInfo::deterministic(&self.name, description, order)
    }

    fn plan_steps(&self, steps: usize, to_data: bool) -> Result<Vec<u32>> {
        if let Some(s) = &self.strategies {
            if s.len() != steps {
                return Err(Error::invalid("strategy", format!("{} strategies for {steps} steps", s.len())));
            }
            return Ok(s
                .iter()
                .enumerate()
                .map(|(i, s)| if to_data && i + 1 == steps { 1 } else { s.order })
                .collect());
        }
        Ok(multistep_orders(self.order, steps, to_data, self.lower_order_final))
    }

    fn cost(&self, index: usize, order: u32, to_data: bool) -> usize {
        if let Some(k) = self.warmup.starter(self.convergence_order())
            && index == 0
            && !to_data
        {
            return k as usize;
        }
        match self.strategies.as_ref().and_then(|st| st.get(index)) {
            Some(st) if st.singlestep && !to_data && order >= 2 => order as usize,
            _ => 1,
        }
    }

    fn stepper<'s>(&'s self, _run: &Run<'_>, _grid: &[Point], orders: &[u32]) -> Result<Stepping<'s>> {
        let n = orders.len();
        if let Some(s) = &self.strategies
            && s.len() != n
        {
            return Err(Error::invalid("strategy", format!("{} strategies for {n} steps", s.len())));
        }
        Ok(Stepping::Fixed(Box::new(DataMultistepStepper {
            solver: self,
            m_cur: None,
            hist: VecDeque::new(),
            keep_states: self.uses_noise_form(),
            states: VecDeque::new(),
        })))
    }
}

/// A data-form multistep run: the model output at the current point and the earlier ones (newest first).
struct DataMultistepStepper<'s> {
    solver: &'s DataMultistep,
    m_cur: Option<Tensor>,
    hist: VecDeque<(Point, Tensor)>,
    /// Whether noise-form steps may need ε̂ of the history, and so the states x̃ where it was evaluated.
    keep_states: bool,
    /// The states of `hist`, in the same order (only with `keep_states`).
    states: VecDeque<Tensor>,
}

impl DataMultistepStepper<'_> {
    fn current(&mut self, run: &mut Run<'_>, x: &Tensor, s: &Point) -> Result<Tensor> {
        cached(&mut self.m_cur, || run.data(x, s))
    }
}

impl Stepper for DataMultistepStepper<'_> {
    fn step(&mut self, run: &mut Run<'_>, x: &Tensor, iv: &Interval) -> Result<Tensor> {
        let solver = self.solver;
        let (s, t) = (&iv.s, &iv.t);
        let m_cur = self.current(run, x, s)?;
        let usable = self.hist.iter().take_while(|(p, _)| p.lambda().is_finite()).count() as u32;
        let k = if regular(s, t) { iv.order.min(usable + 1) } else { 1 };
        let hist: Vec<(Point, Tensor)> = self.hist.iter().map(|(p, m)| (*p, m.shallow_clone())).collect();
        let starter = solver.warmup.starter(solver.convergence_order()).filter(|_| iv.index == 0 && regular(s, t));
        let (predictor, corrector, single) = match &solver.strategies {
            Some(st) => (st[iv.index].predictor, st[iv.index].corrector, st[iv.index].singlestep),
            None => (solver.predictor, solver.corrector, false),
        };
        let single = single && iv.order >= 2 && regular(s, t);
        let mut x_new = match starter {
            Some(order) => {
                let r1 = if order == 2 { 0.5 } else { 1.0 / 3.0 };
                singlestep_update(run, Form::Data, x, s, t, &m_cur, order, r1)?.0
            }
            None if single => {
                let r1 = if iv.order == 2 { 0.5 } else { 1.0 / 3.0 };
                if predictor == Predictor::DpmNoise {
                    if !(s.alpha > 0.0) {
                        return Err(Error::invalid("solver", "the noise-form singlestep step needs α > 0"));
                    }
                    let e0 = eps_of(x, &m_cur, s)?;
                    singlestep_update(run, Form::Noise, x, s, t, &e0, iv.order, r1)?.0
                } else {
                    singlestep_update(run, Form::Data, x, s, t, &m_cur, iv.order, r1)?.0
                }
            }
            None if predictor == Predictor::DpmNoise && k >= 2 => {
                if !(s.alpha > 0.0) {
                    return Err(Error::invalid("solver", "the noise-form multistep step needs α > 0"));
                }
                let e0 = eps_of(x, &m_cur, s)?;
                let ehist = hist
                    .iter()
                    .zip(&self.states)
                    .take(k as usize - 1)
                    .map(|((p, m), xs)| Ok((*p, eps_of(xs, m, p)?)))
                    .collect::<Result<Vec<_>>>()?;
                dpm_noise_step(x, s, t, &e0, &ehist, k)?
            }
            None => solver.predict(predictor, x, s, t, &m_cur, &hist, k)?,
        };
        if !iv.is_last() && !t.is_data() {
            let m_t = run.data(&x_new, t)?;
            if let Some(v) = corrector
                && regular(s, t)
                && starter.is_none()
                && !single
            {
                x_new = unipc_update(x, s, t, &m_cur, &hist, k, v, Some(&m_t))?;
            }
            self.hist.push_front((*s, m_cur));
            self.hist.truncate(solver.order as usize + 1);
            if self.keep_states {
                self.states.push_front(x.shallow_clone());
                self.states.truncate(solver.order as usize + 1);
            }
            self.m_cur = Some(m_t);
        }
        Ok(x_new)
    }

    fn final_prediction(&mut self, run: &mut Run<'_>, x: &Tensor, s: &Point) -> Result<FinalPrediction> {
        Ok(FinalPrediction::Data(self.current(run, x, s)?))
    }
}
