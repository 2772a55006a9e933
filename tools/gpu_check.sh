#!/usr/bin/env bash
# crd_mm's check for a GPU machine that has Python (3.11 or 3.12) with a CUDA build
# of PyTorch 2.x and torchvision, but none of the OpenMMLab stack and no network.
#
#   bash tools/gpu_check.sh --prepare DIR   # where PyPI is reachable: collect the wheels into DIR
#   bash tools/gpu_check.sh --wheels DIR    # on the GPU machine, from this checkout, offline
#
# --prepare downloads, for Python 3.11 and 3.12, every wheel the check needs except
# torch, torchvision, numpy and Pillow (which come with the machine's torchvision):
# mmengine, mmpretrain, mmrazor, mmcv-lite (mmcv 2.1.0 built without ops: classification
# needs none; mmdet, which does, is not installed), opencv-python-headless (abi3: one
# wheel for both Pythons), matplotlib (mmrazor imports it), pytest and their
# dependencies. Wheels over 1 MB are recompressed with LZMA (still valid wheels that pip
# installs: zip's LZMA method) to keep DIR under 60 MB.
#
# --wheels installs them offline (`pip --no-index --no-deps`) into a new virtualenv that
# sees $PYTHON's own packages after its own (so torch is used from wherever $PYTHON finds
# it: system, user site, venv or conda), then runs tests/test_gpu.py (`pytest -m gpu`)
# and tools/benchmark/gpu_crd_throughput.py (300 steps per case at ImageNet scale).
#
# Environment: PYTHON (interpreter with CUDA torch; default python3), PY_VERSIONS
# (--prepare; default "3.11 3.12"), GPU_CHECK_VENV (the virtualenv; default a new
# temporary one), BENCH_ARGS (extra benchmark arguments), GPU_CHECK_DEVICE (cuda; cpu
# only to smoke-test this script where there is no GPU: gpu tests skip, tiny benchmark).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
PY_VERSIONS=${PY_VERSIONS:-3.11 3.12}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
LIMIT_MB=60

# Exact versions, so that --prepare today and next year give the same folder. NATIVE
# packages contain compiled code (one wheel per Python; opencv's is abi3, one for both);
# PURE ones are fetched as py3-none-any wheels (fonttools has both kinds: its pure one is
# 1.2 MB, the compiled ones 5.5 MB per Python). Declared dependencies that nothing in the
# check imports are left out (contourpy, click, tzdata, markdown-it-py, mdurl): the wheels
# are installed with --no-deps. setuptools provides `distutils` on Python 3.12, which
# mmengine's collect_env imports for every Runner, and pkg_resources for `mmpretrain::` scopes.
NATIVE=(pyyaml==6.0.4 opencv-python-headless==4.10.0.84 matplotlib==3.11.2 kiwisolver==1.5.1)
PURE=(
  mmengine==0.10.7 mmcv-lite==2.1.0 mmpretrain==1.2.0 mmrazor==1.0.0
  addict==2.4.0 yapf==0.43.0 platformdirs==4.14.9 termcolor==3.3.0 rich==15.0.0
  einops==0.8.2 importlib-metadata==10.2.0 zipp==4.1.2 lazy-importer==0.1.0 mat4py==0.6.0
  modelindex==0.0.2 model-index==0.1.11 ordered-set==4.1.0 markdown==3.11.3
  joblib==1.6.0 cloudpickle==3.1.3 packaging==26.4 setuptools==80.10.2
  fonttools==4.68.0 cycler==0.12.1 pyparsing==3.3.3 python-dateutil==4.0.0
  pytest==8.3.5 pytest-timeout==2.4.0 iniconfig==2.3.1 pluggy==1.7.0
)

usage() {
  sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

prepare() {
  local dir=$1
  mkdir -p "$dir"
  for version in $PY_VERSIONS; do
    echo "[gpu_check] downloading wheels for Python $version into $dir"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
      --python-version "$version" --platform manylinux2014_x86_64 -d "$dir" "${NATIVE[@]}"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --implementation py --abi none \
      --platform any --python-version "$version" -d "$dir" "${PURE[@]}"
  done
  echo "[gpu_check] recompressing wheels over 1 MB with LZMA"
  "$PYTHON" - "$dir" <<'EOF'
import os, sys, zipfile
folder = sys.argv[1]
for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if not name.endswith('.whl') or os.path.getsize(path) < 1 << 20:
        continue
    with zipfile.ZipFile(path) as src:
        if all(i.compress_type == zipfile.ZIP_LZMA for i in src.infolist()):
            continue  # done by an earlier --prepare
        partial = path + '.partial'
        with zipfile.ZipFile(partial, 'w', compression=zipfile.ZIP_LZMA) as dst:
            for info in src.infolist():
                dst.writestr(info, src.read(info), compress_type=zipfile.ZIP_LZMA)
    with zipfile.ZipFile(partial) as check:
        bad = check.testzip()
        if bad:
            sys.exit(f'{partial}: {bad} does not read back')
    before = os.path.getsize(path)
    os.replace(partial, path)
    print(f'  {name}: {before / 1e6:.1f} MB -> {os.path.getsize(path) / 1e6:.1f} MB')
EOF
  local size_mb
  size_mb=$(du -sm "$dir" | cut -f1)
  echo "[gpu_check] $dir: $(ls "$dir" | wc -l) files, ${size_mb} MB (du -sm)"
  if (( size_mb >= LIMIT_MB )); then
    echo "[gpu_check] the folder is over ${LIMIT_MB} MB" >&2
    exit 1
  fi
}

check_machine() {
  "$PYTHON" - "$DEVICE" <<'EOF'
import importlib.util, sys
missing = [m for m in ('torch', 'torchvision', 'numpy', 'PIL', 'lzma', 'pip', 'venv') if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f'[gpu_check] {sys.executable} lacks {missing}: the check needs Python with torch, torchvision '
             '(it brings numpy and Pillow), lzma, pip and venv; set PYTHON to such an interpreter')
if sys.version_info[:2] not in ((3, 11), (3, 12)):
    sys.exit(f'[gpu_check] the prepared wheels are for Python 3.11 and 3.12, not {sys.version.split()[0]}; '
             'run --prepare with PY_VERSIONS set to this version')
import torch
print(f'[gpu_check] Python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), '
      f'CUDA devices: {torch.cuda.device_count()}')
if sys.argv[1] == 'cuda' and not torch.cuda.is_available():
    sys.exit('[gpu_check] torch sees no CUDA device (check CUDA_VISIBLE_DEVICES and the driver)')
EOF
}

run_checks() {
  local dir=$1 start=$SECONDS venv site py
  check_machine
  venv=${GPU_CHECK_VENV:-$(mktemp -d)/venv}
  echo "[gpu_check] installing from $dir into the virtualenv $venv (offline)"
  "$PYTHON" -m venv --without-pip "$venv"
  py=$venv/bin/python
  site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # The venv sees $PYTHON's packages (torch) after its own, wherever they live: what
  # --system-site-packages does for a system Python, also for a venv, conda or user site.
  "$PYTHON" -c 'import sys
for path in sys.path:
    if path.endswith(("site-packages", "dist-packages")):
        print(f"import site; site.addsitedir({path!r})")' > "$site/crd_mm_gpu_check_base.pth"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$dir" \
    --no-deps --target "$site" "${NATIVE[@]}" "${PURE[@]}"
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  cd "$ROOT"
  "$py" -c "import mmcv, mmengine, mmpretrain, mmrazor, torch, crd_mm; print('[gpu_check] mmcv', mmcv.__version__, \
'(no ops), mmengine', mmengine.__version__, 'mmpretrain', mmpretrain.__version__, 'mmrazor', mmrazor.__version__, \
'crd_mm', crd_mm.__version__, 'torch', torch.__version__, 'from', torch.__file__)"
  echo "[gpu_check] installed in $((SECONDS - start)) s; running the gpu tests"
  "$py" -m pytest tests/test_gpu.py -m gpu -p no:cacheprovider -q -ra
  echo "[gpu_check] gpu tests done at $((SECONDS - start)) s; CRD throughput"
  local bench=()
  if [[ $DEVICE == cpu ]]; then
    bench=(--device cpu --iters 2 --num-samples 5000 --batch-size 8 --image-size 64)
  fi
  # shellcheck disable=SC2086
  "$py" tools/benchmark/gpu_crd_throughput.py "${bench[@]}" ${BENCH_ARGS:-}
  echo "[gpu_check] all done in $((SECONDS - start)) s"
}

[[ $# -eq 2 ]] || usage
case $1 in
  --prepare) prepare "$2" ;;
  --wheels) run_checks "$(cd "$2" && pwd)" ;;
  *) usage ;;
esac
