#!/usr/bin/env python3
"""The use-like speech test set (issue 22): real recorded voices from Debian packages in noises of everyday
families, at SNR uniform in [-5, 15] dB, some in reverberant rooms. Fixed before any model was trained on the
new data; it is scored, never used to choose anything (choices stay on the validation split).

Speech (real recordings only; nothing synthesized; no package here feeds training or validation):
  asterisk-core-sounds-{en,es,fr}-g722  telephone prompts by three professional speakers, 16 kHz wideband G.722
  klettres-data                         letters and syllables read by native speakers of 20-odd languages
  alsa-utils                            the speaker-test voice (/usr/share/sounds/alsa/Front_*.wav etc.)
Each utterance is 3-6 s of one speaker's recordings joined with 150-400 ms pauses.

Noise families (each clip from one family; no file here is a training or validation noise; colobot's sound
effects, not its music, are validation noise of scripts/make-game-noise.py):
  music       colobot-common-sounds' music tracks and asc-music (orchestral, electronic, rock)
  machinery   boswars-data unit and building sounds (engines, factories, weapons) joined into a texture
  babble      4-7 overlapping talkers of ktuberling-data (many languages), never the target voices
  reverb      the speech through a held-out simulated room (scripts/make-rirs.py OUT, its test split), the target
              being its direct path, plus a music, machinery or babble noise
A noise stretch with a quarter quieter than -60 dBFS (a silent intro) is drawn again. The mixture is scaled
together with the target when its peak passes 0.9.

Needs: apt-get install asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722 asterisk-core-sounds-fr-g722
klettres-data ktuberling-data alsa-utils colobot-common-sounds asc-music boswars-data ffmpeg; NumPy.

Usage: scripts/make-uselike-test.py OUT --rooms RIRS/test [--per-family 30] [--seed 61]
       → OUT/clean/NAME.wav, OUT/noisy/NAME.wav, OUT/manifest.json (family, speaker source, noise files, SNR)
"""

import argparse
import glob
import json
import os
import random
import subprocess
import wave

import numpy as np

RATE = 16000
SPEECH = {
    "asterisk-en": "/usr/share/asterisk/sounds/en_US_f_Allison/*.g722",
    "asterisk-es": "/usr/share/asterisk/sounds/es_MX_f_Allison/*.g722",
    "asterisk-fr": "/usr/share/asterisk/sounds/fr_CA_f_June/*.g722",
    "klettres": "/usr/share/klettres/*/*/*.ogg",
    "alsa": "/usr/share/sounds/alsa/[FRS]*_*.wav",
}
NOISE = {
    "music": ["/usr/share/games/colobot/music/*.ogg", "/usr/share/games/asc/music/*.ogg"],
    "machinery": ["/usr/share/games/boswars/units/*/*.wav", "/usr/share/games/boswars/sounds/*.wav"],
    "babble": ["/usr/share/ktuberling/sounds/*/*.ogg"],
}


def decode(path):
    """Any file ffmpeg reads, as 16 kHz mono float."""
    raw = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", path, "-ac", "1", "-ar", str(RATE), "-f", "s16le", "-"],
        check=True, capture_output=True,
    ).stdout
    return np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0


def write_wav(path, x):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(x, -1, 1) * 32767).round().astype("<i2").tobytes())


def files(patterns):
    out = sorted(f for p in patterns for f in glob.glob(p))
    if not out:
        raise SystemExit(f"no files match {patterns}: install the packages named in this script's header")
    return out


def trim(x, floor=1e-3):
    """Leading and trailing silence off (prompts carry up to a second of it)."""
    idx = np.nonzero(np.abs(x) > floor)[0]
    return x[idx[0]: idx[-1] + 1] if len(idx) else x[:0]


def utterance(rng, source, pool):
    """3-6 s of one speaker (one asterisk voice, one klettres language folder, the alsa voice)."""
    target = rng.uniform(3, 6) * RATE
    if source == "klettres":
        lang = rng.choice(sorted({f.split("/")[4] for f in pool}))
        pool = [f for f in pool if f.split("/")[4] == lang]
    parts, n = [], 0
    while n < target:
        x = trim(decode(rng.choice(pool)))
        if len(x) < RATE // 10:
            continue
        x = x / (np.sqrt(np.mean(x ** 2)) + 1e-9) * 0.05
        gap = np.zeros(int(rng.uniform(0.15, 0.4) * RATE))
        parts += [x, gap]
        n += len(x) + len(gap)
    return np.concatenate(parts)[: int(target)]


def noise_clip(rng, family, pool, n):
    """n samples of one family: a stretch of one music track, a joined run of machinery sounds, or babble."""
    if family == "music":
        x = decode(rng.choice(pool))
        start = rng.randrange(max(1, len(x) - n))
        x = x[start: start + n]
        return np.pad(x, (0, n - len(x)))
    if family == "machinery":
        out = np.zeros(0)
        while len(out) < n:
            s = trim(decode(rng.choice(pool)))
            if len(s):
                out = np.concatenate([out, s / (np.sqrt(np.mean(s ** 2)) + 1e-9) * rng.uniform(0.5, 2)])
        return out[:n]
    talkers = rng.randint(4, 7)
    out = np.zeros(n)
    for _ in range(talkers):
        voice = np.zeros(0)
        while len(voice) < n:
            s = trim(decode(rng.choice(pool)))
            voice = np.concatenate([voice, s / (np.sqrt(np.mean(s ** 2)) + 1e-9), np.zeros(int(0.1 * RATE))])
        shift = rng.randrange(len(voice) - n + 1)
        out += voice[shift: shift + n] * rng.uniform(0.6, 1.4)
    return out


def convolve(x, h):
    size = 1 << int(np.ceil(np.log2(len(x) + len(h))))
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]


def reverberate(x, h, keep=0, half_width=40):
    """(target, whole room), as `diffuse audio train --task dereverb --early-ms` makes them: the target keeps the
    response from `half_width` samples before its peak to max(keep, half_width) after it."""
    peak = int(np.argmax(np.abs(h)))
    direct = np.zeros_like(h)
    lo, hi = max(0, peak - half_width), min(len(h), peak + max(keep, half_width) + 1)
    direct[lo:hi] = h[lo:hi]
    return convolve(x, direct), convolve(x, h)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--rooms", required=True, help="held-out room impulse responses (scripts/make-rirs.py OUT/test)")
    ap.add_argument("--per-family", type=int, default=30)
    ap.add_argument("--seed", type=int, default=61)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    speech = {k: files([p]) for k, p in SPEECH.items()}
    noise = {k: files(p) for k, p in NOISE.items()}
    rooms = files([os.path.join(args.rooms, "*.wav")])
    sources = sorted(speech)
    manifest = []
    for family in ["music", "machinery", "babble", "reverb"]:
        for i in range(args.per_family):
            source = sources[i % len(sources)]
            clean = utterance(rng, source, speech[source])
            heard = clean
            room = None
            if family == "reverb":
                room = rng.choice(rooms)
                with wave.open(room) as w:
                    h = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
                clean, heard = reverberate(clean, h)
                noise_family = rng.choice(sorted(noise))
            else:
                noise_family = family
            # A music stretch can be a silent intro or a fade: draw again until the noise is audible throughout.
            while True:
                n = noise_clip(rng, noise_family, noise[noise_family], len(clean))
                quarters = np.array_split(n, 4)
                if min(np.sqrt(np.mean(q ** 2)) for q in quarters) > 1e-3:
                    break
            snr = rng.uniform(-5, 15)
            k = np.sqrt(np.mean(heard ** 2) / (np.mean(n ** 2) + 1e-20) / 10 ** (snr / 10))
            noisy = heard + k * n
            scale = min(1.0, 0.9 / max(np.max(np.abs(noisy)), 1e-9))
            name = f"{family}-{i:02d}"
            write_wav(os.path.join(args.out, "clean", name + ".wav"), clean * scale)
            write_wav(os.path.join(args.out, "noisy", name + ".wav"), noisy * scale)
            manifest.append({"name": name, "family": family, "speech": source, "noise": noise_family,
                             "snr_db": snr, "room": room and os.path.basename(room)})
            print(name, source, noise_family, f"{snr:.1f} dB", flush=True)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
