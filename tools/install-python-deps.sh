#!/usr/bin/env bash
# Create/refresh the Python venv used to build and test kvring's Python
# package (python/) and its LMCache connector.
#
# Usage: tools/install-python-deps.sh [VENV_DIR]     (default: <repo>/build-venv)
#
# Pins live in python/requirements-test.txt (exact == pins). Order matters:
#   1. torch alone (CPU build; must be in place before anything can pull a
#      CUDA torch from PyPI),
#   2. everything else in the file except lmcache,
#   3. lmcache from its sdist with NO_GPU_EXT=1 --no-build-isolation --no-deps,
#      as LMCache's CPU CI does (.github/scripts/install_lmcache_cpu.sh): the
#      PyPI wheel depends on cupy-cuda13x / cuda-python and its cuda_ops
#      extension links libcudart.so.13. pip caches the built wheel, so only
#      the first install on a machine compiles it (~1 min on 2 cores).
# A stamp file in the venv holds a hash of the inputs; when it matches, the
# script does nothing.
set -euo pipefail

repo() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

REPO="$(repo)"
VENV="${1:-${REPO}/build-venv}"
REQS="${REPO}/python/requirements-test.txt"
STAMP="${VENV}/.kvring-deps-stamp"
PYTHON="${PYTHON:-python3}"

[ -f "${REQS}" ] || { echo "install-python-deps: missing ${REQS}" >&2; exit 1; }

stamp_value() {
    {
        sha256sum "${REQS}" | cut -d' ' -f1
        sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
        "${VENV}/bin/python" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

if [ -x "${VENV}/bin/python" ] && [ -x "${VENV}/bin/lmcache" ] \
    && [ -f "${STAMP}" ] && [ "$(cat "${STAMP}")" = "$(stamp_value)" ]; then
    echo "install-python-deps: ${VENV} is up to date"
    exit 0
fi

start=$(date +%s)
if [ ! -x "${VENV}/bin/python" ]; then
    echo "install-python-deps: creating venv ${VENV}"
    "${PYTHON}" -m venv "${VENV}"
fi
rm -f "${STAMP}"

PY="${VENV}/bin/python"
pip_install() { "${PY}" -m pip install --disable-pip-version-check "$@"; }

pin_of() {  # the exact "name==version" line for a package in REQS
    local line
    line="$(grep -iE "^$1==" "${REQS}" | head -n1)"
    [ -n "${line}" ] || { echo "install-python-deps: no pin for $1 in ${REQS}" >&2; exit 1; }
    printf '%s\n' "${line}"
}
TORCH_PIN="$(pin_of torch)"
LMCACHE_PIN="$(pin_of lmcache)"

# 1. torch first, alone.
pip_install "${TORCH_PIN}"
"${PY}" - <<'EOF'
import torch
cuda = torch.version.cuda
print("install-python-deps: torch", torch.__version__, "cuda", cuda)
if cuda is not None:
    print("install-python-deps: WARNING: a CUDA build of torch is installed",
          flush=True)
EOF

# 2. everything else but lmcache (torch pin repeated so nothing replaces it).
filtered="$(mktemp)"
trap 'rm -f "${filtered}"' EXIT
grep -viE '^lmcache==' "${REQS}" > "${filtered}"
pip_install -r "${filtered}"

# 3. lmcache, CPU-only build from sdist against the torch installed above.
NO_GPU_EXT=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    pip_install --no-build-isolation --no-deps --no-binary lmcache "${LMCACHE_PIN}"

# Smoke check: the L2 adapter modules import and the CLI runs.
LMCACHE_DISABLE_BANNER=1 "${PY}" -W ignore - <<'EOF'
import lmcache
import lmcache.lmcache_native  # noqa: F401  (C++ extension built above)
from lmcache.v1.distributed.l2_adapters import create_l2_adapter  # noqa: F401
from lmcache.v1.distributed.l2_adapters.native_connector_l2_adapter import (  # noqa: F401
    NativeConnectorL2Adapter,
)
from lmcache.v1.distributed.l2_adapters.native_plugin_l2_adapter import (  # noqa: F401
    NativePluginL2AdapterConfig,
)
import lmcache_rust_raw_block_io  # noqa: F401  (backend of the raw_block adapter)
print("install-python-deps: lmcache", lmcache.__version__, "imports OK")
EOF
LMCACHE_DISABLE_BANNER=1 PYTHONWARNINGS=ignore \
    "${VENV}/bin/lmcache" bench l2 --help > /dev/null
"${PY}" -m pip check

stamp_value > "${STAMP}"
echo "install-python-deps: ${VENV} ready in $(( $(date +%s) - start ))s"
