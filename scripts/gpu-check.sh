#!/usr/bin/env bash
# GPU smoke check for a machine with an NVIDIA GPU, PyTorch 2.11 in its Python, and no cargo: give it the release
# binary. It finds that Python's libtorch, runs `diffuse doctor --device cuda`, and a CPU-vs-CUDA tensor benchmark.
#   scripts/gpu-check.sh [path/to/diffuse]
set -uo pipefail

bin=${1:-$(dirname "$0")/../target/release/diffuse}
python=${PYTHON:-python3}
[[ -x "$bin" ]] || { echo "gpu-check: no diffuse binary at $bin (build with: cargo build --release -p diffuse-cli)" >&2; exit 2; }

torch_dir=$("$python" -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null) || {
    echo "gpu-check: '$python' cannot import torch; install PyTorch 2.11 or set PYTHON" >&2; exit 2; }
version=$("$python" -c 'import torch; print(torch.__version__)')
echo "gpu-check: using libtorch $version from $torch_dir/lib"
case "$version" in 2.11.*) ;; *) echo "gpu-check: warning: diffuse is built for PyTorch 2.11, this is $version" >&2 ;; esac
export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if ! "$bin" --version >/dev/null 2>&1; then
    echo "gpu-check: the binary does not start with this libtorch:" >&2
    "$bin" --version
    exit 2
fi
echo
echo "== diffuse doctor --device cuda --bench"
"$bin" doctor --device cuda --bench
status=$?
echo
if [[ $status -eq 0 ]]; then echo "gpu-check: CUDA OK"; else echo "gpu-check: CUDA check FAILED (exit $status)"; fi
exit $status
