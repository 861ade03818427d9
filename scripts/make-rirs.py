#!/usr/bin/env python3
"""Simulated room impulse responses for `diffuse audio train --task dereverb --rirs DIR` and for reverberant
test mixtures: shoebox rooms by the image-source method of PyPI `pyroomacoustics` (pip install pyroomacoustics).

Each room, drawn independently from the split's own seed (train, val and test never share a room):
  size        width 3-10 m, depth 3-8 m, height 2.5-4 m;
  RT60        uniform 0.2-1.0 s (SGMSE+'s WSJ0-Reverb uses 0.4-1.0; the lower end adds the small rooms of use),
              turned into wall absorption and reflection order by Sabine's formula (pyroomacoustics.inverse_sabine);
  talker, mic at least 0.5 m from every wall, 1-2 m above the floor, 0.5-4 m apart.
The response is cut 1.2 RT60 after its direct path (it has decayed by about 70 dB there) and written as 16-bit
16 kHz mono WAV, scaled to a peak of 0.9 (the training mixer normalises by the mixture's peak anyway).
OUT/SPLIT/room-NNNN.wav plus OUT/SPLIT/rooms.json with every room's parameters.

Usage: scripts/make-rirs.py OUT [--train 400] [--val 40] [--test 40]
"""

import argparse
import json
import os
import random
import wave

import numpy as np
import pyroomacoustics as pra

RATE = 16000
SEEDS = {"train": 101, "val": 202, "test": 303}


def draw_room(rng):
    dims = [rng.uniform(3, 10), rng.uniform(3, 8), rng.uniform(2.5, 4)]
    rt60 = rng.uniform(0.2, 1.0)
    for _ in range(1000):
        src = [rng.uniform(0.5, d - 0.5) for d in dims[:2]] + [rng.uniform(1, 2)]
        mic = [rng.uniform(0.5, d - 0.5) for d in dims[:2]] + [rng.uniform(1, 2)]
        dist = float(np.linalg.norm(np.subtract(src, mic)))
        if 0.5 <= dist <= 4:
            return dims, rt60, src, mic, dist
    raise RuntimeError("no talker/mic placement found")


def simulate(dims, rt60, src, mic):
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=RATE, materials=pra.Material(absorption), max_order=max_order)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    h = np.asarray(room.rir[0][0], dtype=np.float64)
    peak = int(np.argmax(np.abs(h)))
    h = h[: peak + int(1.2 * rt60 * RATE)]
    return h / np.max(np.abs(h)) * 0.9


def write_wav(path, x):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(x, -1, 1) * 32767).round().astype("<i2").tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--val", type=int, default=40)
    ap.add_argument("--test", type=int, default=40)
    args = ap.parse_args()
    for split, count in [("train", args.train), ("val", args.val), ("test", args.test)]:
        rng = random.Random(SEEDS[split])
        folder = os.path.join(args.out, split)
        os.makedirs(folder, exist_ok=True)
        rooms = []
        for i in range(count):
            dims, rt60, src, mic, dist = draw_room(rng)
            name = f"room-{i:04d}.wav"
            write_wav(os.path.join(folder, name), simulate(dims, rt60, src, mic))
            rooms.append({"file": name, "size_m": dims, "rt60_s": rt60, "talker": src, "mic": mic, "distance_m": dist})
        with open(os.path.join(folder, "rooms.json"), "w") as f:
            json.dump(rooms, f, indent=1)
        print(f"{split}: {count} rooms in {folder}")


if __name__ == "__main__":
    main()
