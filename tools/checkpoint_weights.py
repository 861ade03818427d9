#!/usr/bin/env python3
"""Writes the raw ("p/") or averaged ("ema/") weights of a training checkpoint (core::optim::AdamEma) as a
model weights file, so that either can be scored on validation data before one is shipped.

    python3 tools/checkpoint_weights.py CHECKPOINT.safetensors {p|ema} OUT.safetensors
"""
import json
import struct
import sys


def main(src, which, dst):
    raw = open(src, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    prefix = which + "/"
    out, chunks, offset = {}, [], 0
    for key in sorted(k for k in header if k.startswith(prefix)):
        info = header[key]
        a, b = info["data_offsets"]
        out[key[len(prefix) :]] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [offset, offset + b - a]}
        chunks.append(data[a:b])
        offset += b - a
    if not out:
        raise SystemExit(f"{src}: no '{prefix}' tensors (not a training checkpoint)")
    text = json.dumps(out, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[2] not in ("p", "ema"):
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
