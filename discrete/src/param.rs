//! Parameterizations of a discrete denoiser and the exact conversions between them.
//!
//! At one position i of a noisy sequence x_t (α = α(t), K clean tokens):
//! - clean-data posterior `p(x0^i | x_t)` ([`Output::Clean`]); for the masked process with SUBS carry-over
//!   (mask logit −∞, unmasked positions copied, MDLM);
//! - leave-one-out posterior `π(v) = p(x0^i = v | x_t^{−i})` ([`Output::LeaveOneOut`], uniform; rev_udm);
//! - concrete score `s_v = p_t(x_t with x^i = v) / p_t(x_t)` ([`Output::LogScore`] holds ln s; SEDD);
//! - AUDM posterior `p(x0^i | x_t, u)` given the noise tokens u ([`Output::AudmClean`]).
//!
//! Uniform identities (exact): `p(x0 = v | x_t) ∝ π(v)·(1 + Kα/(1 − α)·1[v = x_t^i])`;
//! `p(x_t^i = v | x_t^{−i}) = m_v = α π(v) + (1 − α)/K`; `s_v = m_v / m_{x_t^i}`, hence `π = (s/Σs − (1 − α)/K)/α`.
//! Masked (at a masked position): `s_v = α/(1 − α)·p(x0^i = v | x_t)` for v < K and `s_mask = 1`.

use std::fmt;
use std::str::FromStr;

use crate::categorical::normalize;
use crate::process::Process;
use crate::{Error, Result};

/// What a denoiser's output tensor holds along its last axis (of [`Process::width`] entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Logits of the clean-data posterior p(x0^i | x_t).
    Clean,
    /// Logits of the leave-one-out posterior p(x0^i | x_t^{−i}).
    LeaveOneOut,
    /// Log concrete score ln s_v.
    LogScore,
    /// Logits of the AUDM posterior p(x0^i | x_t, u) (needs the noise tokens u).
    AudmClean,
}

impl Output {
    /// The accepted names.
    pub const NAMES: [&'static str; 4] = ["clean", "loo", "score", "audm"];
}

impl FromStr for Output {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "clean" => Ok(Output::Clean),
            "loo" | "leave-one-out" => Ok(Output::LeaveOneOut),
            "score" => Ok(Output::LogScore),
            "audm" => Ok(Output::AudmClean),
            _ => Err(Error::invalid("output", format!("'{s}'; valid: {}", Output::NAMES.join(", ")))),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Output::Clean => "clean",
            Output::LeaveOneOut => "loo",
            Output::LogScore => "score",
            Output::AudmClean => "audm",
        })
    }
}

/// `ln(1 + Kα/(1 − α))`: the logit shift between the clean and leave-one-out posteriors at x_t^i.
pub fn loo_shift(vocab: usize, alpha: f64) -> f64 {
    (vocab as f64 * alpha / (1.0 - alpha)).ln_1p()
}

/// Uniform: leave-one-out posterior from the clean posterior (α < 1).
pub fn loo_from_clean(clean: &[f64], x_t: usize, alpha: f64, out: &mut [f64]) {
    out.copy_from_slice(clean);
    loo_from_clean_in_place(out, x_t, alpha);
}

fn loo_from_clean_in_place(p: &mut [f64], x_t: usize, alpha: f64) {
    let k = p.len();
    p[x_t] /= 1.0 + k as f64 * alpha / (1.0 - alpha);
    normalize(p);
}

/// Uniform: clean posterior from the leave-one-out posterior.
pub fn clean_from_loo(loo: &[f64], x_t: usize, alpha: f64, out: &mut [f64]) {
    out.copy_from_slice(loo);
    clean_from_loo_in_place(out, x_t, alpha);
}

fn clean_from_loo_in_place(out: &mut [f64], x_t: usize, alpha: f64) {
    let k = out.len();
    if alpha >= 1.0 {
        out.iter_mut().for_each(|o| *o = 0.0);
        out[x_t] = 1.0;
        return;
    }
    out[x_t] *= 1.0 + k as f64 * alpha / (1.0 - alpha);
    normalize(out);
}

/// Uniform: concrete score `s_v = m_v/m_{x_t}` from the leave-one-out posterior.
pub fn score_from_loo(loo: &[f64], x_t: usize, alpha: f64, out: &mut [f64]) {
    let k = loo.len() as f64;
    let m_x = alpha * loo[x_t] + (1.0 - alpha) / k;
    for (o, &p) in out.iter_mut().zip(loo) {
        *o = (alpha * p + (1.0 - alpha) / k) / m_x;
    }
}

/// Uniform: leave-one-out posterior from a concrete score (negative parts of an inexact score are clipped).
pub fn loo_from_score(score: &[f64], alpha: f64, out: &mut [f64]) {
    let k = score.len() as f64;
    let z: f64 = score.iter().sum();
    for (o, &s) in out.iter_mut().zip(score) {
        *o = ((s / z - (1.0 - alpha) / k) / alpha).max(0.0);
    }
    normalize(out);
}

/// Masked, at a masked position: concrete score from the clean posterior (width K + 1; mask entry 1).
pub fn masked_score_from_clean(clean: &[f64], alpha: f64, out: &mut [f64]) {
    let k = out.len() - 1;
    for v in 0..k {
        out[v] = alpha / (1.0 - alpha) * clean[v];
    }
    out[k] = 1.0;
}

/// Masked, at a masked position: clean posterior from the concrete score (width K + 1; mask entry 0).
pub fn masked_clean_from_score(score: &[f64], alpha: f64, out: &mut [f64]) {
    let k = out.len() - 1;
    for v in 0..k {
        out[v] = (1.0 - alpha) / alpha * score[v];
    }
    out[k] = 0.0;
    normalize(out);
}

/// One position of a denoiser's output, turned into the representations the samplers need (f64).
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    /// The raw output row (logits or log scores), [`Process::width`] entries.
    pub row: &'a [f64],
    /// The noisy token at this position.
    pub x_t: usize,
    /// True when the position is known clean (masked: x_t unmasked; AUDM: x_t ≠ u): carry-over applies.
    pub known: bool,
}

/// What the rows a [`Converter`] reads hold: the denoiser's output as it is, or with its exponentials already
/// taken by libtorch ([`Rows::prepare`]: vectorised, on the model's device), which is most of a sampler's work
/// per step otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rows {
    /// The raw output (logits or log scores).
    #[default]
    Raw,
    /// Logit outputs (clean, leave-one-out, AUDM): `softmax(row[..K]/T)` over the K clean tokens, 0 beyond.
    Softmax,
    /// Log-score outputs: the concrete score `exp(row)` itself.
    Exp,
}

/// Log scores are clamped here before [`Rows::Exp`] takes their exponential (a score above 1e304 is no score).
const MAX_LOG_SCORE: f64 = 700.0;

impl Rows {
    /// The prepared form of `output`'s rows.
    pub fn prepared(output: Output) -> Rows {
        match output {
            Output::LogScore => Rows::Exp,
            Output::Clean | Output::LeaveOneOut | Output::AudmClean => Rows::Softmax,
        }
    }

    /// This form, in f64, of a model output `[.., W]` (any float dtype) over `vocab` clean tokens at
    /// `temperature`. A [`Rows::Softmax`] row whose clean logits are all −∞ comes out NaN: [`Converter`] reads it
    /// as all zeros, as it does the raw row.
    pub fn prepare(self, out: &tch::Tensor, vocab: usize, temperature: f64) -> Result<tch::Tensor> {
        let width = out.size().last().copied().unwrap_or(0);
        let k = vocab as i64;
        let double = tch::Kind::Double;
        Ok(match self {
            Rows::Raw => out.f_to_kind(double)?,
            Rows::Softmax => {
                let mut logits = out.f_to_kind(double)?;
                if width > k {
                    // The entries beyond the clean tokens (the mask) get probability 0.
                    let beyond = tch::Tensor::f_arange_start(k, width, (tch::Kind::Int64, out.device()))?;
                    logits = logits.f_index_fill(-1, &beyond, f64::NEG_INFINITY)?;
                }
                let logits = if temperature == 1.0 { logits } else { logits.f_mul_scalar(1.0 / temperature)? };
                logits.f_softmax(-1, double)?
            }
            Rows::Exp => out.f_to_kind(double)?.f_clamp_max(MAX_LOG_SCORE)?.f_exp()?,
        })
    }
}

/// Converts output rows of one kind into clean posteriors, leave-one-out posteriors or concrete scores.
#[derive(Debug, Clone, Copy)]
pub struct Converter {
    /// The process.
    pub process: Process,
    /// What the rows hold.
    pub output: Output,
    /// Temperature applied to raw logits (clean, leave-one-out and AUDM outputs).
    pub temperature: f64,
    /// What the rows hold (already prepared with this temperature, unless [`Rows::Raw`]).
    pub rows: Rows,
}

impl Converter {
    /// The concrete score from an entry of a log-score row.
    fn score_of(&self, entry: f64) -> f64 {
        if self.rows == Rows::Exp { entry } else { entry.exp() }
    }

    fn carry_over(&self, x_t: usize, out: &mut [f64]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        out[x_t] = 1.0;
    }

    /// Softmax of `row/T` over the K clean tokens into `out` (entries ≥ K, i.e. the mask, get 0), in place.
    fn tempered_softmax(&self, row: &[f64], out: &mut [f64]) {
        let inv_t = 1.0 / self.temperature;
        let k = self.process.vocab();
        match self.rows {
            Rows::Softmax => {
                // Already 0 beyond the clean tokens; NaN where the clean logits were all −∞ (see Rows::prepare).
                if row[0].is_nan() {
                    out.iter_mut().for_each(|o| *o = 0.0);
                } else {
                    out.copy_from_slice(row);
                }
                return;
            }
            Rows::Exp => {
                // softmax(ln s/T) = s^(1/T)/Σ.
                for (o, &v) in out[..k].iter_mut().zip(&row[..k]) {
                    *o = if inv_t == 1.0 { v } else { v.powf(inv_t) };
                }
                out[k..].iter_mut().for_each(|o| *o = 0.0);
                return normalize(&mut out[..k]);
            }
            Rows::Raw => {}
        }
        let m = row[..k].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        out.iter_mut().for_each(|o| *o = 0.0);
        if m == f64::NEG_INFINITY || m.is_nan() {
            return;
        }
        let mut z = 0.0;
        for (o, &l) in out[..k].iter_mut().zip(&row[..k]) {
            *o = ((l - m) * inv_t).exp();
            z += *o;
        }
        out[..k].iter_mut().for_each(|o| *o /= z);
    }

    /// Clean posterior over the [`Process::width`] states (the mask entry is 0) at time with `alpha`.
    pub fn clean(&self, pos: Position<'_>, alpha: f64, out: &mut [f64]) {
        if pos.known {
            return self.carry_over(pos.x_t, out);
        }
        match (self.output, self.process) {
            (Output::Clean | Output::AudmClean, _) | (Output::LeaveOneOut, Process::Masked { .. }) => {
                self.tempered_softmax(pos.row, out)
            }
            (Output::LeaveOneOut, Process::Uniform { .. }) => {
                self.tempered_softmax(pos.row, out);
                clean_from_loo_in_place(out, pos.x_t, alpha);
            }
            (Output::LogScore, Process::Masked { .. }) => {
                // ln p(v) = ln s_v + ln((1 − α)/α): the constant cancels in the softmax over v < K.
                self.tempered_softmax(pos.row, out);
            }
            (Output::LogScore, Process::Uniform { .. }) => {
                let mut loo = vec![0.0; out.len()];
                self.loo(pos, alpha, &mut loo);
                clean_from_loo(&loo, pos.x_t, alpha, out);
            }
        }
    }

    /// Leave-one-out posterior (uniform; for the masked process at a masked position it is the clean posterior).
    pub fn loo(&self, pos: Position<'_>, alpha: f64, out: &mut [f64]) {
        match (self.output, self.process) {
            (Output::LeaveOneOut, _) => self.tempered_softmax(pos.row, out),
            (_, Process::Masked { .. }) => self.clean(pos, alpha, out),
            (Output::Clean | Output::AudmClean, Process::Uniform { .. }) => {
                self.tempered_softmax(pos.row, out);
                loo_from_clean_in_place(out, pos.x_t, alpha);
            }
            (Output::LogScore, Process::Uniform { .. }) => {
                let s: Vec<f64> = pos.row.iter().map(|&l| self.score_of(l)).collect();
                loo_from_score(&s, alpha, out);
            }
        }
    }

    /// Concrete score (not its log) over the width; at a known masked-process position only `s_{x_t} = 1`.
    pub fn score(&self, pos: Position<'_>, alpha: f64, out: &mut [f64]) {
        match self.process {
            Process::Masked { .. } => {
                if pos.known {
                    return self.carry_over(pos.x_t, out);
                }
                if self.output == Output::LogScore {
                    let k = self.process.vocab();
                    for (v, o) in out.iter_mut().enumerate() {
                        *o = if v < k { self.score_of(pos.row[v]) } else { 1.0 };
                    }
                } else {
                    let mut clean = vec![0.0; out.len()];
                    self.clean(pos, alpha, &mut clean);
                    masked_score_from_clean(&clean, alpha, out);
                }
            }
            Process::Uniform { .. } => {
                if self.output == Output::LogScore {
                    for (o, &l) in out.iter_mut().zip(pos.row) {
                        *o = self.score_of(l);
                    }
                } else {
                    let mut loo = vec![0.0; out.len()];
                    self.loo(pos, alpha, &mut loo);
                    score_from_loo(&loo, pos.x_t, alpha, out);
                }
            }
        }
    }
}

/// SUBS carry-over on a logits tensor `[B, L, K + 1]` (MDLM): mask logit −∞, unmasked positions one-hot
/// (0 at x_t, −∞ elsewhere). For models trained with the masked process.
pub fn subs_logits(logits: &tch::Tensor, x_t: &tch::Tensor, mask: i64) -> Result<tch::Tensor> {
    let neg = f64::NEG_INFINITY;
    let width = logits.size().last().copied().unwrap_or(0);
    let mask_col = tch::Tensor::f_arange(width, (logits.kind(), logits.device()))?.f_eq(mask)?;
    let l = logits.f_masked_fill(&mask_col, neg)?;
    let frozen = l.f_full_like(neg)?.f_scatter_value(-1, &x_t.f_unsqueeze(-1)?, 0.0)?;
    let unmasked = x_t.f_ne(mask)?.f_unsqueeze(-1)?;
    Ok(frozen.f_where_self(&unmasked, &l)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::categorical::softmax;
    use proptest::prelude::*;

    fn dist(k: usize) -> impl Strategy<Value = Vec<f64>> {
        proptest::collection::vec(0.01f64..1.0, k).prop_map(|mut v| {
            normalize(&mut v);
            v
        })
    }

    proptest! {
        #[test]
        fn uniform_conversions_round_trip(pi in dist(5), x_t in 0usize..5, alpha in 0.01f64..0.99) {
            let (mut clean, mut back, mut s, mut from_s) = (vec![0.0; 5], vec![0.0; 5], vec![0.0; 5], vec![0.0; 5]);
            clean_from_loo(&pi, x_t, alpha, &mut clean);
            loo_from_clean(&clean, x_t, alpha, &mut back);
            score_from_loo(&pi, x_t, alpha, &mut s);
            loo_from_score(&s, alpha, &mut from_s);
            for v in 0..5 {
                prop_assert!((back[v] - pi[v]).abs() < 1e-10);
                prop_assert!((from_s[v] - pi[v]).abs() < 1e-9);
            }
            prop_assert!((s[x_t] - 1.0).abs() < 1e-12);
        }

        #[test]
        fn masked_conversions_round_trip(mut p in dist(4), alpha in 0.01f64..0.99) {
            p.push(0.0);
            let (mut s, mut back) = (vec![0.0; 5], vec![0.0; 5]);
            masked_score_from_clean(&p, alpha, &mut s);
            masked_clean_from_score(&s, alpha, &mut back);
            for v in 0..5 {
                prop_assert!((back[v] - p[v]).abs() < 1e-10);
            }
        }

        /// The logit-space shift of rev_udm equals the probability-space conversion.
        #[test]
        fn logit_shift_matches(pi in dist(4), x_t in 0usize..4, alpha in 0.01f64..0.99) {
            let mut logits: Vec<f64> = pi.iter().map(|p| p.ln()).collect();
            logits[x_t] += loo_shift(4, alpha);
            let mut a = vec![0.0; 4];
            softmax(&logits, &mut a);
            let mut b = vec![0.0; 4];
            clean_from_loo(&pi, x_t, alpha, &mut b);
            for v in 0..4 {
                prop_assert!((a[v] - b[v]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn subs_sets_carry_over() {
        let logits = tch::Tensor::from_slice(&[1.0f64, 2.0, 3.0, 1.0, 2.0, 3.0]).view([1, 2, 3]);
        let x_t = tch::Tensor::from_slice(&[2i64, 0]).view([1, 2]);
        let out = subs_logits(&logits, &x_t, 2).unwrap();
        let v: Vec<f64> = Vec::try_from(out.flatten(0, -1)).unwrap();
        assert_eq!(&v[..2], &[1.0, 2.0]);
        assert_eq!(v[2], f64::NEG_INFINITY);
        assert_eq!(&v[3..], &[0.0, f64::NEG_INFINITY, f64::NEG_INFINITY]);
    }
}
