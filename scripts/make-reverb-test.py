#!/usr/bin/env python3
"""Dereverberation test pairs (issue 22): the real voices of scripts/make-uselike-test.py (asterisk, klettres,
alsa-utils; never trained on) in the held-out simulated rooms of scripts/make-rirs.py (its test split), one
utterance per room, no added noise (as WSJ0-Reverb). Two targets per pair, as `diffuse audio train --task
dereverb` defines them: the direct path alone (SGMSE+'s target) and the direct path with the first 50 ms of
reflections (the DNS Challenge's, and the shipped dereverberation model's).

With `--example WAV --room NAME` it reverberates one given file in one of the rooms instead (the README's
example: examples/audio/clean/speech.wav in room-0009, RT60 0.57 s, talker 1.36 m from the microphone).

With `--voices DIR` the utterances are DIR's WAV files (one per room, in a seeded order) instead: the validation
pairs that a dereverberation model is chosen on, e.g. scripts/make-real-voice-data.py's val/clean voices in the
validation rooms (RIRS/val), so that the test voices and rooms only measure.

Usage: scripts/make-reverb-test.py OUT --rooms RIRS/test [--seed 71] [--voices DIR]
       → OUT/noisy/NAME.wav, OUT/clean-direct/NAME.wav, OUT/clean-early50/NAME.wav, OUT/manifest.json
       scripts/make-reverb-test.py OUT --rooms RIRS/test --example WAV --room room-0009.wav
       → OUT/reverberant/NAME.wav, OUT/reverberant-clean/NAME.wav (the 50 ms target)
"""
import argparse
import glob
import json
import os
import random
import runpy
import wave

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
USELIKE = runpy.run_path(os.path.join(HERE, "make-uselike-test.py"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--rooms", required=True)
    ap.add_argument("--seed", type=int, default=71)
    ap.add_argument("--voices", help="take each room's utterance from this folder of WAV files (validation)")
    ap.add_argument("--example", help="reverberate this one WAV file (16 kHz mono) instead")
    ap.add_argument("--room", help="the room of --example (a file name in --rooms)")
    args = ap.parse_args()
    if args.example:
        with wave.open(args.example) as w:
            x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
        with wave.open(os.path.join(args.rooms, args.room)) as w:
            h = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
        early, wet = USELIKE["reverberate"](x, h, keep=int(0.05 * USELIKE["RATE"]))
        scale = min(1.0, 0.9 / max(np.max(np.abs(wet)), np.max(np.abs(early)), 1e-9))
        name = os.path.basename(args.example)
        USELIKE["write_wav"](os.path.join(args.out, "reverberant", name), wet * scale)
        USELIKE["write_wav"](os.path.join(args.out, "reverberant-clean", name), early * scale)
        return
    rng = random.Random(args.seed)
    rooms = sorted(glob.glob(os.path.join(args.rooms, "*.wav")))
    if args.voices:
        sources = USELIKE["files"]([os.path.join(args.voices, "*.wav")])
        rng.shuffle(sources)
        sources = sources[: len(rooms)]
        utterance = USELIKE["decode"]
    else:
        speech = {k: USELIKE["files"]([p]) for k, p in USELIKE["SPEECH"].items()}
        sources = sorted(speech)
        utterance = lambda source: USELIKE["utterance"](rng, source, speech[source])
    info = {r["file"]: r for r in json.load(open(os.path.join(args.rooms, "rooms.json")))}
    manifest = []
    for i, room in enumerate(rooms):
        source = sources[i % len(sources)]
        x = utterance(source)
        with wave.open(room) as w:
            h = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
        direct, wet = USELIKE["reverberate"](x, h)
        early, _ = USELIKE["reverberate"](x, h, keep=int(0.05 * USELIKE["RATE"]))
        scale = min(1.0, 0.9 / max(np.max(np.abs(wet)), np.max(np.abs(early)), 1e-9))
        name = f"room-{i:02d}"
        for folder, sig in [("noisy", wet), ("clean-direct", direct), ("clean-early50", early)]:
            USELIKE["write_wav"](os.path.join(args.out, folder, name + ".wav"), sig * scale)
        r = info[os.path.basename(room)]
        manifest.append({"name": name, "speech": os.path.basename(source), "room": os.path.basename(room),
                         "rt60_s": r["rt60_s"], "distance_m": r["distance_m"]})
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{len(rooms)} pairs in {args.out}")


if __name__ == "__main__":
    main()
