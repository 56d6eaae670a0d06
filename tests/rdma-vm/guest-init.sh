#!/bin/sh
# /init of the rdma-vm guest (PID 1; /bin/sh is bash, busybox the rest).
# run.sh put here: the kernel modules (/kvr/modules), the config (/kvr/config,
# /kvr/env) and one folder per test (/kvr/items/NNN/{name,run}). Sets up rxe
# devices, runs the tests, prints KVR-VM-RESULT <status> and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/bb
export HOME=/root LC_ALL=C
/usr/bin/busybox mkdir -p /bb
/usr/bin/busybox --install -s /bb

# Wait until the console has sent what was written to it: stty applies its
# settings with TCSADRAIN, and these are the current ones.
drain() { stty -F /dev/console "$(stty -F /dev/console -g 2>/dev/null)" 2>/dev/null; }
result() {
	drain
	echo "KVR-VM-RESULT $1"
	drain
	poweroff -f
	reboot -f
}
fatal() {
	echo "kvr-vm: FATAL: $*"
	result 99
}
say() { echo "kvr-vm: $*"; }
now() { cut -d' ' -f1 /proc/uptime; }
# Seconds (2 decimals) since uptime $1.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# Poll CMD... every 50 ms until it succeeds; give up after $1 seconds.
wait_for() {
	limit=$1
	shift
	t0=$(now)
	until "$@"; do
		[ "$(awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { print (b - a > l) }')" = 0 ] ||
			return 1
		sleep 0.05
	done
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
# /tmp gets its own tmpfs unless a test program lives under /tmp on the host.
[ -n "$(ls -A /tmp)" ] || mount -t tmpfs -o mode=1777 tmpfs /tmp
ulimit -l unlimited
say "init at $(now)s of uptime"
. /kvr/config

for m in $(cat /kvr/modules/modules.order); do
	insmod "/kvr/modules/$m.ko" || fatal "insmod $m failed"
done

# --- network ----------------------------------------------------------------------
# rdma_rxe in Linux 6.1 is not network-namespace aware: its UDP socket (port
# 4791) and its route lookups are in the initial namespace only. So every rxe
# device sits on a veth in the initial namespace, one veth pair per device
# pair. Both ends of a pair are local addresses, which the kernel would
# deliver over lo (where rxe drops them); policy routes send locally made
# packets for the peer out through the veth instead, and accept_local lets
# the other end take packets whose source address is local.
for k in all default; do
	echo 0 >/proc/sys/net/ipv4/conf/$k/rp_filter
	echo 1 >/proc/sys/net/ipv4/conf/$k/accept_local
done
# veth hands each packet to the peer's backlog; rxe sends bursts far larger
# than the default 1000, and every drop costs a retransmission timeout.
echo 30000 >/proc/sys/net/core/netdev_max_backlog
echo 16777216 >/proc/sys/net/core/wmem_max
echo 16777216 >/proc/sys/net/core/wmem_default
ip link set lo up
ip rule add pref 1000 lookup local
ip rule del pref 0
table=100
wire_pair() { # DEV_A ADDR_A DEV_B ADDR_B NETDEV_A NETDEV_B
	ip link add "$5" type veth peer name "$6" || fatal "veth $5/$6"
	ip addr add "$2/24" dev "$5"
	ip addr add "$4/24" dev "$6"
	ip link set "$5" up
	ip link set "$6" up
	ip route add "$4" dev "$5" src "$2" table $table
	ip rule add pref $table iif lo to "$4" lookup $table
	ip route add "$2" dev "$6" src "$4" table $((table + 1))
	ip rule add pref $((table + 1)) iif lo to "$2" lookup $((table + 1))
	table=$((table + 2))
	rdma link add "$1" type rxe netdev "$5" || fatal "rdma link add $1"
	rdma link add "$3" type rxe netdev "$6" || fatal "rdma link add $3"
}
wire_pair rxe0 10.0.0.1 rxe1 10.0.0.2 veth0 veth1
wire_pair rxe_cli 10.0.1.1 rxe_srv 10.0.1.2 vrxecli vrxesrv

# Namespaces cli and srv: separate IP stacks for a client and a server (TCP
# between them over ncli/nsrv), with the same addresses as rxe_cli/rxe_srv.
# rdma devices stay visible in every namespace (rdma system netns shared).
ip netns add cli || fatal "ip netns add cli"
ip netns add srv || fatal "ip netns add srv"
ip link add ncli netns cli type veth peer name nsrv netns srv || fatal "veth ncli/nsrv"
ip -n cli link set lo up
ip -n srv link set lo up
ip -n cli addr add 10.0.1.1/24 dev ncli
ip -n srv addr add 10.0.1.2/24 dev nsrv
ip -n cli link set ncli up
ip -n srv link set nsrv up

# Carrier and operstate come a moment after "link set up" (linkwatch).
link_up() { ip -n "$1" -o link show "$2" 2>/dev/null | grep -q 'state UP'; }
wait_for 30 link_up cli ncli || fatal "ncli did not come up"
wait_for 30 link_up srv nsrv || fatal "nsrv did not come up"

port_active() { grep -q ACTIVE "/sys/class/infiniband/$1/ports/1/state" 2>/dev/null; }
# The index of the RoCE v2 GID of IPv4 address $2 on device $1.
gid_index() {
	want=$(echo "$2" | awk -F. '{ printf "0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x", $1, $2, $3, $4 }')
	cd "/sys/class/infiniband/$1/ports/1/gids" || return 1
	for i in $(grep -lx "$want" * 2>/dev/null); do
		if [ "$(cat "../gid_attrs/types/$i" 2>/dev/null)" = "RoCE v2" ]; then
			cd /
			echo "$i"
			return 0
		fi
	done
	cd /
	return 1
}
# DEV ADDR PREFIX SUFFIX: wait for DEV, then export e.g. KVR_RDMA_DEV2=rxe1,
# KVR_RDMA_ADDR2=10.0.0.2, KVR_RDMA_GID_INDEX2=<its RoCE v2 GID index>.
export_dev() {
	wait_for 30 port_active "$1" || fatal "$1 did not become ACTIVE"
	wait_for 30 gid_index "$1" "$2" >/dev/null || fatal "$1 has no RoCE v2 GID for $2"
	eval "export $3DEV$4=$1 $3ADDR$4=$2 $3GID_INDEX$4=$(gid_index "$1" "$2")"
}
export KVR_RDMA_VM=1
export_dev rxe0 10.0.0.1 KVR_RDMA_ ""
export_dev rxe1 10.0.0.2 KVR_RDMA_ 2
export_dev rxe_cli 10.0.1.1 KVR_RDMA_CLI_ ""
export_dev rxe_srv 10.0.1.2 KVR_RDMA_SRV_ ""
export KVR_RDMA_NETNS_CLI=cli KVR_RDMA_NETNS_SRV=srv
say "devices ready at $(now)s of uptime"
env | grep '^KVR_RDMA' | sort | sed 's/^/kvr-vm: env /'

# --- smoke test ---------------------------------------------------------------------
listening() { # PORT [NETNS]: a TCP socket listens on PORT
	hex=$(printf ':%04X ' "$1")
	if [ -n "$2" ]; then
		ip netns exec "$2" cat /proc/net/tcp /proc/net/tcp6
	else
		cat /proc/net/tcp /proc/net/tcp6
	fi 2>/dev/null | awk -v p="$hex" 'index($2 " ", p) && $4 == "0A" { f = 1 } END { exit !f }'
}
in_ns() { # NETNS CMD...: run CMD in NETNS ("" = the initial namespace)
	ns=$1
	shift
	if [ -n "$ns" ]; then ip netns exec "$ns" "$@"; else "$@"; fi
}
# ibv_rc_pingpong: LABEL PORT SRV_NS SRV_DEV SRV_ADDR CLI_NS CLI_DEV CLI_ADDR
pingpong() {
	t0=$(now)
	in_ns "$3" timeout -k 5 60 ibv_rc_pingpong -d "$4" -g "$(gid_index "$4" "$5")" -p "$2" -n 200 \
		>/tmp/pp-srv.log 2>&1 &
	spid=$!
	if ! wait_for 30 listening "$2" "$3"; then
		kill $spid
		cat /tmp/pp-srv.log
		say "smoke: rc_pingpong $1: the server did not listen"
		return 1
	fi
	in_ns "$6" timeout -k 5 60 ibv_rc_pingpong -d "$7" -g "$(gid_index "$7" "$8")" -p "$2" -n 200 "$5" \
		>/tmp/pp-cli.log 2>&1
	crc=$?
	wait $spid
	src=$?
	sed 's/^/  server: /' /tmp/pp-srv.log
	sed 's/^/  client: /' /tmp/pp-cli.log
	if [ $crc != 0 ] || [ $src != 0 ]; then
		say "smoke: rc_pingpong $1: FAIL (client $crc, server $src)"
		return 1
	fi
	say "smoke: rc_pingpong $1: ok ($(since "$t0")s)"
}
if [ "$KVR_VM_SMOKE" = 1 ]; then
	ibv_devinfo -d rxe0 | sed 's/^/  /'
	for d in rxe0 rxe1 rxe_cli rxe_srv; do
		ibv_devinfo -d $d | grep -q PORT_ACTIVE || fatal "smoke: ibv_devinfo: $d not PORT_ACTIVE"
	done
	pingpong "rxe0 -> rxe1" 18515 "" rxe1 10.0.0.2 "" rxe0 10.0.0.1 || fatal "smoke test failed"
	pingpong "cli/rxe_cli -> srv/rxe_srv" 18516 srv rxe_srv 10.0.1.2 cli rxe_cli 10.0.1.1 ||
		fatal "smoke test failed"
	say "smoke: ok at $(now)s of uptime"
fi

# --- tests ----------------------------------------------------------------------------
. /kvr/env
passed=0
failed=0
skipped=0
status=0
for d in /kvr/items/*; do
	[ -f "$d/run" ] || continue
	name=$(cat "$d/name")
	dir=/tmp/kvr-test/${d##*/}-$name
	mkdir -p "$dir"
	echo "KVR-VM-TEST-BEGIN $name"
	t0=$(now)
	(
		cd "$dir" || exit 99
		export KVR_TEST_DIR="$dir"
		# TERM at the limit (to the test's process group), KILL 10 s later.
		exec timeout -k 10 "$KVR_VM_TEST_TIMEOUT" /bin/sh "$d/run"
	) </dev/null
	rc=$?
	took=$(since "$t0")
	verdict=FAIL
	case $rc in
	0) verdict=PASS passed=$((passed + 1)) ;;
	77) verdict=SKIP skipped=$((skipped + 1)) ;;
	*)
		failed=$((failed + 1))
		[ $status != 0 ] || status=$rc
		if [ "$(awk -v t="$took" -v l="$KVR_VM_TEST_TIMEOUT" 'BEGIN { print (t >= l) }')" = 1 ]; then
			verdict="FAIL (timed out after ${KVR_VM_TEST_TIMEOUT}s)"
		elif [ $rc -gt 128 ]; then
			verdict="FAIL (killed by signal $((rc - 128)))"
		fi
		;;
	esac
	echo "KVR-VM-TEST-END $name rc=$rc time=${took}s $verdict"
done
say "$passed passed, $failed failed, $skipped skipped; uptime $(now)s"
[ $failed != 0 ] || [ $passed != 0 ] || [ $skipped = 0 ] || status=77
result $status
