#!/usr/bin/env bash
# Deterministic CPU cost: user-space instructions per put/get, counted by
# callgrind on a fixed workload (kvring-icount), for 4 KiB and 1 MiB objects
# on the memory store and the file store.
#
#   perf/icount.sh [--check | --update] [--runs R] [--no-build] [BUILD_DIR]
#
#   (none)     print the table (and the baseline beside it, when there is one)
#   --check    exit 1 when a figure is more than 10% over perf/baseline.json
#   --update   write the figures to perf/baseline.json
#   --runs R   run every configuration R times and report the spread
#   --no-build do not run ninja first (meson test already built it)
#
# BUILD_DIR defaults to ./build. The baseline is for the debugoptimized
# build without sanitizers (what the test run builds); other builds skip.
# Exit codes: 0 pass, 1 regression or failure, 2 usage, 77 skipped (no
# valgrind, or a build the baseline does not describe).
# KVR_VALGRIND overrides the valgrind command (tests: KVR_VALGRIND=none).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
baseline="$here/baseline.json"
tolerance=0.10
mode=show
runs=1
build_first=1
build=""

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

while [ $# -gt 0 ]; do
	case $1 in
	--check) mode=check ;;
	--update) mode=update ;;
	--runs)
		[ $# -ge 2 ] || usage
		runs=$2
		shift
		;;
	--no-build) build_first=0 ;;
	-h | --help) usage ;;
	-*) usage ;;
	*) build=$1 ;;
	esac
	shift
done
case $runs in '' | *[!0-9]* | 0) usage ;; esac
build=$(cd "${build:-$root/build}" 2>/dev/null && pwd) || {
	[ "$build_first" = 1 ] || {
		echo "icount: no build directory ${build:-$root/build}" >&2
		exit 1
	}
	meson setup "${build:-$root/build}" --buildtype=debugoptimized >/dev/null
	build=$(cd "${build:-$root/build}" && pwd)
}

valgrind=${KVR_VALGRIND:-valgrind}
if ! command -v "$valgrind" >/dev/null 2>&1 || ! command -v callgrind_annotate >/dev/null 2>&1; then
	echo "icount: SKIP: valgrind (with callgrind_annotate) is not installed"
	exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
	echo "icount: SKIP: python3 is needed to read and write the baseline"
	exit 77
fi

# The figures depend on the compiler's output: only the build they were
# measured on is compared.
read -r buildtype sanitize compiler < <(python3 - "$build/meson-info" <<'EOF'
import json, os, subprocess, sys
o = {x["name"]: x["value"] for x in json.load(open(sys.argv[1] + "/intro-buildoptions.json"))}
s = o.get("b_sanitize", "none")
cc = "unknown"
try:  # the compiler the build runs: the first word of a compile command
    cmd = json.load(open(sys.argv[1] + "/../compile_commands.json"))[0]["command"].split()[0]
    v = subprocess.run([cmd, "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    cc = f"{os.path.basename(cmd)}-{v}" if v else cc
except (OSError, KeyError, ValueError, IndexError):
    pass
# newer meson gives b_sanitize as a list ([] for none): an empty field
# would shift the compiler into its place
s = ",".join(s) if isinstance(s, list) else s
print(o.get("buildtype", "?"), s or "none", cc)
EOF
)
if [ "$buildtype" != debugoptimized ] || [ "$sanitize" != none ]; then
	echo "icount: SKIP: $build is a $buildtype build (sanitizers: $sanitize); the baseline" \
		"describes debugoptimized without sanitizers"
	exit 77
fi

exe="$build/perf/kvring-icount"
if [ "$build_first" = 1 ]; then
	ninja -C "$build" perf/kvring-icount >/dev/null
fi
[ -x "$exe" ] || {
	echo "icount: $exe is missing (build it: ninja -C $build perf/kvring-icount)" >&2
	exit 1
}

# Not /tmp (often tmpfs, no O_DIRECT): the file store lives in the build dir,
# in a directory of perf/ (the program runs there as ../kvring-icount).
tmp=$(mktemp -d "$build/perf/icount.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# name target op size ops
configs=(
	"mem-get-4K mem:64M get 4K 2000"
	"mem-put-4K mem:64M put 4K 2000"
	"mem-get-1M mem:64M get 1M 200"
	"mem-put-1M mem:64M put 1M 200"
	"file-get-4K file:store.kvr get 4K 2000"
	"file-put-4K file:store.kvr put 4K 2000"
	"file-get-1M file:store.kvr get 1M 200"
	"file-put-1M file:store.kvr put 1M 200"
)
batch=16

# With client requests the program switches counting on and off itself;
# without them, count the function holding the measured loop.
if [ "$("$exe" --requests)" = yes ]; then
	vg_count=(--instr-atstart=no --collect-atstart=yes)
else
	echo "icount: note: kvring-icount was built without <valgrind/callgrind.h>;" \
		"counting measured_loop, waits for I/O included"
	vg_count=(--collect-atstart=no --toggle-collect=measured_loop)
fi

# Run one configuration; prints its total Ir. $1 name, then kvring-icount args.
count() {
	local name=$1 out="$tmp/$1.out"
	shift
	rm -f "$tmp/store.kvr"
	# The same environment, argv and working directory wherever it runs:
	# glibc reads MALLOC_PERTURB_ (meson test sets it: ~15 more instructions
	# per op in malloc/free), and the size of argv and environ moves the
	# stack, which changes a few instructions of alignment-dependent copies.
	if ! (cd "$tmp" && env -i PATH="$PATH" ${LD_LIBRARY_PATH:+LD_LIBRARY_PATH="$LD_LIBRARY_PATH"} \
		"$valgrind" -q --tool=callgrind "${vg_count[@]}" --callgrind-out-file="$out" \
		../kvring-icount "$@") >"$tmp/$name.log" 2>&1; then
		echo "icount: $name failed:" >&2
		cat "$tmp/$name.log" >&2
		return 1
	fi
	sed -n 's/^totals: *\([0-9][0-9]*\).*/\1/p' "$out"
}

t0=$(date +%s)
results="$tmp/results"
: >"$results"
for c in "${configs[@]}"; do
	read -r name target op size ops <<<"$c"
	all=""
	for ((r = 0; r < runs; r++)); do
		ir=$(count "$name" --target "$target" --op "$op" --size "$size" --ops "$ops" \
			--batch "$batch")
		[ -n "$ir" ] || {
			echo "icount: $name: no totals in the callgrind output" >&2
			exit 1
		}
		all="$all $ir"
	done
	echo "$name $ops$all" >>"$results"
done
elapsed=$(($(date +%s) - t0))

valgrind_version=$("$valgrind" --version)
# Top functions of the 4 KiB memory get, by self cost.
top="$tmp/top"
callgrind_annotate --threshold=100 "$tmp/mem-get-4K.out" 2>/dev/null >"$top" || :

python3 - "$mode" "$baseline" "$results" "$tolerance" "$batch" "$valgrind_version" \
	"$compiler" "$elapsed" "$top" <<'EOF'
import json, os, re, subprocess, sys

mode, path, results, tol, batch, vg, cc, elapsed, top = sys.argv[1:]
tol, batch = float(tol), int(batch)

rows = []
for line in open(results):
    f = line.split()
    name, ops, irs = f[0], int(f[1]), [int(x) for x in f[2:]]
    rows.append((name, ops, irs))

base = {}
meta = {}
if os.path.exists(path):
    meta = json.load(open(path))
    base = {k: v["instr_per_op"] for k, v in meta.get("configs", {}).items()}

print(f"user-space instructions per operation (callgrind Ir / ops, batch {batch})")
multi = any(len(irs) > 1 for _, _, irs in rows)
hdr = f"{'config':<12} {'ops':>5} {'instr/op':>10} {'baseline':>10} {'ratio':>6}"
print(hdr + ("  spread of runs" if multi else ""))
worse = []
for name, ops, irs in rows:
    per = max(irs) / ops
    b = base.get(name)
    ratio = per / b if b else None
    line = f"{name:<12} {ops:>5} {per:>10.1f} "
    line += f"{b:>10.1f} {ratio:>6.3f}" if b else f"{'-':>10} {'-':>6}"
    if multi:
        spread = (max(irs) - min(irs)) / max(irs)
        line += f"  {spread * 100:.4f}% ({' '.join(str(x) for x in irs)})"
    if ratio and ratio > 1 + tol:
        line += f"  REGRESSION (+{(ratio - 1) * 100:.1f}%)"
        worse.append(name)
    print(line)
print(f"({len(rows)} configurations, {elapsed} s under valgrind; {vg}; {cc})")

# Top functions (self cost) of mem-get-4K, per op. Stripped libraries show
# as ???:0xADDR: name them from the library's dynamic symbols.
ops4k = next((ops for n, ops, _ in rows if n == "mem-get-4K"), 0)
syms = {}
def name_of(fn, lib):
    m = re.match(r"\?\?\?:0x0*([0-9a-f]+)$", fn)
    if not m or not lib:
        return fn
    if lib not in syms:
        syms[lib] = {}
        try:
            out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True,
                                 text=True).stdout
            for l in out.splitlines():
                p = l.split()
                if len(p) == 3:
                    syms[lib].setdefault(int(p[0], 16), p[2])
        except OSError:
            pass
    s = syms[lib].get(int(m.group(1), 16))
    return f"{s} (???:0x{m.group(1)})" if s else fn
lines = open(top).read().splitlines() if os.path.exists(top) else []
fns = []
started = False
for l in lines:
    if re.match(r"^Ir\s+file:function", l):
        started = True
        continue
    m = re.match(r"^\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(\S+)(?:\s+\[(.*)\])?", l)
    if started and m:
        fn = m.group(3)
        if ":" in fn and not fn.startswith("???"):
            fn = fn.rsplit(":", 1)[1] + "  (" + os.path.basename(fn.rsplit(":", 1)[0]) + ")"
        fns.append((int(m.group(1).replace(",", "")), float(m.group(2)),
                    name_of(m.group(3), m.group(4)) if m.group(3).startswith("???") else fn))
if fns and ops4k:
    print("\ntop functions of mem-get-4K (self Ir per op, share of the total):")
    for ir, pct, fn in fns[:10]:
        print(f"  {ir / ops4k:>8.1f}  {pct:>5.1f}%  {fn}")

if mode == "update":
    out = {
        "what": "user-space instructions per operation: callgrind Ir of the measured "
                "loop of kvring-icount divided by its operations (perf/icount.sh)",
        "build": "debugoptimized, no sanitizers",
        "valgrind": vg,
        "compiler": cc,
        "batch": batch,
        "tolerance": tol,
        "configs": {n: {"ops": ops, "instr_per_op": round(max(irs) / ops, 1)}
                    for n, ops, irs in rows},
    }
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(f"\nwrote {path}")
elif mode == "check":
    if not base:
        print(f"\nicount: FAIL: no baseline at {path} (write one with perf/icount.sh --update)")
        sys.exit(1)
    if meta.get("valgrind") != vg or meta.get("compiler") != cc:
        print(f"\nnote: the baseline was measured with {meta.get('valgrind')}, "
              f"{meta.get('compiler')}: figures may differ for that reason alone")
    for n, ops, _ in rows:
        bops = meta["configs"].get(n, {}).get("ops")
        if bops is not None and bops != ops:
            print(f"note: {n} ran {ops} ops, its baseline {bops}: per-op figures amortise "
                  "setup differently")
    missing = [n for n, _, _ in rows if n not in base]
    if worse or missing:
        for n in worse:
            print(f"icount: FAIL: {n} is more than {tol * 100:.0f}% over its baseline")
        for n in missing:
            print(f"icount: FAIL: {n} has no baseline figure (perf/icount.sh --update)")
        sys.exit(1)
    print(f"\nicount: PASS: every figure within {tol * 100:.0f}% of the baseline")
EOF
