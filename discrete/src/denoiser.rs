//! The denoiser contract: token tensors in, logits (or log scores) out.

use tch::{Device, Kind, Tensor};

use crate::param::{Output, Rows};
use crate::process::Process;
use crate::{Error, Result};

/// A discrete denoiser: maps noisy tokens `x_t` `[B, L]` (i64) at time t to a tensor `[B, L, W]` of any float
/// dtype (W = [`Process::width`]) whose meaning is given by [`Denoiser::output`].
pub trait Denoiser {
    /// The process it was trained for (vocabulary included).
    fn process(&self) -> Process;
    /// What its output holds.
    fn output(&self) -> Output;
    /// True when the output does not depend on t (masked-process posteriors; models without time input),
    /// which makes caching across unchanged steps exact.
    fn time_independent(&self) -> bool {
        false
    }
    /// The output for `x_t` at time `t`; `noise` holds AUDM's noise tokens u `[B, L]` when the output needs them.
    fn forward(&self, x_t: &Tensor, t: f64, noise: Option<&Tensor>) -> Result<Tensor>;
}

/// Most tokens passed to the denoiser in one forward on the CPU: larger batches ran slower per token on a 2-core
/// CPU (the activations leave the cache; 128 sequences of 128 bytes: 13 % fewer bytes/s than 64). A GPU gets the
/// whole batch.
pub(crate) fn max_batch_tokens(device: Device) -> usize {
    if device == Device::Cpu { 8192 } else { usize::MAX }
}

/// Calls `den` on a flat batch of `n` sequences of length `len` and writes its output, as f64 `[n·len·W]` in the
/// form `rows` at `temperature` (see [`Rows::prepare`]), into `into`; in forwards of at most
/// [`max_batch_tokens`] tokens (one sequence at least).
#[allow(clippy::too_many_arguments)]
pub(crate) fn call_rows(
    den: &dyn Denoiser,
    tokens: &[i64],
    noise: Option<&[i64]>,
    n: usize,
    len: usize,
    t: f64,
    device: Device,
    (rows, temperature): (Rows, f64),
    into: &mut [f64],
) -> Result<()> {
    let width = den.process().width() as i64;
    let per_call = (max_batch_tokens(device) / len.max(1)).max(1);
    let row_len = into.len() / n.max(1);
    let mut first = 0;
    while first < n {
        let m = per_call.min(n - first);
        let span = first * len..(first + m) * len;
        let shape = [m as i64, len as i64];
        let x = Tensor::from_slice(&tokens[span.clone()]).view(shape).to_device(device);
        let u = noise.map(|u| Tensor::from_slice(&u[span]).view(shape).to_device(device));
        diffuse_core::threads::rebalance();
        let out = den.forward(&x, t, u.as_ref())?;
        let expected = [m as i64, len as i64, width];
        if out.size() != expected {
            return Err(Error::Shape {
                op: "denoiser output",
                expected: format!("{expected:?}"),
                got: format!("{:?}", out.size()),
            });
        }
        // The largest entry of each row is NaN or +inf exactly when the row holds one (max propagates NaN).
        let top: Vec<f64> = Vec::try_from(
            out.f_amax([-1].as_slice(), false)?.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?.f_flatten(0, -1)?,
        )?;
        if top.iter().any(|v| v.is_nan() || *v == f64::INFINITY) {
            return Err(Error::invalid("denoiser output", format!("NaN or +inf at t = {t}")));
        }
        let out = rows.prepare(&out, den.process().vocab(), temperature)?.f_to_device(Device::Cpu)?.f_contiguous()?;
        let part = &mut into[first * row_len..(first + m) * row_len];
        let numel = part.len();
        out.f_copy_data(part, numel)?;
        first += m;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Logits that depend on every token of the sequence (a mixing model), so a misplaced split shows.
    struct Mixing {
        calls: Cell<usize>,
    }

    impl Denoiser for Mixing {
        fn process(&self) -> Process {
            Process::Masked { vocab: 3 }
        }
        fn output(&self) -> Output {
            Output::Clean
        }
        fn forward(&self, x_t: &Tensor, t: f64, _noise: Option<&Tensor>) -> Result<Tensor> {
            self.calls.set(self.calls.get() + 1);
            let x = x_t.to_kind(Kind::Float);
            let mixed = x.cumsum(1, Kind::Float) * 0.37 + t;
            let scale = Tensor::from_slice(&[1.0f32, -0.5, 0.25, 2.0]);
            Ok(mixed.unsqueeze(-1) * scale.view([1, 1, 4]) + x.unsqueeze(-1))
        }
    }

    #[test]
    fn split_forwards_give_each_sequence_s_own_output() {
        let (n, len) = (150, 100); // 15 000 tokens: two forwards
        let tokens: Vec<i64> = (0..n * len).map(|i| ((i * 7919) % 13 % 4) as i64).collect();
        let den = Mixing { calls: Cell::new(0) };
        let form = (Rows::prepared(Output::Clean), 0.8);
        let mut split = vec![0.0; n * len * 4];
        call_rows(&den, &tokens, None, n, len, 0.3, Device::Cpu, form, &mut split).unwrap();
        assert_eq!(den.calls.get(), n * len / max_batch_tokens(Device::Cpu) + 1);
        // Reference: every sequence in a forward of its own.
        let mut alone = vec![0.0; n * len * 4];
        for (b, out) in alone.chunks_mut(len * 4).enumerate() {
            call_rows(&den, &tokens[b * len..(b + 1) * len], None, 1, len, 0.3, Device::Cpu, form, out).unwrap();
        }
        assert_eq!(split, alone);
    }
}
