//go:build unix

package integration_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toolchainkit/coord/internal/etcdtest"
)

// Faults of a 3-member etcd cluster made of the installed etcd binary: a
// member dies (SIGKILL) while coord processes use it. Only real processes,
// on loopback. The fenced store (fenced_test.go) is the judge of safety;
// the numbers measured here (how long the lock stalls, how long a dead
// holder's lease outlives it) are logged for the README's guarantees.

// clusterResumeBound bounds the longest gap between two accepted writes
// from a member's death on. Measured here: 0.1–0.25 s when the leader
// dies, except 2.8–2.9 s when the holder's release was a proposal lost
// with the leader (the delete times out after the 2 s cleanup bound; the
// keep-alive loop deletes the key on its next success, ≤ (TTL − margin)/3 later); a
// dead follower costs under 0.12 s. Slower still, a holder whose session
// is given up leaves its key to its lease, which a new leader renews when
// elected (etcd #9395): TTL + an election + the server's 0.5 s expiry scan,
// about 3.6 s. 2×TTL covers that with the slack a loaded 2-core machine
// needs, and still fails a lock stuck until a TTL runs out twice.
const clusterResumeBound = 2 * etcdTTL

// startCluster starts an n-member cluster of the installed etcd for t,
// stopped when t ends; it skips t when no etcd binary is installed.
func startCluster(t *testing.T, n int) *etcdtest.Cluster {
	t.Helper()
	if etcdtest.SystemBinary() == "" {
		t.Skip("no etcd binary on PATH (Debian: apt-get install etcd-server): cluster fault tests run real etcd members")
	}
	dir := t.TempDir()
	c, err := etcdtest.StartCluster(dir, n)
	if err != nil {
		t.Fatalf("start %d-member etcd cluster: %v", n, err)
	}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			for i := range n {
				b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("m%d.log", i)))
				t.Logf("etcd member m%d log (last 2000 bytes):\n%s", i, logTail(b, 2000))
			}
		}
	})
	return c
}

// logTail is the last n bytes of b.
func logTail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// clusterWorld is a world on cluster c: its processes get all of c's
// endpoints.
func clusterWorld(t *testing.T, c *etcdtest.Cluster) *world {
	return newWorld(t, &backend{name: "etcd-cluster", endpoint: strings.Join(c.Endpoints(), ",")})
}

// clusterLeader returns the index of c's leader, failing t if there is none
// within 10 s.
func clusterLeader(t *testing.T, c *etcdtest.Cluster) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	i, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// fencedRun is a run of fenced workers that a fault interrupts.
type fencedRun struct {
	w     *world
	procs []*proc
}

// startFenced starts one fenced worker per endpoint list, writing until
// the run stops, and waits until the store accepted warm writes.
func startFenced(w *world, endpoints [][]string, warm int) *fencedRun {
	t := w.t
	t.Helper()
	r := &fencedRun{w: w}
	for _, eps := range endpoints {
		r.procs = append(r.procs, start(t, w.root, w.env(envWorker+"=fenced", envWorkerDir+"="+w.dir, envWorkerIter+"=1000000",
			"COORD_ETCD_ENDPOINTS="+strings.Join(eps, ","), "COORD_ETCD_DIAL_TIMEOUT=2s"), os.Args[0]))
	}
	r.waitWrites(time.Time{}, warm, 20*time.Second)
	return r
}

// acceptedTimes returns when the store accepted each write, in order.
func (r *fencedRun) acceptedTimes() []time.Time {
	var ts []time.Time
	for _, l := range lines(r.w.t, r.w.path("accepted")) {
		var tok, pid, ns int64
		if _, err := fmt.Sscan(l, &tok, &pid, &ns); err != nil {
			r.w.t.Fatalf("accepted log line %q: %v", l, err)
		}
		ts = append(ts, time.Unix(0, ns))
	}
	return ts
}

// waitWrites waits until the store accepted n writes after since; it
// fails the test after d.
func (r *fencedRun) waitWrites(since time.Time, n int, d time.Duration) {
	t := r.w.t
	t.Helper()
	waitUntil(t, d, func() error {
		got := 0
		for _, ts := range r.acceptedTimes() {
			if ts.After(since) {
				got++
			}
		}
		if got >= n {
			return nil
		}
		return fmt.Errorf("%d writes accepted after %s, want %d; worker errors:\n%s", got, since.Format("15:04:05.000"), n,
			strings.Join(lines(t, r.w.path("errors")), "\n"))
	})
}

// stop ends the run: the workers finish their lock and must exit 0.
func (r *fencedRun) stop() {
	t := r.w.t
	t.Helper()
	if err := os.WriteFile(r.w.path("stop"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, p := range r.procs {
		if code := p.wait(30 * time.Second); code != 0 {
			t.Fatalf("fenced worker %d exited %d:\n%s", i, code, p.output())
		}
	}
}

// report checks the run with fencedReport and measures the gaps between
// accepted writes: the longest before the fault at, and the longest of
// those that end after it (the resume gap). It logs them with the
// workers' errors and fails t if the resume gap reaches
// clusterResumeBound.
func (r *fencedRun) report(what string, at time.Time) {
	t := r.w.t
	t.Helper()
	writes, longest := fencedReport(t, r.w.root)
	ts := r.acceptedTimes()
	var before, resume time.Duration
	after := 0
	for i := 1; i < len(ts); i++ {
		gap := ts[i].Sub(ts[i-1])
		if ts[i].After(at) {
			resume = max(resume, gap)
			after++
		} else {
			before = max(before, gap)
		}
	}
	errs := lines(t, r.w.path("errors"))
	t.Logf("%s: %d writes accepted (%d after the fault); longest gap between writes: %s before the fault, %s from the fault on (resume gap; bound %s); longest overall %s; %d worker errors",
		what, writes, after, before.Round(time.Millisecond), resume.Round(time.Millisecond), clusterResumeBound, longest.Round(time.Millisecond), len(errs))
	for _, e := range errs[:min(len(errs), 10)] {
		t.Logf("  worker error: %s", e)
	}
	if resume >= clusterResumeBound {
		t.Errorf("%s: the lock stalled %s around the fault, want < %s", what, resume.Round(time.Millisecond), clusterResumeBound)
	}
}

// a. The leader of a 3-member cluster is SIGKILLed while four processes
// take one lock in a loop and write to the fenced store: the cluster
// elects another leader, no write is accepted out of token order or
// rejected, never two processes are inside, and the lock resumes within
// clusterResumeBound.
func TestClusterLeaderKilled(t *testing.T) {
	c := startCluster(t, 3)
	w := clusterWorld(t, c)
	r := startFenced(w, slices.Repeat([][]string{c.Endpoints()}, 4), 20)
	time.Sleep(time.Second) // a steady state, to compare with
	old := clusterLeader(t, c)
	at := time.Now()
	if err := c.Kill(old); err != nil {
		t.Fatal(err)
	}
	nu := clusterLeader(t, c) // among the living: fails if none leads within 10 s
	elected := time.Since(at)
	r.waitWrites(at, 30, 20*time.Second)
	r.stop()
	t.Logf("leader m%d killed; m%d elected, seen %s later", old, nu, elected.Round(time.Millisecond))
	r.report("leader killed", at)
}

// b. A follower that every client is connected to is SIGKILLed: each of
// the four processes has it and one other member as its endpoints, so
// about half its calls go to it (gRPC round-robins each new call or
// stream over the members it is connected to). What lives on a connection
// are watch streams, one per waiting client (coord's keep-alives are
// one-shot streams): the member is killed while it serves at least one.
// Same guarantees as when the leader dies.
func TestClusterConnectedMemberKilled(t *testing.T) {
	c := startCluster(t, 3)
	w := clusterWorld(t, c)
	l := clusterLeader(t, c)
	f, o := (l+1)%3, (l+2)%3
	eps := [][]string{
		{c.Endpoint(f), c.Endpoint(l)}, {c.Endpoint(f), c.Endpoint(l)},
		{c.Endpoint(f), c.Endpoint(o)}, {c.Endpoint(f), c.Endpoint(o)},
	}
	r := startFenced(w, eps, 20)
	time.Sleep(time.Second)
	// Kill it while a waiter's watch stream is open on it (nobody else
	// talks to this cluster).
	var m map[string]float64
	waitUntil(t, 10*time.Second, func() error {
		if m = memberMetrics(t, c.Endpoint(f)); m[watchStreams] > 0 {
			return nil
		}
		return fmt.Errorf("follower m%d has no watch stream open: the clients do not use it", f)
	})
	at := time.Now()
	if err := c.Kill(f); err != nil {
		t.Fatal(err)
	}
	served := map[string]float64{
		"keep-alives":   m[`grpc_server_started_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"}`],
		"watch streams": m[`grpc_server_started_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"}`],
		"transactions":  m[`grpc_server_started_total{grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"}`],
	}
	if served["transactions"] == 0 {
		t.Errorf("follower m%d served no transactions before it was killed: the clients do not use it", f)
	}
	r.waitWrites(at, 30, 20*time.Second)
	r.stop()
	t.Logf("follower m%d killed (leader m%d, now m%d) with %v watch streams open on it; before, it had served %v keep-alives, %v watch streams, %v transactions",
		f, l, clusterLeader(t, c), m[watchStreams], served["keep-alives"], served["watch streams"], served["transactions"])
	r.report("connected follower killed", at)
}

// watchStreams is the metric of an etcd member that counts the watch
// streams open on it.
const watchStreams = "etcd_debugging_mvcc_watch_stream_total"

// memberMetrics returns the samples of an etcd member's /metrics, by name with
// labels as written.
func memberMetrics(t *testing.T, endpoint string) map[string]float64 {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(endpoint + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		i := strings.LastIndexByte(l, ' ')
		if strings.HasPrefix(l, "#") || i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			m[l[:i]] = v
		}
	}
	return m
}

// c. A dead holder's lock and a leader change (etcd #9395). A `coord lock`
// holding a lock with TTL etcdTTL is SIGKILLed, then at once the leader; a
// second `coord lock`, waiting, is granted the lock only when the dead
// holder's lease expires. A new leader renews every lease when it is
// elected (etcd 3.4 keeps no remaining TTL), so the lease outlives its
// TTL counted from the kill. Measured from the holder's kill to the
// waiter's command running, over several trials, and without a leader
// change for comparison.
//
// Bounds. Without an election the lease expires at most TTL after the
// kill (its last keep-alive came before), plus the server's 0.5 s expiry
// scan. The first election renews it to TTL from when the new leader took
// over. Any further election (a loaded 2-core machine misses 10 ms
// heartbeats; seen in 3 of 65 trials, granted at 3.6, 6.0 and 6.8 s) may
// come just before expiry and renew it once more. Each bound adds 2 s for
// a loaded machine: measured, the grant came up to 0.8 s after the expiry
// so computed (the waiter's own watch may have been on the dead leader),
// and a renewal no election explains still fails the bound.
func TestClusterLeaseLeaderChange(t *testing.T) {
	const trials = 5
	c := startCluster(t, 3)
	// A holder with keep-alives every (TTL − margin)/3 and Lost at TTL − 1 s has its
	// lease for at least 1 s after any moment it still held the lock.
	const floor = time.Second
	const slack = 2 * time.Second
	const scan = 500 * time.Millisecond

	var baseline, changed []leaseResult
	// A world per subtest: its helpers fail the subtest, not the parent.
	t.Run("baseline", func(t *testing.T) {
		w := clusterWorld(t, c)
		// The trials run side by side on locks of their own: the kills
		// fall at independent points of each holder's keep-alive cycle.
		ps := make([]*leaseTrial, trials)
		for i := range ps {
			ps[i] = newLeaseTrial(t, w, fmt.Sprintf("base%d", i))
		}
		for _, p := range ps {
			p.waitHeld()
		}
		seen := memberMetrics(t, c.Endpoint(0))[leaderChanges]
		for _, p := range ps {
			time.Sleep(rand.N(etcdTTL / 3 / trials))
			p.killHolder(nil)
		}
		for _, p := range ps {
			p.waitGrant()
		}
		n := int(memberMetrics(t, c.Endpoint(0))[leaderChanges] - seen)
		for _, p := range ps {
			baseline = append(baseline, leaseResult{took: p.recovery(), elections: n,
				lo: floor, hi: etcdTTL + scan + slack + time.Duration(n)*(etcdTTL+scan+slack)})
		}
		checkRecoveries(t, "holder killed, no leader change", baseline)
	})

	t.Run("leader-killed", func(t *testing.T) {
		w := clusterWorld(t, c)
		for i := range trials {
			p := newLeaseTrial(t, w, fmt.Sprintf("lead%d", i))
			p.waitHeld()
			// Somewhere in the holder's keep-alive cycle.
			time.Sleep(rand.N(etcdTTL / 3))
			old := clusterLeader(t, c)
			// A member that stays up counts the elections of the trial.
			up := c.Endpoint((old + 1) % c.Len())
			seen := memberMetrics(t, up)[leaderChanges]
			var elected time.Duration
			var nu int
			p.killHolder(func() {
				if err := c.Kill(old); err != nil {
					t.Fatal(err)
				}
				nu = clusterLeader(t, c)
				elected = time.Since(p.killed)
			})
			p.waitGrant()
			n := int(memberMetrics(t, up)[leaderChanges] - seen)
			r := leaseResult{took: p.recovery(), elections: n,
				lo: etcdTTL, hi: elected + etcdTTL + scan + slack + time.Duration(max(n-1, 0))*(etcdTTL+scan+slack)}
			changed = append(changed, r)
			t.Logf("trial %d: leader m%d killed, m%d seen leading %s after the holder's kill; %d leader changes in all; granted %s after the holder's kill",
				i, old, nu, elected.Round(time.Millisecond), n, r.took.Round(time.Millisecond))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := c.Restart(ctx, old)
			cancel()
			if err != nil {
				t.Fatalf("trial %d: restart m%d: %v", i, old, err)
			}
		}
		checkRecoveries(t, "holder killed, then the leader", changed)
	})
	if len(baseline) == trials && len(changed) == trials {
		t.Logf("LEASE SURVIVAL, TTL %s, holder SIGKILL → next holder granted, %d trials each: no leader change: %s; leader killed right after the holder: %s",
			etcdTTL, trials, minMedianWorst(baseline), minMedianWorst(changed))
	}
}

// leaseResult is one trial's time from a holder's kill to the next grant,
// the leader changes during it and the bounds it must be within.
type leaseResult struct {
	took      time.Duration
	elections int
	lo, hi    time.Duration
}

// leaderChanges is the metric of an etcd member that counts the leader
// changes it saw.
const leaderChanges = "etcd_server_leader_changes_seen_total"

// leaseTrial is one dead-holder trial: a `coord lock` holding lock name,
// a second one waiting for it.
type leaseTrial struct {
	t            *testing.T
	w            *world
	name         string
	holder, wait *proc
	killed       time.Time
}

// newLeaseTrial starts the holder of name, and once it holds it, a waiter
// that writes the time it is granted the lock to <name>.granted.
func newLeaseTrial(t *testing.T, w *world, name string) *leaseTrial {
	t.Helper()
	p := &leaseTrial{t: t, w: w, name: name}
	p.holder = start(t, w.root, w.env(), coordBin, "lock", "--timeout", "10s", name, "--",
		"sh", "-c", `echo $$ > "$1.child"; exec sleep 60`, "sh", name)
	return p
}

// waitHeld waits until the holder runs its command and the waiter waits.
func (p *leaseTrial) waitHeld() {
	p.t.Helper()
	childPID(p.t, p.w.path(p.name+".child"))
	p.wait = start(p.t, p.w.root, p.w.env(), coordBin, "lock", "--timeout", "30s", p.name, "--",
		"sh", "-c", `date +%s%N > "$1.granted"`, "sh", p.name)
	p.w.waitWaiters(p.name, 1, 10*time.Second)
}

// killHolder SIGKILLs the holder, then runs then (if not nil).
func (p *leaseTrial) killHolder(then func()) {
	p.t.Helper()
	p.killed = time.Now()
	if err := syscall.Kill(p.holder.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		p.t.Fatal(err)
	}
	if then != nil {
		then()
	}
}

// waitGrant waits for the waiter to run its command and exit 0.
func (p *leaseTrial) waitGrant() {
	p.t.Helper()
	if code := p.wait.wait(30 * time.Second); code != 0 {
		p.t.Fatalf("waiter for %s exited %d:\n%s", p.name, code, p.wait.output())
	}
}

// recovery is the time from the holder's kill to the waiter's grant.
func (p *leaseTrial) recovery() time.Duration {
	return nanos(p.t, p.w.path(p.name+".granted")).Sub(p.killed)
}

// checkRecoveries logs the trials' recovery times and fails t if any is
// below its lo (granted while the dead holder's lease may have lived) or
// above its hi.
func checkRecoveries(t *testing.T, what string, rs []leaseResult) {
	t.Helper()
	t.Logf("%s: %d trials, holder kill → grant: %s", what, len(rs), minMedianWorst(rs))
	for i, r := range rs {
		t.Logf("  trial %d: %s, %d leader changes, want within [%s, %s]", i, r.took.Round(time.Millisecond), r.elections, r.lo, r.hi.Round(time.Millisecond))
		if r.took < r.lo || r.took > r.hi {
			t.Errorf("%s: trial %d: granted %s after the holder's kill (%d leader changes), want within [%s, %s]",
				what, i, r.took.Round(time.Millisecond), r.elections, r.lo, r.hi.Round(time.Millisecond))
		}
	}
}

// minMedianWorst is "min X, median Y, worst Z" of the trials' times, and
// the leader changes each saw.
func minMedianWorst(rs []leaseResult) string {
	var s []time.Duration
	var changes []int
	for _, r := range rs {
		s = append(s, r.took)
		changes = append(changes, r.elections)
	}
	if len(s) == 0 {
		return "no trials"
	}
	slices.Sort(s)
	return fmt.Sprintf("min %s, median %s, worst %s (leader changes per trial: %v)",
		s[0].Round(time.Millisecond), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), changes)
}
