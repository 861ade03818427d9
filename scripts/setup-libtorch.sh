#!/usr/bin/env bash
# Installs PyTorch 2.11.0 (the libtorch that tch 0.24.0 expects) from the Python package registry into a cache
# outside the clone, reusing it when it is already there, and links it as .libtorch (see .cargo/config.toml).
# Idempotent: a second run only checks the version and the link.
set -euo pipefail

TORCH_VERSION=2.11.0
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${DIFFUSE_LIBTORCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/diffuse/torch-$TORCH_VERSION}
python=${PYTHON:-python3}

installed_version() {
    # The wheel writes torch/version.py; read it without importing torch (no Python deps needed).
    sed -n "s/^__version__ = '\([^']*\)'.*/\1/p" "$1/torch/version.py" 2>/dev/null || true
}

# torch-sys compiles a small C++ wrapper around libtorch.
if ! command -v "${CXX:-c++}" >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
    echo "setup-libtorch: no C++ compiler found; install one (Debian: apt-get install g++)" >&2
    exit 1
fi

have=$(installed_version "$cache")
if [[ "${have%%+*}" != "$TORCH_VERSION" || ! -f "$cache/torch/lib/libtorch_cpu.so" ]]; then
    command -v "$python" >/dev/null || { echo "setup-libtorch: $python not found; install Python 3 with pip" >&2; exit 1; }
    "$python" -m pip --version >/dev/null 2>&1 || {
        echo "setup-libtorch: '$python -m pip' is not available; install pip (Debian: apt-get install python3-pip)" >&2
        exit 1
    }
    echo "setup-libtorch: installing torch==$TORCH_VERSION into $cache (about 4.6 GB, a minute or two)"
    rm -rf "$cache.partial"
    mkdir -p "$(dirname "$cache")"
    # --target keeps it out of every Python environment; PIP_BREAK_SYSTEM_PACKAGES lets Debian's pip write there.
    PIP_BREAK_SYSTEM_PACKAGES=1 "$python" -m pip install --no-input --quiet --disable-pip-version-check \
        --target "$cache.partial" "torch==$TORCH_VERSION"
    got=$(installed_version "$cache.partial")
    [[ "${got%%+*}" == "$TORCH_VERSION" ]] || { echo "setup-libtorch: pip installed torch '$got', expected $TORCH_VERSION" >&2; exit 1; }
    rm -rf "$cache"
    mv "$cache.partial" "$cache"
fi

ln -sfn "$cache" "$root/.libtorch"
echo "setup-libtorch: libtorch $(installed_version "$cache") at $cache (linked as .libtorch)"
