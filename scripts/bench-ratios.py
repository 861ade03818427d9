#!/usr/bin/env python3
"""Prints per-step solver overhead as a ratio to one element-wise op, from criterion's results
(run `cargo bench -p diffuse-core --bench solver_step` first)."""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion/solver_step")


def median_ns(p):
    with open(p / "new" / "estimates.json") as f:
        return json.load(f)["median"]["point_estimate"]


base = median_ns(root / "elementwise_op")
print(f"one element-wise op (x*0.5, 4x2x256x256 f32, 1 thread): {base / 1e3:.1f} us")
print("| solver | per step (us) | element-wise ops per step |")
print("|---|---|---|")
for d in sorted((root / "per_step").iterdir()):
    if (d / "new").is_dir():
        t = median_ns(d)
        print(f"| {d.name} | {t / 1e3:.1f} | {t / base:.1f} |")
