#!/usr/bin/env python3
"""Makes tests/fixtures/restoration: small 8-bit image pairs and scikit-image's PSNR/SSIM of each pair.

diffuse-restoration's metrics (restoration/src/metrics.rs) are tested against metrics.json. Run from the
repository root with scikit-image, numpy and Pillow installed in a virtual environment, for example:

    python3 -m venv /tmp/sk && /tmp/sk/bin/pip install scikit-image pillow
    /tmp/sk/bin/python tools/make_ssim_fixtures.py

SSIM is scikit-image's structural_similarity(a, b, channel_axis=2 (RGB) or None (grey), data_range=255,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False); PSNR is peak_signal_noise_ratio(a, b,
data_range=255). The images are seeded, so the outputs are the same on every run.

It also writes cmyk.jpg, a 16 × 16 CMYK JPEG (Pillow, Adobe APP14), which image_io must refuse by name.
"""
import json
import os

import numpy as np
import skimage
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

OUT = os.path.join("tests", "fixtures", "restoration")
H, W = 40, 48


def structured(rng, channels):
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    planes = []
    for c in range(channels):
        g = 255 * (x / W) * (0.3 + 0.7 * c / max(channels - 1, 1))
        checker = 60 * (((x // 6) + (y // 5)) % 2)
        disk = 90 * (((x - 30 + 4 * c) ** 2 + (y - 18) ** 2) < 100)
        planes.append(g * 0.5 + checker + disk + 10 * np.sin(y / 3 + c))
    return np.clip(np.stack(planes, axis=2), 0, 255)


def box_blur(img, r):
    pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    out = np.zeros_like(img)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out += pad[r + dy:r + dy + H, r + dx:r + dx + W]
    return out / (2 * r + 1) ** 2


def to8(a):
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def save(name, a):
    Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(os.path.join(OUT, name), optimize=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261206)
    pairs = []
    cases = [
        ("rgb_noise", to8(rng.uniform(0, 255, (H, W, 3))), lambda a: a + rng.normal(0, 20, a.shape)),
        ("rgb_blur", to8(structured(rng, 3)), lambda a: box_blur(a, 1)),
        ("rgb_mixed", to8(structured(rng, 3) * 0.6 + rng.uniform(0, 100, (H, W, 3))),
         lambda a: 0.8 * a + 30 + rng.normal(0, 8, a.shape)),
        ("grey_noise", to8(structured(rng, 1)), lambda a: a + rng.normal(0, 15, a.shape)),
    ]
    for name, clean, distort in cases:
        dist = to8(distort(clean.astype(np.float64)))
        save(f"{name}_clean.png", clean)
        save(f"{name}_distorted.png", dist)
        a, b = clean.astype(np.float64), dist.astype(np.float64)
        grey = clean.shape[2] == 1
        if grey:
            a, b = a[:, :, 0], b[:, :, 0]
        ssim = structural_similarity(a, b, channel_axis=None if grey else 2, data_range=255,
                                     gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        psnr = peak_signal_noise_ratio(a, b, data_range=255)
        pairs.append({"clean": f"{name}_clean.png", "distorted": f"{name}_distorted.png",
                      "psnr": float(psnr), "ssim": float(ssim)})
    cmyk = Image.fromarray(to8(structured(rng, 3))[:16, :16]).convert("CMYK")
    cmyk.save(os.path.join(OUT, "cmyk.jpg"), quality=90)
    meta = {"generator": "tools/make_ssim_fixtures.py", "scikit_image": skimage.__version__,
            "numpy": np.__version__, "pairs": pairs}
    with open(os.path.join(OUT, "metrics.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
