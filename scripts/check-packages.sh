#!/usr/bin/env bash
# Checks that every library crate packages on its own (what `cargo package -p` would ship), cheaply enough for
# CI: `cargo package --no-verify` for the whole workspace (manifests, dependency versions, file lists), then
# every include!/include_bytes!/include_str! in a crate's sources must name a file inside that crate that the
# package ships. `make package` runs the full verification instead (each crate built from its tarball alone;
# about 4 minutes here after a test build, since the tarballs build without the workspace's profile and so
# rebuild every dependency).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo package --workspace --exclude diffuse-tests --no-verify --allow-dirty --quiet
python3 - <<'PY'
import os, pathlib, re, subprocess, sys
root = pathlib.Path.cwd()
meta = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"], capture_output=True, text=True,
                      check=True).stdout
import json
bad = []
for pkg in json.loads(meta)["packages"]:
    if pkg.get("publish") == []:
        continue
    crate = pathlib.Path(pkg["manifest_path"]).parent
    listed = set(subprocess.run(["cargo", "package", "--list", "--allow-dirty", "-p", pkg["name"]],
                                capture_output=True, text=True, check=True).stdout.split())
    for src in crate.rglob("*.rs"):
        if "target" in src.parts:
            continue
        for m in re.finditer(r'include(?:_bytes|_str)?!\(\s*"([^"]+)"', src.read_text()):
            # Normalised without following links: a link out of the crate is not shipped as its target.
            target = pathlib.Path(os.path.normpath(src.parent / m.group(1)))
            try:
                rel = target.relative_to(crate)
            except ValueError:
                bad.append(f"{src.relative_to(root)}: includes {m.group(1)}, outside the crate {pkg['name']}")
                continue
            if str(rel) not in listed:
                bad.append(f"{src.relative_to(root)}: includes {m.group(1)}, which the package does not ship")
if bad:
    print("packaging problems:\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
print("check-packages: every crate packages on its own and ships the files it includes")
PY
