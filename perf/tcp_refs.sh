#!/usr/bin/env bash
# Reference figures for kvring's TCP transport, measured on loopback in one
# run on this machine, for a table script to set beside kvring-bench --json:
#
#   iperf3 -P 2        raw TCP throughput of 2 streams (the wire's ceiling)
#   redis 1 MiB        redis-benchmark -d 1048576 -c 2 -t set,get (a private
#                      redis-server, no persistence)
#   redis 4 KiB x16    redis-benchmark -d 4096 -P 16 -c 2 -t set,get
#
# Output: one JSON object per line on stdout (and appended to FILE when
# given), every throughput in "gbps" = 1e9 bytes/s as in kvring-bench's JSON:
#   {"ref":"iperf3","streams":2,"seconds":5,"gbps":..,"cpu_host_pct":..,"cpu_remote_pct":..}
#   {"ref":"redis","op":"put","size":1048576,"clients":2,"pipeline":1,"requests":N,
#    "ops_per_s":..,"gbps":..,"lat_ms":{"avg":..,"p50":..,"p99":..}}
# ("put"/"get" are redis SET/GET, named as kvring-bench names its ops.)
# redis-benchmark's SET/GET use one key over and over (no -r), so redis
# serves from a hot cache: a reference that flatters redis, never kvring.
#
# Usage: bash perf/tcp_refs.sh [FILE]
# Environment: KVR_REFS_SECONDS (iperf3 time, default 5), KVR_REFS_N_LARGE
# (1 MiB requests per op, default 5000), KVR_REFS_N_SMALL (4 KiB requests per
# op, default 500000). Every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-}
secs=${KVR_REFS_SECONDS:-5}
n_large=${KVR_REFS_N_LARGE:-5000}
n_small=${KVR_REFS_N_SMALL:-500000}

extra="iperf3 redis-server redis-tools"
command -v python3 >/dev/null || extra="$extra python3"
KVR_EXTRA_PKGS="$extra" bash tools/install-deps.sh

dir=$(mktemp -d "${TMPDIR:-/tmp}/kvring-refs.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

emit() {
	echo "$1"
	[ -z "$out" ] || echo "$1" >>"$out"
}

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait (at most 10 s) until "$2" appears in file $1, or fail if process $3 died.
wait_for() {
	local _
	for _ in $(seq 200); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		kill -0 "$3" 2>/dev/null || break
		sleep 0.05
	done
	echo "tcp_refs: gave up waiting for '$2' in $1:" >&2
	cat "$1" >&2 || true
	return 1
}

# ------------------------------------------------------------------ iperf3
port=$(free_port)
iperf3 -s -1 --forceflush -B 127.0.0.1 -p "$port" >"$dir/iperf3-server.log" 2>&1 &
pids+=($!)
wait_for "$dir/iperf3-server.log" "Server listening" "${pids[-1]}"
echo "tcp_refs: iperf3 -P 2 for ${secs} s" >&2
iperf3 -c 127.0.0.1 -p "$port" -P 2 -t "$secs" -J >"$dir/iperf3.json"
emit "$(python3 - "$dir/iperf3.json" "$secs" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
end = d["end"]
bps = end["sum_received"]["bits_per_second"]
cpu = end.get("cpu_utilization_percent", {})
print(json.dumps({"ref": "iperf3", "streams": 2, "seconds": float(sys.argv[2]),
                  "gbps": round(bps / 8 / 1e9, 4),
                  "cpu_host_pct": round(cpu.get("host_total", 0), 1),
                  "cpu_remote_pct": round(cpu.get("remote_total", 0), 1)},
                 separators=(",", ":")))
EOF
)"

# ------------------------------------------------------------------- redis
port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
	--dir "$dir" --daemonize no --logfile "$dir/redis.log" --protected-mode yes &
pids+=($!)
wait_for "$dir/redis.log" "Ready to accept connections" "${pids[-1]}"

# redis_bench SIZE PIPELINE REQUESTS
redis_bench() {
	echo "tcp_refs: redis-benchmark -d $1 -P $2 -c 2 -n $3" >&2
	redis-benchmark -h 127.0.0.1 -p "$port" -d "$1" -P "$2" -c 2 -t set,get -n "$3" \
		--csv >"$dir/redis.csv"
	python3 - "$dir/redis.csv" "$1" "$2" "$3" <<'EOF'
import csv, json, sys
size, pipeline, n = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = list(csv.reader(open(sys.argv[1])))
head = rows[0] if rows and rows[0] and rows[0][0] == "test" else ["test", "rps"]
for row in rows:
    if not row or row[0] == "test":
        continue
    r = dict(zip(head, row))
    rps = float(r["rps"])
    lat = {k: float(r[k + "_latency_ms"]) for k in ("avg", "p50", "p99")
           if k + "_latency_ms" in r}
    print(json.dumps({"ref": "redis", "op": {"SET": "put", "GET": "get"}.get(r["test"], r["test"]),
                      "size": size, "clients": 2, "pipeline": pipeline, "requests": n,
                      "ops_per_s": rps, "gbps": round(rps * size / 1e9, 4), "lat_ms": lat},
                     separators=(",", ":")))
EOF
}
redis_bench 1048576 1 "$n_large" >"$dir/large.jsonl"
redis_bench 4096 16 "$n_small" >"$dir/small.jsonl"
while read -r line; do
	emit "$line"
done < <(cat "$dir/large.jsonl" "$dir/small.jsonl")
