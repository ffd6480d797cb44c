#!/bin/sh
# Runs coord's benchmarks beside their anchors and writes BENCHMARKS.md.
#
# Each benchmark is named Group_Subject (a sub-benchmark's /suffix belongs
# to the group); the subject "Locker" or "Coord" is coord itself, every
# other subject is an anchor. The table gives each median and coord's ratio
# to it, the goal of the row (bench/goals) and whether this run met it.
#
# BENCH_COUNT (default 3) is how many times each timing benchmark runs; the
# memory benchmarks run once. Installs what it compares against when
# missing: python3-filelock (for /usr/bin/python3), etcd-client (etcdctl),
# util-linux (flock).
set -eu
cd "$(dirname "$0")/.."
out=BENCHMARKS.md
count=${BENCH_COUNT:-3}
began=$(date +%s)
tmp=$(mktemp -d)
trap 'COORD_CLUSTER_DIR=$tmp/cluster ./deploy/local-cluster.sh down >/dev/null 2>&1; rm -rf "$tmp"' EXIT
# Sections written by hand (a "## ... by hand" heading to the end) are kept.
kept=$tmp/kept
sed -n '/^## .*by hand/,$p' "$out" 2>/dev/null >"$kept" || :
raw=$tmp/raw
: >"$raw"

# The anchors.
missing=
/usr/bin/python3 -I -c 'import filelock' 2>/dev/null || missing="$missing python3-filelock"
command -v etcdctl >/dev/null || missing="$missing etcd-client"
command -v flock >/dev/null || missing="$missing util-linux"
if [ -n "$missing" ]; then
	sudo=
	[ "$(id -u)" = 0 ] || sudo=sudo
	echo "bench: installing$missing"
	# shellcheck disable=SC2086 # one word per package
	$sudo apt-get install -y $missing || { $sudo apt-get update && $sudo apt-get install -y $missing; }
fi

# One test binary per package, run once per benchmark set.
for pkg in filelock etcdlock coord integration; do
	echo "bench: building $pkg"
	go test -c -o "$tmp/$pkg.test" "./$pkg"
done

# run PKG BENCHTIME COUNT REGEXP runs the benchmarks of PKG that match
# REGEXP, in the package's directory as go test would.
run() {
	{
		(cd "$1" && "$tmp/$1.test" -test.run '^$' -test.benchtime "$2" -test.count "$3" -test.bench "$4") 2>&1
		echo $? >"$tmp/status"
	} | tee -a "$raw"
	if [ "$(cat "$tmp/status")" != 0 ]; then
		echo "bench: $1 $4 failed" >&2
		exit 1
	fi
}

run filelock 2000x "$count" '^BenchmarkUncontended_'                     # rows 1, 2
/usr/bin/python3 -I bench/pyfilelock.py 2000 "$count" | tee -a "$raw"      # row 2
run filelock 100x "$count" '^BenchmarkHandoff(Process)?_'                 # row 3
run etcdlock 200x "$count" '^BenchmarkEtcdUncontended_'                   # row 4
run etcdlock 30x "$count" '^BenchmarkEtcdHandoff(Process)?_'              # row 5
run coord 5x "$count" '^BenchmarkFanout'                                  # row 6
run integration 100x "$count" '^BenchmarkProcess_'                        # row 7
run integration 50x "$count" '^BenchmarkProcessEtcd_'                     # row 8
run etcdlock 3200x "$count" '^BenchmarkEtcdThroughput_'                   # row 9
run integration 9x "$count" '^BenchmarkCLIHandoff_'                      # row 11
run integration 9x "$count" '^BenchmarkCLIHandoffEtcd_'                  # row 12
run integration 1x "$count" '^BenchmarkBurst_'                           # row 13
run integration 10x "$count" '^BenchmarkStatus5000_'                     # row 14
# Row 15 on a local 3-member TLS cluster of its own (deploy/local-cluster.sh).
cluster="COORD_CLUSTER_DIR=$tmp/cluster COORD_CLUSTER_PORT=${BENCH_CLUSTER_PORT:-31579}"
env $cluster ./deploy/local-cluster.sh up >/dev/null
COORD_TEST_CLUSTER_ENV=$tmp/cluster/coord.env run integration 1x 1 '^BenchmarkIdleSessions_'
env $cluster ./deploy/local-cluster.sh down >/dev/null
run integration 3x 1 '^BenchmarkWaitingRSS'                               # row 10
# Each in a process of its own: Go keeps idle threads, so a thread count is
# only meaningful in a fresh process.
for b in HeldLocksFile_Coord HeldLocksFile_GofrsFlock HeldLocksEtcd_Coord HeldLocksEtcd_Mutex \
	WaitersFile_Coord WaitersFile_GofrsFlock WaitersEtcd_Coord WaitersEtcd_Mutex; do
	run coord 1x 1 "^Benchmark$b\$"                                       # row 10
done
took=$(($(date +%s) - began))

{
	echo "# Benchmarks"
	echo
	echo "Written by \`make bench\` (bench/report.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'); it took ${took}s."
	echo
	echo "- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //'), $(uname -sr)."
	echo "- Go: $(go version | cut -d' ' -f3-); anchors: $(etcdctl version 2>/dev/null | head -1), Python filelock $(/usr/bin/python3 -I -c 'import filelock; print(filelock.__version__)'), $(flock --version | head -1)."
	echo "- Command: \`BENCH_COUNT=$count make bench\`: each timing benchmark runs $count times (\`-test.count\`, iterations per run as in bench/report.sh); the figures are medians of those runs. Memory benchmarks run once."
	echo "- Absolute times on a shared 2-core machine are noisy; read the ratios, and re-run on a quiet machine before trusting a goal that is just met or missed."
	echo
	echo "Ratio: coord's median ÷ the subject's (for ops/s, above 1 means coord does more)."
	echo
	echo "| row | benchmark | subject | median | coord ÷ subject | goal | met? |"
	echo "| --- | --- | --- | --- | --- | --- | --- |"
	awk -F'\t' -f bench/table.awk bench/goals "$raw"
	echo
	echo "What each figure includes:"
	echo
	echo "1. Uncontended, in one process: coord (filelock.Locker) takes and releases one exclusive lock with its fencing token and holder record; RawFlock is flock(2) EX+UN on a descriptor kept open, RawOpenFlockClose opens, locks, unlocks and closes the file (what each fresh process pays)."
	echo "2. The same coord figure beside gofrs/flock Lock+Unlock (its Unlock closes the file) and Python filelock 3.9 FileLock acquire+release, timed in-process by bench/pyfilelock.py under /usr/bin/python3."
	echo "3. HandoffProcess: from the holder's unlock to the waiter, a second process (the test binary re-executed), holding the lock; CLOCK_MONOTONIC in both; the waiter announced its wait 2 ms before. Anchors: blocking flock(2), gofrs/flock TryLockContext polling every 10 ms. Handoff is the same between two goroutines of one process, for reference."
	echo "4. EtcdUncontended: one lock and unlock on an embedded etcd (loopback, no fsync), etcdlock.Locker against a bare concurrency.Mutex on a Session made once."
	echo "5. EtcdHandoffProcess: from the holder's unlock to the waiter, a second process, holding the lock; the waiter began its wait a random 0–100 ms before the unlock (a new watch can take ~100 ms to be synced). EtcdHandoff: two clients in one process, waiter settled for 50 ms, for reference."
	echo "6. Fanout: one downloader and N waiters (each its own Manager, as N processes would have) on one download. ns/spread: from the start of Commit to the last waiter's return, so it includes Commit (marker fsync, rename, directory fsync; on etcd also the dest lock, the held check and the done record) and the release of the lock; counted from the start because on etcd a waiter woken by the done record can be back before Commit returns. ns/commit: Commit alone; spread − commit is the wake-up after Commit returned. Naive: each waiter takes the lock (gofrs/flock blocking Lock; a concurrency.Mutex on etcd) in turn and re-checks the marker; its commit is as durable (marker and directory fsync). The goal compares coord's N = 8 and N = 32 spreads with its N = 1 spread, one handoff measured the same way."
	echo "7. Process: a whole \`coord lock NAME -- true\` (file backend) against \`flock FILE true\` (util-linux) and a bare \`true\`: fork, exec, start-up, lock, the command, exit."
	echo "8. ProcessEtcd: a whole \`coord lock NAME -- true\` against \`etcdctl lock NAME -- true\` on the same embedded etcd: start-up, connect, session (lease grant), lock, the command, unlock, lease revoke."
	echo "9. EtcdThroughput: 16 goroutines, each with its own client and session and a name of its own, lock and unlock as fast as they can; lock+unlock pairs per second in total."
	echo "10. WaitingRSS: VmRSS of a process 500 ms into waiting for a held lock (coord lock on file and etcd; flock(1), etcdctl lock). HeldLocks: live heap (after GC), goroutines and OS threads per lock while one library holds 10 000 distinct locks (coord Manager; gofrs/flock; concurrency.Mutex on one session); includes a closure per lock in the benchmark. Waiters: the same per waiter while 100 goroutines of one process wait for one held lock (coord: one Manager; anchors: gofrs/flock blocking Lock, concurrency.Mutex, one watch each)."
	echo "11. CLIHandoff: from the end of the holder's command to the start of the waiter's, both run by a whole \`coord lock NAME -- CMD\` (file backend) or \`flock FILE CMD\`: the holder's command writes bash's \$EPOCHREALTIME as its last act, the waiter's as its first; the waiter is queued (/proc/locks shows it blocked) before the holder's command is let go; median of the iterations."
	echo "12. CLIHandoffEtcd: the same with \`coord lock\` and \`etcdctl lock\` on the embedded etcd; the waiter is given 300 ms to start, connect and queue."
	echo "13. Burst: 200 processes started at once on one name, each adding one to a counter file under the lock (\`sh -c 'n=\$(cat c); echo \$((n+1)) > c'\`), coord lock (file) against flock(1); from the first start to the last exit; the counter must reach 200."
	echo "14. Status5000: a whole \`coord status\` in a lock directory of 5000 lock files, three of them held (by the benchmark's process)."
	echo "15. IdleSessions: on a local 3-member etcd cluster with TLS and client certificates (deploy/local-cluster.sh, etcd 3.4), 1000 idle sessions (coord Managers that each locked once, as hosts would; or bare concurrency sessions, TTL 10 s), then 16 clients of their own lock and unlock 60 times each: the lock+unlock latency's median and 99th percentile, the members' CPU seconds per second meanwhile, and the keep-alive requests per second the members received over 10 s of idleness (grpc_server_msg_received_total of LeaseKeepAlive)."
	if [ -s "$kept" ]; then
		echo
		cat "$kept"
	fi
} >"$out"
echo "wrote $out in ${took}s"
