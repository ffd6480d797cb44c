//go:build unix

package integration_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/etcdtest"
)

// 7. etcd out of space: another client fills etcd's quota and etcd raises
// the NOSPACE alarm. Held locks are kept and released as usual; a new
// `coord lock` and `coord download`, and a new lock of a long-lived
// Manager, fail closed (69) at once with a message that says etcd is out
// of space and what to do; `coord status` still lists the locks, and
// warns with the same words, as Manager.Check does.
// After compact + defrag + alarm disarm the same Manager locks again,
// without a restart.
func TestEtcdNoSpace(t *testing.T) {
	const quota = 4 << 20 // as Debian's etcd was seen with
	s, err := etcdtest.StartEmbedded(t.TempDir(), func(c *embed.Config) { c.QuotaBackendBytes = quota })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	dir := t.TempDir()
	env := append(cleanEnv(), "COORD_LOCK_DIR="+dir+"/locks", "COORD_ETCD_ENDPOINTS="+s.Endpoint, "COORD_ETCD_TTL=3s")
	ctx := context.Background()
	m, err := coord.New(ctx, coord.Config{Backend: coord.BackendEtcd, Endpoints: []string{s.Endpoint}, TTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	held, err := m.Lock(ctx, "held")
	if err != nil {
		t.Fatal(err)
	}
	cli := start(t, dir, env, coordBin, "lock", "cli-held", "--", "sh", "-c", `echo $$ > started; while [ ! -e release ]; do sleep 0.05; done`)
	waitFor(t, dir+"/started", 10*time.Second)

	// Another client fills the quota with the history of one key.
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := strings.Repeat("x", 512<<10)
	puts := 0
	for ; ; puts++ {
		_, err := c.Put(ctx, "/fill", big)
		if errors.Is(err, rpctypes.ErrNoSpace) {
			break
		}
		if err != nil || puts > 100 {
			t.Fatalf("filling etcd: put %d: %v", puts, err)
		}
	}
	t.Logf("etcd raised NOSPACE after %d puts of 512 KiB (quota %d MiB)", puts, quota>>20)

	const want = "etcd is out of space (NOSPACE alarm)"
	fix := []string{"etcdctl compact", "etcdctl defrag", "etcdctl alarm disarm"}
	says := func(out string) bool {
		for _, f := range append(fix, want) {
			if !strings.Contains(out, f) {
				return false
			}
		}
		return !strings.Contains(out, "etcd unavailable") && !strings.Contains(out, "fallback")
	}
	for _, args := range [][]string{
		{"lock", "x", "--", "touch", "ran"},
		{"--fallback", "file", "lock", "x", "--", "touch", "ran"},
		{"download", "tc", dir + "/dest", "--", "touch", "ran"},
	} {
		began := time.Now()
		p := start(t, dir, env, coordBin, args...)
		code := p.wait(30 * time.Second)
		took := p.end.Sub(began)
		out := p.output()
		if code != 69 || !says(out) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("coord %s under NOSPACE: exit %d, want 69 and one line saying %q and %q:\n%s", strings.Join(args, " "), code, want, fix, out)
		}
		t.Logf("coord %s: exit %d after %s: %s", args[0], code, took.Round(time.Millisecond), strings.TrimSpace(out))
	}
	if _, err := os.Stat(dir + "/ran"); err == nil {
		t.Fatal("a command ran under NOSPACE")
	}
	began := time.Now()
	_, err = m.Lock(ctx, "x")
	took := time.Since(began)
	if !errors.Is(err, coord.ErrBackendUnavailable) || !says(err.Error()) {
		t.Fatalf("Manager.Lock under NOSPACE = %v; want ErrBackendUnavailable saying %q and %q", err, want, fix)
	}
	t.Logf("Manager.Lock under NOSPACE: failed after %s: %v", took.Round(time.Microsecond), err)
	if took > 5*time.Second {
		t.Errorf("Manager.Lock under NOSPACE took %s: a refusal needs no waiting", took)
	}

	// A long-lived Manager asks; status, which takes no lease, lists the
	// held locks and warns.
	if err := m.Check(ctx); !errors.Is(err, coord.ErrBackendUnavailable) || !says(err.Error()) {
		t.Errorf("Check under NOSPACE = %v; want ErrBackendUnavailable saying %q and %q", err, want, fix)
	}
	for _, args := range [][]string{{"status"}, {"status", "--json"}} {
		p := start(t, dir, env, coordBin, args...)
		code := p.wait(30 * time.Second)
		out := p.output()
		if code != 0 || !strings.Contains(out, "coord: warning: backend unavailable: "+want) || !says(out) ||
			!strings.Contains(out, "cli-held") || !strings.Contains(out, `held"`) && !strings.Contains(out, "held ") {
			t.Errorf("coord %s under NOSPACE: exit %d, want 0, both held locks and a warning saying %q:\n%s", strings.Join(args, " "), code, want, out)
		}
		t.Logf("coord %s under NOSPACE: exit %d:\n%s", strings.Join(args, " "), code, out)
	}

	// Held locks are released as usual: deletes still work.
	if err := held.Unlock(); err != nil {
		t.Errorf("Unlock under NOSPACE: %v", err)
	}
	if err := os.WriteFile(dir+"/release", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := cli.wait(30 * time.Second); code != 0 {
		t.Errorf("the CLI holder under NOSPACE exited %d, want 0:\n%s", code, cli.output())
	}
	for _, name := range []string{"held", "cli-held"} {
		if st, err := m.Inspect(ctx, name); err != nil || st.Held {
			t.Errorf("%s after its release under NOSPACE: held %v, %v; want free", name, st.Held, err)
		}
	}

	// The operator's fix: compact, defragment, disarm.
	g, err := c.Get(ctx, "/fill")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctx, g.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Defragment(ctx, s.Endpoint); err != nil {
		t.Fatal(err)
	}
	// All alarms, as etcdctl alarm disarm does.
	if _, err := c.AlarmDisarm(ctx, &clientv3.AlarmMember{}); err != nil {
		t.Fatal(err)
	}
	if err := m.Check(ctx); err != nil {
		t.Fatalf("Check after the fix: %v", err)
	}
	l, err := m.Lock(ctx, "x", coord.WithTimeout(0))
	if err != nil {
		t.Fatalf("the same Manager after compact, defrag and disarm: %v", err)
	}
	l.Unlock()
	if p := start(t, dir, env, coordBin, "lock", "x", "--", "touch", "ran"); p.wait(30*time.Second) != 0 {
		t.Fatalf("coord lock after the fix: exit %d:\n%s", p.code, p.output())
	}
}
