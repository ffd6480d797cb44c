#!/bin/sh
# Runs coord's benchmarks beside their anchors and writes BENCHMARKS.md.
# Each benchmark is named Group_Subject; the subject "Locker" or "Coord" is
# coord itself, every other subject is an anchor, and the table gives each
# anchor's median and coord's ratio to it (< 1: coord is faster).
set -eu
cd "$(dirname "$0")/.."
out=BENCHMARKS.md
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
count=${BENCH_COUNT:-5}

go test -run '^$' -count "$count" -benchtime 2000x -bench 'Uncontended' ./filelock | tee -a "$raw"
go test -run '^$' -count "$count" -benchtime 100x -bench 'Handoff' ./filelock | tee -a "$raw"
go test -run '^$' -count "$count" -benchtime 100x -bench 'Process' ./integration | tee -a "$raw"
go test -run '^$' -count "$count" -benchtime 200x -bench 'EtcdUncontended' ./etcdlock | tee -a "$raw"
go test -run '^$' -count "$count" -benchtime 30x -bench 'EtcdHandoff' ./etcdlock | tee -a "$raw"

{
	echo "# Benchmarks"
	echo
	echo "Written by \`make bench\` (bench/report.sh) on $(date -u +%Y-%m-%d)."
	echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //'), $(uname -sr); $(go version | cut -d' ' -f3-)."
	echo "Medians of $count runs. Absolute times on a shared 2-core machine are noisy; read the ratios."
	echo
	echo "- Uncontended: one lock and unlock by a process that holds nothing else (coord: Locker, with its token and holder record; anchors: flock(2) on an open descriptor, open+flock+close, gofrs/flock)."
	echo "- Handoff: from the holder's unlock to the blocked waiter holding the lock (anchors: blocking flock(2), gofrs/flock TryLockContext polling every 10 ms)."
	echo "- EtcdUncontended, EtcdHandoff: the same on an embedded etcd (loopback, no fsync), coord's etcdlock.Locker against a bare concurrency.Mutex; the waiter settles 50 ms before the release."
	echo "- Process: a whole \`coord lock NAME -- true\` against \`flock FILE true\` (util-linux) and a bare \`true\`."
	echo
	echo "| benchmark | subject | median | coord ÷ subject |"
	echo "| --- | --- | --- | --- |"
	awk '
	/^Benchmark/ {
		name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
		unit = "ns/op"; v = $3
		for (i = 4; i <= NF; i++) if ($i == "ns/handoff") { v = $(i-1); unit = "ns/handoff" }
		n[name]++; vals[name, n[name]] = v; units[name] = unit
		if (!(name in seen)) { seen[name] = 1; order[++k] = name }
	}
	function median(name,   m, i, j, t, a) {
		m = n[name]
		for (i = 1; i <= m; i++) a[i] = vals[name, i] + 0
		for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
		return a[int((m + 1) / 2)]
	}
	function human(ns) {
		if (ns >= 1e6) return sprintf("%.2f ms", ns / 1e6)
		if (ns >= 1e3) return sprintf("%.1f µs", ns / 1e3)
		return sprintf("%d ns", ns)
	}
	END {
		for (i = 1; i <= k; i++) {
			split(order[i], p, "_"); g = p[1]
			if (p[2] == "Locker" || p[2] == "Coord") own[g] = median(order[i])
		}
		for (i = 1; i <= k; i++) {
			split(order[i], p, "_"); g = p[1]; m = median(order[i])
			r = (g in own && m > 0) ? sprintf("%.3g", own[g] / m) : "-"
			if (p[2] == "Locker" || p[2] == "Coord") r = "1 (coord)"
			printf "| %s | %s | %s (%s) | %s |\n", g, p[2], human(m), units[order[i]], r
		}
	}' "$raw"
} >"$out"
echo "wrote $out"
