#!/usr/bin/env bash
# Reproduce the README's "TCP transport on loopback" tables in one run: a
# private kvring-server on a free loopback port, the references of
# perf/tcp_refs.sh (iperf3 -P 2, redis-benchmark 1 MiB and 4 KiB -P 16), and
# kvring-bench against the server, printed as Markdown with ratios.
#
#   1 MiB put/get, 2 connections, batches of 8 x depth 4 (32 objects in
#   flight), zero-copy and --copy (bounce buffer + memcpy on the client).
#   4 KiB put/get, 2 connections, 32 objects in flight as redis-benchmark
#   -c 2 -P 16 has: batches of 16 x depth 2 (a batch is a pipeline of 16 that
#   completes when its last answer is in, as redis-benchmark waits for all 16
#   replies before it sends the next 16), and 32 independent batches of 1.
#
# Usage: bash perf/tcp_table.sh [OUTDIR]   (OUTDIR keeps every JSON result)
# Environment: KVR_TABLE_SECONDS (each kvring run and iperf3, default 8),
# KVR_TABLE_MEMORY (the server's pool, default 2G); KVR_REFS_N_LARGE and
# KVR_REFS_N_SMALL pass to tcp_refs.sh (defaults here 20000 and 1000000, so
# that each redis figure also lasts a few seconds). About 2 minutes.
# Client and server share this machine's cores, as iperf3's and redis's two
# ends do; the last two lines say how much CPU other processes took meanwhile
# (a figure measured beside a busy neighbour is not worth comparing).
# Every process it starts is stopped on exit, and it can be run again at once.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${KVR_TABLE_SECONDS:-8}
memory=${KVR_TABLE_MEMORY:-2G}

extra="iperf3 redis-server redis-tools"
command -v python3 >/dev/null || extra="$extra python3"
KVR_EXTRA_PKGS="$extra" bash tools/install-deps.sh
[ -d build-release ] || meson setup build-release --buildtype=release -Dtests=false >/dev/null
ninja -C build-release >/dev/null
bench=build-release/perf/kvring-bench
server=build-release/tools/kvring-server

dir=$(mktemp -d "${TMPDIR:-/tmp}/kvring-tcp-table.XXXXXX")
keep=${1:-}
srv="" # the kvring-server
cur="" # the reference script or benchmark now running
cleanup() {
	local p
	for p in $cur $srv; do
		kill "$p" 2>/dev/null || true
	done
	for p in $cur $srv; do
		wait "$p" 2>/dev/null || true
	done
	if [ -n "$keep" ]; then
		mkdir -p "$keep"
		cp "$dir"/*.json* "$dir"/*.log "$keep"/ 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run a command in the background and wait for it, so that a signal to this
# script reaches the trap at once and the cleanup stops the command too.
bgwait() {
	local rc=0
	"$@" &
	cur=$!
	wait "$cur" || rc=$?
	cur=""
	return $rc
}

# CPU ticks per process name from /proc: "snap FILE" saves them, "diff FILE SECS
# WHAT [FILE2]" prints what processes other than this run's took since (until FILE2).
cpu_py='
import json, os, sys
ours = {"kvring-server", "kvring-bench", "iperf3", "redis-server", "redis-benchmark",
        "bash", "python3", "sleep", "tail", "sed", "cat", "ninja"}
def snap():
    d = {}
    for p in os.listdir("/proc"):
        try:
            s = open("/proc/%s/stat" % p).read()
        except OSError:
            continue
        f = s[s.rindex(")") + 2:].split()
        d[p] = [s[s.index("(") + 1:s.rindex(")")], int(f[11]) + int(f[12])]
    return d
if sys.argv[1] == "snap":
    json.dump(snap(), open(sys.argv[2], "w"))
    sys.exit(0)
# diff BEFORE SECONDS WHAT [AFTER]: AFTER defaults to now
a, hz, secs = json.load(open(sys.argv[2])), os.sysconf("SC_CLK_TCK"), max(float(sys.argv[3]), 1)
b = json.load(open(sys.argv[5])) if len(sys.argv) > 5 else snap()
other = {}
for p, (comm, t) in b.items():
    if comm in ours or comm.startswith(("ksoftirqd", "kworker")):
        continue
    t -= a.get(p, [comm, 0])[1]
    if t > 0:
        other[comm] = other.get(comm, 0) + t
tot = sum(other.values()) / hz / secs * 100
top = ", ".join("%s %.0f%%" % (c, t / hz / secs * 100)
                for c, t in sorted(other.items(), key=lambda x: -x[1])[:4])
print("Other processes took %.0f%% of one core during %s%s." % (tot, sys.argv[4], ": " + top if tot >= 1 else ""))
'

# ---------------------------------------------------------- kvring-server
"$server" --listen tcp://127.0.0.1:0 --memory "$memory" --prefault sync >"$dir/server.out" \
	2>"$dir/server.log" &
srv=$!
addr=""
for _ in $(seq 1200); do # the pool is touched at start: allow a minute
	addr=$(sed -n 's/^kvring-server: listening \(tcp:\/\/.*\)$/\1/p' "$dir/server.out")
	[ -n "$addr" ] && break
	kill -0 "$srv" 2>/dev/null || break
	sleep 0.05
done
if [ -z "$addr" ]; then
	echo "tcp_table: kvring-server did not start:" >&2
	cat "$dir/server.out" "$dir/server.log" >&2 || true
	exit 1
fi
echo "tcp_table: kvring-server at $addr (pool $memory)" >&2

# ------------------------------------------------------------- references
t0=$(date +%s)
python3 -c "$cpu_py" snap "$dir/cpu0"
KVR_REFS_SECONDS=$secs KVR_REFS_N_LARGE=${KVR_REFS_N_LARGE:-20000} \
	KVR_REFS_N_SMALL=${KVR_REFS_N_SMALL:-1000000} bgwait bash perf/tcp_refs.sh "$dir/refs.jsonl" >/dev/null

t1=$(date +%s)
python3 -c "$cpu_py" snap "$dir/cpu1"

# ----------------------------------------------------------------- kvring
# run NAME OPTIONS...: one kvring-bench run against the server, as NAME.json
run() {
	local name=$1
	shift
	echo "tcp_table: kvring-bench $*" >&2
	bgwait "$bench" --target "$addr" --conns 2 --seconds "$secs" --json "$dir/$name.json" \
		"$@" >"$dir/$name.log"
	tail -n 1 "$dir/$name.log" >&2
}
for op in put get; do
	run "${op}_1m" --op $op --size 1M --batch 8 --depth 4 --keys 256
	run "${op}_1m_copy" --op $op --size 1M --batch 8 --depth 4 --keys 256 --copy
	run "${op}_4k_b16" --op $op --size 4K --batch 16 --depth 2 --keys 4096
	run "${op}_4k_b1" --op $op --size 4K --batch 1 --depth 32 --keys 4096
done

# ------------------------------------------------------------------ table
python3 - "$dir" <<'EOF'
import json, os, sys

d = sys.argv[1]
k = {n[:-5]: json.load(open(os.path.join(d, n))) for n in os.listdir(d) if n.endswith(".json")}
refs = [json.loads(l) for l in open(os.path.join(d, "refs.jsonl")) if l.strip()]
iperf = next(r for r in refs if r["ref"] == "iperf3")
redis = {(r["op"], r["size"]): r for r in refs if r["ref"] == "redis"}

def gb(x): return f"{x:.2f} GB/s"
def kops(x): return f"{x / 1000:.0f} k/s"
def goal(r, g): return f"{r:.2f} ({'met' if r >= g else 'MISSED'}: >= {g:.2f})"

name = {"put": "SET", "get": "GET"}
print("| workload | kvring | reference | ratio |")
print("|:--|--:|--:|--:|")
for op in ("put", "get"):
    r = k[f"{op}_1m"]
    print(f"| {op} 1 MiB, 2 conns, 8 x 4 in flight vs iperf3 -P 2 | {gb(r['gbps'])} "
          f"| {gb(iperf['gbps'])} | {goal(r['gbps'] / iperf['gbps'], 0.75)} |")
for op in ("put", "get"):
    r, x = k[f"{op}_1m"], redis[(op, 1048576)]
    print(f"| {op} 1 MiB, 2 conns vs redis {name[op]} -d 1MiB -c 2 | {gb(r['gbps'])} "
          f"| {gb(x['gbps'])} | {goal(r['gbps'] / x['gbps'], 1.0)} |")
for shape, label in (("b16", "batches of 16 x 2"), ("b1", "32 batches of 1")):
    for op in ("put", "get"):
        r, x = k[f"{op}_4k_{shape}"], redis[(op, 4096)]
        print(f"| {op} 4 KiB, 2 conns, {label} vs redis {name[op]} -d 4096 -P 16 -c 2 "
              f"| {kops(r['ops_per_s'])} | {kops(x['ops_per_s'])} "
              f"| {r['ops_per_s'] / x['ops_per_s']:.2f} |")
print()
print("| op | size | zero-copy | copy path | ratio |")
print("|:--|--:|--:|--:|--:|")
for op in ("put", "get"):
    z, c = k[f"{op}_1m"], k[f"{op}_1m_copy"]
    print(f"| {op} | 1 MiB | {gb(z['gbps'])} | {gb(c['gbps'])} | {z['gbps'] / c['gbps']:.2f} |")
print()
print(f"iperf3 -P 2: {gb(iperf['gbps'])}, CPU sender {iperf['cpu_host_pct']:.0f}% "
      f"receiver {iperf['cpu_remote_pct']:.0f}%; redis p50 latency 1 MiB "
      f"SET {redis[('put', 1048576)]['lat_ms'].get('p50', 0)} ms "
      f"GET {redis[('get', 1048576)]['lat_ms'].get('p50', 0)} ms")
EOF
python3 -c "$cpu_py" diff "$dir/cpu0" "$((t1 - t0))" "the references" "$dir/cpu1"
python3 -c "$cpu_py" diff "$dir/cpu1" "$(($(date +%s) - t1))" "the kvring runs"
