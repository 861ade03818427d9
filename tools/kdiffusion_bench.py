#!/usr/bin/env python3
"""Runs k-diffusion's samplers on a diffuse problem file (Gaussian mixture on the EDM path, Karras spacing, ending
at the data) from the very starting points diffuse used (`diffuse solvers bench --save-start STARTS.json`), and
scores them as `diffuse solvers bench` does: rms error per coordinate, median and 90th percentile of the per-draw
error, and the share of draws that end in another mixture component than their exact solution.

    python3 -m pip install --no-deps k-diffusion torchsde torchdiffeq trampoline scipy tqdm   # next to torch
    python3 tools/kdiffusion_bench.py PROBLEM.json STARTS.json --nfe 5,10,20 -o kdiff.json

The exact solution is computed here, independently of diffuse: the probability-flow ODE dx/dσ = (x − D(x; σ))/σ of
the exact mixture denoiser D, integrated in u = ln σ by scipy's DOP853 (rtol = atol = 1e-11) from σ_max down to
σ = 1e-9. Only k-diffusion's `sampling` module is imported (its package __init__ pulls in image and training
dependencies that sampling does not use; they are stubbed out).

NFE: lms, dpmpp_2m and euler spend one evaluation per sigma (n sigmas = n NFE); heun and dpm_2 spend 2n − 1
(their last step is Euler), so they get n = (NFE + 1) // 2; dpm_fast is given NFE − 1 evaluations down to σ_min
and the last one is the jump to the data (k-diffusion's dpm_fast stops at σ_min). Karras sigmas for n steps end
at σ_min, then 0: the same grid as diffuse's `karras` spacing with n intervals ending at the data.
"""
import argparse
import importlib.util
import json
import math
import sys
import types

import numpy as np
import torch
from scipy.integrate import solve_ivp


def load_sampling():
    """k_diffusion.sampling without the package's __init__ (which imports skimage, PIL, torchvision, ...)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        raise SystemExit("k-diffusion is not installed: python3 -m pip install --no-deps k-diffusion")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = pkg
    for name in ["PIL", "PIL.Image", "safetensors", "torchvision", "torchvision.transforms",
                 "torchvision.transforms.functional"]:
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["PIL"].Image = sys.modules["PIL.Image"]
    import k_diffusion.sampling as sampling  # noqa: E402
    return sampling


class Mixture:
    """Σ w_k N(m_k, s_k² I) and its exact denoiser on the VE path x = x0 + σ ε (float64)."""

    def __init__(self, spec):
        self.w = torch.tensor(spec["weights"], dtype=torch.float64)
        self.m = torch.tensor(spec["means"], dtype=torch.float64)
        self.s = torch.tensor(spec["stds"], dtype=torch.float64)

    def logits(self, x, sigma):
        var = self.s ** 2 + sigma ** 2
        d = x.shape[1]
        sq = ((x[:, None, :] - self.m[None]) ** 2).sum(-1)
        return torch.log(self.w)[None] - 0.5 * d * torch.log(2 * math.pi * var)[None] - sq / (2 * var[None])

    def denoise(self, x, sigma):
        r = torch.softmax(self.logits(x, sigma), dim=1)
        var = self.s ** 2 + sigma ** 2
        post = (self.s[None, :, None] ** 2 * x[:, None, :] + sigma ** 2 * self.m[None]) / var[None, :, None]
        return (r[:, :, None] * post).sum(1)

    def component(self, x):
        return self.logits(x, 0.0).argmax(1)


def exact_solution(mix, x_start, sigma_max, sigma_end=1e-9):
    shape = x_start.shape

    def rhs(u, y):
        sigma = math.exp(u)
        x = torch.from_numpy(y.reshape(shape))
        return ((x - mix.denoise(x, sigma))).numpy().ravel()  # dx/du = σ·dx/dσ = x − D

    sol = solve_ivp(rhs, (math.log(sigma_max), math.log(sigma_end)), x_start.numpy().ravel(), method="DOP853",
                    rtol=1e-11, atol=1e-11)
    if not sol.success:
        raise SystemExit(f"reference ODE failed: {sol.message}")
    return torch.from_numpy(sol.y[:, -1].reshape(shape))


def scores(x, ref, mix, ref_component):
    err = ((x - ref) ** 2).sum(1).div(x.shape[1]).sqrt()
    e = torch.sort(err).values
    at = lambda q: e[min(max(math.ceil(q * len(e)), 1), len(e)) - 1].item()  # noqa: E731
    return {
        "rms_error": ((x - ref) ** 2).mean().sqrt().item(),
        "median_error": at(0.5),
        "p90_error": at(0.9),
        "switched": (mix.component(x) != ref_component).double().mean().item(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("problem")
    ap.add_argument("starts")
    ap.add_argument("--nfe", default="5,10,20")
    ap.add_argument("--samplers", default="lms,dpmpp_2m,dpm_fast,heun,dpm_2,euler")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    problem = json.load(open(a.problem))
    path, spacing = problem["path"], problem.get("spacing", {})
    if path.get("kind") != "edm" or spacing.get("kind") != "karras" or problem.get("end", "zero") != "zero":
        raise SystemExit(f"{a.problem}: this script runs the EDM path with Karras spacing ending at the data")
    sigma_min, sigma_max, rho = path["sigma_min"], path["sigma_max"], spacing.get("rho", 7.0)
    if problem.get("anchor"):
        raise SystemExit(f"{a.problem}: anchored problems are not supported here")
    sampling = load_sampling()
    mix = Mixture(problem["mixture"])
    x_start = torch.tensor(json.load(open(a.starts)), dtype=torch.float64)
    ref = exact_solution(mix, x_start, sigma_max)
    ref_component = mix.component(ref)

    calls = [0]

    def model(x, sigma):
        calls[0] += 1
        return mix.denoise(x, sigma[0].item())

    rows = []
    for name in a.samplers.split(","):
        for nfe in [int(n) for n in a.nfe.split(",")]:
            calls[0] = 0
            if name == "dpm_fast":
                x = sampling.sample_dpm_fast(model, x_start.clone(), sigma_min, sigma_max, nfe - 1, disable=True)
                x = model(x, torch.full((len(x),), sigma_min, dtype=torch.float64))
                steps = nfe
            else:
                n = (nfe + 1) // 2 if name in ("heun", "dpm_2") else nfe
                sigmas = sampling.get_sigmas_karras(n, sigma_min, sigma_max, rho).to(torch.float64)
                x = getattr(sampling, f"sample_{name}")(model, x_start.clone(), sigmas, disable=True)
                steps = n
            rows.append({"solver": name, "budget": nfe, "nfe": calls[0], "steps": steps, **scores(x, ref, mix, ref_component)})
            r = rows[-1]
            print(f"{name:<10} nfe {r['nfe']:>3}  rms {r['rms_error']:.3e}  median {r['median_error']:.3e}  "
                  f"p90 {r['p90_error']:.3e}  switched {100 * r['switched']:.1f}%")
    json.dump({"library": "k-diffusion", "samples": len(x_start), "rows": rows}, open(a.output, "w"), indent=1)


if __name__ == "__main__":
    main()
