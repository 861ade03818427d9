//! Exact reference problems: a known distribution over short token sequences (a table or a Markov chain), its
//! exact denoisers in every parameterization by enumeration of all sequences, and total-variation tools.
//!
//! Every query enumerates the support (at most [`MAX_SEQUENCES`] sequences), so these are for tests and for
//! `diffuse text check`, not for real vocabularies.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use tch::{Kind, Tensor};

use crate::denoiser::Denoiser;
use crate::param::{Output, score_from_loo};
use crate::process::Process;
use crate::schedule::Schedule;
use crate::{Error, Result};

/// Largest number of sequences K^L an exact target may have.
pub const MAX_SEQUENCES: usize = 1 << 16;
/// Tolerance on probabilities summing to 1 in target files.
pub const SUM_TOLERANCE: f64 = 1e-6;

/// A probability distribution over all sequences of `len` tokens from a vocabulary of `vocab`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    vocab: usize,
    len: usize,
    /// Dense table indexed by the base-K number x_0 x_1 … x_{L−1} (x_0 most significant).
    probs: Vec<f64>,
    /// Indices with positive probability.
    support: Vec<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    vocab: usize,
    length: usize,
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    tokens: Vec<usize>,
    p: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkovFile {
    vocab: usize,
    length: usize,
    initial: Vec<f64>,
    transition: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
enum TargetFile {
    #[serde(rename = "table")]
    Table(TableFile),
    #[serde(rename = "markov")]
    Markov(MarkovFile),
}

fn check_distribution(field: &str, p: &[f64]) -> Result<()> {
    for (i, &v) in p.iter().enumerate() {
        if !(v >= 0.0 && v.is_finite()) {
            return Err(Error::invalid(format!("{field}[{i}]"), format!("probability {v} is negative or not finite")));
        }
    }
    let s: f64 = p.iter().sum();
    if (s - 1.0).abs() > SUM_TOLERANCE {
        return Err(Error::invalid(field, format!("probabilities sum to {s}, must be 1 within {SUM_TOLERANCE}")));
    }
    Ok(())
}

impl Target {
    fn check_size(vocab: usize, len: usize) -> Result<usize> {
        if vocab < 2 {
            return Err(Error::invalid("vocab", format!("{vocab}; need at least 2 tokens")));
        }
        if len < 1 {
            return Err(Error::invalid("length", "must be at least 1"));
        }
        // Stop as soon as the count passes the limit: `length` comes from a file and may be 10^18.
        let mut n: usize = 1;
        for _ in 0..len {
            n = n.saturating_mul(vocab);
            if n > MAX_SEQUENCES {
                break;
            }
        }
        if n > MAX_SEQUENCES {
            return Err(Error::TooLarge(format!("vocab^length = {vocab}^{len} exceeds {MAX_SEQUENCES} sequences")));
        }
        Ok(n)
    }

    fn from_dense(vocab: usize, len: usize, probs: Vec<f64>) -> Self {
        let support = probs.iter().enumerate().filter(|(_, p)| **p > 0.0).map(|(i, _)| i).collect();
        Target { vocab, len, probs, support }
    }

    /// A table of (sequence, probability) entries; unlisted sequences have probability 0.
    pub fn from_table(vocab: usize, len: usize, entries: &[(Vec<usize>, f64)]) -> Result<Self> {
        let n = Self::check_size(vocab, len)?;
        let mut probs = vec![0.0; n];
        for (e, (tokens, p)) in entries.iter().enumerate() {
            if tokens.len() != len {
                return Err(Error::invalid(
                    format!("table.entries[{e}].tokens"),
                    format!("{} tokens, but length is {len}", tokens.len()),
                ));
            }
            if let Some((i, &x)) = tokens.iter().enumerate().find(|(_, x)| **x >= vocab) {
                return Err(Error::invalid(
                    format!("table.entries[{e}].tokens[{i}]"),
                    format!("token {x} is outside the vocabulary of {vocab}"),
                ));
            }
            if !(*p >= 0.0 && p.is_finite()) {
                return Err(Error::invalid(
                    format!("table.entries[{e}].p"),
                    format!("probability {p} is negative or not finite"),
                ));
            }
            let idx = tokens.iter().fold(0, |a, &x| a * vocab + x);
            if probs[idx] > 0.0 {
                return Err(Error::invalid(
                    format!("table.entries[{e}].tokens"),
                    format!("sequence {tokens:?} is listed twice"),
                ));
            }
            probs[idx] = *p;
        }
        let s: f64 = probs.iter().sum();
        if (s - 1.0).abs() > SUM_TOLERANCE {
            return Err(Error::invalid(
                "table.entries",
                format!("probabilities sum to {s}, must be 1 within {SUM_TOLERANCE}"),
            ));
        }
        Ok(Self::from_dense(vocab, len, probs))
    }

    /// A Markov chain: `p(x) = initial[x_0]·Π transition[x_{i−1}][x_i]`.
    pub fn markov(vocab: usize, len: usize, initial: &[f64], transition: &[Vec<f64>]) -> Result<Self> {
        let n = Self::check_size(vocab, len)?;
        if initial.len() != vocab {
            return Err(Error::invalid("markov.initial", format!("{} entries, but vocab is {vocab}", initial.len())));
        }
        check_distribution("markov.initial", initial)?;
        if transition.len() != vocab {
            return Err(Error::invalid(
                "markov.transition",
                format!("{} rows, but vocab is {vocab}", transition.len()),
            ));
        }
        for (r, row) in transition.iter().enumerate() {
            if row.len() != vocab {
                return Err(Error::invalid(
                    format!("markov.transition[{r}]"),
                    format!("{} entries, but vocab is {vocab}", row.len()),
                ));
            }
            check_distribution(&format!("markov.transition[{r}]"), row)?;
        }
        let mut probs = vec![0.0; n];
        let mut seq = vec![0; len];
        for (idx, p) in probs.iter_mut().enumerate() {
            decode_into(idx, vocab, &mut seq);
            *p = initial[seq[0]] * seq.windows(2).map(|w| transition[w[0]][w[1]]).product::<f64>();
        }
        Ok(Self::from_dense(vocab, len, probs))
    }

    /// A random peaked table (probabilities ∝ U³, a fraction `zero` of sequences set to 0), for tests.
    pub fn random(vocab: usize, len: usize, zero: f64, seed: u64) -> Result<Self> {
        let n = Self::check_size(vocab, len)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut probs: Vec<f64> =
            (0..n).map(|_| if rng.random::<f64>() < zero { 0.0 } else { rng.random::<f64>().powi(3) + 1e-3 }).collect();
        let s: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= s);
        Ok(Self::from_dense(vocab, len, probs))
    }

    /// Parses the JSON format of docs/discrete.md (`{"table": {…}}` or `{"markov": {…}}`).
    pub fn from_json(text: &str) -> Result<Self> {
        let file: TargetFile = serde_json::from_str(text).map_err(|e| Error::invalid("target", e.to_string()))?;
        match file {
            TargetFile::Table(t) => {
                let entries: Vec<(Vec<usize>, f64)> = t.entries.into_iter().map(|e| (e.tokens, e.p)).collect();
                Self::from_table(t.vocab, t.length, &entries)
            }
            TargetFile::Markov(m) => Self::markov(m.vocab, m.length, &m.initial, &m.transition),
        }
    }

    /// Reads a target file; errors name the file.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
        Self::from_json(&text).map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))
    }

    /// The JSON table form of this target (entries with p > 0).
    pub fn to_json(&self) -> String {
        let entries: Vec<serde_json::Value> =
            self.support.iter().map(|&i| serde_json::json!({"tokens": self.decode(i), "p": self.probs[i]})).collect();
        serde_json::json!({"table": {"vocab": self.vocab, "length": self.len, "entries": entries}}).to_string()
    }

    /// Vocabulary size K.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Sequence length L.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length target (never: length ≥ 1 is enforced).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of sequences with positive probability.
    pub fn support_size(&self) -> usize {
        self.support.len()
    }

    /// Probability of a sequence (0 for wrong length or tokens outside the vocabulary).
    pub fn prob(&self, seq: &[usize]) -> f64 {
        if seq.len() != self.len || seq.iter().any(|&x| x >= self.vocab) {
            return 0.0;
        }
        self.probs[seq.iter().fold(0, |a, &x| a * self.vocab + x)]
    }

    /// The sequence with dense index `idx`.
    pub fn decode(&self, idx: usize) -> Vec<usize> {
        let mut s = vec![0; self.len];
        decode_into(idx, self.vocab, &mut s);
        s
    }

    /// The distribution as a map from sequences to probabilities (support only).
    pub fn as_map(&self) -> HashMap<Vec<usize>, f64> {
        self.support.iter().map(|&i| (self.decode(i), self.probs[i])).collect()
    }

    /// Entropy in nats.
    pub fn entropy(&self) -> f64 {
        crate::categorical::entropy(&self.probs)
    }

    /// `Σ_{x0} p(x0)·Π_i lik[i][x0_i]` and per-position weighted marginals, optionally leaving each position
    /// out of the likelihood (leave-one-out). `lik` is `[L][K]`.
    fn weighted(&self, lik: &[Vec<f64>], leave_one_out: bool) -> (f64, Vec<Vec<f64>>) {
        let (l, k) = (self.len, self.vocab);
        let mut marg = vec![vec![0.0; k]; l];
        let mut total = 0.0;
        let mut seq = vec![0; l];
        let mut prefix = vec![1.0; l + 1];
        let mut suffix = vec![1.0; l + 1];
        for &idx in &self.support {
            decode_into(idx, k, &mut seq);
            let p = self.probs[idx];
            for i in 0..l {
                prefix[i + 1] = prefix[i] * lik[i][seq[i]];
            }
            for i in (0..l).rev() {
                suffix[i] = suffix[i + 1] * lik[i][seq[i]];
            }
            total += p * prefix[l];
            for i in 0..l {
                let w = if leave_one_out { p * prefix[i] * suffix[i + 1] } else { p * prefix[l] };
                marg[i][seq[i]] += w;
            }
        }
        (total, marg)
    }

    fn check_seq(&self, process: &Process, x_t: &[usize]) -> Result<()> {
        if x_t.len() != self.len {
            return Err(Error::invalid("x_t", format!("length {} but the target has length {}", x_t.len(), self.len)));
        }
        if process.vocab() != self.vocab {
            return Err(Error::invalid(
                "vocab",
                format!("process has {} tokens, target {}", process.vocab(), self.vocab),
            ));
        }
        if let Some(&x) = x_t.iter().find(|&&x| x >= process.width()) {
            return Err(Error::invalid(
                "x_t",
                format!("token {x} is outside the {} states of {process:?}", process.width()),
            ));
        }
        Ok(())
    }

    fn likelihoods(&self, process: &Process, x_t: &[usize], alpha: f64) -> Vec<Vec<f64>> {
        x_t.iter().map(|&x| (0..self.vocab).map(|v| process.likelihood(x, v, alpha)).collect()).collect()
    }

    /// Marginal probability `p_t(x_t) = Σ_{x0} p(x0) q(x_t | x0)`.
    pub fn marginal(&self, process: &Process, x_t: &[usize], alpha: f64) -> Result<f64> {
        self.check_seq(process, x_t)?;
        Ok(self.weighted(&self.likelihoods(process, x_t, alpha), false).0)
    }

    fn normalized(marg: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
        marg.into_iter()
            .map(|mut m| {
                let z: f64 = m.iter().sum();
                if z > 0.0 {
                    m.iter_mut().for_each(|v| *v /= z);
                } else {
                    // x_t impossible under the target: fall back to uniform (documented).
                    let k = m.len() as f64;
                    m.iter_mut().for_each(|v| *v = 1.0 / k);
                }
                m
            })
            .collect()
    }

    /// Clean posterior marginals `p(x0^i | x_t)`, `[L][K]`.
    pub fn posterior(&self, process: &Process, x_t: &[usize], alpha: f64) -> Result<Vec<Vec<f64>>> {
        self.check_seq(process, x_t)?;
        Ok(Self::normalized(self.weighted(&self.likelihoods(process, x_t, alpha), false).1))
    }

    /// Leave-one-out posteriors `p(x0^i | x_t^{−i})`, `[L][K]`.
    pub fn leave_one_out(&self, process: &Process, x_t: &[usize], alpha: f64) -> Result<Vec<Vec<f64>>> {
        self.check_seq(process, x_t)?;
        Ok(Self::normalized(self.weighted(&self.likelihoods(process, x_t, alpha), true).1))
    }

    /// AUDM posteriors `p(x0^i | x_t, u)`: a position with x_t = u may be noise or clean, one with x_t ≠ u is clean.
    pub fn audm_posterior(&self, x_t: &[usize], u: &[usize], alpha: f64) -> Result<Vec<Vec<f64>>> {
        self.check_seq(&Process::Uniform { vocab: self.vocab }, x_t)?;
        self.check_seq(&Process::Uniform { vocab: self.vocab }, u)?;
        let lik: Vec<Vec<f64>> = x_t
            .iter()
            .zip(u)
            .map(|(&x, &n)| {
                (0..self.vocab)
                    .map(|v| if x == n { alpha * f64::from(v == n) + (1.0 - alpha) } else { alpha * f64::from(v == x) })
                    .collect()
            })
            .collect();
        Ok(Self::normalized(self.weighted(&lik, false).1))
    }

    /// Total-variation distance to a distribution given as a map (missing sequences have probability 0).
    pub fn tv(&self, other: &HashMap<Vec<usize>, f64>) -> f64 {
        let mut tv = 0.0;
        for (seq, &q) in other {
            tv += (q - self.prob(seq)).abs();
        }
        for &i in &self.support {
            let s = self.decode(i);
            if !other.contains_key(&s) {
                tv += self.probs[i];
            }
        }
        0.5 * tv
    }
}

fn decode_into(mut idx: usize, vocab: usize, out: &mut [usize]) {
    for x in out.iter_mut().rev() {
        *x = idx % vocab;
        idx /= vocab;
    }
}

/// Total-variation distance between two distributions given as maps.
pub fn tv(a: &HashMap<Vec<usize>, f64>, b: &HashMap<Vec<usize>, f64>) -> f64 {
    let mut s = 0.0;
    for (k, &p) in a {
        s += (p - b.get(k).copied().unwrap_or(0.0)).abs();
    }
    for (k, &q) in b {
        if !a.contains_key(k) {
            s += q;
        }
    }
    0.5 * s
}

/// Empirical distribution of `n` sequences of length `len` stored flat.
pub fn empirical(tokens: &[i64], len: usize) -> HashMap<Vec<usize>, f64> {
    let n = tokens.len() / len.max(1);
    let mut m: HashMap<Vec<usize>, f64> = HashMap::new();
    for seq in tokens.chunks(len) {
        *m.entry(seq.iter().map(|&x| x as usize).collect()).or_default() += 1.0 / n as f64;
    }
    m
}

/// High-probability bound on the TV distance between the empirical distribution of `n` independent draws and
/// their law on `support` points: `√(S/(4n)) + √(ln(1/δ)/(2n))`.
///
/// The first term bounds the mean (`E|p̂_x − p_x| ≤ √(p_x/n)`, then Cauchy–Schwarz over S points); the second is
/// McDiarmid's inequality, TV having bounded differences 1/n, so it fails with probability at most δ.
pub fn tv_sampling_bound(support: usize, n: usize, delta: f64) -> f64 {
    let n = n as f64;
    (support as f64 / (4.0 * n)).sqrt() + ((1.0 / delta).ln() / (2.0 * n)).sqrt()
}

/// (tokens, AUDM noise, α bits) → output rows.
type CacheKey = (Vec<i64>, Vec<i64>, u64);

/// The exact denoiser of a [`Target`] for a process, in any parameterization, computed by enumeration.
#[derive(Debug)]
pub struct ExactDenoiser {
    target: Arc<Target>,
    process: Process,
    output: Output,
    schedule: Arc<dyn Schedule>,
    cache: Mutex<HashMap<CacheKey, Vec<f64>>>,
}

impl ExactDenoiser {
    /// The exact denoiser; `schedule` turns t into α(t). AUDM output needs the uniform process.
    pub fn new(target: Arc<Target>, process: Process, output: Output, schedule: Arc<dyn Schedule>) -> Result<Self> {
        if process.vocab() != target.vocab() {
            return Err(Error::invalid(
                "vocab",
                format!("process has {} tokens, target {}", process.vocab(), target.vocab()),
            ));
        }
        if output == Output::AudmClean && process.kind() != crate::process::ProcessKind::Uniform {
            return Err(Error::not_applicable("the AUDM output", "it belongs to the uniform process"));
        }
        Ok(ExactDenoiser { target, process, output, schedule, cache: Mutex::new(HashMap::new()) })
    }

    /// Output rows `[L][W]` for one sequence.
    fn rows(&self, x: &[usize], u: Option<&[usize]>, alpha: f64) -> Result<Vec<f64>> {
        let (l, k, w) = (self.target.len(), self.process.vocab(), self.process.width());
        let ln = |p: f64| if p > 0.0 { p.ln() } else { f64::NEG_INFINITY };
        let mut out = vec![f64::NEG_INFINITY; l * w];
        match self.output {
            Output::Clean | Output::LeaveOneOut => {
                let m = if self.output == Output::Clean {
                    self.target.posterior(&self.process, x, alpha)?
                } else {
                    self.target.leave_one_out(&self.process, x, alpha)?
                };
                for i in 0..l {
                    for v in 0..k {
                        out[i * w + v] = ln(m[i][v]);
                    }
                }
            }
            Output::AudmClean => {
                let u = u.ok_or_else(|| Error::invalid("noise", "the AUDM denoiser needs the noise tokens u"))?;
                let m = self.target.audm_posterior(x, u, alpha)?;
                for i in 0..l {
                    for v in 0..k {
                        out[i * w + v] = ln(m[i][v]);
                    }
                }
            }
            Output::LogScore => match self.process {
                Process::Masked { vocab } => {
                    let m = self.target.posterior(&self.process, x, alpha)?;
                    for i in 0..l {
                        if x[i] == vocab {
                            for v in 0..k {
                                out[i * w + v] = ln(alpha / (1.0 - alpha) * m[i][v]);
                            }
                            out[i * w + vocab] = 0.0;
                        } else {
                            out[i * w + x[i]] = 0.0;
                        }
                    }
                }
                Process::Uniform { .. } => {
                    let m = self.target.leave_one_out(&self.process, x, alpha)?;
                    let mut s = vec![0.0; k];
                    for i in 0..l {
                        score_from_loo(&m[i], x[i], alpha, &mut s);
                        for v in 0..k {
                            out[i * w + v] = ln(s[v]);
                        }
                    }
                }
            },
        }
        Ok(out)
    }
}

impl Denoiser for ExactDenoiser {
    fn process(&self) -> Process {
        self.process
    }

    fn output(&self) -> Output {
        self.output
    }

    fn time_independent(&self) -> bool {
        matches!(self.process, Process::Masked { .. }) && self.output != Output::LogScore
    }

    fn forward(&self, x_t: &Tensor, t: f64, noise: Option<&Tensor>) -> Result<Tensor> {
        let size = x_t.size();
        let (b, l) = match size.as_slice() {
            [b, l] if *l as usize == self.target.len() => (*b as usize, *l as usize),
            _ => {
                return Err(Error::Shape {
                    op: "exact denoiser",
                    expected: format!("[B, {}]", self.target.len()),
                    got: format!("{size:?}"),
                });
            }
        };
        let tokens: Vec<i64> = Vec::try_from(x_t.f_to_device(tch::Device::Cpu)?.f_flatten(0, -1)?)?;
        let noise: Option<Vec<i64>> = match noise {
            Some(u) => Some(Vec::try_from(u.f_to_device(tch::Device::Cpu)?.f_flatten(0, -1)?)?),
            None => None,
        };
        // Masked posteriors do not depend on α; evaluating them at α = ½ keeps them defined where α(t) rounds to
        // 1 or 0 (the mask pattern would be impossible there) and makes the cache valid for every t.
        let alpha = if self.time_independent() { 0.5 } else { self.schedule.alpha(t) };
        let key_t = if self.time_independent() { 0 } else { alpha.to_bits() };
        let w = self.process.width();
        let mut all = Vec::with_capacity(b * l * w);
        // The lock is never held across a panic in this crate, so poisoning cannot occur; recover anyway.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for n in 0..b {
            let x = &tokens[n * l..(n + 1) * l];
            let u = noise.as_ref().map(|u| &u[n * l..(n + 1) * l]);
            let key = (x.to_vec(), u.map(|u| u.to_vec()).unwrap_or_default(), key_t);
            if let Some(r) = cache.get(&key) {
                all.extend_from_slice(r);
                continue;
            }
            let xs: Vec<usize> = x.iter().map(|&v| v as usize).collect();
            let us: Option<Vec<usize>> = u.map(|u| u.iter().map(|&v| v as usize).collect());
            let r = self.rows(&xs, us.as_deref(), alpha)?;
            all.extend_from_slice(&r);
            cache.insert(key, r);
        }
        Ok(Tensor::from_slice(&all).view([b as i64, l as i64, w as i64]).to_device(x_t.device()).to_kind(Kind::Double))
    }
}
