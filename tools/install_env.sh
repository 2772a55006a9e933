#!/usr/bin/env bash
# One-command setup of crd_mm's environment (called by `make install`).
#
# Creates a virtualenv inside the repository, installs the torch pair, builds
# mmcv 2.1.0 with its compiled ops against that torch (its sdist does not
# compile on torch >= 2.4 as shipped: it asks for C++14/17, ATen needs C++20),
# caches the built wheel outside the repository, then installs the pinned
# OpenMMLab stack and crd_mm itself in editable mode.
#
# Environment: PYTHON (interpreter, default python3), CRD_MM_VENV (default
# <repo>/.venv), CRD_MM_CACHE (default ~/.cache/crd_mm), MAX_JOBS (compile jobs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${CRD_MM_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
CACHE=${CRD_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/crd_mm}
MMCV_VERSION=2.1.0
STEP="start"
STAMP="$VENV/.crd_mm_install_stamp"

step() { STEP=$1; echo "[install] $1"; }
trap 'echo "[install] FAILED during step: $STEP (see the output above)" >&2' ERR

input_hash() {
  cat "$ROOT"/requirements/*.txt "$ROOT/tools/install_env.sh" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(input_hash)" ]] \
   && "$VENV/bin/python" -c "import mmcv._ext, crd_mm" >/dev/null 2>&1; then
  echo "[install] environment in $VENV is up to date; nothing to do"
  exit 0
fi

step "create virtualenv $VENV"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 9), "Python >= 3.9 is required"'
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

step "install torch and build requirements"
"${PIP[@]}" install -q -r "$ROOT/requirements/torch.txt" -r "$ROOT/requirements/build.txt"

# The wheel depends on the torch it was compiled against, the Python version and
# whether CUDA kernels were compiled in: all three are in the cache key.
TORCH_VERSION=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
PY_TAG=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
if command -v nvcc >/dev/null && "$VENV/bin/python" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
  export FORCE_CUDA=1
  VARIANT="cuda$("$VENV/bin/python" -c 'import torch; print(torch.version.cuda)')"
else
  export FORCE_CUDA=0
  VARIANT=cpu
fi
WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$PY_TAG-$VARIANT"
WHEEL=$(ls "$WHEEL_DIR"/mmcv-*.whl 2>/dev/null | head -n1 || true)

if [[ -n "$WHEEL" ]]; then
  echo "[install] reusing cached mmcv wheel $WHEEL"
else
  step "build mmcv $MMCV_VERSION with ops ($VARIANT, torch $TORCH_VERSION); takes ~20 min on 2 cores, once per machine"
  BUILD=$(mktemp -d)
  trap 'rm -rf "$BUILD"' EXIT
  "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$BUILD"
  tar xzf "$BUILD/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD"
  SRC="$BUILD/mmcv-$MMCV_VERSION"
  sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
  (cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
     "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$BUILD/dist" .)
  # Move into the cache only once complete, so an interrupted build leaves no wheel behind.
  mkdir -p "$WHEEL_DIR"
  BUILT=$(ls "$BUILD"/dist/mmcv-*.whl)
  cp "$BUILT" "$WHEEL_DIR/.partial.whl"
  mv "$WHEEL_DIR/.partial.whl" "$WHEEL_DIR/$(basename "$BUILT")"
  WHEEL="$WHEEL_DIR/$(basename "$BUILT")"
fi

step "install mmcv, the OpenMMLab stack, test tools and crd_mm"
"${PIP[@]}" install -q "$WHEEL" -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt"
# --no-use-pep517: the legacy editable install (an egg-link to this checkout, setuptools < 80),
# the kind openmim finds; a PEP 660 one leaves openmim nothing beside its metadata.
"${PIP[@]}" install -q --no-deps --no-build-isolation --no-use-pep517 -e "$ROOT"

step "check that mmcv's compiled ops and crd_mm import"
"$VENV/bin/python" -c "import mmcv._ext, mmcv.ops, crd_mm; print('[install] mmcv', mmcv.__version__, 'with ops; crd_mm', crd_mm.__version__)"

input_hash > "$STAMP"
echo "[install] done: activate with 'source $VENV/bin/activate'"
