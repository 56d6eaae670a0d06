#!/usr/bin/env bash
# kvring-server's startup: how long until it accepts a connection
# (time-to-listen) and until its whole pool is faulted in and pinned
# (time-to-full: STATS pool_bytes_ready == pool_bytes), for each --memory
# size, with the default --prefault background and, as the same-run
# reference, --prefault sync (the old order: everything before listening).
#
# Times run from the spawn of the process: listen = the first TCP connect
# that succeeds (tried every 5 ms), full = the first STATS (asked every
# 50 ms, by `kvring stats`) that shows the pool ready. Each size runs
# background first, then sync (KVR_STARTUP_ORDER=sync for the other way).
# On a virtual machine, first touch of guest memory the host does not back
# is the slow part (seconds per GiB; a tenth of that for pages another run
# freed moments ago, until the guest reports them free and the host takes
# them back), so each run waits KVR_STARTUP_GAP seconds first, and starts,
# like a fresh machine, from memory the host no longer backs. Absolute times
# vary between machines and runs; the ratios of one run are what to
# compare.
#
# Usage: bash perf/server_startup.sh [SIZE...]   (default: 1G 4G 8G)
# Environment: KVR_STARTUP_ORDER (above), KVR_STARTUP_REPS (runs of each
# mode per size, default 1: the table then shows medians, and the order
# alternates from run to run), KVR_STARTUP_GAP (seconds of rest before each
# run, default 10; 0 measures back-to-back restarts), KVR_BUILD (a build directory with tools/, default
# build-release, configured and built here if missing), KVR_STARTUP_JSON
# (append one JSON object per run to this file). Needs the largest SIZE
# free in RAM (`free -g`). Every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1G 4G 8G)
build=${KVR_BUILD:-build-release}
json=${KVR_STARTUP_JSON:-}
order=${KVR_STARTUP_ORDER:-background}
reps=${KVR_STARTUP_REPS:-1}
gap=${KVR_STARTUP_GAP:-10}
case $order in
background) modes=(background sync) ;;
sync) modes=(sync background) ;;
*)
	echo "server_startup: KVR_STARTUP_ORDER is background or sync" >&2
	exit 2
	;;
esac

if [ ! -d "$build" ]; then
	meson setup "$build" --buildtype=release -Dtests=false >/dev/null
fi
ninja -C "$build" tools/kvring-server tools/kvring >/dev/null
server=$build/tools/kvring-server
cli=$build/tools/kvring

dir=$(mktemp -d "${TMPDIR:-/tmp}/kvring-startup.XXXXXX")
srv=""
cleanup() {
	if [ -n "$srv" ]; then
		kill "$srv" 2>/dev/null || true
		wait "$srv" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ns() { date +%s%N; }

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# run SIZE MODE: sets listen_s, full_s (seconds from the spawn)
run() {
	local size=$1 mode=$2 port t0 t st
	sleep "$gap"
	port=$(free_port)
	t0=$(now_ns)
	"$server" --listen "tcp://127.0.0.1:$port" --memory "$size" --prefault "$mode" \
		--log-level warn >/dev/null 2>"$dir/server.log" &
	srv=$!
	until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
		if ! kill -0 "$srv" 2>/dev/null; then
			echo "server_startup: kvring-server --memory $size died:" >&2
			cat "$dir/server.log" >&2
			exit 1
		fi
		sleep 0.005
	done
	t=$(now_ns)
	listen_s=$(awk -v a="$t0" -v b="$t" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
	# No interpreter in this loop: the faulting shares the cores with it.
	while :; do
		st=$("$cli" --timeout 5000 stats "tcp://127.0.0.1:$port" | grep '"node"' || true)
		t=$(now_ns)
		if [[ $st =~ \"pool_bytes\":([0-9]+),\"pool_bytes_ready\":([0-9]+)\} ]] &&
			[ "${BASH_REMATCH[1]}" -gt 0 ] && [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ]; then
			break
		fi
		kill -0 "$srv" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
		sleep 0.05
	done
	full_s=$(awk -v a="$t0" -v b="$t" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
	kill "$srv"
	wait "$srv" || { echo "server_startup: unclean exit" >&2; exit 1; }
	srv=""
	if [ -n "$json" ]; then
		printf '{"bench":"server_startup","memory":"%s","prefault":"%s","listen_s":%s,"full_s":%s}\n' \
			"$size" "$mode" "$listen_s" "$full_s" >>"$json"
	fi
}

# median of the arguments
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "server_startup: $(nproc) cores, $(free -g | awk '/^Mem:/ { print $7 }') GiB available, $(uname -r), $reps run(s) of each" >&2
rows=()
for size in "${sizes[@]}"; do
	bls=() bfs=() sls=() sfs=()
	for ((r = 0; r < reps; r++)); do
		# alternate which goes first, so neither always gets the freed pages
		if ((r % 2)); then
			ms=("${modes[1]}" "${modes[0]}")
		else
			ms=("${modes[@]}")
		fi
		for mode in "${ms[@]}"; do
			run "$size" "$mode"
			echo "server_startup: --memory $size --prefault $mode: listen $listen_s s, full $full_s s" >&2
			if [ "$mode" = background ]; then
				bls+=("$listen_s") bfs+=("$full_s")
			else
				sls+=("$listen_s") sfs+=("$full_s")
			fi
		done
	done
	rows+=("$(awk -v m="$size" -v bl="$(median "${bls[@]}")" -v bf="$(median "${bfs[@]}")" \
		-v sl="$(median "${sls[@]}")" -v sf="$(median "${sfs[@]}")" 'BEGIN {
		printf "| %-6s | %12.3f | %10.3f | %14.3f | %12.3f | %13.0fx | %11.2fx |", m, bl, bf, sl, sf,
			sl / (bl > 0 ? bl : 0.001), bf / (sf > 0 ? sf : 0.001) }')")
done
echo "| memory | listen s, bg | full s, bg | listen s, sync | full s, sync | listen sync/bg | full bg/sync |"
echo "| ------ | ------------ | ---------- | -------------- | ------------ | -------------- | ------------ |"
printf '%s\n' "${rows[@]}"
