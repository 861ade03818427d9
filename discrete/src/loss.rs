//! Training objectives on tensors (autograd-friendly, computed in the logits' dtype), per token `[B, L]`.
//!
//! `alpha` and `alpha_prime` are α(t) and α′(t) as tensors broadcastable to `[B, L]` (one t per sequence: `[B, 1]`).
//! Integrated over t ∈ [0, 1] (with α(0) = 1, α(1) = 0) and summed over tokens, the three ELBOs equal
//! −ln p(x0) exactly when the denoiser is exact (tested by enumeration in `tests/exact.rs`).

use tch::{Kind, Tensor};

use crate::process::Process;
use crate::{Error, Result};

fn check(op: &'static str, logits: &Tensor, x0: &Tensor, x_t: &Tensor, width: i64) -> Result<()> {
    let (s, a, b) = (logits.size(), x0.size(), x_t.size());
    if s.len() != 3 || a.len() != 2 || a != b || s[..2] != a[..] || s[2] != width {
        return Err(Error::Shape {
            op,
            expected: format!("logits [B, L, {width}], x0 and x_t [B, L]"),
            got: format!("{s:?}, {a:?}, {b:?}"),
        });
    }
    Ok(())
}

fn gather(t: &Tensor, idx: &Tensor) -> Result<Tensor> {
    Ok(t.f_gather(-1, &idx.f_unsqueeze(-1)?, false)?.f_squeeze_dim(-1)?)
}

/// MDLM masked ELBO: `−α′/(1 − α)·(−ln p_θ(x0 | x_t))` at masked positions, 0 elsewhere (SUBS makes the
/// unmasked terms vanish). `logits` `[B, L, K + 1]` are clean-posterior logits; the mask column is ignored.
pub fn mdlm_elbo(
    logits: &Tensor,
    x0: &Tensor,
    x_t: &Tensor,
    alpha: &Tensor,
    alpha_prime: &Tensor,
    process: Process,
) -> Result<Tensor> {
    let Process::Masked { vocab } = process else {
        return Err(Error::not_applicable("the MDLM ELBO", "it belongs to the masked process"));
    };
    check("mdlm_elbo", logits, x0, x_t, vocab as i64 + 1)?;
    let kind = logits.kind();
    let clean = logits.f_narrow(-1, 0, vocab as i64)?.f_log_softmax(-1, kind)?;
    let nll = gather(&clean, &x0.f_clamp_max(vocab as i64 - 1)?)?.f_neg()?;
    let w = alpha_prime.f_to_kind(kind)?.f_neg()?.f_div(&alpha.f_to_kind(kind)?.f_neg()?.f_add_scalar(1.0)?)?;
    let masked = x_t.f_eq(vocab as i64)?;
    // `where`, not a product: at α = 1 the weight is infinite and nothing is masked.
    let per_token = w.f_mul(&nll)?;
    Ok(per_token.f_where_self(&masked, &per_token.f_zeros_like()?)?)
}

/// Which quantity is plugged into the uniform ELBO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniformElbo {
    /// The network output is plugged in directly as x_θ (UDLM/DUO form); its optimum is the leave-one-out
    /// posterior, so a network trained with it is a leave-one-out denoiser.
    PlugIn,
    /// The network outputs clean-posterior logits, converted exactly to the leave-one-out posterior
    /// (`logit − ln(1 + Kα/(1 − α))` at x_t) before being plugged in.
    LeaveOneOut,
}

/// Uniform-diffusion ELBO per token (UDLM; Schiff et al.), with `x̄_θ = Kα·x_θ + 1 − α`:
/// `α′/(Kα)·[K(1/x̄(x_t) − 1/x̄_θ(x_t)) − (term₂ of the closed form)]`, see docs/discrete.md. α is clamped to
/// [ε, 1 − ε] (ε = 1e-12 in f64, 1e-6 otherwise), where the closed form's 0·∞ terms vanish in the limit.
pub fn uniform_elbo(
    logits: &Tensor,
    x0: &Tensor,
    x_t: &Tensor,
    alpha: &Tensor,
    alpha_prime: &Tensor,
    process: Process,
    form: UniformElbo,
) -> Result<Tensor> {
    let Process::Uniform { vocab } = process else {
        return Err(Error::not_applicable("the uniform ELBO", "it belongs to the uniform process"));
    };
    check("uniform_elbo", logits, x0, x_t, vocab as i64)?;
    let kind = logits.kind();
    let k = vocab as f64;
    // The closed form has removable 0·∞ terms at α ∈ {0, 1}; keep α inside (0, 1) at the dtype's resolution.
    let eps = if kind == Kind::Double { 1e-12 } else { 1e-6 };
    let a = alpha.f_to_kind(kind)?.f_clamp(eps, 1.0 - eps)?.f_unsqueeze(-1)?; // [B, 1|L, 1]
    let a_prime = alpha_prime.f_to_kind(kind)?;
    let mut lg = logits.shallow_clone();
    if form == UniformElbo::LeaveOneOut {
        // shift = ln(1 + Kα/(1 − α)) at x_t.
        let shift = a.f_mul_scalar(k)?.f_div(&a.f_neg()?.f_add_scalar(1.0)?)?.f_log1p()?;
        let onehot = x_t.f_one_hot(vocab as i64)?.f_to_kind(kind)?;
        lg = lg.f_sub(&onehot.f_mul(&shift)?)?;
    }
    let x_theta = lg.f_softmax(-1, kind)?;
    let xbar_theta = x_theta.f_mul(&a.f_mul_scalar(k)?)?.f_add(&a.f_neg()?.f_add_scalar(1.0)?)?;
    let a2 = a.f_squeeze_dim(-1)?; // broadcastable to [B, L]
    let one_minus = a2.f_neg()?.f_add_scalar(1.0)?;
    let eq = x0.f_eq_tensor(x_t)?.f_to_kind(kind)?;
    let neq = eq.f_neg()?.f_add_scalar(1.0)?;
    let xbar_xt = one_minus.f_add(&a2.f_mul_scalar(k)?.f_mul(&eq)?)?;
    let xbar_theta_xt = gather(&xbar_theta, x_t)?;
    let xbar_theta_x0 = gather(&xbar_theta, x0)?;
    let term1 = xbar_xt.f_reciprocal()?.f_sub(&xbar_theta_xt.f_reciprocal()?)?.f_mul_scalar(k)?;
    let c = one_minus.f_div(&a2.f_mul_scalar(k)?.f_add(&one_minus)?)?;
    let coefs = eq.f_mul(&c)?.f_add(&neq)?;
    let offset = c.f_mul_scalar(k - 1.0)?.f_mul(&eq)?.f_sub(&c.f_reciprocal()?.f_mul(&neq)?)?.f_mul(&c.f_log()?)?;
    let sum_log = xbar_theta.f_log()?.f_sum_dim_intlist(-1, false, kind)?;
    let theta = coefs.f_neg()?.f_mul(&sum_log.f_sub(&xbar_theta_xt.f_log()?.f_mul_scalar(k)?)?)?;
    let ratio = a2.f_mul_scalar(k)?.f_div(&one_minus)?;
    let theta = theta.f_sub(&ratio.f_mul(&xbar_theta_x0.f_log()?.f_sub(&xbar_theta_xt.f_log()?)?)?.f_mul(&neq)?)?;
    let term2 = theta.f_add(&offset)?;
    let coeff = a_prime.f_div(&a2.f_mul_scalar(k)?)?;
    Ok(coeff.f_mul(&term1.f_sub(&term2)?)?)
}

/// SEDD denoising score entropy per token, weighted by σ′ = −α′/α:
/// `σ′·Σ_{y ≠ x_t} w_y [s_y − r_y ln s_y + r_y(ln r_y − 1)]`, `r_y = q(y | x0)/q(x_t | x0)`, w the forward rate into
/// x_t (masked: 1 from each token into the mask; uniform: 1/K). `log_score` is `[B, L, W]`; α is clamped as in
/// [`uniform_elbo`].
pub fn score_entropy(
    log_score: &Tensor,
    x0: &Tensor,
    x_t: &Tensor,
    alpha: &Tensor,
    alpha_prime: &Tensor,
    process: Process,
) -> Result<Tensor> {
    check("score_entropy", log_score, x0, x_t, process.width() as i64)?;
    let kind = log_score.kind();
    let eps = if kind == Kind::Double { 1e-12 } else { 1e-6 };
    let a = alpha.f_to_kind(kind)?.f_clamp(eps, 1.0 - eps)?;
    let one_minus = a.f_neg()?.f_add_scalar(1.0)?;
    let rate = alpha_prime.f_to_kind(kind)?.f_neg()?.f_div(&a)?;
    match process {
        Process::Masked { vocab } => {
            let r = a.f_div(&one_minus)?;
            let pos = log_score.f_narrow(-1, 0, vocab as i64)?.f_exp()?.f_sum_dim_intlist(-1, false, kind)?;
            let neg = r.f_mul(&gather(log_score, &x0.f_clamp_max(vocab as i64 - 1)?)?)?;
            let cst = r.f_mul(&r.f_log()?.f_sub_scalar(1.0)?)?;
            let masked = x_t.f_eq(vocab as i64)?.f_to_kind(kind)?;
            // Unmasked terms are multiplied by 0; keep them finite first (−∞ scores there are legitimate).
            let ent = pos.f_sub(&neg)?.f_add(&cst)?.f_nan_to_num(0.0, 0.0, 0.0)?;
            Ok(rate.f_mul(&ent.f_mul(&masked)?)?)
        }
        Process::Uniform { vocab } => {
            let k = vocab as f64;
            let esigm1 = one_minus.f_div(&a)?; // e^σ − 1
            let ratio = esigm1.f_div(&esigm1.f_add_scalar(k)?)?;
            let eq = x0.f_eq_tensor(x_t)?;
            let ls_x = gather(log_score, x_t)?;
            let neg_common = log_score.f_mean_dim(-1, false, kind)?.f_sub(&ls_x.f_div_scalar(k)?)?;
            let neg_move = gather(log_score, x0)?.f_div(&esigm1)?.f_add(&neg_common)?;
            let neg = ratio.f_mul(&neg_common)?.f_where_self(&eq, &neg_move)?;
            let c_stay = ratio.f_mul(&ratio.f_log()?.f_sub_scalar(1.0)?)?.f_mul_scalar((k - 1.0) / k)?;
            let c_move =
                ratio.f_log()?.f_neg()?.f_sub_scalar(1.0)?.f_div(&ratio)?.f_sub_scalar(k - 2.0)?.f_div_scalar(k)?;
            let cst = c_stay.f_where_self(&eq, &c_move)?;
            let sexp = log_score.f_exp()?;
            let pos = sexp.f_mean_dim(-1, false, kind)?.f_sub(&gather(&sexp, x_t)?.f_div_scalar(k)?)?;
            Ok(rate.f_mul(&pos.f_sub(&neg)?.f_add(&cst)?)?)
        }
    }
}

/// CDLM consistency objective per token: cross-entropy of the model at (x_t, t) against its own prediction at
/// (x_s, s), x_s drawn from the exact bridge, the target held fixed (no gradient):
/// `−Σ_v sg[p_θ(v | x_s, s)]·ln p_θ(v | x_t, t)`. Both are logits `[B, L, W]` (SUBS already applied for the
/// masked process, see [`crate::param::subs_logits`]). Its minimiser is the exact clean posterior, because
/// `E[p(x0 | x_s) | x_t] = p(x0 | x_t)` along the bridge.
pub fn consistency_loss(logits_t: &Tensor, target_logits_s: &Tensor) -> Result<Tensor> {
    if logits_t.size() != target_logits_s.size() || logits_t.dim() != 3 {
        return Err(Error::Shape {
            op: "consistency_loss",
            expected: "two [B, L, W] tensors".into(),
            got: format!("{:?} and {:?}", logits_t.size(), target_logits_s.size()),
        });
    }
    let kind = logits_t.kind();
    let p = target_logits_s.f_detach()?.f_to_kind(kind)?.f_softmax(-1, kind)?;
    let logq = logits_t.f_log_softmax(-1, kind)?;
    // 0·(−∞) = 0: positions the target rules out contribute nothing.
    let prod = p.f_mul(&logq)?;
    let zero = prod.f_zeros_like()?;
    let terms = zero.f_where_self(&p.f_eq(0.0)?, &prod)?;
    Ok(terms.f_sum_dim_intlist(-1, false, Kind::Double)?.f_to_kind(kind)?.f_neg()?)
}
