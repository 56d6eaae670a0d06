#!/usr/bin/env bash
# The performance suite in one command: install what it measures against
# (fio, iperf3, redis, gnuplot; valgrind for the instruction counts), build
# a release tree, and run
#   kvring-bench suite [--quick] --out DIR
# which writes DIR/report.md, DIR/suite.json and DIR/plots/*.{png,svg}.
# The full run then adds the user-space instructions per operation
# (perf/icount.sh, callgrind, about 40 s) to the report as DIR/icount.txt.
#
# Usage: bash perf/suite.sh [--quick] [--out DIR] [kvring-bench suite options]
# (default DIR: build-release/suite; --quick: under 2 minutes on 2 cores,
# the full matrix under 15).
set -euo pipefail
cd "$(dirname "$0")/.."
KVR_EXTRA_PKGS="fio iperf3 redis-server redis-tools gnuplot-nox valgrind" bash tools/install-deps.sh
[ -d build-release ] || meson setup build-release --buildtype=release -Dtests=false >/dev/null
ninja -C build-release >/dev/null

out=build-release/suite quick=0 prev=""
for a in "$@"; do
	[ "$prev" = --out ] && out=$a
	[ "$a" = --quick ] && quick=1
	prev=$a
done
case " $* " in
*" --out "*) set -- "$@" ;;
*) set -- "$@" --out "$out" ;;
esac
rc=0
build-release/perf/kvring-bench suite "$@" || rc=$?
if [ "$quick" = 0 ] && [ -f "$out/report.md" ]; then
	echo "suite: instructions per operation (perf/icount.sh, callgrind)" >&2
	if bash perf/icount.sh build >"$out/icount.txt" 2>&1; then
		{
			echo
			echo "## User-space instructions per operation (callgrind)"
			echo
			echo "perf/icount.sh: a fixed put/get workload (kvring-icount) under"
			echo "valgrind --tool=callgrind, debugoptimized build; CI fails when a figure"
			echo "grows more than 10% over perf/baseline.json."
			echo
			echo '```'
			cat "$out/icount.txt"
			echo '```'
		} >>"$out/report.md"
	else
		echo "suite: perf/icount.sh failed, see $out/icount.txt" >&2
		rc=1
	fi
fi
echo "suite: $out/report.md" >&2
exit $rc
