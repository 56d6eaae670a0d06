#!/usr/bin/env bash
# Reproduce the README's performance table: the file store against fio
# (same shape, same file system, same run) and zero-copy against the copy
# path on both stores. Usage: bash perf/table.sh [DIR] (default: $TMPDIR or /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
[ -d build-release ] || meson setup build-release --buildtype=release -Dtests=false >/dev/null
ninja -C build-release >/dev/null
bench=build-release/perf/kvring-bench
dir=${1:-${TMPDIR:-/tmp}}/kvring-table.$$
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT
secs=${KVR_TABLE_SECONDS:-5}
run() { "$bench" --seconds "$secs" "$@" | tail -n 1; }

echo "## file store vs fio (io_uring, O_DIRECT, fixed buffers, registered files)"
run --target "file:$dir/s1" --capacity 8G --op get --size 1M --batch 8 --depth 4 --fio
run --target "file:$dir/s1" --capacity 8G --op put --size 1M --batch 8 --depth 4 --fio
# 64 objects in flight, as fio's iodepth 64: independent, then in batches of 16
run --target "file:$dir/s2" --capacity 8G --op get --size 4K --batch 1 --depth 64 --fio
run --target "file:$dir/s2" --capacity 8G --op get --size 4K --batch 16 --depth 4 --fio
rm -f "$dir"/s1* "$dir"/s2*
echo "## zero-copy vs the copy path (bounce buffer + memcpy)"
for size in 1M 4M; do
	for op in put get; do
		for copy in "" --copy; do
			run --target mem:2G --op $op --size $size --batch 8 --depth 4 $copy
			run --target "file:$dir/s3" --capacity 8G --op $op --size $size --batch 8 \
				--depth 4 $copy
		done
	done
done
