//go:build unix

package integration_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toolchainkit/coord/internal/etcdtest"
)

// The local TLS cluster of deploy/local-cluster.sh (backend
// "etcd-cluster"): what it refuses, and a member killed under load. The
// rest of the suite runs on it as on any backend.

// envClusterKill set to 1 lets TestLocalClusterMemberKilled kill a member
// of the cluster; make integration-cluster sets it.
const envClusterKill = "COORD_TEST_CLUSTER_KILL"

// clusterBackends runs f as a subtest on the etcd-cluster backend; it
// skips when there is none.
func clusterBackends(t *testing.T, f func(t *testing.T, be *backend)) {
	t.Helper()
	for _, be := range backends {
		if be.name == "etcd-cluster" && be.selected() {
			t.Run(be.name, func(t *testing.T) { f(t, be) })
			return
		}
	}
	t.Skipf("no etcd-cluster backend (%s names the coord.env of deploy/local-cluster.sh up)", envClusterEnv)
}

// A client without a certificate, with the wrong CA, or as a user without
// permission on the prefix: coord exits 69 without running its command,
// with one line that says which of the three it was. The coord user on its
// own prefix, the control, runs.
func TestLocalClusterRefusals(t *testing.T) {
	clusterBackends(t, func(t *testing.T, be *backend) {
		w := newWorld(t, be)
		other, err := etcdtest.WriteCerts(t.TempDir()) // a CA that did not sign the members' certificates
		if err != nil {
			t.Fatal(err)
		}
		nobody := filepath.Join(be.dir, "pki", "nobody")
		if _, err := os.Stat(nobody + ".pem"); err != nil {
			t.Fatalf("the cluster has no certificate for the user nobody: %v", err)
		}
		cases := []struct {
			name string
			env  []string
			want []string // in the one line on stderr; none: exit 0
		}{
			{"no client certificate", []string{"COORD_ETCD_CERT=", "COORD_ETCD_KEY="},
				[]string{"etcd requires a client certificate", "--etcd-cert"}},
			{"wrong CA", []string{"COORD_ETCD_CACERT=" + other.CA},
				[]string{"etcd's certificate is not signed by the CA in " + other.CA, "x509: certificate signed by unknown authority", "(--etcd-cacert)"}},
			{"user without the prefix", []string{"COORD_ETCD_CERT=" + nobody + ".pem", "COORD_ETCD_KEY=" + nobody + "-key.pem"},
				[]string{`etcd user "nobody" may not use prefix ` + w.prefix, "permission denied"}},
			{"coord outside its prefix", []string{"COORD_ETCD_PREFIX=/elsewhere"},
				[]string{`etcd user "coord" may not use prefix /elsewhere`, "permission denied"}},
			{"coord on its prefix", nil, nil},
		}
		// Side by side: the refusals found by a probe take half the dial
		// timeout each.
		began := time.Now()
		ps := make([]*proc, len(cases))
		for i, tc := range cases {
			ps[i] = start(t, w.root, w.env(tc.env...), coordBin, "lock", "x", "--", "touch", "ran"+strconv.Itoa(i))
		}
		for i, tc := range cases {
			code := ps[i].wait(30 * time.Second)
			out := strings.TrimSpace(ps[i].output())
			took := ps[i].end.Sub(began)
			_, ranErr := os.Stat(w.path("ran" + strconv.Itoa(i)))
			if tc.want == nil {
				if code != 0 || ranErr != nil {
					t.Errorf("%s: exit %d, command ran: %v; want 0 and the command run:\n%s", tc.name, code, ranErr == nil, out)
				}
				continue
			}
			if code != 69 {
				t.Errorf("%s: exit %d, want 69:\n%s", tc.name, code, out)
			}
			if ranErr == nil {
				t.Errorf("%s: the command ran", tc.name)
			}
			if out == "" || strings.Contains(out, "\n") {
				t.Errorf("%s: stderr is not one line:\n%s", tc.name, out)
			}
			for _, s := range tc.want {
				if !strings.Contains(out, s) {
					t.Errorf("%s: stderr does not say %q:\n%s", tc.name, s, out)
				}
			}
			// Each says what it is and no other refusal's words.
			for j, o := range cases {
				if j != i && o.want != nil && strings.Contains(out, o.want[0]) {
					t.Errorf("%s: stderr says %q, the words of %s:\n%s", tc.name, o.want[0], o.name, out)
				}
			}
			if took > 8*time.Second {
				t.Errorf("%s: exit after %s, want it within the dial timeout (5s) and some slack", tc.name, took)
			}
			t.Logf("%s: exit %d after %s: %s", tc.name, code, took.Round(time.Millisecond), out)
		}
	})
}

// The cluster's leader is killed (SIGKILL) while coord processes, CLI
// and library, take a lock on it in a loop: the two members left elect a
// leader, no increment is lost and every process finishes its loop. A
// request in flight while there is no leader can fail closed: coord exits
// 69 (Lock returns ErrBackendUnavailable) without running anything, as in
// the cluster fault tests; the loops retry those, and the test checks
// that they came only after the kill and within the election's reach
// (clusterRetryWindow), never later. The member stays dead: every later
// test of the run meets a cluster with one member down, with all three
// endpoints configured. It kills only with COORD_TEST_CLUSTER_KILL=1 and
// only while all three members are up, so that a second run cannot take
// quorum away.
func TestLocalClusterMemberKilled(t *testing.T) {
	clusterBackends(t, func(t *testing.T, be *backend) {
		if os.Getenv(envClusterKill) != "1" {
			t.Skipf("%s=1 lets this test kill a member of the cluster", envClusterKill)
		}
		c := etcdClient(t, be)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		ml, err := c.MemberList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var leader uint64
		var leaderName string
		for _, m := range ml.Members {
			if len(m.ClientURLs) == 0 {
				t.Fatalf("member %s has no client URL", m.Name)
			}
			sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := c.Status(sctx, m.ClientURLs[0])
			scancel()
			if err != nil {
				t.Skipf("member %s is down already (%v): killing another would take quorum away", m.Name, err)
			}
			leader = st.Leader
			if m.ID == st.Leader {
				leaderName = m.Name
			}
		}
		if len(ml.Members) != 3 || leaderName == "" {
			t.Fatalf("%d members, leader %x %q: want 3 members, one of them the leader", len(ml.Members), leader, leaderName)
		}
		pid := memberPID(t, be, leaderName)

		cli, lib := newWorld(t, be), newWorld(t, be)
		const procs, iters = 4, 30
		for _, w := range []*world{cli, lib} {
			if err := os.WriteFile(w.path("counter"), []byte("0\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		// Exit 69: nothing ran; noted in retries and run again.
		const loop = `i=0; while [ $i -lt "$ITERS" ]; do "$COORD" lock counter -- sh -c "$SCRIPT" 2>err; rc=$?; ` +
			`if [ $rc = 69 ]; then echo "$(date +%s%N) $(cat err)" >> retries; continue; fi; ` +
			`[ $rc = 0 ] || { cat err >&2; exit $rc; }; i=$((i+1)); done`
		var ps []*proc
		for range procs {
			ps = append(ps, start(t, cli.root, cli.env("ITERS="+strconv.Itoa(iters), "SCRIPT=n=$(cat counter); echo $((n+1)) > counter"), "/bin/sh", "-c", loop))
			ps = append(ps, start(t, lib.root, lib.env(envWorker+"=counter", envWorkerDir+"="+lib.dir, envWorkerIter+"="+strconv.Itoa(iters), envWorkerRetry+"=1"), os.Args[0]))
		}
		// Kill once both kinds are well under way.
		waitUntil(t, 30*time.Second, func() error {
			n1, _ := readInt(cli.path("counter"))
			n2, _ := readInt(lib.path("counter"))
			if n1 >= 10 && n2 >= 10 {
				return nil
			}
			return fmt.Errorf("counters at %d and %d, want 10 each before the kill", n1, n2)
		})
		before := [2]int64{mustInt(t, cli.path("counter")), mustInt(t, lib.path("counter"))}
		killed := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitGone(t, pid, 5*time.Second)
		t.Logf("killed leader %s (pid %d) with the counters at %d (CLI) and %d (library)", leaderName, pid, before[0], before[1])

		// The two left elect a leader.
		var newLeader uint64
		waitUntil(t, 15*time.Second, func() error {
			for _, m := range ml.Members {
				if m.Name == leaderName {
					continue
				}
				sctx, scancel := context.WithTimeout(ctx, time.Second)
				st, err := c.Status(sctx, m.ClientURLs[0])
				scancel()
				if err == nil && st.Leader != 0 && st.Leader != leader {
					newLeader = st.Leader
					return nil
				}
			}
			return fmt.Errorf("no new leader since the leader was killed (last seen %x)", newLeader)
		})
		elected := time.Since(killed)
		for i, p := range ps {
			if code := p.wait(procTimeout); code != 0 {
				t.Fatalf("process %d exited %d, want 0:\n%s", i, code, p.output())
			}
		}
		for _, w := range []*world{cli, lib} {
			if got := mustInt(t, w.path("counter")); got != procs*iters {
				t.Fatalf("counter %s = %d, want %d: increments lost across the kill", w.path("counter"), got, procs*iters)
			}
		}
		var retries []string
		for _, w := range []*world{cli, lib} {
			for _, l := range lines(t, w.path("retries")) {
				at, why, _ := strings.Cut(l, " ")
				ns, err := strconv.ParseInt(at, 10, 64)
				if err != nil {
					t.Fatalf("%s: line %q", w.path("retries"), l)
				}
				if d := time.Unix(0, ns).Sub(killed); d < 0 || d > clusterRetryWindow {
					t.Errorf("a lock failed %s after the kill, want within [0, %s]: %s", d.Round(time.Millisecond), clusterRetryWindow, why)
				}
				retries = append(retries, fmt.Sprintf("%s after the kill: %s", (time.Duration(ns-killed.UnixNano())).Round(time.Millisecond), strings.TrimSpace(why)))
			}
		}
		var name string
		for _, m := range ml.Members {
			if m.ID == newLeader {
				name = m.Name
			}
		}
		t.Logf("new leader %s seen %s after the kill; all %d processes exited 0, counters %d and %d (%d increments after the kill); %d locks failed closed (69) and were retried",
			name, elected.Round(time.Millisecond), len(ps), procs*iters, procs*iters, 2*procs*iters-int(before[0]+before[1]), len(retries))
		for _, r := range retries {
			t.Logf("  %s", r)
		}
	})
}

// clusterRetryWindow bounds when, from the leader's death on, a lock may
// fail because of it. A request whose proposal died with the leader is not
// answered: it fails at its own deadline, the dial timeout (5 s) for a
// starting coord's lease grant, etcdlock's 2 s bound for queueing. Then
// 3 s of slack for a loaded machine.
const clusterRetryWindow = 8 * time.Second

// memberPID returns the pid of be's member name from local-cluster.sh's
// pid file, after checking that the process is that member's etcd.
func memberPID(t *testing.T, be *backend, name string) int {
	t.Helper()
	pid := int(mustInt(t, filepath.Join(be.dir, name+".pid")))
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("member %s, pid %d: %v", name, pid, err)
	}
	args := strings.Split(string(b), "\x00")
	if len(args) < 3 || filepath.Base(args[0]) != "etcd" || args[1] != "--name" || args[2] != name {
		t.Fatalf("pid %d of member %s is %q, not its etcd", pid, name, args)
	}
	return pid
}
