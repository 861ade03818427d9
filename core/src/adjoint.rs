//! Gradients through the sampler by the adjoint of the probability-flow ODE (AdjointDPM, Pan et al., ICLR 2024),
//! in memory that does not grow with the number of steps.
//!
//! In `y = x̃/α` and `ρ = σ/α = e^{−λ}` the probability-flow ODE of every affine path has no linear part:
//! `dy/dρ = ε̂(α·y, ρ)` (DDIM's form, which the exponential integrators of [`crate::solvers`] integrate exactly
//! in their linear part). For a loss `L(x_end)` its adjoint `a = ∂L/∂y` and the parameter gradient `g` follow,
//! from the end (small ρ) back to the start,
//!
//! ```text
//! dy/dρ = ε̂,   da/dρ = −(∂ε̂/∂y)ᵀ·a,   dg/dρ = −(∂ε̂/∂θ)ᵀ·a,   g(ρ_end) = 0,  g(ρ_start) = ∂L/∂θ,
//! ```
//!
//! integrated here by the classical Runge–Kutta method on a grid uniform in λ. Each stage is one model call with
//! one vector–Jacobian product (reverse-mode autodiff through the model alone), so memory is that of a single
//! call whatever the steps; `y` is reconstructed backwards alongside, and its return to the starting point is
//! reported as a check. The gradients are those of the continuous ODE; backpropagation through a sampler
//! differs from them by that sampler's discretisation error.

use tch::{Kind, Tensor};

use crate::path::Point;
use crate::solvers::Run;
use crate::solvers::common::weighted_sum;
use crate::{Error, Result};

/// What [`adjoint_gradients`] returns.
#[derive(Debug)]
pub struct AdjointGradients {
    /// `∂L/∂x` at the start (model space).
    pub x_start: Tensor,
    /// `∂L/∂θ` for each of the given parameters, in their order.
    pub params: Vec<Tensor>,
    /// The start as the backward integration reconstructs it (model space): compare with the true start to see
    /// how well the backward pass retraced the trajectory.
    pub reconstructed_start: Tensor,
    /// Model evaluations (each with one vector–Jacobian product).
    pub evaluations: usize,
}

/// The gradients of a loss on `x_end` (model space, the sample at `end`) with respect to the starting point at
/// `start` and to `params` (leaf tensors of the model that require gradients), given `grad_end = ∂L/∂x_end`, by
/// `steps` Runge–Kutta steps of the adjoint ODE uniform in λ. Both points need α > 0 and σ > 0 (a jump onto the
/// data is one more model call: fold it into the loss). The parameters' own `.grad` fields are not touched.
pub fn adjoint_gradients(
    run: &mut Run<'_>,
    params: &[Tensor],
    x_end: &Tensor,
    grad_end: &Tensor,
    start: &Point,
    end: &Point,
    steps: usize,
) -> Result<AdjointGradients> {
    let finite = |p: &Point| p.alpha > 0.0 && p.sigma > 0.0 && p.lambda().is_finite();
    if !(finite(start) && finite(end) && end.lambda() > start.lambda()) {
        return Err(Error::invalid(
            "adjoint",
            "needs a start and an end with α > 0 and σ > 0, the end nearer the data (larger λ)",
        ));
    }
    if steps == 0 {
        return Err(Error::invalid("adjoint", "needs at least one step"));
    }
    if grad_end.size() != x_end.size() {
        return Err(Error::invalid(
            "adjoint",
            format!("the loss gradient has shape {:?}, the sample {:?}", grad_end.size(), x_end.size()),
        ));
    }
    let (lam_start, lam_end) = (start.lambda(), end.lambda());
    let mut y = run.to_tilde(&x_end.f_detach()?, end)?.f_div_scalar(end.alpha)?;
    let mut a = grad_end.f_detach()?.f_mul_scalar(end.alpha)?;
    let mut g: Vec<Tensor> = params.iter().map(|p| p.f_zeros_like()).collect::<std::result::Result<_, _>>()?;
    let before = run.nfe();
    let point_at = |run: &Run<'_>, lam: f64| -> Point {
        if lam == lam_start {
            *start
        } else if lam == lam_end {
            *end
        } else {
            run.point_at_lambda(lam)
        }
    };
    for i in (0..steps).rev() {
        // From λ_{i+1} down to λ_i: ρ grows by h.
        let lam_hi = lam_start + (lam_end - lam_start) * (i + 1) as f64 / steps as f64;
        let lam_lo = if i == 0 { lam_start } else { lam_start + (lam_end - lam_start) * i as f64 / steps as f64 };
        let (rho_a, rho_b) = ((-lam_hi).exp(), (-lam_lo).exp());
        let h = rho_b - rho_a;
        let mid = point_at(run, -(0.5 * (rho_a + rho_b)).ln());
        let (p_a, p_b) = (point_at(run, lam_hi), point_at(run, lam_lo));
        let k1 = derivative(run, params, &y, &a, &p_a)?;
        let (y1, a1) = k1.advance(&y, &a, 0.5 * h)?;
        let k2 = derivative(run, params, &y1, &a1, &mid)?;
        let (y2, a2) = k2.advance(&y, &a, 0.5 * h)?;
        let k3 = derivative(run, params, &y2, &a2, &mid)?;
        let (y3, a3) = k3.advance(&y, &a, h)?;
        let k4 = derivative(run, params, &y3, &a3, &p_b)?;
        let w = [h / 6.0, h / 3.0, h / 3.0, h / 6.0];
        let ks = [&k1, &k2, &k3, &k4];
        // base + Σ w_k·term_k, one pass per term.
        let rk4 = |base: &Tensor, term: &dyn Fn(&Derivative) -> &Tensor| -> Result<Tensor> {
            let mut terms = vec![(1.0, base)];
            terms.extend(ks.iter().zip(&w).map(|(k, &wk)| (wk, term(k))));
            weighted_sum(&terms)
        };
        y = rk4(&y, &|k| &k.dy)?;
        a = rk4(&a, &|k| &k.da)?;
        for (j, gj) in g.iter_mut().enumerate() {
            *gj = rk4(gj, &|k| &k.dg[j])?;
        }
    }
    let x_start = a.f_div_scalar(start.alpha)?;
    let reconstructed_start = run.from_tilde(&y.f_mul_scalar(start.alpha)?, start)?;
    Ok(AdjointGradients { x_start, params: g, reconstructed_start, evaluations: run.nfe() - before })
}

/// The right-hand side of the augmented system at one stage.
struct Derivative {
    dy: Tensor,
    da: Tensor,
    dg: Vec<Tensor>,
}

impl Derivative {
    /// `(y + c·dy, a + c·da)`.
    fn advance(&self, y: &Tensor, a: &Tensor, c: f64) -> Result<(Tensor, Tensor)> {
        Ok((y.f_add(&self.dy.f_mul_scalar(c)?)?, a.f_add(&self.da.f_mul_scalar(c)?)?))
    }
}

/// ε̂ at (α·y, p) and the products `−(∂ε̂/∂y)ᵀa`, `−(∂ε̂/∂θ)ᵀa` by one backward pass through the model.
fn derivative(run: &mut Run<'_>, params: &[Tensor], y: &Tensor, a: &Tensor, p: &Point) -> Result<Derivative> {
    let y_leaf = y.f_detach()?.set_requires_grad(true);
    tch::with_grad(|| {
        let eps = run.eps(&y_leaf.f_mul_scalar(p.alpha)?, p)?;
        let inner = eps.f_mul(a)?.f_sum(Kind::Double)?;
        let mut inputs: Vec<&Tensor> = vec![&y_leaf];
        inputs.extend(params.iter());
        let grads = Tensor::f_run_backward(&[inner], &inputs, false, false)?;
        let mut grads = grads.into_iter();
        let da = grads.next().ok_or_else(|| Error::invalid("adjoint", "no gradient"))?.f_neg()?;
        let dg = grads.map(|t| t.f_neg()).collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Derivative { dy: eps.f_detach()?, da, dg })
    })
}
