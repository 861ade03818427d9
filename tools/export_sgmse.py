#!/usr/bin/env python3
"""Export a published sgmse checkpoint (sp-uhh/sgmse) to diffuse's model contract: TorchScript + JSON sidecar.

Needs the `sgmse` package (and its dependencies) installed; it is imported, never copied. Usage:

    python tools/export_sgmse.py CHECKPOINT.ckpt OUT.pt [--frames 256] [--check-frames 64 320] [--device cpu]

writes OUT.pt (TorchScript) and OUT.json (sidecar). The module takes float32 x[B, 4, F, T] = [Re x_t, Im x_t,
Re y, Im y] and t[B] and returns [B, 2, F, T]: the sgmse `ScoreModel.forward` output (the score for OUVE
models, the clean-spectrogram estimate for Schrödinger-bridge models with loss_type data_prediction), so the
sidecar's output.sign is +1. See docs/models.md.

Notes on the steps (each one matters):
- CUDA is hidden unless --device cuda: sgmse's upfirdn2d compiles a CUDA extension at import time when CUDA is
  visible, and that op cannot be traced; the CPU path is plain torch. A CPU-traced module runs on CUDA too
  (diffuse loads it with map_location), so --device cuda is only for checkpoints that need it.
- `model.eval()` swaps the EMA weights into the network (sgmse's ScoreModel.train/eval); exporting without it
  would export the raw training weights.
- Tracing records one input shape; other frame counts and batch sizes are checked with `check_inputs`, and the
  saved file is reloaded and compared with the Python model.
"""
import argparse
import json
import math
import os
import sys


def hide_cuda_unless(device):
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pad_mode_for(backbone):
    # sgmse's enhancement.py: zero padding for ncsnpp, reflection for ncsnpp_48k and ncsnpp_v2.
    return "reflection" if backbone in ("ncsnpp_48k", "ncsnpp_v2") else "zero"


def sidecar_from_model(model, source=None):
    """The diffuse sidecar (dict) of an sgmse ScoreModel, read from its hyper-parameters and attributes."""
    hp = dict(model.hparams)
    dm = model.data_module
    sde = model.sde
    sde_name = type(sde).__name__
    window = hp.get("window", "hann")
    transform_type = getattr(dm, "transform_type", "exponent")
    if transform_type == "exponent":
        transform = {"kind": "exponent", "alpha": float(dm.spec_abs_exponent), "beta": float(dm.spec_factor)}
    elif transform_type == "log":
        transform = {"kind": "log", "beta": float(dm.spec_factor)}
    else:
        transform = {"kind": "none"}
    loss_type = getattr(model, "loss_type", "score_matching")
    if sde_name == "OUVESDE":
        sde_cfg = {"name": "ouve", "theta": float(sde.theta), "sigma_min": float(sde.sigma_min),
                   "sigma_max": float(sde.sigma_max)}
        sampler_type = getattr(sde, "sampler_type", "pc")
        sampler = {"name": sampler_type, "steps": int(sde.N), "snr": 0.5, "corrector_steps": 1,
                   "t_eps": float(model.t_eps)}
    elif sde_name == "SBVESDE":
        sde_cfg = {"name": "sbve", "k": float(sde.k), "c": float(sde.c), "eps": float(sde.eps)}
        # sgmse's get_sb_sampler integrates to its own eps (1e-4), not the training t_eps.
        sampler = {"name": "sb-" + getattr(sde, "sampler_type", "ode"), "steps": int(sde.N), "snr": 0.0,
                   "corrector_steps": 0, "t_eps": 1e-4}
    else:
        raise SystemExit(f"unsupported SDE {sde_name}: diffuse supports OUVE and SBVE")
    if loss_type not in ("score_matching", "denoiser", "data_prediction"):
        raise SystemExit(f"unsupported loss_type {loss_type}")
    return {
        "format": "diffuse-sgmse",
        "version": 1,
        "sample_rate": int(getattr(model, "sr", 16000)),
        "stft": {"n_fft": int(dm.n_fft), "hop": int(dm.hop_length), "window": window},
        "transform": transform,
        "pad": {"multiple": 64, "mode": pad_mode_for(model.backbone)},
        "sde": sde_cfg,
        "output": {"kind": "data_prediction" if loss_type == "data_prediction" else "score", "sign": 1.0},
        "sampler": sampler,
        "source": {"exporter": "tools/export_sgmse.py", "backbone": model.backbone, "loss_type": loss_type,
                   **(source or {})},
    }


def build_contract(model, sidecar):
    """TorchScript-able wrapper: real 4-channel input → sgmse ScoreModel.forward → real 2-channel output."""
    import torch

    class Traceable(torch.nn.Module):
        def __init__(self, score_model):
            super().__init__()
            # The Lightning module itself cannot be traced as a submodule (its `trainer` property raises outside
            # a Trainer); only its network is registered, so the trace owns exactly the network's parameters.
            object.__setattr__(self, "_score_model", score_model)
            self.dnn = score_model.dnn

        def forward(self, x, t):
            x_t = torch.complex(x[:, 0:1], x[:, 1:2])
            y = torch.complex(x[:, 2:3], x[:, 3:4])
            out = self._score_model(x_t, y, t)
            return torch.cat([out.real, out.imag], dim=1)

    class Contract(torch.nn.Module):
        sidecar: str

        def __init__(self, traced, sidecar_json):
            super().__init__()
            self.net = traced
            self.sidecar = sidecar_json

        def forward(self, x, t):
            return self.net(x, t)

        @torch.jit.export
        def diffuse_sidecar(self) -> str:
            return self.sidecar

    return Traceable(model), Contract


def example_inputs(bins, frames, batch, seed):
    import torch
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(batch, 4, bins, frames, generator=g)
    t = 0.03 + 0.97 * torch.rand(batch, generator=g)
    return x, t


def export(model, sidecar, out_path, frames=256, check_frames=(64, 320), device="cpu"):
    """Traces `model` (an sgmse ScoreModel in eval mode) and writes OUT.pt + OUT.json; returns the max relative
    difference between the reloaded module and the Python model on a fresh input."""
    import torch

    # Lightning keeps optional loss modules as children; they are not part of inference.
    if hasattr(model, "pesq_loss"):
        del model.pesq_loss
    model = model.to(device)
    bins = sidecar["stft"]["n_fft"] // 2 + 1
    traceable, Contract = build_contract(model, sidecar)
    traceable.eval()
    example = tuple(v.to(device) for v in example_inputs(bins, frames, 1, 0))
    checks = [tuple(v.to(device) for v in example_inputs(bins, f, b, 1 + i))
              for i, (f, b) in enumerate([(f, 1) for f in check_frames] + [(check_frames[0], 2)])]
    with torch.no_grad():
        traced = torch.jit.trace(traceable, example, check_inputs=checks, check_tolerance=1e-4)
        sidecar_json = json.dumps(sidecar, sort_keys=True)
        scripted = torch.jit.script(Contract(traced, sidecar_json))
    tmp = out_path + ".partial"
    scripted.save(tmp)
    os.replace(tmp, out_path)
    json_path = os.path.splitext(out_path)[0] + ".json"
    with open(json_path + ".partial", "w") as f:
        json.dump(sidecar, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(json_path + ".partial", json_path)

    # Reload and compare with the Python model on a frame count the trace has not seen.
    reloaded = torch.jit.load(out_path, map_location=device)
    x, t = (v.to(device) for v in example_inputs(bins, check_frames[-1] + 64, 2, 99))
    with torch.no_grad():
        a = reloaded(x, t)
        b = traceable(x, t)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="sgmse Lightning checkpoint (.ckpt)")
    ap.add_argument("out", help="output TorchScript file (.pt); the sidecar goes beside it as .json")
    ap.add_argument("--frames", type=int, default=256, help="frames of the tracing input (multiple of 64)")
    ap.add_argument("--check-frames", type=int, nargs="+", default=[64, 320], help="other frame counts to check")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device to trace on (default cpu)")
    ap.add_argument("--steps", type=int, help="override the sidecar's default sampler steps")
    ap.add_argument("--snr", type=float, help="override the sidecar's default corrector snr")
    args = ap.parse_args()
    if not args.out.endswith(".pt"):
        raise SystemExit("the output file must end in .pt (the sidecar is written beside it as .json)")
    hide_cuda_unless(args.device)

    import torch
    from sgmse.model import ScoreModel

    model = ScoreModel.load_from_checkpoint(args.checkpoint, map_location="cpu")
    if getattr(model, "_error_loading_ema", False):
        print("warning: the checkpoint has no EMA weights; exporting the raw weights", file=sys.stderr)
    model.eval()  # swaps the EMA weights in
    source = {"checkpoint": os.path.basename(args.checkpoint), "torch": torch.__version__}
    sidecar = sidecar_from_model(model, source)
    if args.steps:
        sidecar["sampler"]["steps"] = args.steps
    if args.snr is not None:
        sidecar["sampler"]["snr"] = args.snr
    err = export(model, sidecar, args.out, args.frames, tuple(args.check_frames), args.device)
    print(f"wrote {args.out} and its sidecar; reloaded module vs Python model: max relative difference {err:.2e}")
    if not math.isfinite(err) or err > 1e-4:
        raise SystemExit("the exported module does not reproduce the Python model")


if __name__ == "__main__":
    main()
