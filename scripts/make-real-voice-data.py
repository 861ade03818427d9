#!/usr/bin/env python3
"""Real recorded voices and everyday noises for training the speech model (issue 22), from Debian packages that
the use-like test set (scripts/make-uselike-test.py: asterisk, KLettres, alsa-utils, KTuberling, colobot, ASC,
Bos Wars) does not use.

  voices  Hedgewars' voice packs (about 15 actors, several languages: short lines, shouts and laughs) and
          Warzone 2100's recorded voices (tutorial narrator, mission messages, commander and VTOL radio).
          The effect-processed 'Robot' pack is left out. Short clips of one pack are joined into utterances of
          2-6 s with natural pauses, so that a crop holds speech and gaps as real use does.
  noise   music (Hedgewars' soundtrack), machinery (Warzone's vehicle, weapon, building and explosion sounds,
          Hedgewars' effects) and babble (4-7 overlapping training voices), in clips of 8 s.

Voices and music tracks are split before anything is trained: validation uses the packs and tracks in
VAL_PACKS / VAL_TRACKS only. OUT/val/pairs holds fixed validation mixtures (SNR uniform in [-5, 15] dB, one per
noise family in turn, plus the corpus's synthetic validation noise when --val-noise is given).

Layout of OUT (16-bit mono 16 kHz WAV): train/clean, train/noise, val/clean, val/noise, val/pairs/{clean,noisy},
manifest.json (every file with its sources), val/pairs/manifest.json (family and SNR of each pair).

Needs: apt-get install hedgewars-data warzone2100-data ffmpeg unzip; NumPy. With the packages unpacked elsewhere
(dpkg -x), pass each unpacked root with --root.
Usage: scripts/make-real-voice-data.py OUT [--root DIR ...] [--val-noise DIR] [--seed S]
"""

import argparse
import glob
import json
import os
import random
import runpy
import subprocess
import tempfile

import numpy as np

RATE = 16000
HEDGEWARS = "usr/share/games/hedgewars/Data"
WARZONE = "usr/share/games/warzone2100/base.wz"
WARZONE_VOICES = ["audio/tutorial", "audio/extra", "audio/memressp/missmesg", "audio/memressp/cmndrvoc",
                  "audio/memressp/console", "audio/vtoltalk", "audio/countdown", "audio/memressp/research",
                  "audio/memressp/detect"]
WARZONE_MACHINES = ["audio/sfx/vehicle", "audio/sfx/weapons", "audio/sfx/building", "audio/sfx/explons"]
LEFT_OUT_PACKS = {"Robot"}
# Validation voices: three Hedgewars packs and Warzone's VTOL radio; validation music: three tracks.
VAL_PACKS = {"British", "Russian_pl", "Surfer", "wz:audio/vtoltalk"}
VAL_TRACKS = {"Beach.ogg", "Golf.ogg", "snow.ogg"}


# The use-like test's reader and writer (ffmpeg to 16 kHz mono; 16-bit WAV).
USELIKE = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "make-uselike-test.py"))
write_wav = USELIKE["write_wav"]


def decode(path):
    """Any file ffmpeg reads, as 16 kHz mono float32."""
    return USELIKE["decode"](path).astype(np.float32)


def trim(x, floor_db=-40.0):
    """`x` without leading and trailing quiet (20 ms frames below floor_db of the loudest frame)."""
    f = 320
    n = len(x) // f
    if n == 0:
        return x[:0]
    e = np.sqrt(np.mean(x[: n * f].reshape(n, f) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(20 * np.log10(e / e.max()) > floor_db)[0]
    return x[loud[0] * f: (loud[-1] + 1) * f] if len(loud) else x[:0]


def find(roots, pattern):
    for r in roots:
        hits = sorted(glob.glob(os.path.join(r, pattern)))
        if hits:
            return hits
    return []


def warzone_members(roots, folders, tmp):
    """Warzone's .ogg members under `folders` of base.wz, extracted to tmp: {folder: [paths]}."""
    wz = find(roots, WARZONE)
    if not wz:
        return {}
    names = subprocess.run(["unzip", "-Z1", wz[0]], check=True, capture_output=True, text=True).stdout.split()
    out = {}
    for folder in folders:
        members = [n for n in names if n.startswith(folder + "/") and n.endswith(".ogg") and n.count("/") ==
                   folder.count("/") + 1]
        if members:
            subprocess.run(["unzip", "-q", "-o", wz[0], *members, "-d", tmp], check=True)
            out[folder] = [os.path.join(tmp, m) for m in members]
    return out


def voice_packs(roots, tmp):
    """{pack name: [trimmed clips]} of every voice source."""
    packs = {}
    for d in find(roots, HEDGEWARS + "/Sounds/voices/*"):
        name = os.path.basename(d)
        if name in LEFT_OUT_PACKS:
            continue
        packs[name] = [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".ogg")]
    for folder, files in warzone_members(roots, WARZONE_VOICES, tmp).items():
        packs["wz:" + folder] = files
    clips = {}
    for name, files in packs.items():
        cs = [trim(decode(f)) for f in files]
        clips[name] = [c for c in cs if len(c) >= RATE // 4]
    return {k: v for k, v in clips.items() if v}


def utterance(clips, rng, seconds):
    """Clips of one pack joined with pauses of 0.1-0.5 s until `seconds` are filled."""
    parts, n = [], 0
    while n < seconds * RATE:
        c = clips[rng.randrange(len(clips))]
        c = c / max(np.sqrt(np.mean(c ** 2)), 1e-6) * 0.1
        gap = np.zeros(int(RATE * rng.uniform(0.1, 0.5)), dtype=np.float32)
        parts += [c, gap]
        n += len(c) + len(gap)
    x = np.concatenate(parts[:-1])
    return x / max(np.abs(x).max(), 1e-6) * 0.9


def loop_clips(sounds, rng, seconds):
    """Sounds laid end to end (random order, random gaps, overlapping tails) for `seconds`."""
    n = int(seconds * RATE)
    out = np.zeros(n, dtype=np.float32)
    pos = 0
    while pos < n:
        s = sounds[rng.randrange(len(sounds))]
        s = s / max(np.abs(s).max(), 1e-6) * rng.uniform(0.3, 1.0)
        end = min(n, pos + len(s))
        out[pos:end] += s[: end - pos]
        pos += max(int(len(s) * rng.uniform(0.3, 1.0)), RATE // 10)
    return out / max(np.abs(out).max(), 1e-6) * 0.9


def babble(clips_by_pack, rng, seconds):
    n = int(seconds * RATE)
    out = np.zeros(n, dtype=np.float32)
    for _ in range(rng.randint(4, 7)):
        pack = rng.choice(sorted(clips_by_pack))
        u = utterance(clips_by_pack[pack], rng, seconds)[:n]
        out[: len(u)] += u * rng.uniform(0.5, 1.0)
    return out / max(np.abs(out).max(), 1e-6) * 0.9


def music_clips(tracks, rng, count, seconds):
    out = []
    for i in range(count):
        x = tracks[i % len(tracks)]
        start = rng.randrange(max(1, len(x) - int(seconds * RATE)))
        out.append(x[start: start + int(seconds * RATE)])
    return out


def mix(clean, noise, snr, rng):
    if len(noise) < len(clean):
        noise = np.tile(noise, len(clean) // len(noise) + 1)
    start = rng.randrange(len(noise) - len(clean) + 1)
    nz = noise[start: start + len(clean)]
    k = np.sqrt(np.mean(clean ** 2) / (np.mean(nz ** 2) * 10 ** (snr / 10) + 1e-20))
    noisy = clean + k * nz
    g = 0.9 / max(np.abs(noisy).max(), 1e-6)
    return clean * g, noisy * g


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--root", action="append", default=None, help="an unpacked package root (default /)")
    ap.add_argument("--train", type=int, default=900, help="training utterances")
    ap.add_argument("--val", type=int, default=60, help="validation utterances")
    ap.add_argument("--val-pairs", type=int, default=32)
    ap.add_argument("--val-noise", help="more validation noise (e.g. the corpus's val/noise)")
    ap.add_argument("--seed", type=int, default=2031)
    args = ap.parse_args()
    roots = args.root or ["/"]
    rng = random.Random(args.seed)
    manifest = {"seed": args.seed, "files": []}
    with tempfile.TemporaryDirectory() as tmp:
        packs = voice_packs(roots, tmp)
        machines = warzone_members(roots, WARZONE_MACHINES, tmp)
        machine_sounds = [trim(decode(f)) for fs in machines.values() for f in fs]
        machine_sounds += [trim(decode(f)) for f in find(roots, HEDGEWARS + "/Sounds/*.ogg")]
    machine_sounds = [s for s in machine_sounds if len(s) >= RATE // 10]
    if not packs:
        raise SystemExit("no voices found: apt-get install hedgewars-data warzone2100-data (or pass --root)")
    tracks = {os.path.basename(f): f for f in find(roots, HEDGEWARS + "/Music/*.ogg")}
    split = {"train": {k: v for k, v in packs.items() if k not in VAL_PACKS},
             "val": {k: v for k, v in packs.items() if k in VAL_PACKS}}
    manifest["packs"] = {s: {k: len(v) for k, v in p.items()} for s, p in split.items()}
    for s, count in [("train", args.train), ("val", args.val)]:
        names = sorted(split[s])
        for i in range(count):
            pack = names[i % len(names)]
            path = os.path.join(args.out, s, "clean", f"{s}_{i:04d}.wav")
            write_wav(path, utterance(split[s][pack], rng, rng.uniform(2.0, 6.0)))
            manifest["files"].append({"file": os.path.relpath(path, args.out), "voice": pack})
    # Noise: music tracks split by name, machinery sounds split in halves by order, babble by voice split.
    music = {s: [decode(f) for n, f in sorted(tracks.items()) if (n in VAL_TRACKS) == (s == "val")]
             for s in ["train", "val"]}
    rng.shuffle(machine_sounds)
    half = len(machine_sounds) * 4 // 5
    machinery = {"train": machine_sounds[:half], "val": machine_sounds[half:]}
    counts = {"train": 40, "val": 6}
    noises = {"train": [], "val": []}
    for s in ["train", "val"]:
        fam = {"music": music_clips(music[s], rng, counts[s], 8.0),
               "machinery": [loop_clips(machinery[s], rng, 8.0) for _ in range(counts[s])],
               "babble": [babble(split[s], rng, 8.0) for _ in range(counts[s])]}
        for family, clips in fam.items():
            for i, x in enumerate(clips):
                path = os.path.join(args.out, s, "noise", f"{family}_{i:03d}.wav")
                write_wav(path, x)
                noises[s].append((family, x))
                manifest["files"].append({"file": os.path.relpath(path, args.out), "noise": family})
    if args.val_noise:
        for f in sorted(glob.glob(os.path.join(args.val_noise, "*.wav"))):
            noises["val"].append(("corpus-" + os.path.basename(f).split("_")[0], decode(f)))
    val_clean = sorted(glob.glob(os.path.join(args.out, "val", "clean", "*.wav")))
    families = sorted({f for f, _ in noises["val"]})
    pairs = []
    for i in range(args.val_pairs):
        fam = families[i % len(families)]
        pool = [x for f, x in noises["val"] if f == fam]
        c = decode(val_clean[rng.randrange(len(val_clean))])
        snr = rng.uniform(-5.0, 15.0)
        c, y = mix(c, pool[rng.randrange(len(pool))], snr, rng)
        name = f"{fam}-{i:02d}.wav"
        write_wav(os.path.join(args.out, "val", "pairs", "clean", name), c)
        write_wav(os.path.join(args.out, "val", "pairs", "noisy", name), y)
        manifest["files"].append({"file": f"val/pairs/noisy/{name}", "noise": fam, "snr_db": snr})
        pairs.append({"name": name[:-4], "family": fam, "snr_db": snr})
    with open(os.path.join(args.out, "val", "pairs", "manifest.json"), "w") as f:
        json.dump(pairs, f, indent=1)  # the form tools/family_table.py reads
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{args.out}: {len(manifest['files'])} files; voices {manifest['packs']}")


if __name__ == "__main__":
    main()
