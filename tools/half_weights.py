#!/usr/bin/env python3
"""Rewrites a float32 safetensors file with float16 tensors (half the size; the restoration crate widens them back
to float32 on load). Used for the shipped restoration models; the PSNR change it causes is recorded in
docs/restoration.md.

    python3 tools/half_weights.py IN.safetensors OUT.safetensors
"""
import json
import struct
import sys

import numpy as np


def main(src, dst):
    raw = open(src, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out_header, chunks, offset = {}, [], 0
    for key in sorted(k for k in header if k != "__metadata__"):
        info = header[key]
        if info["dtype"] != "F32":
            raise SystemExit(f"{src}: tensor {key} is {info['dtype']}, not F32")
        a, b = info["data_offsets"]
        values = np.frombuffer(data[a:b], dtype="<f4").astype("<f2")
        if not np.all(np.isfinite(values)):
            raise SystemExit(f"{src}: tensor {key} overflows float16")
        chunk = values.tobytes()
        out_header[key] = {"dtype": "F16", "shape": info["shape"], "data_offsets": [offset, offset + len(chunk)]}
        chunks.append(chunk)
        offset += len(chunk)
    if "__metadata__" in header:
        out_header["__metadata__"] = header["__metadata__"]
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
