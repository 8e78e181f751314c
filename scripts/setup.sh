#!/usr/bin/env bash
# Sets up sslax on a fresh Debian/Ubuntu machine with Python 3.11, no GPU needed:
#   .venv with every dependency pinned (requirements.lock), sslax installed editable, and
#   Fashion-MNIST's original files from Debian's dataset-fashion-mnist package.
#   bash scripts/setup.sh          what the demo and training need
#   bash scripts/setup.sh --test   that plus the test extra (pytest, ruff, and the export extra:
#                                  torch, timm, onnx, onnxruntime; what the tests need)
# Idempotent: a second run only checks. Environment: PYTHON (default python3.11, else python3),
# SSLAX_ACCELERATOR=tpu|cuda12 adds jax's accelerator build.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
for arg in "$@"; do
  case "$arg" in
    --test) extras="[test]" ;;
    *) echo "setup: unknown argument $arg (use --test for the test extra)" >&2; exit 2 ;;
  esac
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
apt_updated=0
apt_install() {
  [ "$apt_updated" = 1 ] || { as_root apt-get update -qq && apt_updated=1; } || return 1
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    echo "setup: installing python3-venv (Debian ships venv separately)"
    rm -rf .venv
    apt_install python3-venv && "$python" -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --upgrade "pip>=23.2" >/dev/null
.venv/bin/python -m pip install -q -c requirements.lock -e ".${extras}"
# Accelerator builds of the same jax version (TPU VMs, CUDA 12 GPUs): SSLAX_ACCELERATOR=tpu|cuda12.
case "${SSLAX_ACCELERATOR:-cpu}" in
  cpu) ;;
  tpu|cuda12|cuda13) .venv/bin/python -m pip install -q -c requirements.lock "jax[${SSLAX_ACCELERATOR}]==0.10.2" ;;
  *) echo "setup: SSLAX_ACCELERATOR must be cpu, tpu, cuda12 or cuda13" >&2; exit 2 ;;
esac
# The TPU compiler for compile-only checks (python -m sslax.aot, its test), kept out of
# site-packages so that no other jax process looks for a TPU.
if [ -n "$extras" ] && [ ! -f .venv/libtpu/libtpu/libtpu.so ]; then
  .venv/bin/python -m pip install -q --no-deps --target .venv/libtpu -c requirements.lock libtpu
fi

# Fashion-MNIST (the default dataset): system package, else unpacked into the user cache.
fmnist_files=train-images-idx3-ubyte.gz
cache=${SSLAX_DATA_DIR:-$HOME/.cache/sslax/datasets}
if [ ! -f /usr/share/datasets/fashion-mnist/$fmnist_files ] && [ ! -f "$cache/fashion-mnist/$fmnist_files" ]; then
  echo "setup: getting Fashion-MNIST from Debian's dataset-fashion-mnist package"
  if ! apt_install dataset-fashion-mnist; then
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download dataset-fashion-mnist) && dpkg-deb -x "$tmp"/dataset-fashion-mnist_*.deb "$tmp/x"
    mkdir -p "$cache/fashion-mnist" && cp "$tmp"/x/usr/share/datasets/fashion-mnist/* "$cache/fashion-mnist/"
    rm -rf "$tmp"
  fi
fi
echo "setup: ok ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__, jax.devices()[0].platform)'))"
