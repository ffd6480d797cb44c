#!/bin/sh
# local-cluster.sh up|down|status — a 3-member etcd cluster on loopback,
# set up the way a fleet's etcd should be: TLS between clients and members
# and between members, client certificates required on both, and etcd auth
# with a "coord" user that may read and write only under coord's prefix.
#
# It runs Debian's etcd (3.4, package etcd-server; installed when missing)
# as the calling user, for trying coord's fleet mode and for its tests
# (make integration-cluster). It is not a production deployment: every
# member is on one host, and the CA's key sits beside the certificates.
#
# Settings (environment):
#   COORD_CLUSTER_DIR   state: certificates, data, logs, pids (/tmp/coord-cluster)
#   COORD_CLUSTER_PORT  first loopback port (32379); member i serves clients
#                       on PORT+2i and peers on PORT+2i+1, so 6 ports in all;
#                       best below the ephemeral range (Linux: from 32768)
#   COORD_PREFIX        coord's key prefix (/toolchainkit); the coord user
#                       may use PREFIX/ and nothing else
#
# What `up` leaves in DIR:
#   coord.env           COORD_* settings for coord (user coord, CN=coord)
#   root.env            ETCDCTL_* settings for etcdctl as root (CN=root)
#   pki/                ca.pem, m<i>.pem (members: server and peer), and the
#                       client certificates coord.pem, root.pem, nobody.pem
#                       (CN=nobody: a user with no role, for refusal tests),
#                       each with its -key.pem
#   m<i>/ m<i>.log m<i>.pid   each member's data, log and process id
#
# etcd maps a client certificate's CN to the user of that name, so no
# passwords are involved. Timings: heartbeat 50 ms, election timeout
# 500 ms (etcd's defaults are 100/1000): a new leader was seen 0.65-0.8 s
# after the leader was SIGKILLed, and a loaded 2-core test machine does
# not hold needless elections. Members fsync as etcd always does.
# Measured on 2 cores: up 0.5-2.7 s, down about 3 s (etcd 3.4 takes 2-3 s
# to stop on SIGTERM).
set -eu

DIR=${COORD_CLUSTER_DIR:-/tmp/coord-cluster}
PORT=${COORD_CLUSTER_PORT:-32379}
PREFIX=${COORD_PREFIX:-/toolchainkit}
MEMBERS="m0 m1 m2"
# MARKER, in DIR, says up made it: down removes nothing else.
MARKER=.coord-local-cluster

die() {
	echo "local-cluster: $*" >&2
	exit 1
}

usage() {
	echo "usage: $0 up|down|status" >&2
	exit 2
}

# client_port/peer_port NAME: member mI's ports.
client_port() { echo $((PORT + 2 * ${1#m})); }
peer_port() { echo $((PORT + 2 * ${1#m} + 1)); }

endpoints() {
	sep=
	for m in $MEMBERS; do
		printf '%shttps://127.0.0.1:%s' "$sep" "$(client_port "$m")"
		sep=,
	done
}

# ctl USER ARGS...: etcdctl on every member with USER's certificate.
ctl() {
	user=$1
	shift
	ETCDCTL_API=3 etcdctl --endpoints "$(endpoints)" --cacert "$DIR/pki/ca.pem" \
		--cert "$DIR/pki/$user.pem" --key "$DIR/pki/$user-key.pem" "$@"
}

# member_pid NAME: the pid of member NAME if that process is still the etcd
# this script started for DIR (a recycled pid is someone else's); else
# nothing.
member_pid() {
	f=$DIR/$1.pid
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	case $pid in '' | *[!0-9]*) return 0 ;; esac
	[ -r "/proc/$pid/cmdline" ] || return 0
	cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
	want="etcd --name $1 --data-dir $DIR/$1 "
	case $cmdline in *"$want"*) echo "$pid" ;; esac
}

running() {
	r=
	for m in $MEMBERS; do
		[ -z "$(member_pid "$m")" ] || r="$r${r:+ }$m"
	done
	echo "$r"
}

install_etcd() {
	command -v etcd >/dev/null && command -v etcdctl >/dev/null && command -v openssl >/dev/null && return 0
	[ "$(id -u)" = 0 ] || die "etcd, etcdctl and openssl are needed: apt-get install etcd-server etcd-client openssl (as root)"
	echo "installing etcd-server, etcd-client, openssl" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y etcd-server etcd-client openssl >/dev/null ||
		{ apt-get update >/dev/null && apt-get install -y etcd-server etcd-client openssl >/dev/null; } ||
		die "could not install etcd-server etcd-client openssl"
}

# cert NAME CN USAGE: a key and a certificate signed by the CA, valid for
# 127.0.0.1 and localhost.
cert() {
	cat >"$DIR/pki/$1.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$3
subjectAltName=IP:127.0.0.1,DNS:localhost
EOF
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$DIR/pki/$1-key.pem" -out "$DIR/pki/$1.csr" -subj "/CN=$2" 2>/dev/null
	openssl x509 -req -in "$DIR/pki/$1.csr" -CA "$DIR/pki/ca.pem" -CAkey "$DIR/pki/ca-key.pem" \
		-CAcreateserial -days 365 -extfile "$DIR/pki/$1.ext" -out "$DIR/pki/$1.pem" 2>/dev/null
	rm -f "$DIR/pki/$1.csr" "$DIR/pki/$1.ext"
}

pki() {
	mkdir -m 700 "$DIR/pki"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
		-keyout "$DIR/pki/ca-key.pem" -out "$DIR/pki/ca.pem" -subj "/CN=coord local-cluster CA" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	for m in $MEMBERS; do
		cert "$m" "$m" serverAuth,clientAuth # members dial each other as clients too
	done
	for u in root coord nobody; do
		cert "$u" "$u" clientAuth
	done
}

start_member() {
	m=$1
	cluster=
	for n in $MEMBERS; do
		cluster="$cluster${cluster:+,}$n=https://127.0.0.1:$(peer_port "$n")"
	done
	c=https://127.0.0.1:$(client_port "$m")
	p=https://127.0.0.1:$(peer_port "$m")
	# In the background of a non-interactive shell etcd ignores SIGINT: a
	# Ctrl-C of whoever ran `up` does not take the cluster down.
	etcd --name "$m" --data-dir "$DIR/$m" \
		--listen-client-urls "$c" --advertise-client-urls "$c" \
		--listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
		--initial-cluster "$cluster" --initial-cluster-state new \
		--initial-cluster-token "coord-local-$PORT" \
		--cert-file "$DIR/pki/$m.pem" --key-file "$DIR/pki/$m-key.pem" \
		--trusted-ca-file "$DIR/pki/ca.pem" --client-cert-auth \
		--peer-cert-file "$DIR/pki/$m.pem" --peer-key-file "$DIR/pki/$m-key.pem" \
		--peer-trusted-ca-file "$DIR/pki/ca.pem" --peer-client-cert-auth \
		--heartbeat-interval 50 --election-timeout 500 \
		--logger zap --log-outputs stderr --log-level warn \
		</dev/null >>"$DIR/$m.log" 2>&1 &
	echo $! >"$DIR/$m.pid"
}

# wait_healthy: until every member answers and agrees on a leader, about
# 30 s at most; it gives up at once when a member exits (a port in use).
wait_healthy() {
	deadline=$(($(date +%s) + 30))
	until ctl root --dial-timeout 1s --command-timeout 2s endpoint health >/dev/null 2>&1; do
		for m in $MEMBERS; do
			[ -n "$(member_pid "$m")" ] || die "member $m exited; its log: $DIR/$m.log"
		done
		[ "$(date +%s)" -lt "$deadline" ] || die "the cluster did not become healthy within 30 s"
		sleep 0.2
	done
}

# warn_ports: a port in the kernel's ephemeral range can be taken at any
# moment by an outgoing connection's local end, and a member then fails to
# start ("address already in use").
warn_ports() {
	r=/proc/sys/net/ipv4/ip_local_port_range
	[ -r $r ] || return 0
	# dash's read stops early on /proc files: split the whole of it.
	# shellcheck disable=SC2046
	set -- $(cat $r)
	lo=$1 hi=$2
	if [ $((PORT + 5)) -ge "$lo" ] && [ "$PORT" -le "$hi" ]; then
		echo "local-cluster: warning: ports $PORT-$((PORT + 5)) overlap the ephemeral range $lo-$hi; an outgoing connection may hold one" >&2
	fi
}

setup_auth() {
	ctl root user add root --no-password
	ctl root user grant-role root root
	ctl root role add coord
	ctl root role grant-permission coord --prefix=true readwrite "$PREFIX/"
	ctl root user add coord --no-password
	ctl root user grant-role coord coord
	ctl root user add nobody --no-password # no role: may use no key at all
	ctl root auth enable
}

write_env() {
	cat >"$DIR/coord.env" <<EOF
# coord on the local TLS cluster in $DIR, as user coord (CN=coord),
# which may use keys under $PREFIX/ only. Written by local-cluster.sh up.
COORD_BACKEND=etcd
COORD_ETCD_ENDPOINTS=$(endpoints)
COORD_ETCD_CACERT=$DIR/pki/ca.pem
COORD_ETCD_CERT=$DIR/pki/coord.pem
COORD_ETCD_KEY=$DIR/pki/coord-key.pem
COORD_ETCD_PREFIX=$PREFIX
EOF
	cat >"$DIR/root.env" <<EOF
# etcdctl on the local TLS cluster in $DIR as root (CN=root).
ETCDCTL_API=3
ETCDCTL_ENDPOINTS=$(endpoints)
ETCDCTL_CACERT=$DIR/pki/ca.pem
ETCDCTL_CERT=$DIR/pki/root.pem
ETCDCTL_KEY=$DIR/pki/root-key.pem
EOF
}

# stop: SIGTERM each member this script started, SIGKILL to those still
# there 3 s later (their data is about to go, and members that stop
# together wait on each other: a leader tries to hand over leadership);
# members already gone are skipped.
stop() {
	for m in $MEMBERS; do
		pid=$(member_pid "$m")
		if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
	done
	# member_pid names only live members of this DIR: a zombie (empty
	# cmdline) or a recycled pid is never waited for or killed.
	i=0
	while [ -n "$(running)" ]; do
		i=$((i + 1))
		if [ $i -eq 30 ]; then
			for m in $MEMBERS; do
				pid=$(member_pid "$m")
				if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
			done
		fi
		if [ $i -ge 100 ]; then
			echo "$0: members still running after 10 s: $(running)" >&2
			return 1
		fi
		sleep 0.1
	done
}

up() {
	case $PREFIX in
	/*/ | */ | [!/]*) die "COORD_PREFIX=$PREFIX: must start with '/' and not end with one" ;;
	esac
	case $PORT in
	'' | *[!0-9]*) die "COORD_CLUSTER_PORT=$PORT: not a port number" ;;
	esac
	if [ -n "$(running)" ]; then
		die "a cluster is already up in $DIR (members running: $(running)); '$0 status' shows it, '$0 down' stops it"
	fi
	if [ -e "$DIR" ]; then
		die "$DIR exists but no member runs (a cluster that died?); '$0 down' removes it"
	fi
	install_etcd
	warn_ports
	# Claim DIR atomically and mark it as ours: down removes only a
	# directory with the marker.
	mkdir -p "$(dirname "$DIR")"
	mkdir "$DIR" 2>/dev/null || die "cannot create $DIR (another up?)"
	: >"$DIR/$MARKER"
	# A failed or interrupted up leaves nothing behind (dash runs the EXIT
	# trap on a signal only through an explicit exit).
	trap 'exit 130' INT TERM HUP
	trap 'rc=$?; if [ $rc -ne 0 ]; then for m in $MEMBERS; do [ -f "$DIR/$m.log" ] && { echo "--- $m.log:"; tail -n 5 "$DIR/$m.log"; }; done >&2; stop; rm -rf "$DIR"; fi' EXIT
	pki
	for m in $MEMBERS; do
		start_member "$m"
	done
	wait_healthy
	setup_auth >/dev/null
	write_env
	trap - EXIT
	# The follow-up commands name the settings this cluster was started
	# with, so that they reach it and not the default one.
	again=
	[ "$DIR" = /tmp/coord-cluster ] || again="COORD_CLUSTER_DIR=$DIR "
	[ "$PORT" = 32379 ] || again="${again}COORD_CLUSTER_PORT=$PORT "
	echo "etcd cluster up: $(endpoints)"
	echo "members m0 m1 m2 (pids $(cat "$DIR/m0.pid") $(cat "$DIR/m1.pid") $(cat "$DIR/m2.pid")); state in $DIR"
	echo
	echo "coord as user coord (read/write on $PREFIX/ only):"
	echo "  set -a; . $DIR/coord.env; set +a"
	echo "  coord lock demo -- echo held"
	echo "etcdctl as root:"
	echo "  set -a; . $DIR/root.env; set +a; etcdctl member list -w table"
	echo "$again$0 status   shows members, leader and health"
	echo "$again$0 down     stops it and removes $DIR"
}

status() {
	[ -d "$DIR" ] || die "no cluster in $DIR"
	for m in $MEMBERS; do
		pid=$(member_pid "$m")
		echo "$m: client https://127.0.0.1:$(client_port "$m"), peer https://127.0.0.1:$(peer_port "$m"), ${pid:+pid }${pid:-not running}"
	done
	[ -n "$(running)" ] || die "no member of the cluster in $DIR is running"
	echo
	ctl root member list -w table
	rc=0
	# --cluster: every member from the member list, dead ones included;
	# etcdctl's client log lines (JSON) are left out.
	out=$(ctl root --dial-timeout 1s --command-timeout 2s endpoint status --cluster -w table 2>&1) || rc=1
	echo "$out" | grep -v '^{"level"' || true
	leader=$(echo "$out" | awk -F'|' '$6 ~ /true/ { gsub(/ /, "", $2); print $2 }')
	echo "leader: ${leader:-none}"
	out=$(ctl root --dial-timeout 1s --command-timeout 2s endpoint health --cluster -w table 2>&1) || rc=1
	echo "$out" | grep -v '^{"level"' || true
	return $rc
}

down() {
	[ -d "$DIR" ] || {
		echo "no cluster in $DIR"
		return 0
	}
	[ -f "$DIR/$MARKER" ] || die "$DIR was not made by $0 up (no $MARKER in it); not removing it"
	stop
	rm -rf "$DIR"
	echo "cluster in $DIR stopped and removed"
}

[ $# -eq 1 ] || usage
case $1 in
up) up ;;
down) down ;;
status) status ;;
*) usage ;;
esac
