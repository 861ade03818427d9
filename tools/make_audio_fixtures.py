#!/usr/bin/env python3
"""Parity fixtures for diffuse-audio, computed by the installed reference package sgmse (sp-uhh/sgmse).

Run from the repository root with sgmse and safetensors installed (CUDA hidden, CPU only):

    python tools/make_audio_fixtures.py [--out tests/fixtures/audio]

Everything is seeded; the files are described in tests/fixtures/audio/README.md. The score model is sgmse's
`ScoreModel` with backbone `ncsnpp` (the published NCSN++ architecture) at a reduced size (TINY_NCSNPP below)
whose parameters are re-drawn at random (see `randomise`), exported with tools/export_sgmse.py.
"""
import argparse
import json
import os
import sys

os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_sgmse  # noqa: E402

from sgmse import sampling  # noqa: E402
from sgmse.data_module import SpecsDataModule  # noqa: E402
from sgmse.model import ScoreModel  # noqa: E402
from sgmse.util.other import pad_spec  # noqa: E402

# The published ncsnpp backbone (nf 128, ch_mult 1,1,2,2,2,2,2, 2 res blocks, attention at 16) at reduced width
# and depth: nf 8, three levels (1, 2, 2), one res block per level, attention where the frequency axis is 64.
TINY_NCSNPP = dict(nf=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(64,))
# For the long-file (chunking) test: five levels so that attention runs where the frequency axis is 16, as in the
# published network (attention over every position at a finer level would not fit a 30 s file in memory).
SEAM_NCSNPP = dict(nf=4, ch_mult=(1, 1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(16,))
OUVE = dict(theta=1.5, sigma_min=0.05, sigma_max=0.5)


def as_real(z):
    """complex [..., F, T] → real [..., 2, F, T] (Re, Im) with the leading singleton channel removed."""
    z = z.squeeze(-3) if z.dim() >= 3 and z.shape[-3] == 1 else z
    return torch.stack([z.real, z.imag], dim=-3).contiguous().float()


def randomise(module, seed):
    """Re-draws every trainable parameter. sgmse initialises many output convolutions with scale ~1e-10 (init_scale
    0), so a freshly built NCSN++ is nearly constant; a parity test needs a network whose output depends on its
    input. Weights ~ N(0, 1/fan_in), biases ~ N(0, 0.05²), normalisation gains ~ 1 + N(0, 0.1²)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue  # the Gaussian Fourier projection is already random (and fixed by design)
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            elif "GroupNorm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def tiny_model(seed=1234, config=TINY_NCSNPP):
    torch.manual_seed(seed)
    model = ScoreModel(backbone="ncsnpp", sde="ouve", data_module_cls=SpecsDataModule, base_dir="(unused)",
                       N=30, t_eps=0.03, **OUVE, **config)
    randomise(model.dnn, seed + 1)
    # sgmse's eval() copies the EMA weights over the network (as it does for a checkpoint); the EMA, taken at
    # construction, is rebuilt from the randomised weights so that they are the ones evaluated.
    model.ema = type(model.ema)(model.dnn.parameters(), decay=model.ema_decay)
    model.eval()
    return model


def speechlike(n, sr, seed):
    """A voiced-speech-like test signal: a gliding harmonic tone with formant-ish weights, plus white noise."""
    g = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 140 + 40 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.exp(-((k * 140 - 600) / 900) ** 2) * np.sin(k * phase) / k for k in range(1, 20))
    x = x / np.abs(x).max() * 0.5 + 0.05 * g.standard_normal(n)
    return torch.tensor(x, dtype=torch.float32)


class NoiseRecorder:
    """Replaces torch.randn_like while a reference sampler runs: draws from a seeded generator and keeps every
    tensor, in the order the sampler asked for them."""

    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)
        self.draws = []
        self.orig = torch.randn_like

    def __enter__(self):
        def randn_like(x, *a, **k):
            z = torch.randn(x.shape, dtype=x.dtype, generator=self.g)
            self.draws.append(z.clone())
            return z
        torch.randn_like = randn_like
        return self

    def __exit__(self, *exc):
        torch.randn_like = self.orig


def stft_fixtures(out):
    tensors, meta = {}, {}
    g = torch.Generator().manual_seed(7)
    for name, n_fft, hop, window, length in [("h510", 510, 128, "hann", 4000), ("s510", 510, 128, "sqrthann", 3001),
                                             ("h1534", 1534, 384, "hann", 6000)]:
        dm = SpecsDataModule(base_dir="(unused)", n_fft=n_fft, hop_length=hop, window=window)
        x = torch.randn(length, generator=g)
        X = dm.stft(x)
        tensors[f"{name}.signal"] = x
        tensors[f"{name}.stft"] = as_real(X)
        frames = X.shape[-1]
        S = torch.complex(torch.randn(n_fft // 2 + 1, frames, generator=g), torch.randn(n_fft // 2 + 1, frames, generator=g))
        tensors[f"{name}.random_spec"] = as_real(S)
        tensors[f"{name}.istft_random_spec"] = dm.istft(S, length)
        meta[name] = {"n_fft": n_fft, "hop": hop, "window": window, "length": length}
    save_file(tensors, os.path.join(out, "stft.safetensors"), metadata={"cases": json.dumps(meta)})


def transform_fixtures(out):
    tensors = {}
    sr = 16000
    y = speechlike(6000, sr, 3) * 0.3
    dm = SpecsDataModule(base_dir="(unused)")  # defaults: n_fft 510, hop 128, hann, α 0.5, β 0.15
    dm48 = SpecsDataModule(base_dir="(unused)", n_fft=1534, hop_length=384, spec_factor=0.065, spec_abs_exponent=0.667)
    norm = y.abs().max()
    Y = dm.stft(y / norm)
    tensors["wave"] = y
    tensors["norm"] = norm.reshape(1)
    tensors["stft"] = as_real(Y)
    tensors["fwd_16k"] = as_real(dm.spec_fwd(Y))
    tensors["fwd_48k_params"] = as_real(dm48.spec_fwd(Y))
    tensors["padded_zero"] = as_real(pad_spec(dm.spec_fwd(Y)[None, None], mode="zero_pad")[0])
    tensors["padded_reflection"] = as_real(pad_spec(dm.spec_fwd(Y)[None, None], mode="reflection")[0])
    save_file(tensors, os.path.join(out, "transform.safetensors"))


def model_fixtures(out, model):
    sidecar = export_sgmse.sidecar_from_model(model, {"checkpoint": "(random, tools/make_audio_fixtures.py)",
                                                      "config": {k: list(v) if isinstance(v, tuple) else v
                                                                 for k, v in TINY_NCSNPP.items()}})
    err = export_sgmse.export(model, sidecar, os.path.join(out, "tiny_ncsnpp.pt"), frames=64, check_frames=(16, 128))
    print(f"tiny_ncsnpp.pt: reload vs python max rel diff {err:.2e}")
    g = torch.Generator().manual_seed(11)
    x_t = 0.3 * torch.complex(torch.randn(1, 1, 256, 64, generator=g), torch.randn(1, 1, 256, 64, generator=g))
    y = 0.3 * torch.complex(torch.randn(1, 1, 256, 64, generator=g), torch.randn(1, 1, 256, 64, generator=g))
    t = torch.tensor([0.37])
    with torch.no_grad():
        score = model(x_t, y, t)
    save_file({"x_t": as_real(x_t), "y": as_real(y), "t": t, "score": as_real(score)},
              os.path.join(out, "model_call.safetensors"))
    print("score magnitude", float(score.abs().mean()))


def sampler_input(model):
    """A short noisy spectrogram y [1, 1, 256, 8] through the reference preprocessing (no padding needed)."""
    y = speechlike(7 * 128, 16000, 5)
    y = y / y.abs().max()
    return model._forward_transform(model._stft(y))[None, None]


def pc_fixtures(out, model, n_steps=10, snr=0.5):
    Y = sampler_input(model)
    calls = []

    def score_fn(x, y, t):
        calls.append((x.clone(), float(t[0])))
        return model(x, y, t)

    sde = model.sde.copy()
    sde.N = n_steps
    with torch.no_grad(), NoiseRecorder(2024) as rec:
        sampler = sampling.get_pc_sampler("reverse_diffusion", "ald", sde=sde, score_fn=score_fn, y=Y,
                                          eps=model.t_eps, snr=snr, corrector_steps=1)
        x, nfe = sampler()
    assert nfe == 2 * n_steps and len(rec.draws) == 1 + 2 * n_steps and len(calls) == 2 * n_steps
    tensors = {"y": as_real(Y), "result": as_real(x), "t_calls": torch.tensor([c[1] for c in calls])}
    tensors["noise"] = torch.stack([as_real(z) for z in rec.draws])  # [1 + 2N, 2, F, T]: prior, then (corrector, predictor) per step
    save_file(tensors, os.path.join(out, "pc_sampler.safetensors"),
              metadata={"steps": str(n_steps), "snr": str(snr), "t_eps": str(model.t_eps), "corrector_steps": "1"})
    save_file({"x": torch.stack([as_real(c[0]) for c in calls])}, os.path.join(out, "pc_calls.safetensors"))


def ode_fixtures(out, model):
    Y = sampler_input(model)
    results, nfes = {}, {}
    for name, tol in [("default", 1e-5), ("tight", 1e-8)]:
        with torch.no_grad(), NoiseRecorder(77) as rec:
            # sgmse's ODE sampler with denoise=True calls the predictor without its stepsize argument and fails,
            # so the deterministic result is the ODE solution at t_eps (denoise=False).
            sampler = sampling.get_ode_sampler(model.sde, model, y=Y, denoise=False, rtol=tol, atol=tol,
                                               eps=model.t_eps, device="cpu")
            x, nfe = sampler()
        results[name], nfes[name] = x, nfe
        prior_noise = rec.draws[0]
    rsde = model.sde.reverse(model, probability_flow=True)
    x_T = Y + model.sde._std(torch.ones(1)) * prior_noise
    with torch.no_grad():
        drift = rsde.sde(x_T, Y, torch.ones(1) * 0.5)[0]
    save_file({"y": as_real(Y), "prior_noise": as_real(prior_noise), "x_T": as_real(x_T),
               "result_rtol1e-5": as_real(results["default"]), "result_rtol1e-8": as_real(results["tight"]),
               "pf_drift_at_x_T_t0.5": as_real(drift)},
              os.path.join(out, "ode_sampler.safetensors"),
              metadata={"nfe_rtol1e-5": str(nfes["default"]), "nfe_rtol1e-8": str(nfes["tight"]),
                        "method": "scipy RK45", "t_eps": str(model.t_eps)})
    print("ODE nfe", nfes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/audio")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    only_seam = os.environ.get("ONLY_SEAM") == "1"  # regenerate only the seam model
    if not only_seam:
        stft_fixtures(args.out)
        transform_fixtures(args.out)
    model = tiny_model()
    if not only_seam:
        model_fixtures(args.out, model)
        pc_fixtures(args.out, model)
        ode_fixtures(args.out, model)
    seam = tiny_model(4321, SEAM_NCSNPP)
    sidecar = export_sgmse.sidecar_from_model(seam, {"checkpoint": "(random, tools/make_audio_fixtures.py)",
                                                     "config": {k: list(v) for k, v in SEAM_NCSNPP.items() if isinstance(v, tuple)} | {"nf": 4, "num_res_blocks": 1}})
    export_sgmse.export(seam, sidecar, os.path.join(args.out, "seam_ncsnpp.pt"), frames=64, check_frames=(128, 320))
    for f in sorted(os.listdir(args.out)):
        print(f"{os.path.getsize(os.path.join(args.out, f)):>9}  {f}")


if __name__ == "__main__":
    main()
