#!/usr/bin/env python3
"""Recorded training noise from OpenSFX, the field recordings Debian's openttd-opensfx package ships (wind, jets,
helicopter, chainsaw, jackhammer, sawmill, trains, buses, applause, animals, ...; CC0 / CC-BY 3.0, every credit
in OUT/credits.json): 8-second clips, each a run of recordings picked at random, resampled to 16 kHz, at random
gains (+-6 dB), joined with 20 ms cross-fades.

It widens the 7 generated training noise types of scripts/make-speech-corpus.py with real, non-stationary
recordings; pass OUT as a second `--noise` folder to `diffuse audio train`. None of these recordings is in the
validation or test sets (crackle and siren; fan rumble, pink noise and alsa-utils' Noise.wav), though some are
acoustically close to them (horns and whistles, electric sparking, wind and propellers).

Needs: apt-get install openttd-opensfx sox   (the script installs nothing)
Usage: scripts/make-opensfx-noise.py OUT [--files 24] [--seconds 8] [--seed 11] [--cat PATH]
"""

import argparse
import json
import os
import random
import runpy
import struct
import sys
import tempfile

CAT = "/usr/share/games/openttd/baseset/opensfx/opensfx.cat"


def read_cat(path):
    """(credit, RIFF bytes) of every non-empty entry. OpenTTD's .cat: a table of (offset, size) uint32 pairs, its
    length given by the first offset (high flag bits masked); each entry is a length-prefixed name, then a WAV."""
    data = open(path, "rb").read()
    count = (struct.unpack_from("<I", data, 0)[0] & 0x0FFFFFFF) // 8
    entries = []
    for i in range(count):
        off, size = struct.unpack_from("<II", data, 8 * i)
        off &= 0x0FFFFFFF
        name_len = data[off]
        credit = data[off + 1:off + 1 + name_len].rstrip(b"\0").decode("latin-1")
        body = data[off + 1 + name_len:off + size]
        if body[:4] == b"RIFF":
            entries.append((credit, body))
    return entries


def stitch(sounds, n, fade, rng):
    """n samples from a run of randomly picked sounds, each peak-normalised to 0.5 at a random gain (+-6 dB), joined
    by linear cross-fades of `fade` samples; also the indices picked. Shared with scripts/make-game-noise.py."""
    out, used = [], []
    while len(out) < n:
        idx = rng.randrange(len(sounds))
        x = sounds[idx]
        g = 10 ** (rng.uniform(-6, 6) / 20) * 0.5 / max(abs(v) for v in x)
        seg = [g * v for v in x]
        if len(out) >= fade and len(seg) > fade:
            for k in range(fade):
                w = (k + 1) / (fade + 1)
                out[len(out) - fade + k] = (1 - w) * out[len(out) - fade + k] + w * seg[k]
            seg = seg[fade:]
        out.extend(seg)
        used.append(idx)
    return out[:n], used


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--cat", default=CAT, help="OpenSFX archive (default: the openttd-opensfx package's)")
    args = ap.parse_args()
    if not os.path.exists(args.cat):
        sys.exit(f"{args.cat} is missing: apt-get install openttd-opensfx")
    # scripts/make-speech-corpus.py's WAV helpers (its file name is not importable).
    corpus = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "make-speech-corpus.py"))
    rate = corpus["RATE"]
    sounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (credit, body) in enumerate(read_cat(args.cat)):
            src, dst = os.path.join(tmp, f"{k}.wav"), os.path.join(tmp, f"{k}-16k.wav")
            with open(src, "wb") as f:
                f.write(body)
            corpus["to_16k"](src, dst)
            _, x = corpus["read_wav"](dst)
            # Blips under half a second (beeps, plops) are too short to be a noise background.
            if len(x) >= rate // 2 and max(abs(v) for v in x) > 1e-3:
                sounds.append((credit, x))
    rng = random.Random(args.seed)
    n, fade = int(args.seconds * rate), int(0.02 * rate)
    manifest = {"source": args.cat, "seed": args.seed, "recordings": len(sounds), "files": []}
    for i in range(args.files):
        out, used = stitch([x for _, x in sounds], n, fade, rng)
        name = f"opensfx_{i:03d}.wav"
        corpus["write_wav"](os.path.join(args.out, name), out)
        manifest["files"].append({"file": name, "recordings": used})
    with open(os.path.join(args.out, "credits.json"), "w") as f:
        json.dump({**manifest, "credits": [c for c, _ in sounds]}, f, indent=1)
    print(f"{args.files} clips from {len(sounds)} OpenSFX recordings written to {args.out}")


if __name__ == "__main__":
    main()
