#!/usr/bin/env python3
"""Markdown table of the few-step comparison in docs/benchmarks.md from one problem's result files: the best of
diffuse's solvers on the problem's own grid, the best searched schedule (`s3:`), the recipe rows (`hyper-N`) and the
best k-diffusion sampler, each by rms and by median per-draw error, with the ratio to k-diffusion's best.

    python3 tools/solver_tables.py DIFFUSE.json [KDIFF.json]
(DIFFUSE.json from `diffuse solvers bench --schedule S --recipe --json`, KDIFF.json from tools/kdiffusion_bench.py,
both on the same starting points.)
"""
import json
import sys


def best(rows, nfe, key, keep):
    rows = [r for r in rows if keep(r["solver"]) and r.get(key) is not None and r["nfe"] <= nfe and r["budget"] == nfe]
    return min(rows, key=lambda r: r[key]) if rows else None


def cell(r, key, ref=None):
    if r is None:
        return "–"
    ratio = f" ({r[key] / ref[key]:.2f}×)" if ref is not None else ""
    return f"{r[key]:.3g} `{r['solver']}`{ratio}"


def main():
    ours = json.load(open(sys.argv[1]))["rows"]
    theirs = json.load(open(sys.argv[2]))["rows"] if len(sys.argv) > 2 else []
    nfes = sorted({int(r["budget"]) for r in ours if r.get("rms_error") is not None})
    own = lambda s: not s.startswith(("s3:", "hyper-"))  # noqa: E731
    for key, title in [("rms_error", "rms error"), ("median_error", "median per-draw error")]:
        head = "| NFE | diffuse, own grid | diffuse, searched schedule | recipe |"
        head += " k-diffusion |" if theirs else ""
        print(f"\n{title}:\n\n{head}\n|" + "---|" * (head.count("|") - 1))
        for n in nfes:
            k = best(theirs, n, key, lambda s: True) if theirs else None
            line = f"| {n} | {cell(best(ours, n, key, own), key, k)} | {cell(best(ours, n, key, lambda s: s.startswith('s3:')), key, k)}"
            line += f" | {cell(best(ours, n, key, lambda s: s.startswith('hyper-')), key, k)} |"
            line += f" {cell(k, key)} |" if theirs else ""
            print(line)


if __name__ == "__main__":
    main()
