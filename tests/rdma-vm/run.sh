#!/usr/bin/env bash
# Run test programs inside a qemu VM (TCG, no KVM needed) whose kernel has
# Soft-RoCE (rdma_rxe) verbs devices, and exit with their combined status.
# The guest side is guest-init.sh; README.md says what the VM provides.
set -euo pipefail

me=rdma-vm
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
	cat <<'EOF'
usage: run.sh --build-dir DIR [options] [--] [TESTBIN...]

Boots Debian's kernel under qemu-system-x86_64 (TCG) with rxe devices, runs a
smoke test (ibv_devinfo, ibv_rc_pingpong), then each TESTBIN in turn inside
the VM, and exits 0 if all passed (77 if all skipped, else the first failing
status; 99 if the VM itself did not come up right; 124 on timeout).

  --build-dir DIR     meson build dir; the kernel cache goes to DIR/rdma-vm-cache
                      unless KVR_RDMA_VM_CACHE names another place
  --server PATH       a kvring-server binary; the guest exports KVR_SERVER_BIN
  --with PATH         put another program (and its libraries) into the VM, at
                      its host path, without running it (repeatable)
  --shell-cmd CMD     run CMD with sh inside the VM, like a test (repeatable)
  --env NAME=VALUE    export NAME=VALUE to the tests (repeatable)
  --timeout S         hard limit for the whole VM run (default 300)
  --test-timeout S    limit for each test (default 120)
  --mem SIZE          guest memory (default 4G)
  --no-smoke          skip the smoke test
  --verbose           show all kernel messages on the console

A TESTBIN without a slash is looked up in PATH (e.g. ibv_devinfo). Binaries run
at the same absolute path as on the host, with all their shared libraries.

Environment: KVR_RDMA_VM_ALLOW_SKIP=1 exits 77 instead of failing when qemu, a
host tool or the kernel package is not available (KVR_RDMA_VM_REQUIRE=1 undoes
it, for CI); KVR_RDMA_VM_CACHE, KVR_RDMA_VM_KERNEL_PKG (default: what
linux-image-amd64 depends on), KVR_RDMA_VM_QEMU, KVR_RDMA_VM_ACCEL (default
tcg,thread=multi; kvm where KVM works), KVR_RDMA_VM_KEEP=1 (keep the assembled
image), and KVR_RDMA_VM_{TIMEOUT,TEST_TIMEOUT,MEM} as defaults.
EOF
}

die() {
	echo "$me: $*" >&2
	exit 99
}

unavailable() {
	echo "$me: $*" >&2
	if [ "${KVR_RDMA_VM_ALLOW_SKIP:-0}" = 1 ] && [ "${KVR_RDMA_VM_REQUIRE:-0}" != 1 ]; then
		echo "$me: skipped (KVR_RDMA_VM_ALLOW_SKIP=1)" >&2
		exit 77
	fi
	exit 99
}

build_dir=
server=
withs=()
timeout_s=${KVR_RDMA_VM_TIMEOUT:-300}
test_timeout=${KVR_RDMA_VM_TEST_TIMEOUT:-120}
mem=${KVR_RDMA_VM_MEM:-4G}
smoke=1
verbose=0
items=() # "t:PATH" (a program) or "c:CMD" (a shell command)
envs=()

need() { [ "$1" -ge 2 ] || die "option $2 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
	case $1 in
	--build-dir) need $# "$1"; build_dir=$2; shift 2 ;;
	--server) need $# "$1"; server=$2; shift 2 ;;
	--with) need $# "$1"; withs+=("$2"); shift 2 ;;
	--shell-cmd) need $# "$1"; items+=("c:$2"); shift 2 ;;
	--env) need $# "$1"; envs+=("$2"); shift 2 ;;
	--timeout) need $# "$1"; timeout_s=$2; shift 2 ;;
	--test-timeout) need $# "$1"; test_timeout=$2; shift 2 ;;
	--mem) need $# "$1"; mem=$2; shift 2 ;;
	--no-smoke) smoke=0; shift ;;
	--verbose) verbose=1; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; for a in "$@"; do items+=("t:$a"); done; break ;;
	-*) die "unknown option $1 (see --help)" ;;
	*) items+=("t:$1"); shift ;;
	esac
done
[ -n "$build_dir" ] || die "--build-dir is required (see --help)"
[ -d "$build_dir" ] || die "no build dir $build_dir"
for n in "$timeout_s" "$test_timeout"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || die "bad time limit '$n' (whole seconds)"
done
for e in ${envs[@]+"${envs[@]}"}; do
	[[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "bad --env '$e' (NAME=VALUE)"
done

t_start=$(date +%s)
export LC_ALL=C
PATH=$PATH:/usr/sbin:/sbin

# --- host prerequisites -------------------------------------------------------
qemu=$(command -v "${KVR_RDMA_VM_QEMU:-qemu-system-x86_64}") ||
	unavailable "${KVR_RDMA_VM_QEMU:-qemu-system-x86_64} not found (Debian package qemu-system-x86)"
for t in cpio gzip ldd apt-get apt-cache dpkg-deb tar flock timeout tail; do
	command -v "$t" >/dev/null || unavailable "host tool $t not found"
done
tool() { # NAME PACKAGE: print the path of a host program to copy into the VM
	command -v "$1" || unavailable "$1 not found (Debian package $2)"
}
busybox=$(tool busybox busybox-static)
ip_bin=$(tool ip iproute2)
rdma_bin=$(tool rdma iproute2)
devinfo_bin=$(tool ibv_devinfo ibverbs-utils)
pingpong_bin=$(tool ibv_rc_pingpong ibverbs-utils)
rxe_driver=/etc/libibverbs.d/rxe.driver
rxe_lib=$(ls /usr/lib/*/libibverbs/librxe-rdmav*.so 2>/dev/null | head -n1) || true
if [ ! -f "$rxe_driver" ] || [ -z "$rxe_lib" ]; then
	unavailable "the rxe verbs provider is missing (Debian package ibverbs-providers)"
fi

work=
fetch_tmp=
qpid=
tpid=
# shellcheck disable=SC2317 # called by the trap
cleanup() {
	[ -z "$qpid" ] || kill "$qpid" 2>/dev/null || true
	[ -z "$tpid" ] || kill "$tpid" 2>/dev/null || true
	if [ "${KVR_RDMA_VM_KEEP:-0}" = 1 ] && [ -n "$work" ]; then
		echo "$me: kept $work" >&2
		work=
	fi
	rm -rf ${work:+"$work"} ${fetch_tmp:+"$fetch_tmp"}
}
trap cleanup EXIT
trap 'echo "$me: interrupted" >&2; exit 130' INT TERM HUP

# --- kernel: vmlinuz and the rxe modules, cached per kernel package ----------------
cache=${KVR_RDMA_VM_CACHE:-$build_dir/rdma-vm-cache}
mkdir -p "$cache/kernel"
cache=$(cd "$cache" && pwd)
# Modules to load; their dependencies (from each .ko's modinfo) come along.
# crc32_generic is what rxe's ICRC asks the crypto API for.
root_modules="crc32_generic rdma_rxe veth"

fetch_kernel() { # PKG DEST
	local pkg=$1 dest=$2 tmp deb vmlinuz m n f ko deps new p
	tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
	fetch_tmp=$tmp
	echo "$me: downloading $pkg"
	if ! (cd "$tmp" && apt-get download "$pkg") >"$tmp/log" 2>&1; then
		cat "$tmp/log" >&2
		return 1
	fi
	deb=$(ls "$tmp"/*.deb)
	declare -A member=() depends=() seen=()
	while read -r p; do
		case $p in
		./boot/vmlinuz-*) vmlinuz=$p ;;
		./lib/modules/*/kernel/*.ko | ./lib/modules/*/kernel/*.ko.[gx]z | ./lib/modules/*/kernel/*.ko.zst)
			n=${p##*/}
			n=${n%%.ko*}
			member[${n//-/_}]=$p
			;;
		esac
	done < <(dpkg-deb --fsys-tarfile "$deb" | tar -t)
	[ -n "${vmlinuz:-}" ] || die "$pkg has no /boot/vmlinuz-*"
	mkdir -p "$tmp/x" "$tmp/k/modules"
	# Extract the wanted modules, read their dependencies, repeat until closed.
	local pending=$root_modules extract=("$vmlinuz")
	while [ -n "$pending" ]; do
		for m in $pending; do
			[ -n "${member[$m]:-}" ] || die "module $m not in $pkg"
			extract+=("${member[$m]}")
		done
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/x" "${extract[@]}"
		new=
		for m in $pending; do
			seen[$m]=1
			f=$tmp/x/${member[$m]}
			ko=$tmp/k/modules/$m.ko
			case $f in
			*.ko.xz) xz -dc "$f" >"$ko" ;;
			*.ko.zst) zstd -qdc "$f" >"$ko" ;;
			*.ko.gz) gzip -dc "$f" >"$ko" ;;
			*) cp "$f" "$ko" ;;
			esac
			deps=$(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p' | tr ',' ' ')
			depends[$m]=$deps
			for n in $deps; do
				[ -n "${seen[$n]:-}" ] || case " $new $pending " in *" $n "*) ;; *) new="$new $n" ;; esac
			done
		done
		pending=$new
		extract=()
	done
	# Load order: every module after its dependencies.
	local order=() done_=" "
	visit() {
		local d
		case $done_ in *" $1 "*) return ;; esac
		for d in ${depends[$1]}; do visit "$d"; done
		done_="$done_$1 "
		order+=("$1")
	}
	for m in $root_modules; do visit "$m"; done
	printf '%s\n' "${order[@]}" >"$tmp/k/modules.order"
	mv "$tmp/x/$vmlinuz" "$tmp/k/vmlinuz"
	rm -rf "${dest:?}"
	mv "$tmp/k" "$dest"
	rm -rf "$tmp"
	fetch_tmp=
}

exec 9>"$cache/.lock"
flock -w 900 9 || die "cache $cache stays locked"
rm -rf "$cache"/.fetch.* # left by a run that was killed
pkg=${KVR_RDMA_VM_KERNEL_PKG:-}
if [ -z "$pkg" ]; then
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *|\{0,1\}Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1) || true
fi
if [ -z "$pkg" ]; then # no apt lists: use what the cache holds
	pkg=$(ls "$cache/kernel" | sort -V | tail -n1)
	[ -n "$pkg" ] || unavailable "cannot resolve linux-image-amd64 (run apt-get update)"
fi
kdir=$cache/kernel/$pkg
if [ ! -f "$kdir/modules.order" ]; then
	if fetch_kernel "$pkg" "$kdir"; then
		for old in "$cache"/kernel/*; do # keep only the current kernel
			[ "$old" = "$kdir" ] || rm -rf "$old"
		done
	else
		# Stale apt lists name a package the mirror no longer has: an
		# older cached kernel does as well.
		old=$(ls "$cache/kernel" | sort -V | tail -n1)
		[ -n "$old" ] || unavailable "apt-get download $pkg failed (apt-get update may help)"
		echo "$me: apt-get download $pkg failed; using the cached $old" >&2
		pkg=$old
		kdir=$cache/kernel/$pkg
	fi
fi
flock -u 9

# --- initramfs ------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/kvr-rdma-vm.XXXXXX")
root=$work/root
mkdir -p "$root"/usr/{bin,sbin,lib,lib64} "$root"/{dev,proc,sys,run,tmp,root,etc/libibverbs.d,kvr/items}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done

# Where a host file goes in the image: its directory resolved (the image has
# Debian's merged /usr: /lib -> usr/lib ...), its own name kept, so sonames,
# PT_INTERP and $ORIGIN-relative run paths all resolve as on the host.
img_path() {
	local d
	d=$(readlink -f -- "$(dirname -- "$1")")
	case $d in /bin | /sbin | /lib | /lib64 | /bin/* | /sbin/* | /lib/* | /lib64/*) d=/usr$d ;; esac
	printf '%s/%s\n' "${d%/}" "$(basename -- "$1")"
}
add_file() {
	local dst
	dst=$root$(img_path "$1")
	[ -e "$dst" ] && return 0
	mkdir -p "$(dirname "$dst")"
	cp -L --preserve=mode "$1" "$dst"
}
add_elf() { # a program or library and every shared library it needs
	local out line lib
	[ -f "$1" ] || die "no such file: $1"
	add_file "$1"
	if ! out=$(ldd "$1" 2>&1); then
		case $out in *"not a dynamic executable"*) return 0 ;; esac
		die "ldd $1: $out"
	fi
	while read -r line; do
		case $line in
		*"=> not found"*) die "$1 needs a library that is not found: $line" ;;
		*"=> /"*) lib=${line#*=> } ;;
		/*) lib=$line ;;
		*) continue ;;
		esac
		add_file "${lib%% (*}"
	done <<<"$out"
}
quote() { local s=$1; printf "'%s'" "${s//\'/\'\\\'\'}"; }

# The shell is bash: Debian's static busybox runs its own applets ahead of
# PATH (its ip has no netns support), so it only provides the rest.
add_elf "$busybox"
add_elf "$BASH"
ln -sf "$(img_path "$BASH")" "$root/usr/bin/sh"
for b in "$ip_bin" "$rdma_bin" "$devinfo_bin" "$pingpong_bin" "$rxe_lib"; do add_elf "$b"; done
# Busybox's own applets that start programs would start its applets (its ip)
# too; the GNU ones go by PATH.
for b in timeout:coreutils env:coreutils nohup:coreutils xargs:findutils setsid:util-linux; do
	add_elf "$(tool "${b%:*}" "${b#*:}")"
done
cp "$rxe_driver" "$root/etc/libibverbs.d/"
mkdir -p "$root/kvr/modules"
cp "$kdir"/modules/*.ko "$kdir/modules.order" "$root/kvr/modules/"
cp "$here/guest-init.sh" "$root/init"
chmod 755 "$root/init"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
printf 'passwd: files\ngroup: files\nhosts: files\n' >"$root/etc/nsswitch.conf"

{
	echo "KVR_VM_SMOKE=$smoke"
	echo "KVR_VM_TEST_TIMEOUT=$test_timeout"
} >"$root/kvr/config"
{
	if [ -n "$server" ]; then
		server=$(readlink -f -- "$server")
		add_elf "$server"
		echo "export KVR_SERVER_BIN=$(quote "$(img_path "$server")")"
	fi
	for w in ${withs[@]+"${withs[@]}"}; do
		add_elf "$(readlink -f -- "$w")"
	done
	# What meson or the caller sets for tests and means for the guest too.
	for v in CMOCKA_MESSAGE_OUTPUT CMOCKA_XML_FILE CMOCKA_TEST_ABORT ASAN_OPTIONS \
		UBSAN_OPTIONS LSAN_OPTIONS MALLOC_PERTURB_; do
		[ -z "${!v+x}" ] || echo "export $v=$(quote "${!v}")"
	done
	for e in ${envs[@]+"${envs[@]}"}; do
		echo "export ${e%%=*}=$(quote "${e#*=}")"
	done
} >"$root/kvr/env"
i=0
for it in ${items[@]+"${items[@]}"}; do
	i=$((i + 1))
	d=$root/kvr/items/$(printf '%03d' $i)
	mkdir -p "$d"
	case $it in
	t:*)
		p=${it#t:}
		case $p in */*) ;; *) p=$(command -v -- "$p") || die "test program ${it#t:} not found" ;; esac
		p=$(readlink -f -- "$p")
		add_elf "$p"
		basename -- "$p" >"$d/name"
		echo "exec $(quote "$(img_path "$p")")" >"$d/run"
		;;
	c:*)
		echo "shell-cmd-$i" >"$d/name"
		printf '%s\n' "${it#c:}" >"$d/run"
		;;
	esac
done

(cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc -R 0:0 --quiet) |
	gzip -1 >"$work/initrd.gz"
image_mib=$(($(stat -c %s "$work/initrd.gz") / 1048576))
t_boot=$(date +%s)

# --- boot --------------------------------------------------------------------------
append="console=ttyS0 panic=-1 rdinit=/init"
[ "$verbose" = 1 ] || append="$append quiet"
# TCG unless told otherwise: a /dev/kvm that opens is no sign that KVM works
# (nested, it can hang the guest). The console file exists before tail
# follows it (the background job's redirection may come later).
: >"$work/console"
timeout -k 10 "$timeout_s" "$qemu" -accel "${KVR_RDMA_VM_ACCEL:-tcg,thread=multi}" -m "$mem" -smp 2 \
	-nodefaults -no-reboot -display none -monitor none -serial stdio \
	-kernel "$kdir/vmlinuz" -initrd "$work/initrd.gz" -append "$append" \
	</dev/null >"$work/console" 2>&1 &
qpid=$!
tail --pid="$qpid" -n +1 -f "$work/console" | sed -u 's/\r$//' &
tpid=$!
qrc=0
wait "$qpid" || qrc=$?
qpid=
wait "$tpid" || true
tpid=
t_end=$(date +%s)

res=$(tr -d '\r' <"$work/console" | sed -n 's/^KVR-VM-RESULT \([0-9]\{1,3\}\)$/\1/p' | tail -n1)
if [ -z "$res" ]; then
	if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
		echo "$me: FAIL: timed out after ${timeout_s}s (--timeout)"
		exit 124
	fi
	echo "$me: FAIL: the VM stopped without a result (qemu exit status $qrc)"
	exit 99
fi
echo "$me: result $res (kernel $pkg, ${image_mib} MiB initramfs; VM $((t_end - t_boot))s, $((t_end - t_start))s in all)"
exit "$res"
