#!/usr/bin/env bash
# Install the Debian packages kvring builds and tests with, if any are missing.
# Quiet and idempotent; used by the quick start, the tests and CI.
set -euo pipefail
pkgs="gcc pkg-config meson ninja-build liburing-dev libibverbs-dev libcmocka-dev \
libisal-dev libxxhash-dev libssl-dev fio valgrind \
qemu-system-x86 busybox-static cpio ibverbs-utils ibverbs-providers iproute2 ${KVR_EXTRA_PKGS:-}"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	echo "installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq
	# shellcheck disable=SC2086
	$sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The RDMA VM tests fetch a kernel package: make sure the package lists are
# there even when every package above was already installed.
if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	$sudo apt-get update -qq
fi
