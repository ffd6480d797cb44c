//go:build unix

package integration_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toolchainkit/coord/internal/etcdtest"
)

// envSoak sets how long TestSoak runs on each backend (a Go duration);
// `make soak` sets it to minutes. Unset, it runs a short smoke round so
// that the soak itself cannot rot.
const envSoak = "COORD_SOAK"

// soakTTL is the lease TTL of the soak's etcd workers.
const soakTTL = 2 * time.Second

// TestSoak is a randomized fault run: four fenced workers (see
// fencedWorker) take one lock in a loop and write to a fenced store while
// the test, every 0.2–1.2 s, SIGKILLs one (and starts a new one), SIGSTOPs
// one for 0.1–2.5 TTLs, or — on etcd, where every worker talks to etcd
// through a proxy of its own — partitions one from etcd for 0.5–2 TTLs.
//
// It then replays the logs. A violation is:
//   - a write the fenced store rejected from a worker that was neither
//     paused nor partitioned while it held the lock: coord let it believe
//     it held the lock when it did not;
//   - two holds that overlap although neither holder was paused or
//     partitioned during its hold (a pause or a partition can make a holder
//     act after losing its lock; that is what fencing tokens are for, and
//     the store's rejections of those writes are counted, not failed);
//   - on the file backend, any rejection or overlap at all: a paused
//     process keeps its file lock;
//   - a worker that exits with an error.
//
// It prints a table: operations, faults injected, rejections explained by
// faults, violations (must be 0).
func TestSoak(t *testing.T) {
	d := 4 * time.Second
	if s := os.Getenv(envSoak); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration", envSoak, s)
		}
	}
	var rows []string
	eachBackend(t, func(t *testing.T, be *backend) {
		rows = append(rows, soak(t, be, d))
	})
	t.Logf("soak of %s per backend:\n| backend | accepted writes | kills | pauses | partitions | rejections after a fault | violations |\n| --- | --- | --- | --- | --- | --- | --- |\n%s",
		d, strings.Join(rows, "\n"))
}

// soakWorker is one fenced worker process of the soak.
type soakWorker struct {
	p     *proc
	pid   int
	proxy *etcdtest.Proxy // nil on the file backend
}

// fault is a pause or a partition of one process, [from, to] in unixnano.
type fault struct {
	pid      int
	from, to int64
}

func soak(t *testing.T, be *backend, d time.Duration) string {
	w := newWorld(t, be)
	env := func(sw *soakWorker) []string {
		e := w.env(envWorker+"=fenced", envWorkerDir+"="+w.dir, envWorkerIter+"=1000000000")
		if sw.proxy != nil {
			e = append(e, "COORD_ETCD_ENDPOINTS="+be.via(sw.proxy), "COORD_ETCD_TTL="+soakTTL.String(), "COORD_ETCD_DIAL_TIMEOUT=1s")
		}
		return e
	}
	launch := func(sw *soakWorker) {
		sw.p = start(t, w.root, env(sw), os.Args[0])
		sw.pid = sw.p.cmd.Process.Pid
	}
	workers := make([]*soakWorker, 4)
	for i := range workers {
		workers[i] = &soakWorker{}
		if be.etcd() {
			workers[i].proxy = startProxy(t, be)
		}
		launch(workers[i])
	}

	var faults []fault          // pauses and partitions
	killedAt := map[int]int64{} // pid → when it was SIGKILLed
	var kills, pauses, cuts int
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	ttl := int64(soakTTL)
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(200*time.Millisecond + time.Duration(rng.Int64N(int64(time.Second))))
		sw := workers[rng.IntN(len(workers))]
		switch k := rng.IntN(3); {
		case k == 0:
			killedAt[sw.pid] = time.Now().UnixNano()
			syscall.Kill(-sw.pid, syscall.SIGKILL)
			sw.p.wait(10 * time.Second)
			launch(sw)
			kills++
		case k == 1 || sw.proxy == nil:
			f := fault{pid: sw.pid, from: time.Now().UnixNano()}
			syscall.Kill(sw.pid, syscall.SIGSTOP)
			time.Sleep(time.Duration(ttl/10 + rng.Int64N(ttl*24/10)))
			f.to = time.Now().UnixNano()
			syscall.Kill(sw.pid, syscall.SIGCONT)
			faults = append(faults, f)
			pauses++
		default:
			f := fault{pid: sw.pid, from: time.Now().UnixNano()}
			sw.proxy.Cut()
			time.Sleep(time.Duration(ttl/2 + rng.Int64N(ttl*3/2)))
			f.to = time.Now().UnixNano()
			sw.proxy.Restore()
			faults = append(faults, f)
			cuts++
		}
	}
	if err := os.WriteFile(w.path("stop"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var violations []string
	for _, sw := range workers {
		if code := sw.p.wait(procTimeout); code != 0 {
			violations = append(violations, fmt.Sprintf("worker %d exited %d: %s", sw.pid, code, sw.p.output()))
		}
	}

	holds := soakHolds(t, w.path("inout"), killedAt)
	// faulted reports whether pid was paused or partitioned during [from, to].
	faulted := func(pid int, from, to int64) bool {
		return slices.ContainsFunc(faults, func(f fault) bool { return f.pid == pid && f.from <= to && f.to >= from })
	}
	explained := 0
	for _, l := range lines(t, w.path("rejected")) {
		var tok, pid, ts, high int64
		if _, err := fmt.Sscan(l, &tok, &pid, &ts, &high); err != nil {
			t.Fatalf("rejected log line %q: %v", l, err)
		}
		i := slices.IndexFunc(holds, func(h hold) bool { return h.pid == int(pid) && h.from <= ts && ts <= h.to })
		if be.etcd() && i >= 0 && faulted(int(pid), holds[i].from, ts) {
			explained++
			continue
		}
		violations = append(violations, "rejected write: "+l)
	}
	for i, a := range holds {
		for _, b := range holds[i+1:] {
			if b.from >= a.to {
				break
			}
			if be.etcd() && (faulted(a.pid, a.from, a.to) || faulted(b.pid, b.from, b.to)) {
				continue
			}
			violations = append(violations, fmt.Sprintf("holds overlap: pid %d [%d, %d] and pid %d [%d, %d]", a.pid, a.from, a.to, b.pid, b.from, b.to))
		}
	}
	writes, longest := acceptedWrites(t, w.root)
	for _, v := range violations {
		t.Error(v)
	}
	if writes == 0 {
		t.Errorf("no write was accepted in %s", d)
	}
	t.Logf("%s: %d writes accepted, longest gap %s; %d kills, %d pauses, %d partitions; %d rejections after a pause or partition; %d violations",
		be.name, writes, longest.Round(time.Millisecond), kills, pauses, cuts, explained, len(violations))
	return fmt.Sprintf("| %s | %d | %d | %d | %d | %d | %d |", be.name, writes, kills, pauses, cuts, explained, len(violations))
}

// hold is one process's time inside the critical section, in unixnano.
type hold struct {
	pid      int
	from, to int64
}

// soakHolds reads an inout log into holds sorted by start; a hold whose
// process was killed inside ends when it was killed.
func soakHolds(t *testing.T, path string, killedAt map[int]int64) []hold {
	t.Helper()
	open := map[int]int64{}
	var holds []hold
	for _, l := range lines(t, path) {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("inout log line %q", l)
		}
		pid, err1 := strconv.Atoi(f[1])
		ts, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("inout log line %q", l)
		}
		if f[0] == "+" {
			open[pid] = ts
			continue
		}
		holds = append(holds, hold{pid, open[pid], ts})
		delete(open, pid)
	}
	for pid, from := range open {
		to, ok := killedAt[pid]
		if !ok {
			t.Fatalf("process %d entered the critical section and never left, yet was not killed", pid)
		}
		holds = append(holds, hold{pid, from, to})
	}
	slices.SortFunc(holds, func(a, b hold) int { return int(a.from - b.from) })
	return holds
}
