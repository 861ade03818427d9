#!/usr/bin/env python3
"""More *training* music noise (issue 22): stretches of the soundtracks of three Debian game packages that no
validation or test noise comes from (the use-like test's music is colobot's and asc-music's; validation's is
three Hedgewars tracks, scripts/make-real-voice-data.py):

  wesnoth-1.16-music  orchestral and folk (41 tracks)
  pingus-data         tracker music, electronic and chiptune (20 modules)
  lincity-ng-data     electronic and blues (3 tracks)

Every track gives --per-track clips of --seconds (lincity's three give four times as many), each a random stretch
whose four quarters are all louder than -60 dBFS (no silent intro or fade), scaled to a peak of 0.9.

Needs: apt-get install wesnoth-1.16-music pingus-data lincity-ng-data ffmpeg; NumPy.
Usage: scripts/make-music-noise.py OUT [--per-track 2] [--seconds 8] [--seed 71]  → OUT/SOURCE-NN.wav
"""

import argparse
import glob
import os
import random
import runpy

import numpy as np

SOURCES = {
    "wesnoth": ("/usr/share/games/wesnoth/1.16/data/core/music/*.ogg", 1),
    "pingus": ("/usr/share/games/pingus/data/music/*.[is][t3]*", 1),
    "lincity": ("/usr/share/games/lincity-ng/music/*/*.ogg", 4),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--per-track", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=71)
    args = ap.parse_args()
    # The decoder and writer of the use-like test (that file's name is not importable).
    io = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "make-uselike-test.py"))
    rate = io["RATE"]
    n = int(args.seconds * rate)
    rng = random.Random(args.seed)
    if os.path.exists(args.out) and os.listdir(args.out):
        raise SystemExit(f"{args.out}: exists and is not empty")
    for source, (pattern, weight) in SOURCES.items():
        tracks = sorted(glob.glob(pattern))
        if not tracks:
            raise SystemExit(f"{source}: no track matches {pattern} (install its package)")
        k = 0
        for path in tracks:
            x = io["decode"](path)
            if len(x) < n:
                print(f"skipped {path}: shorter than {args.seconds} s")
                continue
            for _ in range(args.per_track * weight):
                for _attempt in range(50):
                    start = rng.randrange(len(x) - n + 1)
                    clip = x[start: start + n]
                    if min(np.sqrt(np.mean(q ** 2)) for q in np.array_split(clip, 4)) > 1e-3:
                        break
                else:
                    continue
                io["write_wav"](os.path.join(args.out, f"{source}-{k:02d}.wav"), clip * 0.9 / np.abs(clip).max())
                k += 1
        print(f"{source}: {k} clips from {len(tracks)} tracks")


if __name__ == "__main__":
    main()
