#!/usr/bin/env python3
"""Parity fixture for DPM-Solver-v3 (core/tests/dpm_v3_parity.rs), made by running the reference.

The reference is thu-ml/DPM-Solver-v3 (codebases/edm/samplers/dpm_solver_v3.py and utils.py); it is not part of
this repository: pass the folder holding those two files. Its hard-coded `.cuda()` calls are turned into no-ops
here, so it runs on the CPU.

The problem: a 3-dimensional two-component Gaussian mixture on the EDM path (alpha = 1, sigma = t), its exact
noise prediction as the model, and smooth made-up statistics l, s, b on 250 uniform logSNR intervals between
t = 80 and t = 0.002 (any smooth statistics define the same method; these exercise every term). Each case is the
reference's `sample` from the same four starting points on its logSNR grid, whose steps fall on statistics
nodes.

    python3 tools/make_v3_fixtures.py --reference /path/to/DPM-Solver-v3/codebases/edm/samplers \
        -o core/tests/fixtures/dpm_v3.json
"""

import argparse
import json
import math
import os
import sys
import tempfile

import numpy as np
import torch

WEIGHTS = [0.35, 0.65]
MEANS = [[1.0, -0.5, 0.3], [-0.8, 0.6, -1.1]]
STDS = [0.4, 0.25]
T_MAX, T_MIN, INTERVALS = 80.0, 0.002, 250
CASES = [
    # (steps, order, pseudo predictor, corrector)
    (5, 3, True, True),
    (10, 3, False, True),
    (10, 2, False, False),
    (25, 3, False, False),
]


def eps_model(x, t):
    """Exact noise prediction of the mixture at x = x0 + t*eps (x: [B, 1, 1, 3], t: [B])."""
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    t = t.to(torch.float64).reshape(-1, 1)
    logits, means = [], []
    for w, m, s in zip(WEIGHTS, MEANS, STDS):
        m = torch.tensor(m, dtype=torch.float64)
        var = s * s + t * t
        logits.append(math.log(w) - 0.5 * ((x - m) ** 2).sum(1, keepdim=True) / var - 1.5 * torch.log(var))
        means.append(m + (s * s / var) * (x - m))
    post = torch.softmax(torch.cat(logits, 1), 1)
    x0 = sum(post[:, k : k + 1] * means[k] for k in range(len(WEIGHTS)))
    return ((x - x0) / t).reshape(-1, 1, 1, 3)


def statistics(lambdas):
    lam = lambdas[:, None]
    j = np.arange(3)[None, :]
    l = 0.9 / (1.0 + (0.3 + 0.1 * j) * np.exp(2.0 * lam)) + 0.05
    s = 0.1 * np.sin(lam + j)
    b = 0.05 * np.cos(0.5 * lam - j)
    return l, s, b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True, help="folder with the reference's dpm_solver_v3.py and utils.py")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    torch.Tensor.cuda = lambda self, *a, **k: self  # the reference hard-codes CUDA
    sys.path.insert(0, args.reference)
    from dpm_solver_v3 import DPM_Solver_v3  # noqa: E402
    from utils import NoiseScheduleEDM  # noqa: E402

    ns = NoiseScheduleEDM()
    lam_lo, lam_hi = -math.log(T_MAX), -math.log(T_MIN)
    lambdas = np.linspace(lam_lo, lam_hi, INTERVALS + 1)
    l, s, b = statistics(lambdas)
    rng = np.random.default_rng(3)
    x_start = rng.standard_normal((4, 3)) * T_MAX
    cases = []
    with tempfile.TemporaryDirectory() as d:
        shape = (INTERVALS + 1, 1, 1, 3)
        np.savez(os.path.join(d, "l.npz"), l=l.reshape(shape))
        np.savez(os.path.join(d, "sb.npz"), s=s.reshape(shape), b=b.reshape(shape))
        for steps, order, pseudo, corrector in CASES:
            solver = DPM_Solver_v3(d, ns, steps=steps, t_start=T_MAX, t_end=T_MIN, skip_type="logSNR", device="cpu")
            x = torch.tensor(x_start, dtype=torch.float64).reshape(4, 1, 1, 3)
            out = solver.sample(eps_model, x, order, pseudo, corrector, False, True)
            cases.append(
                {
                    "steps": steps,
                    "order": order,
                    "pseudo": pseudo,
                    "corrector": corrector,
                    "x": out.reshape(4, 3).tolist(),
                }
            )
    fixture = {
        "source": "thu-ml/DPM-Solver-v3 codebases/edm/samplers/dpm_solver_v3.py (commit ba16871), run on the CPU",
        "weights": WEIGHTS,
        "means": MEANS,
        "stds": STDS,
        "t_max": T_MAX,
        "t_min": T_MIN,
        "lambdas": lambdas.tolist(),
        "l": l.tolist(),
        "s": s.tolist(),
        "b": b.tolist(),
        "x_start": x_start.tolist(),
        "cases": cases,
    }
    with open(args.output, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
