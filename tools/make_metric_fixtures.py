#!/usr/bin/env python3
"""Reference values of the speech metrics for diffuse's tests (tests/fixtures/audio/metrics/).

Our script; it calls the installed reference packages (PyPI `pystoi` for ESTOI, `pesq` for PESQ) on short
signals it writes as 16-bit WAV files, and records their values in metrics.json:
  - clean speech: a short espeak-ng utterance (16 kHz) and the same at 8 kHz (1.2 s each);
  - degraded versions: white noise at 5, 20 and 35 dB SNR, modulated harmonic hum at 0 and 10 dB, a low-passed copy, a
    copy with silent gaps (exercises the silent-frame removal).
Usage (in a virtual environment with `pip install pystoi pesq numpy scipy`):
    python tools/make_metric_fixtures.py tests/fixtures/audio/metrics
"""

import json
import os
import subprocess
import sys
import tempfile
import wave

import numpy as np
from pystoi import stoi

try:
    from pesq import pesq
except ImportError:  # PESQ values are optional
    pesq = None


def read(path):
    with wave.open(path, "rb") as w:
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64) / 32768.0
        return w.getframerate(), x


def write(path, rate, x):
    q = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(q.tobytes())
    return q.astype(np.float64) / 32768.0  # what the Rust side reads


def main(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(2026)
    cases = []
    for rate in (16000, 8000):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "170", "-w", os.path.join(tmp, "r.wav"),
                            "The quick brown fox jumps over the lazy dog near the river bank."], check=True)
            subprocess.run(["sox", os.path.join(tmp, "r.wav"), "-r", str(rate), "-c", "1", "-b", "16",
                            os.path.join(tmp, "c.wav"), "trim", "0.05", "1.25"], check=True)
            _, clean = read(os.path.join(tmp, "c.wav"))
        clean = 0.7 * clean / np.max(np.abs(clean))
        clean = write(os.path.join(out, f"clean_{rate}.wav"), rate, clean)
        n = len(clean)
        white = rng.standard_normal(n)
        t = np.arange(n) / rate
        hum = sum(np.sin(2 * np.pi * 110 * k * t + k) / k for k in range(1, 12)) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
        def at_snr(noise, snr):
            k = np.sqrt(np.sum(clean ** 2) / (np.sum(noise ** 2) * 10 ** (snr / 10)))
            return clean + k * noise
        lowpass = np.convolve(clean, np.ones(9) / 9, mode="same")
        gaps = clean.copy()
        gaps[int(0.3 * n):int(0.45 * n)] = 0
        gaps = gaps + 0.01 * white
        degraded = {"white5": at_snr(white, 5), "hum0": at_snr(hum, 0), "lowpass": lowpass, "gaps": gaps,
                    "white20": at_snr(white, 20), "hum10": at_snr(hum, 10), "white35": at_snr(white, 35)}
        if rate != 16000:
            degraded = {"white5": degraded["white5"]}
        for name, y in degraded.items():
            y = y * (0.9 / max(0.9, np.max(np.abs(y))))
            file = f"{name}_{rate}.wav"
            y = write(os.path.join(out, file), rate, y)
            case = {"clean": f"clean_{rate}.wav", "degraded": file, "rate": rate,
                    "estoi": float(stoi(clean, y, rate, extended=True)),
                    "stoi": float(stoi(clean, y, rate, extended=False))}
            if pesq is not None and rate == 16000:
                case["pesq_wb"] = float(pesq(rate, clean, y, "wb"))
            cases.append(case)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"made_by": "tools/make_metric_fixtures.py", "pystoi": __import__("pystoi").__version__
                   if hasattr(__import__("pystoi"), "__version__") else "0.4.1", "cases": cases}, f, indent=1)
    print(json.dumps(cases, indent=1))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/audio/metrics")
