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

/// Calls `den` on a flat batch of `n` sequences of length `len` and writes its output, as f64 `[n·len·W]` in the
/// form `rows` at `temperature` (see [`Rows::prepare`]), into `into`.
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
    let x = Tensor::from_slice(tokens).view([n as i64, len as i64]).to_device(device);
    let u = noise.map(|u| Tensor::from_slice(u).view([n as i64, len as i64]).to_device(device));
    diffuse_core::threads::rebalance();
    let out = den.forward(&x, t, u.as_ref())?;
    let expected = [n as i64, len as i64, width];
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
    let numel = into.len();
    out.f_copy_data(into, numel)?;
    Ok(())
}
