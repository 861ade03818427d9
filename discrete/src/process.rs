//! Forward kernels and exact posterior bridges of the absorbing (masked) and uniform processes.
//!
//! Per token, with α = α(t):
//! - masked: `q(x_t | x0) = α·e_{x0} + (1 − α)·e_mask`, the mask being token K;
//! - uniform: `q(x_t | x0) = α·e_{x0} + (1 − α)/K`.
//!
//! Bridges `q(x_s | x_t, x0)` for s < t come in three forms that agree when x0 is a point mass:
//! [`Process::bridge_hard`] (x0 known), [`Process::bridge_prior`] (x0 drawn from a *prior* π that has not seen
//! x_t, which is what the leave-one-out posterior is; DUO's `_posterior_from_x0` formula) and
//! [`Process::bridge_posterior`] (x0 drawn from a *posterior* that has seen x_t: a mixture of hard bridges).
//! All probability vectors have [`Process::width`] entries (K + 1 for masked, K for uniform).

use std::fmt;
use std::str::FromStr;

use diffuse_core::SampleSeeds;
use rand::Rng;

use crate::{Error, Result};

/// A forward corruption process over a vocabulary of `vocab` clean tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// Absorbing-state diffusion: tokens turn into the mask token (id = vocab).
    Masked {
        /// Number of clean tokens K.
        vocab: usize,
    },
    /// Uniform diffusion: tokens are resampled uniformly over the K tokens.
    Uniform {
        /// Number of tokens K.
        vocab: usize,
    },
}

/// Which process, without its vocabulary (command-line and file names: `masked`, `uniform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessKind {
    /// Absorbing (mask) diffusion.
    Masked,
    /// Uniform diffusion.
    Uniform,
}

impl FromStr for ProcessKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "masked" | "absorbing" | "mask" => Ok(ProcessKind::Masked),
            "uniform" => Ok(ProcessKind::Uniform),
            _ => Err(Error::invalid("process", format!("'{s}'; valid: masked, uniform"))),
        }
    }
}

impl fmt::Display for ProcessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProcessKind::Masked => "masked",
            ProcessKind::Uniform => "uniform",
        })
    }
}

impl ProcessKind {
    /// The process over `vocab` clean tokens.
    pub fn with_vocab(self, vocab: usize) -> Process {
        match self {
            ProcessKind::Masked => Process::Masked { vocab },
            ProcessKind::Uniform => Process::Uniform { vocab },
        }
    }
}

impl Process {
    /// The kind without vocabulary.
    pub fn kind(&self) -> ProcessKind {
        match self {
            Process::Masked { .. } => ProcessKind::Masked,
            Process::Uniform { .. } => ProcessKind::Uniform,
        }
    }

    /// Number of clean tokens K.
    pub fn vocab(&self) -> usize {
        match *self {
            Process::Masked { vocab } | Process::Uniform { vocab } => vocab,
        }
    }

    /// Number of states a noisy token can take: K + 1 (masked) or K (uniform).
    pub fn width(&self) -> usize {
        match *self {
            Process::Masked { vocab } => vocab + 1,
            Process::Uniform { vocab } => vocab,
        }
    }

    /// The mask token id (K) of the masked process.
    pub fn mask(&self) -> Option<usize> {
        match *self {
            Process::Masked { vocab } => Some(vocab),
            Process::Uniform { .. } => None,
        }
    }

    /// True when token `x` is the mask.
    pub fn is_mask(&self, x: usize) -> bool {
        self.mask() == Some(x)
    }

    /// Checks that the vocabulary is usable (K ≥ 2).
    pub fn validate(&self) -> Result<()> {
        if self.vocab() < 2 {
            return Err(Error::invalid("vocab", format!("{} tokens; need at least 2", self.vocab())));
        }
        Ok(())
    }

    /// `q(x_t = x | x0)` for a clean token x0.
    pub fn likelihood(&self, x: usize, x0: usize, alpha: f64) -> f64 {
        let clean = if x == x0 { alpha } else { 0.0 };
        match *self {
            Process::Masked { vocab } => clean + if x == vocab { 1.0 - alpha } else { 0.0 },
            Process::Uniform { vocab } => clean + (1.0 - alpha) / vocab as f64,
        }
    }

    /// The forward law `q(x_t | x0)` for a distribution `x0` over the K clean tokens, written into `out` (width).
    pub fn forward(&self, x0: &[f64], alpha: f64, out: &mut [f64]) {
        let k = self.vocab();
        for v in 0..k {
            out[v] = alpha * x0[v];
        }
        match *self {
            Process::Masked { vocab } => out[vocab] = (1.0 - alpha) * x0[..k].iter().sum::<f64>(),
            Process::Uniform { vocab } => {
                let mass: f64 = x0[..k].iter().sum();
                out[..k].iter_mut().for_each(|o| *o += (1.0 - alpha) * mass / vocab as f64);
            }
        }
    }

    /// The law of x_t at t = 1 that samplers start from: all-mask, or uniform.
    pub fn prior(&self) -> Vec<f64> {
        let mut p = vec![0.0; self.width()];
        match *self {
            Process::Masked { vocab } => p[vocab] = 1.0,
            Process::Uniform { vocab } => p.iter_mut().for_each(|v| *v = 1.0 / vocab as f64),
        }
        p
    }

    /// Exact bridge `q(x_s | x_t, x0)` with x0 known, written into `out` (width); `alpha_s ≥ alpha_t`.
    pub fn bridge_hard(&self, x_t: usize, x0: usize, alpha_s: f64, alpha_t: f64, out: &mut [f64]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        match *self {
            Process::Masked { vocab } => {
                if x_t != vocab || alpha_t >= 1.0 {
                    // An unmasked token is x0 itself and stays; at α_t = 1 nothing was masked.
                    out[if x_t != vocab { x_t } else { x0 }] = 1.0;
                } else {
                    out[x0] = (alpha_s - alpha_t) / (1.0 - alpha_t);
                    out[vocab] = (1.0 - alpha_s) / (1.0 - alpha_t);
                }
            }
            Process::Uniform { .. } => {
                let mut e = vec![0.0; self.vocab()];
                e[x0] = 1.0;
                self.bridge_prior(x_t, &e, alpha_s, alpha_t, out);
            }
        }
    }

    /// Bridge for x0 drawn from a prior `pi` over the K clean tokens that has not seen x_t (e.g. the
    /// leave-one-out posterior): `Σ_x0 π(x0) q(x_s, x_t | x0) / Σ_x0 π(x0) q(x_t | x0)`.
    ///
    /// Uniform (DUO `_posterior_from_x0`): `[α_t K π⊙e_{x_t} + (α_t/α_s − α_t)e_{x_t} + (α_s − α_t)π +
    /// (1 − α_t/α_s)(1 − α_s)/K] / [α_t K π(x_t) + 1 − α_t]`. Masked: the mask carries no information, so it is
    /// the same as [`Process::bridge_posterior`].
    pub fn bridge_prior(&self, x_t: usize, pi: &[f64], alpha_s: f64, alpha_t: f64, out: &mut [f64]) {
        match *self {
            Process::Masked { .. } => self.bridge_posterior(x_t, pi, alpha_s, alpha_t, out),
            Process::Uniform { vocab } => {
                let k = vocab as f64;
                let r = alpha_t / alpha_s;
                let base = (1.0 - r) * (1.0 - alpha_s) / k;
                for v in 0..vocab {
                    out[v] = (alpha_s - alpha_t) * pi[v] + base;
                }
                out[x_t] += alpha_t * k * pi[x_t] + (r - alpha_t);
                let z = alpha_t * k * pi[x_t] + 1.0 - alpha_t;
                if z > 0.0 {
                    let inv = 1.0 / z;
                    out.iter_mut().for_each(|o| *o *= inv);
                }
            }
        }
    }

    /// Bridge for x0 drawn from a posterior `post` that has seen x_t: `Σ_x0 post(x0)·q(x_s | x_t, x0)`.
    ///
    /// Masked: `(α_s − α_t)/(1 − α_t)·post + (1 − α_s)/(1 − α_t)·e_mask` at a masked token, `e_{x_t}` otherwise.
    pub fn bridge_posterior(&self, x_t: usize, post: &[f64], alpha_s: f64, alpha_t: f64, out: &mut [f64]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        match *self {
            Process::Masked { vocab } => {
                if x_t != vocab {
                    out[x_t] = 1.0;
                } else if alpha_t >= 1.0 {
                    out[..vocab].copy_from_slice(&post[..vocab]);
                } else {
                    let a = (alpha_s - alpha_t) / (1.0 - alpha_t);
                    for v in 0..vocab {
                        out[v] = a * post[v];
                    }
                    out[vocab] = (1.0 - alpha_s) / (1.0 - alpha_t);
                }
            }
            Process::Uniform { vocab } => {
                let mut one = vec![0.0; vocab];
                for (x0, &w) in post.iter().enumerate().take(vocab) {
                    if w > 0.0 {
                        self.bridge_hard(x_t, x0, alpha_s, alpha_t, &mut one);
                        out.iter_mut().zip(&one).for_each(|(o, b)| *o += w * b);
                    }
                }
            }
        }
    }
}

/// Sequences drawn from the forward process (see [`Process::corrupt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupted {
    /// x_t, `[n·len]`.
    pub x_t: Vec<i64>,
    /// AUDM's noise tokens u `[n·len]` (x_t = u where a token was corrupted), when asked for.
    pub noise: Option<Vec<i64>>,
}

impl Process {
    /// Draws `x_t ~ q(x_t | x0)` for `n` sequences `x0` `[n·len]`, with one α per sequence, each sequence from
    /// its own stream (`seeds.rng(i, draw)`). With `audm`, also the noise tokens u of the absorbing
    /// reformulation: u is uniform at every position and x_t = u where the token was corrupted (uniform process).
    pub fn corrupt(
        &self,
        x0: &[i64],
        len: usize,
        alpha: &[f64],
        seeds: &SampleSeeds,
        draw: u64,
        audm: bool,
    ) -> Result<Corrupted> {
        let n = seeds.len();
        if len == 0 || x0.len() != n * len {
            return Err(Error::invalid("x0", format!("{} tokens for {n} sequences of length {len}", x0.len())));
        }
        if alpha.len() != n {
            return Err(Error::invalid("alpha", format!("{} values for {n} sequences", alpha.len())));
        }
        if let Some(a) = alpha.iter().find(|a| !(0.0..=1.0).contains(*a)) {
            return Err(Error::invalid("alpha", format!("{a} must lie in [0, 1]")));
        }
        let k = self.vocab();
        if let Some(x) = x0.iter().find(|&&x| x < 0 || x as usize >= k) {
            return Err(Error::invalid("x0", format!("token {x} is outside the vocabulary of {k}")));
        }
        if audm && self.kind() != ProcessKind::Uniform {
            return Err(Error::not_applicable("AUDM noise tokens", "they belong to the uniform process"));
        }
        let mut x_t = Vec::with_capacity(x0.len());
        let mut noise = audm.then(|| Vec::with_capacity(x0.len()));
        for i in 0..n {
            let mut rng = seeds.rng(i, draw);
            for &x in &x0[i * len..(i + 1) * len] {
                let corrupted = rng.random::<f64>() < 1.0 - alpha[i];
                let u = rng.random_range(0..k) as i64;
                if let Some(noise) = noise.as_mut() {
                    noise.push(u);
                }
                x_t.push(match (corrupted, self) {
                    (false, _) => x,
                    (true, Process::Masked { vocab }) => *vocab as i64,
                    (true, Process::Uniform { .. }) => u,
                });
            }
        }
        Ok(Corrupted { x_t, noise })
    }

    /// Draws `x_s ~ q(x_s | x_t, x0)` from the exact hard bridge for `n` sequences `[n·len]`, with one (α_s, α_t)
    /// pair per sequence (α_s ≥ α_t), each sequence from its own stream: the CDLM training pair (x_t, x_s).
    pub fn bridge_sample(
        &self,
        x0: &[i64],
        x_t: &[i64],
        len: usize,
        alpha_s: &[f64],
        alpha_t: &[f64],
        seeds: &SampleSeeds,
        draw: u64,
    ) -> Result<Vec<i64>> {
        let n = seeds.len();
        if len == 0 || x0.len() != n * len || x_t.len() != n * len {
            return Err(Error::invalid(
                "x0/x_t",
                format!("{} and {} tokens for {n} sequences of length {len}", x0.len(), x_t.len()),
            ));
        }
        if alpha_s.len() != n || alpha_t.len() != n {
            return Err(Error::invalid("alpha", format!("need {n} values of alpha_s and alpha_t")));
        }
        for (a_s, a_t) in alpha_s.iter().zip(alpha_t) {
            if !(0.0..=1.0).contains(a_t) || !(*a_t..=1.0).contains(a_s) {
                return Err(Error::invalid("alpha", format!("need 0 <= alpha_t <= alpha_s <= 1, got {a_t}, {a_s}")));
            }
        }
        let (k, w) = (self.vocab(), self.width());
        if let Some(x) = x0.iter().find(|&&x| x < 0 || x as usize >= k) {
            return Err(Error::invalid("x0", format!("token {x} is outside the vocabulary of {k}")));
        }
        if let Some(x) = x_t.iter().find(|&&x| x < 0 || x as usize >= w) {
            return Err(Error::invalid("x_t", format!("token {x} is outside the {w} states")));
        }
        let mut out = Vec::with_capacity(x0.len());
        let mut law = vec![0.0; w];
        for i in 0..n {
            let mut rng = seeds.rng(i, draw);
            for j in i * len..(i + 1) * len {
                self.bridge_hard(x_t[j] as usize, x0[j] as usize, alpha_s[i], alpha_t[i], &mut law);
                out.push(crate::categorical::sample(&law, &mut rng, crate::categorical::Precision::F64) as i64);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < tol)
    }

    /// Σ_{x_t} q(x_t | x0) q(x_s | x_t, x0) = q(x_s | x0), for hard x0 and for a prior π.
    #[test]
    fn bridges_marginalise_to_the_forward_process() {
        for process in [Process::Masked { vocab: 4 }, Process::Uniform { vocab: 4 }] {
            let w = process.width();
            let pi = [0.1, 0.2, 0.3, 0.4];
            for (a_s, a_t) in [(0.9, 0.3), (0.5, 0.49), (1.0, 0.2), (0.3, 0.0)] {
                for x0 in 0..4 {
                    let mut e = [0.0; 4];
                    e[x0] = 1.0;
                    let (mut q_t, mut q_s, mut acc, mut b) = (vec![0.0; w], vec![0.0; w], vec![0.0; w], vec![0.0; w]);
                    process.forward(&e, a_t, &mut q_t);
                    process.forward(&e, a_s, &mut q_s);
                    for x_t in 0..w {
                        process.bridge_hard(x_t, x0, a_s, a_t, &mut b);
                        acc.iter_mut().zip(&b).for_each(|(a, b)| *a += q_t[x_t] * b);
                    }
                    assert!(close(&acc, &q_s, 1e-12), "{process:?} hard {acc:?} vs {q_s:?}");
                }
                // Soft x0 as a prior: the marginal of x_t under π, then the prior bridge.
                let (mut q_t, mut q_s, mut acc, mut b) = (vec![0.0; w], vec![0.0; w], vec![0.0; w], vec![0.0; w]);
                process.forward(&pi, a_t, &mut q_t);
                process.forward(&pi, a_s, &mut q_s);
                for x_t in 0..w {
                    process.bridge_prior(x_t, &pi, a_s, a_t, &mut b);
                    acc.iter_mut().zip(&b).for_each(|(a, b)| *a += q_t[x_t] * b);
                }
                assert!(close(&acc, &q_s, 1e-12), "{process:?} soft {acc:?} vs {q_s:?}");
            }
        }
    }

    /// The prior bridge equals the posterior bridge with the posterior π(x0)q(x_t|x0)/Z.
    #[test]
    fn prior_and_posterior_bridges_agree() {
        let p = Process::Uniform { vocab: 5 };
        let pi = [0.05, 0.15, 0.2, 0.25, 0.35];
        let (a_s, a_t) = (0.7, 0.4);
        for x_t in 0..5 {
            let mut post: Vec<f64> = (0..5).map(|v| pi[v] * p.likelihood(x_t, v, a_t)).collect();
            let z: f64 = post.iter().sum();
            post.iter_mut().for_each(|v| *v /= z);
            let (mut a, mut b) = (vec![0.0; 5], vec![0.0; 5]);
            p.bridge_prior(x_t, &pi, a_s, a_t, &mut a);
            p.bridge_posterior(x_t, &post, a_s, a_t, &mut b);
            assert!(close(&a, &b, 1e-12), "{a:?} {b:?}");
            assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn corrupted_tokens_follow_the_forward_kernel() {
        let n = 20_000;
        let seeds = SampleSeeds::new(4, 0, n);
        for (p, audm) in [(Process::Masked { vocab: 3 }, false), (Process::Uniform { vocab: 3 }, true)] {
            let c = p.corrupt(&vec![1; n], 1, &vec![0.3; n], &seeds, 0, audm).unwrap();
            let mut q = vec![0.0; p.width()];
            p.forward(&[0.0, 1.0, 0.0], 0.3, &mut q);
            for (v, &qv) in q.iter().enumerate() {
                let f = c.x_t.iter().filter(|&&x| x == v as i64).count() as f64 / n as f64;
                assert!((f - qv).abs() < 5.0 * (qv * (1.0 - qv) / n as f64).sqrt() + 1e-12, "{p:?} {v}: {f} vs {qv}");
            }
            if let Some(u) = c.noise {
                // Where x_t differs from x0 it is the noise token.
                assert!(c.x_t.iter().zip(&u).all(|(&x, &u)| x == 1 || x == u));
            }
        }
        let e =
            Process::Masked { vocab: 3 }.corrupt(&[5], 1, &[0.5], &SampleSeeds::new(0, 0, 1), 0, false).unwrap_err();
        assert!(e.to_string().contains("x0") && e.to_string().contains("token 5"), "{e}");
    }

    /// x_t from the forward process, then x_s from the bridge: x_s follows the forward process at α_s.
    #[test]
    fn bridge_samples_marginalise_to_the_forward_process() {
        let n = 20_000;
        let seeds = SampleSeeds::new(6, 0, n);
        for p in [Process::Masked { vocab: 3 }, Process::Uniform { vocab: 3 }] {
            let x0 = vec![2; n];
            let c = p.corrupt(&x0, 1, &vec![0.2; n], &seeds, 0, false).unwrap();
            let xs = p.bridge_sample(&x0, &c.x_t, 1, &vec![0.7; n], &vec![0.2; n], &seeds, 1).unwrap();
            let mut q = vec![0.0; p.width()];
            p.forward(&[0.0, 0.0, 1.0], 0.7, &mut q);
            for (v, &qv) in q.iter().enumerate() {
                let f = xs.iter().filter(|&&x| x == v as i64).count() as f64 / n as f64;
                assert!((f - qv).abs() < 5.0 * (qv * (1.0 - qv) / n as f64).sqrt() + 1e-12, "{p:?} {v}: {f} vs {qv}");
            }
        }
    }

    #[test]
    fn bridge_to_time_zero_is_the_clean_token() {
        for p in [Process::Masked { vocab: 3 }, Process::Uniform { vocab: 3 }] {
            let mut out = vec![0.0; p.width()];
            p.bridge_hard(p.width() - 1, 1, 1.0, 0.3, &mut out);
            assert!((out[1] - 1.0).abs() < 1e-12, "{p:?} {out:?}");
        }
    }
}
