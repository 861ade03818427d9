#!/usr/bin/env python3
"""Fixed validation mixtures for choosing a model's default sampler (and between candidate models) without
touching the test pairs: every second clip of CORPUS/val/clean (for a --count past half of them, then the clips in
between) with the 16 kHz validation noises in turn, mixed as the test pairs are (scripts/make-speech-corpus.py: SNR
uniform in [0, 10] dB, scaled together when the peak passes 0.9).

The validation voices and noise types are held out from training and differ from the test ones.
docs/audio.md and docs/benchmarks.md call these "the 24 validation mixtures".

`--split test` draws fresh mixtures of the test voices and 16 kHz test noises (fan, pink; the 48 kHz recording is
left out) to check a figure measured on the fixed test pairs. With `--noise DIR` the noise clips come from DIR
instead of CORPUS/SPLIT/noise, e.g. unseen draws of scripts/make-random-noise.py (`--seed 29`): "validation voices
in randomised noise"; or the held-out recorded game effects of scripts/make-game-noise.py (`--count 40`).

Usage: scripts/make-val-pairs.py CORPUS OUT [--count 24] [--seed 7] [--noise DIR] [--split val|test]
       → OUT/clean/vNN.wav, OUT/noisy/vNN.wav
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
    ap.add_argument("--noise", help="folder of noise clips (default: CORPUS/SPLIT/noise)")
    ap.add_argument("--split", default="val", choices=["val", "test"],
                    help="voices and noises of this split (test: fresh mixtures besides the fixed test pairs)")
    args = ap.parse_args()
    corpus = corpus_module()
    rng = random.Random(args.seed)
    split_dir = os.path.join(args.corpus, args.split)
    cleans = sorted(os.listdir(os.path.join(split_dir, "clean")))
    noise_dir = args.noise or os.path.join(split_dir, "noise")
    noises = []
    for f in sorted(n for n in os.listdir(noise_dir) if n.endswith(".wav")):
        rate, x = corpus.read_wav(os.path.join(noise_dir, f))
        if rate == corpus.RATE:
            noises.append(x)
    if not noises or len(cleans) < args.count:
        raise SystemExit(f"{split_dir}, {noise_dir}: need 16 kHz noise and {args.count} clean clips")
    for i in range(args.count):
        # Every second clip, then (past the end) the ones in between: distinct clips up to len(cleans).
        k = 2 * i if 2 * i < len(cleans) else 2 * i - len(cleans) + 1
        _, c = corpus.read_wav(os.path.join(split_dir, "clean", cleans[k]))
        clean, noisy, _ = corpus.mix_at_snr(c, noises[i % len(noises)], rng)
        corpus.write_wav(os.path.join(args.out, "clean", f"v{i:02d}.wav"), clean)
        corpus.write_wav(os.path.join(args.out, "noisy", f"v{i:02d}.wav"), noisy)


if __name__ == "__main__":
    main()
