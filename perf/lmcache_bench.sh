#!/usr/bin/env bash
# kvring beside LMCache's own L2 adapters and Mooncake Store, in one command:
# install what is missing (redis-server, the Python venv with LMCache, the
# pinned Mooncake wheel), build a release tree and the kvring package from this
# tree, and run perf/lmcache_bench.py, which writes DIR/lmcache.json,
# DIR/lmcache.md and DIR/lmcache.png:
#   - lmcache bench l2, same keys/sizes/rounds, for kvring mem:, file:, tcp://
#     and LMCache's fs, raw_block, resp (redis) and mooncake_store adapters,
#   - kvring-server vs Mooncake Store from Python over loopback TCP,
#   - the Python binding's cost per key beside kvring-bench,
#   - the goal ratios, from this one run.
#
# Usage: bash perf/lmcache_bench.sh [--quick] [--out DIR]
# (default DIR: build-release/lmcache-bench; the full run takes under 15
# minutes on 2 cores, --quick under 4). Every process the run starts
# (kvring-server, redis-server, mooncake_master, Mooncake's holder, the
# benchmark clients) is stopped when it ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=build-venv
mooncake_pin="mooncake-transfer-engine-non-cuda==0.3.13.post1"

out=build-release/lmcache-bench quick=() prev=""
for a in "$@"; do
	case "$a" in
	--quick) quick=(--quick) ;;
	--out) ;;
	*)
		if [ "$prev" = --out ]; then
			out=$a
		else
			echo "usage: bash perf/lmcache_bench.sh [--quick] [--out DIR]" >&2
			exit 2
		fi
		;;
	esac
	prev=$a
done
[ "$prev" != --out ] || { echo "lmcache_bench: --out needs a directory" >&2; exit 2; }

KVR_EXTRA_PKGS="redis-server" bash tools/install-deps.sh
bash tools/install-python-deps.sh "$venv"
py="$venv/bin/python"
# Mooncake is not in python/requirements-test.txt (the tests do not need it):
# pinned here, installed only when that exact version is missing.
have=$("$py" -c 'import importlib.metadata as m; print(m.version("mooncake-transfer-engine-non-cuda"))' \
	2>/dev/null || true)
if [ "$have" != "${mooncake_pin#*==}" ]; then
	echo "lmcache_bench: installing $mooncake_pin" >&2
	"$py" -m pip install --disable-pip-version-check -q "$mooncake_pin"
fi

[ -d build-release ] || meson setup build-release --buildtype=release -Dtests=false >/dev/null
ninja -C build-release >/dev/null
# The kvring package from this tree, so that the connector measured is the
# code beside it (incremental: seconds when nothing changed).
"$py" -m pip install --disable-pip-version-check -q --no-build-isolation --no-deps \
	--force-reinstall -Cbuild-dir=build-py ./python

mkdir -p "$out"
pidfile="$out/.pids"
: >"$pidfile"
bench=""
# Stop the benchmark, then whatever it had running that its own cleanup did
# not stop (it was killed outright): each child is listed in $pidfile with its
# start time, so a pid reused since is left alone.
cleanup() {
	local pid st name i
	if [ -n "$bench" ] && kill -0 "$bench" 2>/dev/null; then
		kill "$bench" 2>/dev/null || true
		for i in $(seq 100); do
			kill -0 "$bench" 2>/dev/null || break
			sleep 0.1
		done
	fi
	[ -f "$pidfile" ] || return 0
	while read -r pid st name; do
		[ -r "/proc/$pid/stat" ] || continue
		[ "$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f20)" = "$st" ] || continue
		echo "lmcache_bench: stopping $name ($pid)" >&2
		kill "$pid" 2>/dev/null || true
		for i in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
	done <"$pidfile"
	rm -f "$pidfile" "$pidfile.tmp"
	# The stores' files (GiBs) when the benchmark had no chance to remove them.
	rm -rf "$out/work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$(date +%s)
# In the background and waited for, so that a signal reaches the trap at once.
"$py" perf/lmcache_bench.py "${quick[@]}" --out "$out" --pidfile "$pidfile" &
bench=$!
rc=0
wait "$bench" || rc=$?
bench=""
if [ "$rc" = 0 ]; then
	echo "lmcache_bench: $out/lmcache.md ($(($(date +%s) - start)) s)" >&2
else
	echo "lmcache_bench: status $rc (a row failed, or the run was stopped): see $out/logs" >&2
fi
exit $rc
