#!/usr/bin/env python3
"""Runs the classical peers of `diffuse restore` on a folder of degraded images, for side-by-side benchmarks.

    denoise   CBM3D (PyPI `bm3d`, given the true σ) and OpenCV fastNlMeansDenoisingColored (h chosen on validation)
    deblur    Wiener deconvolution with the true kernel (noise-to-signal ratio chosen on validation)
    lowlight  the exact inverse of the exposure curve, then CBM3D (its σ chosen on validation)

The degraded folder and its parameters come from `diffuse restore degrade --fixed --record params.json`. A
peer's free parameter is chosen on a validation pair (`--tune-clean`, `--tune-degraded`, `--tune-record`) and
then applied unchanged to the test folder. Each peer writes 8-bit PNGs under OUT/PEER/ (score them with
`diffuse restore eval`) and OUT/times.json holds the seconds per image of each peer (single process).

    python3 tools/restoration_peers.py --task denoise --degraded DIR --record params.json --out DIR \
        [--tune-clean DIR --tune-degraded DIR --tune-record params.json]
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image


def read(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def write(path, x):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)).save(path)


def psnr(a, b):
    q = lambda v: np.round(np.clip(v, 0, 1) * 255)
    return 10 * np.log10(255.0**2 / np.mean((q(a) - q(b)) ** 2))


def cbm3d(y, sigma):
    import bm3d

    return bm3d.bm3d_rgb(y, sigma)


def nlm(y, h):
    import cv2

    y8 = np.round(np.clip(y, 0, 1) * 255).astype(np.uint8)
    return cv2.fastNlMeansDenoisingColored(y8, None, h, h, 7, 21).astype(np.float64) / 255.0


def kernel_of(params):
    blur = params["blur"]
    if blur["kind"] == "gaussian":
        s = blur["sigma"]
        r = max(1, int(np.ceil(3 * s)))
        g = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * s * s))
        g /= g.sum()
        return np.outer(g, g)
    k = np.asarray(blur["kernel"]["weights"], dtype=np.float64)
    n = blur["kernel"]["size"]
    return k.reshape(n, n)


def wiener(y, k, nsr):
    """Wiener deconvolution with kernel k and a constant noise-to-signal ratio, on the image mirrored to twice its
    size (the degradation blurred with mirrored borders, so the mirrored image is periodic and FFT-consistent)."""
    h, w, _ = y.shape
    big = np.concatenate([y, y[::-1]], axis=0)
    big = np.concatenate([big, big[:, ::-1]], axis=1)
    H, W = big.shape[:2]
    pad = np.zeros((H, W))
    n = k.shape[0]
    pad[:n, :n] = k
    pad = np.roll(pad, (-(n // 2), -(n // 2)), axis=(0, 1))
    K = np.fft.fft2(pad)
    G = np.conj(K) / (np.abs(K) ** 2 + nsr)
    out = np.stack([np.real(np.fft.ifft2(np.fft.fft2(big[..., c]) * G)) for c in range(3)], axis=-1)
    return out[:h, :w]


def inverse_curve(y, p):
    return np.clip(y, 0, 1) ** (1.0 / p["gamma"]) / p["exposure"] ** (1.0 / p["gamma"])


def peers(task, params):
    """(name, function(y, params, knob), knobs to try on validation)."""
    if task == "denoise":
        return [
            ("cbm3d", lambda y, p, _k: cbm3d(y, p["sigma"]), [None]),
            ("nlm", lambda y, p, k: nlm(y, k), [7, 10, 13, 16, 19, 22, 25, 30]),
        ]
    if task == "deblur":
        return [("wiener", lambda y, p, k: wiener(y, kernel_of(p), k), [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2])]
    return [
        (
            "inverse_cbm3d",
            lambda y, p, k: cbm3d(np.clip(inverse_curve(y, p), 0, 1), k),
            [x / 255 for x in (10, 20, 30, 45)],
        )
    ]


def files(record):
    rec = json.loads(Path(record).read_text())
    return rec["images"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=["denoise", "deblur", "lowlight"])
    ap.add_argument("--degraded", type=Path, required=True)
    ap.add_argument("--record", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tune-clean", type=Path)
    ap.add_argument("--tune-degraded", type=Path)
    ap.add_argument("--tune-record", type=Path)
    ap.add_argument("--tune-crop", type=int, default=256, help="tune on the top-left crop of each validation image")
    ap.add_argument("--tune-images", type=int, default=8, help="tune on the first N validation images")
    ap.add_argument("--peers", help="comma-separated subset of the task's peers to run")
    a = ap.parse_args()
    images = files(a.record)
    chosen, times = {}, {}
    for name, fn, knobs in peers(a.task, None):
        if a.peers and name not in a.peers.split(","):
            continue
        knob = knobs[0]
        if len(knobs) > 1:
            if not a.tune_clean:
                raise SystemExit(f"{name} has a free parameter: pass --tune-clean/--tune-degraded/--tune-record")
            c = a.tune_crop
            val = files(a.tune_record)
            scores = []
            for k in knobs:
                s = [
                    psnr(fn(read(a.tune_degraded / rel)[:c, :c], p, k), read(a.tune_clean / rel)[:c, :c])
                    for rel, p in sorted(val.items())[: a.tune_images]
                ]
                scores.append(float(np.mean(s)))
            knob = knobs[int(np.argmax(scores))]
            print(f"{name}: validation PSNR {dict(zip(map(str, knobs), np.round(scores, 2)))} -> {knob}")
        chosen[name] = knob
        spent = 0.0
        for rel, p in sorted(images.items()):
            y = read(a.degraded / rel)
            t = time.perf_counter()
            x = fn(y, p, knob)
            spent += time.perf_counter() - t
            write(a.out / name / Path(rel).with_suffix(".png"), x)
        times[name] = spent / len(images)
        print(f"{name}: {len(images)} images, {times[name]:.3f} s per image")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"times_{'_'.join(sorted(chosen))}.json").write_text(json.dumps({"seconds_per_image": times, "chosen": chosen}, indent=1))


if __name__ == "__main__":
    main()
