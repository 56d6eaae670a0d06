#!/usr/bin/env bash
# The quick-start demo: install what is missing, build, and run kvring-bench
# with no arguments (a temporary memory store and file store, put/get at
# 4 KiB, 256 KiB and 4 MiB, fio's figure beside the file store's).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
[ -d build-release ] || meson setup build-release --buildtype=release -Dtests=false >/dev/null
ninja -C build-release >/dev/null
exec build-release/perf/kvring-bench "$@"
