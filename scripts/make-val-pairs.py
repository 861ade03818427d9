#!/usr/bin/env python3
"""Fixed validation mixtures for choosing a model's default sampler (and between candidate models) without
touching the test pairs: every second clip of CORPUS/val/clean with the 16 kHz validation noises in turn, mixed as
the test pairs are (scripts/make-speech-corpus.py: SNR uniform in [0, 10] dB, scaled together when the peak passes
0.9).

The validation voices and noise types are held out from training and differ from the test ones.
docs/audio.md and docs/benchmarks.md call these "the 24 validation mixtures".

Usage: scripts/make-val-pairs.py CORPUS OUT [--count 24] [--seed 7]   → OUT/clean/vNN.wav, OUT/noisy/vNN.wav
"""

import argparse
import importlib.util
import os
import random


def corpus_module():
    """scripts/make-speech-corpus.py (its name is not importable), for its WAV helpers and mixing."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make-speech-corpus.py")
    spec = importlib.util.spec_from_file_location("make_speech_corpus", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    corpus = corpus_module()
    rng = random.Random(args.seed)
    val = os.path.join(args.corpus, "val")
    cleans = sorted(os.listdir(os.path.join(val, "clean")))
    noises = []
    for f in sorted(os.listdir(os.path.join(val, "noise"))):
        rate, x = corpus.read_wav(os.path.join(val, "noise", f))
        if rate == corpus.RATE:
            noises.append(x)
    if not noises or len(cleans) < 2 * args.count - 1:
        raise SystemExit(f"{val}: need 16 kHz noise and {2 * args.count - 1} clean clips")
    for i in range(args.count):
        _, c = corpus.read_wav(os.path.join(val, "clean", cleans[2 * i]))
        clean, noisy, _ = corpus.mix_at_snr(c, noises[i % len(noises)], rng)
        corpus.write_wav(os.path.join(args.out, "clean", f"v{i:02d}.wav"), clean)
        corpus.write_wav(os.path.join(args.out, "noisy", f"v{i:02d}.wav"), noisy)


if __name__ == "__main__":
    main()
