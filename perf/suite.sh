#!/usr/bin/env bash
# The performance suite in one command: install what it measures against
# (fio, iperf3, redis, gnuplot), build a release tree, and run
#   kvring-bench suite [--quick] --out DIR
# which writes DIR/report.md, DIR/suite.json and DIR/plots/*.{png,svg}.
#
# Usage: bash perf/suite.sh [--quick] [--out DIR] [kvring-bench suite options]
# (default DIR: build-release/suite; --quick: under 2 minutes on 2 cores,
# the full matrix under 15).
set -euo pipefail
cd "$(dirname "$0")/.."
KVR_EXTRA_PKGS="fio iperf3 redis-server redis-tools gnuplot-nox" bash tools/install-deps.sh
[ -d build-release ] || meson setup build-release --buildtype=release -Dtests=false >/dev/null
ninja -C build-release >/dev/null
case " $* " in
*" --out "*) exec build-release/perf/kvring-bench suite "$@" ;;
*) exec build-release/perf/kvring-bench suite --out build-release/suite "$@" ;;
esac
