#!/usr/bin/env python3
"""Builds the offline speech-enhancement corpus used to train and test diffuse's default audio model.

Everything comes from Debian packages and this script (no downloads at run time):
  clean speech  synthesized by espeak-ng (voices x variants), flite and festival (diphone and HTS voices) from
                sentences this script composes, at varied speed and pitch, plus the real voice recordings
                that alsa-utils ships (/usr/share/sounds/alsa, test split only);
  noise         generated here (white, brown, violet, band-pass, mains hum with harmonics, clicks, babble of
                other utterances, pink, crackle, fan/engine rumble) and the recorded noise alsa-utils ships.
Voices and noise types are held out: validation and test use voices and noise types never seen in training.

Layout of OUT (all 16-bit mono WAV; noise of the 'recorded' type keeps its 48 kHz rate):
  train/clean, train/noise, val/clean, val/noise, test/clean, test/noise,
  test/pairs/{clean,noisy}: fixed test mixtures at 0-10 dB SNR (for `diffuse audio eval` / `bench`),
  manifest.json: every file with its voice, text, speed, pitch or noise type.

Needs: apt-get install espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
       alsa-utils sox   (install them yourself; this script never installs anything)
Usage: scripts/make-speech-corpus.py OUT [--train N] [--val N] [--test N] [--seed S]
"""

import argparse
import array
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import wave

RATE = 16000

# ---------------------------------------------------------------------------------------------- voices
ESPEAK_BASES = ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
ESPEAK_VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                   "klatt3", "croak", "Andy", "annie", "belinda", "benjamin", "david", "john", "linda", "max",
                   "michel", "paul", "robert", "steph", "travis", "victor", "zac", "shelby", "grandma"]

# Held-out voices: (engine, base, variant). Everything else is training material.
VAL_VOICES = {("espeak", "en-gb-x-rp", "f2"), ("espeak", "en-us", "m5"), ("espeak", "en", "steph"),
              ("flite", "rms", ""), ("festival", "ked_diphone", "")}
TEST_VOICES = {("espeak", "en-029", "f4"), ("espeak", "en-gb-scotland", "m3"), ("espeak", "en-us", "linda"),
               ("espeak", "en-gb-x-gbclan", "david"), ("flite", "slt", ""),
               ("festival", "cmu_us_slt_arctic_hts", "")}
FLITE_VOICES = ["kal16", "awb", "rms", "slt", "kal"]
FESTIVAL_VOICES = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]

# ---------------------------------------------------------------------------------------------- texts
SUBJECTS = ["the old man", "my sister", "a small dog", "the engineer", "our neighbour", "the teacher", "a tired pilot",
            "the children", "his brother", "the doctor", "a young farmer", "the waiter", "her friend", "the captain",
            "every student", "the baker", "a quiet girl", "the mayor", "two sailors", "the driver"]
VERBS = ["carried", "painted", "found", "opened", "repaired", "sold", "watched", "described", "cleaned", "counted",
         "ordered", "forgot", "borrowed", "measured", "delivered", "hid", "packed", "tested", "chose", "dropped"]
OBJECTS = ["a heavy box", "the blue door", "seven apples", "the broken clock", "a long letter", "the garden gate",
           "three warm blankets", "the kitchen table", "a silver spoon", "the wooden bridge", "an empty bottle",
           "the morning paper", "a bag of rice", "the red bicycle", "nine candles", "the wet umbrella",
           "a map of the city", "the last ticket", "a jar of honey", "the stone wall"]
PLACES = ["near the station", "before dinner", "in the rain", "after the meeting", "on a cold morning",
          "behind the school", "at the market", "by the river", "during the storm", "in the evening",
          "at the harbour", "under the bridge", "on the top floor", "next to the church", "in the afternoon"]
QUESTIONS = ["Did you see where {s} went?", "Why would {s} leave so early?", "How many {o} are left?",
             "Could you ask {s} to call me back?", "Is it true that {s} {v} {o}?"]
EXTRAS = ["The train leaves at {n} past {h}.", "Please write down the number {n}{n2}.",
          "It was {n} degrees outside and nobody cared.", "We walked {n} miles along the coast.",
          "The price went up by {n} percent last year.", "Room {n}{n2} is at the end of the hall."]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
           "fifteen", "twenty", "thirty", "forty"]


def sentence(rng):
    k = rng.random()
    s, v, o, p = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(PLACES)
    if k < 0.55:
        text = f"{s.capitalize()} {v} {o} {p}."
    elif k < 0.75:
        text = rng.choice(QUESTIONS).format(s=s, v=v, o=o.split(" ", 1)[-1])
    elif k < 0.9:
        text = rng.choice(EXTRAS).format(n=rng.choice(NUMBERS), n2=rng.choice(NUMBERS), h=rng.choice(NUMBERS))
    else:
        text = f"{s.capitalize()} {v} {o}, and then {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
    return text


# ---------------------------------------------------------------------------------------------- WAV helpers
def read_wav(path):
    with wave.open(path, "rb") as w:
        assert w.getsampwidth() == 2, path
        rate, ch = w.getframerate(), w.getnchannels()
        data = array.array("h", w.readframes(w.getnframes()))
    if ch > 1:
        data = array.array("h", (int(sum(data[i:i + ch]) / ch) for i in range(0, len(data), ch)))
    return rate, [v / 32768.0 for v in data]


def write_wav(path, samples, rate=RATE):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    peak = max(1e-9, max(abs(v) for v in samples))
    scale = 0.9 / peak if peak > 0.9 else 1.0
    data = array.array("h", (max(-32768, min(32767, int(round(v * scale * 32767)))) for v in samples))
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())


def to_16k(src, dst, extra=()):
    """sox: mono, 16 kHz, 16 bit, optional effects (tempo, trimming silence). -R: the same dither on every run, so
    outputs are reproducible byte for byte."""
    subprocess.run(["sox", "-R", src, "-r", str(RATE), "-c", "1", "-b", "16", dst, *extra], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------------- synthesis
def synthesize(voice, text, speed, pitch, out, tmp):
    engine, base, variant = voice
    raw = os.path.join(tmp, "raw.wav")
    if engine == "espeak":
        name = base + (f"+{variant}" if variant else "")
        subprocess.run(["espeak-ng", "-v", name, "-s", str(int(175 * speed)), "-p", str(pitch), "-w", raw, text],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        effects = []
    elif engine == "flite":
        subprocess.run(["flite", "-voice", base, "-t", text, "-o", raw], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        effects = ["tempo", f"{speed:.3f}", "pitch", str((pitch - 50) * 6)]
    else:
        txt = os.path.join(tmp, "t.txt")
        with open(txt, "w") as f:
            f.write(text)
        subprocess.run(["text2wave", "-eval", f"(voice_{base})", txt, "-o", raw], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        effects = ["tempo", f"{speed:.3f}", "pitch", str((pitch - 50) * 6)]
    to_16k(raw, out, effects)


def all_voices():
    voices = [("espeak", b, v) for b in ESPEAK_BASES for v in ESPEAK_VARIANTS]
    voices += [("flite", v, "") for v in FLITE_VOICES]
    have = set(os.listdir("/usr/share/festival/voices/english")) | set(os.listdir("/usr/share/festival/voices/us")) \
        if os.path.isdir("/usr/share/festival/voices/us") else set()
    voices += [("festival", v, "") for v in FESTIVAL_VOICES if v in have]
    return voices


def make_speech(out, split, voices, count, rng, manifest, tmp):
    for i in range(count):
        voice = voices[i % len(voices)] if i < len(voices) else rng.choice(voices)
        text = " ".join(sentence(rng) for _ in range(rng.choice([1, 1, 2])))
        speed = rng.uniform(0.8, 1.25)
        pitch = rng.randint(25, 75)
        path = os.path.join(out, split, "clean", f"{split}_{i:05d}.wav")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            synthesize(voice, text, speed, pitch, path, tmp)
        except subprocess.CalledProcessError as e:
            print(f"warning: {voice} failed on '{text}': {e}", file=sys.stderr)
            continue
        manifest.append({"file": os.path.relpath(path, out), "voice": "/".join(x for x in voice if x),
                         "text": text, "speed": round(speed, 3), "pitch": pitch})
        if i % 100 == 0:
            print(f"{split}: {i}/{count} utterances", flush=True)


# ---------------------------------------------------------------------------------------------- noise
def white(n, rng):
    return [rng.gauss(0, 1) for _ in range(n)]


def one_pole(x, a):
    y, out = 0.0, []
    for v in x:
        y = a * y + (1 - a) * v
        out.append(y)
    return out


def brown(n, rng):
    y, out = 0.0, []
    for v in white(n, rng):
        y = 0.998 * y + 0.05 * v
        out.append(y)
    return out


def pink(n, rng):
    # Paul Kellet's economy filter: -3 dB/octave above ~20 Hz.
    b0 = b1 = b2 = 0.0
    out = []
    for w in white(n, rng):
        b0 = 0.99765 * b0 + w * 0.0990460
        b1 = 0.96300 * b1 + w * 0.2965164
        b2 = 0.57000 * b2 + w * 1.0526913
        out.append(b0 + b1 + b2 + w * 0.1848)
    return out


def violet(n, rng):
    w = white(n + 1, rng)
    return [w[i + 1] - w[i] for i in range(n)]


def biquad_bandpass(x, f0, q):
    w0 = 2 * math.pi * f0 / RATE
    alpha = math.sin(w0) / (2 * q)
    b0, b1, b2 = alpha, 0.0, -alpha
    a0, a1, a2 = 1 + alpha, -2 * math.cos(w0), 1 - alpha
    y1 = y2 = x1 = x2 = 0.0
    out = []
    for v in x:
        y = (b0 * v + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2) / a0
        x2, x1, y2, y1 = x1, v, y1, y
        out.append(y)
    return out


def bandpass(n, rng):
    return biquad_bandpass(white(n, rng), rng.uniform(300, 5000), rng.uniform(0.7, 4.0))


def hum(n, rng):
    f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.98, 1.02)
    amps = [rng.uniform(0.2, 1.0) / k ** rng.uniform(0.3, 1.2) for k in range(1, 16)]
    phases = [rng.uniform(0, 2 * math.pi) for _ in amps]
    buzz = rng.uniform(0.0, 0.3)
    return [sum(a * math.sin(2 * math.pi * f0 * (k + 1) * i / RATE + p) for k, (a, p) in enumerate(zip(amps, phases)))
            + buzz * rng.gauss(0, 1) for i in range(n)]


def clicks(n, rng):
    out = [0.01 * rng.gauss(0, 1) for _ in range(n)]
    rate = rng.uniform(2, 20)  # clicks per second
    t = 0
    while True:
        t += int(rng.expovariate(rate) * RATE) + 1
        if t >= n:
            return out
        amp, decay, f = rng.uniform(0.3, 1.0) * rng.choice([-1, 1]), rng.uniform(0.0005, 0.004), rng.uniform(500, 4000)
        for k in range(min(int(decay * RATE * 6), n - t)):
            out[t + k] += amp * math.exp(-k / (decay * RATE)) * math.cos(2 * math.pi * f * k / RATE)


def crackle(n, rng):
    out = brown(n, rng)
    out = [0.2 * v for v in out]
    for _ in range(int(n / RATE * rng.uniform(80, 300))):
        t = rng.randrange(n)
        a = rng.uniform(0.05, 0.6) * rng.choice([-1, 1])
        for k in range(min(24, n - t)):
            out[t + k] += a * math.exp(-k / 4)
    return out


def fan(n, rng):
    base = one_pole(white(n, rng), rng.uniform(0.9, 0.98))
    fm, depth = rng.uniform(2, 12), rng.uniform(0.2, 0.7)
    f0 = rng.uniform(25, 120)
    return [b * (1 + depth * math.sin(2 * math.pi * fm * i / RATE)) + 0.05 * math.sin(2 * math.pi * f0 * i / RATE)
            + 0.03 * math.sin(4 * math.pi * f0 * i / RATE) for i, b in enumerate(base)]


def siren(n, rng):
    lo, hi, period = rng.uniform(500, 900), rng.uniform(1000, 1800), rng.uniform(0.5, 3.0)
    phase, out = 0.0, []
    for i in range(n):
        f = lo + (hi - lo) * 0.5 * (1 + math.sin(2 * math.pi * i / RATE / period))
        phase += 2 * math.pi * f / RATE
        out.append(math.sin(phase) + 0.3 * math.sin(2 * phase) + 0.05 * rng.gauss(0, 1))
    return out


def babble(n, rng, speech_files):
    out = [0.0] * n
    for _ in range(rng.randint(4, 8)):
        _, s = read_wav(rng.choice(speech_files))
        start = rng.randrange(n)
        e = math.sqrt(sum(v * v for v in s) / max(1, len(s))) or 1.0
        for k, v in enumerate(s):
            out[(start + k) % n] += v / e
    return out


GENERATED = {"white": white, "brown": brown, "violet": violet, "bandpass": bandpass, "hum": hum, "clicks": clicks,
             "pink": pink, "crackle": crackle, "fan": fan, "siren": siren}
NOISE_SPLITS = {
    "train": ["white", "brown", "violet", "bandpass", "hum", "clicks", "babble"],
    "val": ["crackle", "siren"],
    "test": ["fan", "pink", "recorded"],
}


def make_noise(out, split, per_type, seconds, rng, manifest, speech_files):
    for kind in NOISE_SPLITS[split]:
        if kind == "recorded":
            src = "/usr/share/sounds/alsa/Noise.wav"
            if os.path.exists(src):
                dst = os.path.join(out, split, "noise", "recorded_alsa_noise.wav")
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy(src, dst)  # kept at its own rate (48 kHz): the loaders resample
                manifest.append({"file": os.path.relpath(dst, out), "noise": "recorded", "source": src})
            continue
        for i in range(per_type):
            n = int(seconds * RATE)
            x = babble(n, rng, speech_files) if kind == "babble" else GENERATED[kind](n, rng)
            path = os.path.join(out, split, "noise", f"{kind}_{i:03d}.wav")
            write_wav(path, x)
            manifest.append({"file": os.path.relpath(path, out), "noise": kind})
        print(f"{split}: noise {kind}", flush=True)


def mix_at_snr(c, nz, rng):
    """Clean c plus a random stretch of the noise nz at an SNR uniform in [0, 10] dB, both scaled together when the
    peak passes 0.9: (clean, noisy, snr). Also used by scripts/make-val-pairs.py."""
    start = rng.randrange(max(1, len(nz) - len(c)))
    seg = [nz[(start + k) % len(nz)] for k in range(len(c))]
    snr = rng.uniform(0, 10)
    pc = sum(v * v for v in c) / len(c)
    pn = sum(v * v for v in seg) / len(seg) or 1e-12
    k = math.sqrt(pc / (pn * 10 ** (snr / 10)))
    noisy = [a + k * b for a, b in zip(c, seg)]
    peak = max(abs(v) for v in noisy + c)
    g = 0.9 / peak if peak > 0.9 else 1.0
    return [g * v for v in c], [g * v for v in noisy], snr


def make_pairs(out, count, rng, manifest):
    """Fixed test mixtures: each test utterance with a test noise at an SNR uniform in [0, 10] dB."""
    clean_dir, noise_dir = os.path.join(out, "test", "clean"), os.path.join(out, "test", "noise")
    cleans = sorted(os.listdir(clean_dir))
    noises = []
    for f in sorted(os.listdir(noise_dir)):
        rate, x = read_wav(os.path.join(noise_dir, f))
        if rate != RATE:
            tmp = os.path.join(out, ".tmp16k.wav")
            to_16k(os.path.join(noise_dir, f), tmp)
            rate, x = read_wav(tmp)
            os.remove(tmp)
        noises.append((f, x))
    for i in range(min(count, len(cleans))):
        _, c = read_wav(os.path.join(clean_dir, cleans[i]))
        name, nz = noises[i % len(noises)]
        clean, noisy, snr = mix_at_snr(c, nz, rng)
        stem = f"pair_{i:03d}.wav"
        write_wav(os.path.join(out, "test", "pairs", "clean", stem), clean)
        write_wav(os.path.join(out, "test", "pairs", "noisy", stem), noisy)
        manifest.append({"file": f"test/pairs/noisy/{stem}", "clean": cleans[i], "noise": name, "snr_db": round(snr, 2)})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=1500, help="training utterances")
    ap.add_argument("--val", type=int, default=60)
    ap.add_argument("--test", type=int, default=60)
    ap.add_argument("--noise-files", type=int, default=12, help="files per training noise type")
    ap.add_argument("--noise-seconds", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    for tool in ["espeak-ng", "flite", "text2wave", "sox"]:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install espeak-ng flite festival festvox-kallpc16k "
                     f"festvox-kdlpc16k festvox-us-slt-hts alsa-utils sox")
    rng = random.Random(args.seed)
    voices = all_voices()
    held = VAL_VOICES | TEST_VOICES
    train_voices = [v for v in voices if v not in held]
    val_voices = [v for v in voices if v in VAL_VOICES]
    test_voices = [v for v in voices if v in TEST_VOICES]
    manifest = {"seed": args.seed, "voices": {"train": len(train_voices), "val": [list(v) for v in val_voices],
                                              "test": [list(v) for v in test_voices]},
                "noise_types": NOISE_SPLITS, "files": []}
    files = manifest["files"]
    with tempfile.TemporaryDirectory() as tmp:
        make_speech(args.out, "train", train_voices, args.train, rng, files, tmp)
        make_speech(args.out, "val", val_voices, args.val, rng, files, tmp)
        make_speech(args.out, "test", test_voices, args.test, rng, files, tmp)
    alsa = "/usr/share/sounds/alsa"
    if os.path.isdir(alsa):
        # Real recordings (one speaker): test material only.
        for f in sorted(os.listdir(alsa)):
            if f.endswith(".wav") and f != "Noise.wav":
                dst = os.path.join(args.out, "test", "clean", f"alsa_{f}")
                to_16k(os.path.join(alsa, f), dst)
                files.append({"file": os.path.relpath(dst, args.out), "voice": "alsa-utils recording", "source": f})
    def speech_of(split):
        d = os.path.join(args.out, split, "clean")
        return [os.path.join(d, f) for f in sorted(os.listdir(d))]
    make_noise(args.out, "train", args.noise_files, args.noise_seconds, rng, files, speech_of("train"))
    make_noise(args.out, "val", max(2, args.noise_files // 3), args.noise_seconds, rng, files, speech_of("val"))
    make_noise(args.out, "test", max(2, args.noise_files // 3), args.noise_seconds, rng, files, speech_of("test"))
    make_pairs(args.out, args.test, rng, files)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"corpus written to {args.out}: {len(files)} files")


if __name__ == "__main__":
    main()
