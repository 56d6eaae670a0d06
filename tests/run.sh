#!/usr/bin/env bash
# The test command: install what is missing, build twice (plain with -Werror,
# and with AddressSanitizer + UBSan), and run the whole suite on both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
jobs=$(nproc)

build() { # dir, extra meson args...
	local dir=$1
	shift
	local log
	log=$(mktemp)
	if [ ! -d "$dir" ]; then
		meson setup "$dir" -Dwerror=true --buildtype=debugoptimized "$@" >"$log" 2>&1 ||
			{ cat "$log"; rm -f "$log"; return 1; }
	fi
	ninja -C "$dir" >"$log" 2>&1 || { cat "$log"; rm -f "$log"; return 1; }
	rm -f "$log"
}

build build
meson test -C build --print-errorlogs --num-processes "$jobs"

if [ "${KVR_SKIP_SANITIZERS:-0}" != 1 ]; then
	build build-asan -Db_sanitize=address,undefined -Db_lundef=false
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C build-asan --print-errorlogs --num-processes "$jobs" --timeout-multiplier 3
fi
