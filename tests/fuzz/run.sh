#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders and of the file store's open
# (superblock, log replay) (libFuzzer, clang): builds
# build-fuzz (the library instrumented, ASan+UBSan), then runs each harness
# for SECONDS (default 60) from its committed corpus in tests/fuzz/corpus/.
# New inputs go to a scratch corpus, not into the repository; a crash stops
# the run, leaves the input in build-fuzz/crash-*, and exits non-zero.
#   bash tests/fuzz/run.sh [SECONDS]       # a longer run: bash tests/fuzz/run.sh 3600
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
if [ ! -d build-fuzz ]; then
	CC=clang meson setup build-fuzz -Dfuzz=true -Dtests=false -Dprograms=false -Dcuda=disabled \
		-Db_sanitize=address,undefined -Db_lundef=false --buildtype=debugoptimized \
		-Dwerror=true >/dev/null
fi
ninja -C build-fuzz >/dev/null
for h in fuzz_frame fuzz_hello fuzz_rmsg fuzz_filestore; do
	scratch=build-fuzz/corpus-$h
	mkdir -p "$scratch"
	log=build-fuzz/$h.log
	if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		build-fuzz/tests/fuzz/$h -max_total_time="$secs" -print_final_stats=1 \
		-artifact_prefix=build-fuzz/crash-$h- "$scratch" "tests/fuzz/corpus/$h" >"$log" 2>&1; then
		tail -40 "$log"
		echo "fuzz: $h FAILED (input in build-fuzz/crash-$h-*)"
		exit 1
	fi
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
	echo "fuzz: $h ok: $execs execs in ${secs}s, $cov"
done
