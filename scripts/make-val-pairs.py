#!/usr/bin/env python3
"""Fixed validation mixtures for choosing a model's default sampler (and between candidate models) without
touching the test pairs: every second clip of CORPUS/val/clean with the 16 kHz validation noises in turn, at an
SNR uniform in [0, 10] dB (the test pairs' range), scaled together when the peak passes 0.9.

The validation voices and noise types are held out from training and differ from the test ones
(scripts/make-speech-corpus.py). docs/audio.md and docs/benchmarks.md call these "the 24 validation mixtures".

Usage: scripts/make-val-pairs.py CORPUS OUT [--count 24] [--seed 7]   → OUT/clean/vNN.wav, OUT/noisy/vNN.wav
"""

import argparse
import math
import os
import random
import struct
import wave


def read_wav(path):
    with wave.open(path) as w:
        n, rate, width = w.getnframes(), w.getframerate(), w.getsampwidth()
        data = w.readframes(n)
    if width != 2:
        raise SystemExit(f"{path}: expected 16-bit PCM, got {8 * width}-bit")
    return rate, [v / 32768 for v in struct.unpack(f"<{n}h", data)]


def write_wav(path, samples):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(struct.pack(f"<{len(samples)}h",
                                  *[max(-32768, min(32767, int(round(v * 32767)))) for v in samples]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    val = os.path.join(args.corpus, "val")
    cleans = sorted(os.listdir(os.path.join(val, "clean")))
    noises = []
    for f in sorted(os.listdir(os.path.join(val, "noise"))):
        rate, x = read_wav(os.path.join(val, "noise", f))
        if rate == 16000:
            noises.append(x)
    if not noises or len(cleans) < 2 * args.count - 1:
        raise SystemExit(f"{val}: need 16 kHz noise and {2 * args.count - 1} clean clips")
    for i in range(args.count):
        _, c = read_wav(os.path.join(val, "clean", cleans[2 * i]))
        nz = noises[i % len(noises)]
        start = rng.randrange(max(1, len(nz) - len(c)))
        seg = [nz[(start + k) % len(nz)] for k in range(len(c))]
        snr = rng.uniform(0, 10)
        pc = sum(v * v for v in c) / len(c)
        pn = sum(v * v for v in seg) / len(seg) or 1e-12
        k = math.sqrt(pc / (pn * 10 ** (snr / 10)))
        noisy = [a + k * b for a, b in zip(c, seg)]
        peak = max(abs(v) for v in noisy + c)
        g = 0.9 / peak if peak > 0.9 else 1.0
        write_wav(os.path.join(args.out, "clean", f"v{i:02d}.wav"), [g * v for v in c])
        write_wav(os.path.join(args.out, "noisy", f"v{i:02d}.wav"), [g * v for v in noisy])


if __name__ == "__main__":
    main()
