#!/usr/bin/env python3
"""Per-family table of `diffuse audio eval --noisy ... --csv` results on a test set with a manifest
(scripts/make-uselike-test.py): one Markdown row per (method, family) and one for all, with the mean SI-SDR
improvement, ESTOI and PESQ-WB of the output and of the noisy input, and the SI-SDR improvement in three SNR bands.

Usage: tools/family_table.py MANIFEST NAME=CSV [NAME=CSV ...]
"""
import csv
import json
import sys
from collections import defaultdict


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    manifest = {m["name"]: m for m in json.load(open(sys.argv[1]))}
    print("| method | family | n | SI-SDR gain | ESTOI (input) | PESQ-WB (input) | gain at SNR < 2 / 2–8 / ≥ 8 dB |")
    print("|---|---|---|---|---|---|---|")
    for arg in sys.argv[2:]:
        name, path = arg.split("=", 1)
        rows = defaultdict(list)
        for r in csv.DictReader(open(path)):
            key = r["file"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
            m = manifest[key]
            for group in (m["family"], "all"):
                rows[group].append((m, r))
        known = ["music", "machinery", "babble", "reverb"]
        others = sorted({m["family"] for m in manifest.values()} - set(known))
        for family in known + others + ["all"]:
            items = rows.get(family, [])
            if not items:
                continue

            def mean(col, sub=None):
                vals = [float(r[col]) for m, r in (sub if sub is not None else items) if r[col] not in ("", "nan")]
                return sum(vals) / len(vals) if vals else float("nan")

            bands = []
            for lo, hi in [(-99, 2), (2, 8), (8, 99)]:
                sub = [(m, r) for m, r in items if lo <= m["snr_db"] < hi]
                bands.append(f"{mean('si_sdr_improvement_db', sub):+.2f}")
            bold = "**" if family == "all" else ""
            print(f"| {bold}{name}{bold} | {bold}{family}{bold} | {len(items)} | {bold}{mean('si_sdr_improvement_db'):+.2f} dB{bold} | "
                  f"{mean('estoi'):.3f} ({mean('noisy_estoi'):.3f}) | {mean('pesq_wb'):.2f} ({mean('noisy_pesq_wb'):.2f}) | "
                  f"{' / '.join(bands)} |")


if __name__ == "__main__":
    main()
