#!/usr/bin/env bash
# The test command: install what is missing, build twice (plain with -Werror,
# and with AddressSanitizer + UBSan), and run the whole suite on both; then
# the decoders under libFuzzer (tests/fuzz/run.sh); then the Python package:
# built by meson-python in a venv (tools/install-python-deps.sh, LMCache
# included), its pytest suite, and the binding's tests again on an
# ASan+UBSan build of the extension.
set -euo pipefail
cd "$(dirname "$0")/.."
# clang and libFuzzer for the decoders' fuzzing (tests/fuzz), beside the rest.
KVR_EXTRA_PKGS="clang libclang-rt-14-dev libfuzzer-14-dev ${KVR_EXTRA_PKGS:-}" bash tools/install-deps.sh
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

# Coverage-guided fuzzing of the frame, HELLO and RDMA-message decoders from
# their committed corpora (KVR_FUZZ_SECONDS a harness, default 60).
bash tests/fuzz/run.sh "${KVR_FUZZ_SECONDS:-60}"

# Python: the package as pip builds it, and its tests (LMCache's among them).
venv=build-venv
bash tools/install-python-deps.sh "$venv"
log=$(mktemp)
"$venv/bin/pip" install --no-build-isolation --no-deps --force-reinstall -Cbuild-dir=build-py \
	-Csetup-args=-Dwerror=true ./python >"$log" 2>&1 || { cat "$log"; exit 1; }
rm -f "$log"
export KVR_SERVER_BIN=$PWD/build/tools/kvring-server KVR_REQUIRE_LMCACHE=1
"$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests

if [ "${KVR_SKIP_SANITIZERS:-0}" != 1 ]; then
	# The extension under ASan+UBSan (the interpreter is not instrumented:
	# the runtimes are preloaded, and leaks are checked by the tests through
	# tracemalloc, which sees the C part's allocations).
	[ -d build-py-asan ] || "$venv/bin/meson" setup build-py-asan python -Dwerror=true \
		--buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
	ninja -C build-py-asan >/dev/null
	rm -rf build-py-asan/pkg && mkdir -p build-py-asan/pkg/kvring
	cp python/kvring/*.py python/kvring/*.pyi python/kvring/py.typed build-py-asan/_kvring*.so \
		build-py-asan/pkg/kvring/
	LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		PYTHONPATH=build-py-asan/pkg "$venv/bin/python" -m pytest -q --capture=sys \
		-p no:cacheprovider -m "not lmcache" python/tests
fi
