#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ with the repository's own example files and fixtures (not committed: the corpora
# grow while fuzzing). Safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
seed() { # target, files...
    local dir="$here/corpus/$1"
    shift
    mkdir -p "$dir"
    for f in "$@"; do
        # Large files slow every run down: the head keeps the header, which is what the parsers judge first.
        head -c 4096 "$root/$f" >"$dir/$(echo "$f" | tr / _)"
    done
}
seed wav examples/audio/clean/speech.wav examples/audio/noisy/speech.wav
seed ply examples/pose/box.ply examples/pose/l-shape.ply examples/pose/cylinder.ply examples/pose/mug.ply \
    examples/pose/bunny-scene.ply examples/bunny.ply
seed problem_json examples/problem.json examples/problem_ouve.json examples/problem_stochastic.json
seed target_json examples/text/markov.json examples/text/table.json
seed sidecar core/tests/fixtures/tiny_gaussian_eps.json tests/fixtures/audio/tiny_ncsnpp.json \
    tests/fixtures/audio/seam_ncsnpp.json audio/models/default/sgmse-s.json
seed safetensors_header tests/fixtures/audio/ode_sampler.safetensors tests/fixtures/audio/stft.safetensors \
    tests/fixtures/audio/transform.safetensors
# Whole small PLY files too (their payload matters once the header parses).
cp "$root/examples/pose/box.ply" "$here/corpus/ply/box-whole.ply"
cp "$root/examples/pose/l-shape.ply" "$here/corpus/ply/l-shape-whole.ply"
echo "seeded: $(ls "$here/corpus" | tr '\n' ' ')"
