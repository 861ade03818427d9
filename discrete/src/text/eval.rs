//! Scoring text: bits per byte of a file under a model. For a diffusion model the NELBO (an upper bound on the
//! negative log-likelihood), estimated from `draws` stratified t values per window with its standard error; for
//! the autoregressive model the exact negative log-likelihood. The file is cut into consecutive windows of the
//! model's context, each scored on its own.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::Kind;

use crate::text::model::{ModelKind, TextModel};
use crate::text::train::{per_token_nats, windows};
use crate::{Error, Result};

/// Most draws per window.
pub const MAX_DRAWS: usize = 4096;

/// A file's score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Score {
    /// Bits per byte: the NELBO for diffusion models, the exact NLL for the autoregressive one.
    pub bits_per_byte: f64,
    /// Standard error of `bits_per_byte` from the t and corruption draws (0 for the exact NLL).
    pub std_error: f64,
    /// Draws per window (1 for the exact NLL).
    pub draws: usize,
    /// Bytes scored.
    pub bytes: usize,
    /// Whether the value is exact (autoregressive) rather than an estimated bound.
    pub exact: bool,
}

/// Scores `bytes` under `model` with `draws` draws per window (diffusion models), `batch` rows per model call,
/// seeded by `seed`; `progress(done, total)` after each call.
pub fn score(
    model: &TextModel,
    bytes: &[u8],
    draws: usize,
    batch: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Score> {
    if bytes.is_empty() {
        return Err(Error::invalid("text", "nothing to score (0 bytes)"));
    }
    let exact = model.config().kind == ModelKind::Autoregressive;
    let draws = if exact { 1 } else { draws };
    if draws == 0 || draws > MAX_DRAWS || (!exact && draws < 2) {
        return Err(Error::invalid("draws", format!("must be 2 to {MAX_DRAWS}, got {draws}")));
    }
    let batch = batch.max(1);
    let ctx = model.context();
    // Windows: (start, length); rows: (window, draw, t).
    let wins: Vec<(usize, usize)> = (0..bytes.len()).step_by(ctx).map(|s| (s, ctx.min(bytes.len() - s))).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows = Vec::with_capacity(wins.len() * draws);
    for w in 0..wins.len() {
        let u: f64 = rng.random();
        for k in 0..draws {
            rows.push((w, ((u + k as f64) / draws as f64).max(1e-4)));
        }
    }
    let mut totals = vec![0.0f64; rows.len()];
    let calls: Vec<Vec<usize>> = {
        // Rows of equal length go together (only the last window can be shorter).
        let mut by_len: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for (i, &(w, _)) in rows.iter().enumerate() {
            by_len.entry(wins[w].1).or_default().push(i);
        }
        by_len.into_values().flat_map(|v| v.chunks(batch).map(<[usize]>::to_vec).collect::<Vec<_>>()).collect()
    };
    let mut draws_rng = ChaCha8Rng::seed_from_u64(diffuse_core::seed::mix64(seed));
    for (c, call) in calls.iter().enumerate() {
        let len = wins[rows[call[0]].0].1;
        let starts: Vec<usize> = call.iter().map(|&i| wins[rows[i].0].0).collect();
        let x0 = windows(bytes, len, &starts)?;
        let t: Vec<f64> = call.iter().map(|&i| rows[i].1).collect();
        let nats = tch::no_grad(|| per_token_nats(model, &x0, &t, &mut draws_rng))?.f_sum_dim_intlist(
            1,
            false,
            Kind::Double,
        )?;
        let v: Vec<f64> = Vec::try_from(nats.f_to_device(tch::Device::Cpu)?)?;
        for (j, &i) in call.iter().enumerate() {
            totals[i] = v[j];
        }
        progress(c + 1, calls.len());
    }
    // Total NELBO = Σ_windows mean over draws; its variance Σ_windows var/draws.
    let (mut total, mut var) = (0.0, 0.0);
    for w in 0..wins.len() {
        let x = &totals[w * draws..(w + 1) * draws];
        let mean = x.iter().sum::<f64>() / draws as f64;
        total += mean;
        if draws > 1 {
            var += x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (draws - 1) as f64 / draws as f64;
        }
    }
    let scale = 1.0 / (std::f64::consts::LN_2 * bytes.len() as f64);
    Ok(Score { bits_per_byte: total * scale, std_error: var.sqrt() * scale, draws, bytes: bytes.len(), exact })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::model::TextConfig;
    use tch::Device;

    #[test]
    fn an_untrained_model_scores_eight_bits_per_byte_exactly_or_as_a_bound() {
        // Zero-initialised output layers: uniform over 256 bytes, so the exact NLL is 8 bits per byte and the
        // masked NELBO's expectation is too (every masked byte costs 8 bits, weighted to integrate to one).
        let text = b"hello world, this is a short text to score.".to_vec();
        let ar = TextModel::new(TextConfig::new(ModelKind::Autoregressive, 16, 1, 2, 16), Device::Cpu).unwrap();
        let s = score(&ar, &text, 1, 8, 0, &mut |_, _| {}).unwrap();
        assert!(s.exact && (s.bits_per_byte - 8.0).abs() < 1e-5 && s.std_error == 0.0, "{s:?}");
        let m = TextModel::new(TextConfig::new(ModelKind::Masked, 16, 1, 2, 16), Device::Cpu).unwrap();
        let s = score(&m, &text, 256, 64, 0, &mut |_, _| {}).unwrap();
        assert!(!s.exact && s.std_error > 0.0 && s.std_error < 0.5, "{s:?}");
        assert!((s.bits_per_byte - 8.0).abs() < 4.0 * s.std_error + 0.05, "{s:?}");
        assert!(score(&m, &text, 1, 8, 0, &mut |_, _| {}).is_err());
        assert!(score(&m, b"", 4, 8, 0, &mut |_, _| {}).is_err());
    }
}
