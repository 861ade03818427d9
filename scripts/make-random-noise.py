#!/usr/bin/env python3
"""Domain-randomised training noise: every clip is white noise through a random equaliser, with a random loudness
envelope and, sometimes, a random harmonic drone. No two clips share a spectrum or an envelope, so the network
sees noise colours and modulations that no fixed list of noise types covers (the idea of domain randomisation,
Tobin et al. 2017; RNNoise's random filters, which `--spectral-shaping` applies on top, are milder).

Each clip, 16 kHz mono, drawn independently:
  spectrum   2-5 peaking filters (RBJ cookbook), centre log-uniform in 40 Hz-7 kHz, gain +-18 dB, Q 0.4-3,
             then with probability 1/3 each a one-pole low-pass (pole 0.5-0.98), a first difference (violet
             tilt), or nothing;
  envelope   with probability 1/3 each: a sinusoidal modulation (0.3-15 Hz, depth 0-0.8), a smoothed random
             walk in dB (3-12 dB spread, 50-500 ms smoothing), or none;
  drone      with probability 0.3, a harmonic tone (f0 log-uniform 30-500 Hz, 1-8 harmonics) at -20-0 dB
             relative to the noise.
Pass OUT as one more `--noise` folder to `diffuse audio train`. The generator families of the validation and test
noise types (crackle, siren; fan, pink, alsa-utils' Noise.wav) are not used, though random draws can come close
to any stationary coloured noise: that is the point.

Usage: scripts/make-random-noise.py OUT [--files 48] [--seconds 8] [--seed 23]
"""

import argparse
import json
import math
import os
import random
import runpy


def peaking(x, f0, gain_db, q, rate):
    """RBJ peaking equaliser."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / rate
    alpha = math.sin(w0) / (2 * q)
    b0, b1, b2 = 1 + alpha * a, -2 * math.cos(w0), 1 - alpha * a
    a0, a1, a2 = 1 + alpha / a, -2 * math.cos(w0), 1 - alpha / a
    b0, b1, b2, a1, a2 = b0 / a0, b1 / a0, b2 / a0, a1 / a0, a2 / a0
    x1 = x2 = y1 = y2 = 0.0
    out = []
    for v in x:
        y = b0 * v + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
        x2, x1, y2, y1 = x1, v, y1, y
        out.append(y)
    return out


def clip(n, rng, rate, corpus):
    """One randomised noise clip of n samples and the parameters drawn for it."""
    info = {"filters": []}
    x = corpus["white"](n, rng)
    for _ in range(rng.randint(2, 5)):
        f0 = math.exp(rng.uniform(math.log(40), math.log(7000)))
        g, q = rng.uniform(-18, 18), math.exp(rng.uniform(math.log(0.4), math.log(3)))
        x = peaking(x, f0, g, q, rate)
        info["filters"].append([round(f0, 1), round(g, 2), round(q, 3)])
    tilt = rng.choice(["lowpass", "difference", "none"])
    if tilt == "lowpass":
        pole = rng.uniform(0.5, 0.98)
        x = corpus["one_pole"](x, pole)
        info["lowpass_pole"] = round(pole, 4)
    elif tilt == "difference":
        x = [b - a for a, b in zip([0.0] + x[:-1], x)]
    info["tilt"] = tilt
    rms = math.sqrt(sum(v * v for v in x) / n) or 1.0
    x = [v / rms for v in x]
    env = rng.choice(["sine", "walk", "none"])
    if env == "sine":
        f, depth, ph = rng.uniform(0.3, 15), rng.uniform(0, 0.8), rng.uniform(0, 2 * math.pi)
        x = [v * (1 + depth * math.sin(2 * math.pi * f * i / rate + ph)) for i, v in enumerate(x)]
        info["envelope"] = {"sine_hz": round(f, 3), "depth": round(depth, 3)}
    elif env == "walk":
        spread, tau = rng.uniform(3, 12), rng.uniform(0.05, 0.5)
        a = math.exp(-1 / (tau * rate))
        # An AR(1) in dB with stationary standard deviation `spread`.
        s, k = rng.gauss(0, spread), spread * math.sqrt(1 - a * a)
        out = []
        for v in x:
            s = a * s + k * rng.gauss(0, 1)
            out.append(v * 10 ** (s / 20))
        x = out
        info["envelope"] = {"walk_db": round(spread, 2), "tau_s": round(tau, 3)}
    if rng.random() < 0.3:
        f0 = math.exp(rng.uniform(math.log(30), math.log(500)))
        harmonics = rng.randint(1, 8)
        amps = [rng.uniform(0.2, 1.0) / h for h in range(1, harmonics + 1)]
        phases = [rng.uniform(0, 2 * math.pi) for _ in amps]
        level = 10 ** (rng.uniform(-20, 0) / 20) * math.sqrt(2 / sum(a * a for a in amps))
        for i in range(n):
            t = 2 * math.pi * f0 * i / rate
            x[i] += level * sum(a * math.sin((h + 1) * t + p) for h, (a, p) in enumerate(zip(amps, phases)))
        info["drone"] = {"f0": round(f0, 2), "harmonics": harmonics}
    peak = max(abs(v) for v in x) or 1.0
    return [0.8 * v / peak for v in x], info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=23)
    args = ap.parse_args()
    # scripts/make-speech-corpus.py's generators and WAV writer (its file name is not importable).
    corpus = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "make-speech-corpus.py"))
    rate = corpus["RATE"]
    manifest = []
    for i in range(args.files):
        rng = random.Random(args.seed * 100003 + i)  # each clip reproducible on its own
        x, info = clip(int(args.seconds * rate), rng, rate, corpus)
        name = f"random_{i:03d}.wav"
        corpus["write_wav"](os.path.join(args.out, name), x)
        manifest.append({"file": name, **info})
        print(f"{name}: {info}", flush=True)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"seed": args.seed, "seconds": args.seconds, "clips": manifest}, f, indent=1)


if __name__ == "__main__":
    main()
