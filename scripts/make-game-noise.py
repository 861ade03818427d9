#!/usr/bin/env python3
"""Held-out *validation* noise from a source that no training, validation or test noise so far came from: the sound
effects three Debian game-data packages ship (GPL-2+/GPL-3+). Five types, each clip built from one type only, so
validation can be read type by type:

  slide      extremetuxracer-data: recorded friction textures (snow, ice, mud, leaves, grass, rock slides)
  machinery  warzone2100-data: vehicle engines, hovers, VTOL jets, tracks, pumps, power-plant hum, steam
  gunfire    warzone2100-data: machine guns, cannons, lasers, flamethrower, mortars, construction tools
  blast      warzone2100-data: explosions, ricochets, collapsing buildings
  colobot    colobot-common-sounds: the robots' motors, tools, impacts and ambiences (mixed)

Each 8-second clip is a run of recordings of its type picked at random, resampled to 16 kHz, at random gains
(+-6 dB), joined with 20 ms cross-fades (as scripts/make-opensfx-noise.py does). Speech-like effects (screams,
cries for help), interface beeps and blips under half a second are left out.

Keep these clips out of training: they exist to choose between models on noise types nothing was tuned on. Mix
them with the validation voices by `scripts/make-val-pairs.py CORPUS OUT --noise OUT_OF_THIS --count 40`.

Needs: apt-get install extremetuxracer-data warzone2100-data colobot-common-sounds sox unzip
Usage: scripts/make-game-noise.py OUT [--per-type 4] [--seconds 8] [--seed 31]
"""

import argparse
import glob
import json
import os
import random
import runpy
import subprocess
import sys
import tempfile

ETR = "/usr/share/games/etr/sounds"
WZ = "/usr/share/games/warzone2100/base.wz"
COLOBOT = "/usr/share/games/colobot/sounds"
WZ_TYPES = {
    "machinery": ["audio/sfx/vehicle/", "audio/sfx/building/"],
    "gunfire": ["audio/sfx/weapons/"],
    "blast": ["audio/sfx/explons/"],
}
PACKAGES = {ETR: "extremetuxracer-data", WZ: "warzone2100-data", COLOBOT: "colobot-common-sounds"}


def sources(tmp):
    """{type: [sound file]}; warzone2100's effects are unzipped from its base.wz archive into tmp."""
    for path, package in PACKAGES.items():
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: apt-get install {package}")
    subprocess.run(["unzip", "-q", "-o", WZ, "audio/sfx/*", "-d", tmp], check=True)
    found = {"slide": sorted(glob.glob(os.path.join(ETR, "*_slide.wav")))}
    for kind, dirs in WZ_TYPES.items():
        found[kind] = sorted(f for d in dirs for f in glob.glob(os.path.join(tmp, d, "*.ogg")))
    found["colobot"] = sorted(glob.glob(os.path.join(COLOBOT, "sound*.wav")))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--per-type", type=int, default=4, help="clips of each type")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=31)
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    corpus = runpy.run_path(os.path.join(here, "make-speech-corpus.py"))
    # Clips are stitched as the OpenSFX ones are (that file's name is not importable either).
    stitch = runpy.run_path(os.path.join(here, "make-opensfx-noise.py"))["stitch"]
    rate = corpus["RATE"]
    rng = random.Random(args.seed)
    n, fade = int(args.seconds * rate), int(0.02 * rate)
    manifest = {"seed": args.seed, "packages": sorted(PACKAGES.values()), "types": {}, "files": []}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, files in sources(tmp).items():
            sounds = []
            for k, src in enumerate(files):
                dst = os.path.join(tmp, f"{kind}-{k}.wav")
                corpus["to_16k"](src, dst)
                _, x = corpus["read_wav"](dst)
                # Blips under half a second are too short to be a noise background.
                if len(x) >= rate // 2 and max(abs(v) for v in x) > 1e-3:
                    sounds.append((os.path.basename(src), x))
            manifest["types"][kind] = [name for name, _ in sounds]
            for i in range(args.per_type):
                out, used = stitch([x for _, x in sounds], n, fade, rng)
                name = f"{kind}_{i:03d}.wav"
                corpus["write_wav"](os.path.join(args.out, name), out)
                manifest["files"].append({"file": name, "recordings": [sounds[k][0] for k in used]})
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    counts = ", ".join(f"{k} {len(v)}" for k, v in manifest["types"].items())
    print(f"{len(manifest['files'])} clips written to {args.out} from {counts} recordings")


if __name__ == "__main__":
    main()
