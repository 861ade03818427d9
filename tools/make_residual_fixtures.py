#!/usr/bin/env python3
"""Reference fixtures for RDDM's deterministic sampler and Resfusion's accelerated ancestral sampler.

Evaluates the reference update equations (references.md, the papers) with numpy, independently of diffuse's
continuous-time paths, on a tiny problem with a linear stand-in "model":

- RDDM (Liu et al. 2024): alphas_cumsum = cumsum of a decreasing linear schedule normalised to sum 1,
  betas2_cumsum = sum_scale * cumsum of an increasing linear schedule normalised to sum 1; start
  I_T = I_in + sqrt(sum_scale) * n; deterministic DDIM-like update
  I_{t-1} = I_t - (abar_t - abar_{t-1}) Ires - (bbar_t - bbar_{t-1}) eps over the times
  reversed(int(linspace(-1, T - 1, steps + 1))); the last step (t_next = -1) returns I_0 = I_in - Ires.
  Model: Ires = a*x + b*y + c*tau and (SM-Res-N) eps = d*x + e*y, with tau = (i + 1)/T the continuous time of
  index i; SM-Res derives eps from Ires and I_t.
- Resfusion (Shi et al. 2024): linear-pro betas = linspace(1e-4, 0.02, T) * 1000 / T; T' = first (1-based) step with
  sqrt(abar) <= 0.5; the last beta is truncated so that sqrt(abar_T') = 0.5 exactly; start
  x = sqrt(abar_T') y + sqrt(1 - abar_T') z0; DDPM step x <- (x - beta_n/sqrt(1 - abar_n) r)/sqrt(1 - beta_n)
  + sqrt(beta_tilde_n) z (no noise at n = 0). Model: resnoise r = a*x + b*y + c*tau with tau = (n + 1)/T for the
  0-based index n, except at the truncated step, where tau is the continuous acceleration time of diffuse's path.

Writes core/tests/fixtures/residual_samplers.json. Run: python3 tools/make_residual_fixtures.py (needs numpy).
"""
import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "core", "tests", "fixtures",
                   "residual_samplers.json")

Y = np.array([0.3, -0.7, 1.1, 0.05])
RDDM_NOISE = np.array([0.4, -1.2, 0.9, 0.1])
RDDM_MODEL = dict(a=-0.3, b=0.8, c=0.2, d=0.5, e=-0.4)
RES_MODEL = dict(a=0.25, b=-0.6, c=0.3)
RES_NOISE = [np.array([0.2, -0.5, 1.3, -0.8]) * (k + 1) / 3.0 for k in range(8)]


def rddm_tables(T, s):
    a = np.arange(T, 0, -1, dtype=np.float64)
    abar = np.cumsum(a / a.sum())
    b2 = np.arange(1, T + 1, dtype=np.float64)
    bbar = np.sqrt(np.cumsum(s * b2 / b2.sum()))
    return abar, bbar


def rddm_sample(T, s, steps, mode):
    abar, bbar = rddm_tables(T, s)
    m = RDDM_MODEL
    x = Y + np.sqrt(s) * RDDM_NOISE
    times = list(reversed(np.linspace(-1, T - 1, steps + 1).astype(int).tolist()))
    for t, tn in zip(times[:-1], times[1:]):
        tau = (t + 1) / T
        res = m["a"] * x + m["b"] * Y + m["c"] * tau
        if mode == "residual_noise":
            eps = m["d"] * x + m["e"] * Y
        else:  # SM-Res: I_t = I_in - Ires + abar Ires + bbar eps
            eps = (x - Y + (1 - abar[t]) * res) / bbar[t]
        if tn < 0:
            x = Y - res
            break
        x = x - (abar[t] - abar[tn]) * res - (bbar[t] - bbar[tn]) * eps
    return [(t + 1) / T for t in times if t >= 0], x


def linear_pro(T):
    return np.linspace(1e-4, 0.02, T) * 1000.0 / T


def resfusion_truncated(T):
    betas = linear_pro(T)
    sqrt_abar, acc = [], 1.0
    for b in betas:
        acc *= np.sqrt(1 - b)
        sqrt_abar.append(acc)
        if acc <= 0.5:
            break
    t_acc = len(sqrt_abar)
    tb = betas[:t_acc].copy()
    prev = sqrt_abar[-2] if t_acc > 1 else 1.0
    tb[-1] = 1 - (0.5 / prev) ** 2
    return t_acc, tb


def resfusion_t_acc_cont(T):
    """diffuse's continuous T': ln sqrt(abar) is piecewise linear in t through (k + 1)/T."""
    ys, acc = [], 0.0
    for b in linear_pro(T):
        acc += 0.5 * np.log1p(-b)
        ys.append(acc)
        if acc <= np.log(0.5):
            break
    k = len(ys) - 1
    return k / T + (np.log(0.5) - ys[k - 1]) / (ys[k] - ys[k - 1]) / T


def resfusion_sample(T):
    t_acc, tb = resfusion_truncated(T)
    tau_acc = resfusion_t_acc_cont(T)
    abar = np.cumprod(1 - tb)
    m = RES_MODEL
    x = np.sqrt(abar[-1]) * Y + np.sqrt(1 - abar[-1]) * RES_NOISE[0]
    start = x.copy()
    times = []
    for k, n in enumerate(range(t_acc - 1, -1, -1)):
        tau = tau_acc if n == t_acc - 1 else (n + 1) / T
        times.append(tau)
        r = m["a"] * x + m["b"] * Y + m["c"] * tau
        kappa = (1 - np.sqrt(1 - tb[n])) * np.sqrt(1 - abar[n]) / tb[n]
        mean = (x - tb[n] / np.sqrt(1 - abar[n]) * r) / np.sqrt(1 - tb[n])
        if n > 0:
            var = tb[n] * (1 - abar[n - 1]) / (1 - abar[n])
            x = mean + np.sqrt(var) * RES_NOISE[k + 1]
        else:
            x = mean
    return dict(T=T, t_acc_step=t_acc, t_acc_cont=tau_acc, truncated_betas=tb.tolist(), start=start.tolist(),
                times=times, out=x.tolist(), noise=[z.tolist() for z in RES_NOISE[: t_acc + 1]])


def resnoise_weights(T):
    """kappa_n = (1 - sqrt(alpha_n)) sqrt(1 - abar_n)/beta_n at every step of the truncated table."""
    _, tb = resfusion_truncated(T)
    abar = np.cumprod(1 - tb)
    return ((1 - np.sqrt(1 - tb)) * np.sqrt(1 - abar) / tb).tolist()


if __name__ == "__main__":
    rddm = []
    for T, s in [(10, 0.01), (10, 1.0), (1000, 0.01)]:
        for steps in [2, 5, 10]:
            for mode in ["residual", "residual_noise"]:
                times, out = rddm_sample(T, s, steps, mode)
                rddm.append(dict(T=T, sum_scale=s, steps=steps, mode=mode, times=times, out=out.tolist()))
    doc = dict(
        generator="tools/make_residual_fixtures.py",
        y=Y.tolist(),
        rddm_noise=RDDM_NOISE.tolist(),
        rddm_model=RDDM_MODEL,
        rddm=rddm,
        resfusion_model=RES_MODEL,
        resfusion=resfusion_sample(12),
        resnoise_weights=resnoise_weights(12),
    )
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1)
    print("wrote", OUT, "T' =", doc["resfusion"]["t_acc_step"], "t_acc_cont =", doc["resfusion"]["t_acc_cont"])
