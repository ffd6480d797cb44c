//go:build unix

package integration_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/toolchainkit/coord/internal/etcdtest"
)

// Behaviours only the etcd backend has: meeting etcdctl on the same keys,
// an etcd that does not answer, etcd settings given wrong, and coord's own
// `coord server`.

// etcdClient returns a client of be's etcd, closed when the test ends. On
// a backend with TLS it is the admin, who may read and write every key.
func etcdClient(t *testing.T, be *backend) *clientv3.Client {
	t.Helper()
	cfg := clientv3.Config{Endpoints: strings.Split(be.endpoint, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if be.caCert != "" {
		cfg.TLS = adminTLS(t, be)
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// adminTLS is the TLS configuration of be's admin: be's CA, the admin's
// client certificate.
func adminTLS(t *testing.T, be *backend) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(be.caCert)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	if !tc.RootCAs.AppendCertsFromPEM(pem) {
		t.Fatalf("%s: no PEM certificate in it", be.caCert)
	}
	if be.adminCert != "" {
		c, err := tls.LoadX509KeyPair(be.adminCert, be.adminKey)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc
}

// etcdRevision returns the current revision of be's etcd.
func etcdRevision(t *testing.T, be *backend) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := etcdClient(t, be).Get(ctx, "/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// etcdGet returns the value of key, nil if there is none.
func etcdGet(t *testing.T, be *backend, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := etcdClient(t, be).Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	return resp.Kvs[0].Value
}

// etcdPutsSince returns the keys of every put after revision rev, in any
// part of the key space, up to the current revision.
func etcdPutsSince(t *testing.T, be *backend, rev int64) []string {
	t.Helper()
	now := etcdRevision(t, be)
	if now <= rev {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var keys []string
	// The empty key with WithPrefix is the whole key space.
	for wr := range etcdClient(t, be).Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut {
				keys = append(keys, string(ev.Kv.Key))
			}
			if ev.Kv.ModRevision >= now {
				return keys
			}
		}
	}
	t.Fatalf("watch from revision %d ended before revision %d: %v", rev+1, now, ctx.Err())
	return nil
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports, err := etcdtest.FreePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// nanos reads a file written by `date +%s%N`.
func nanos(t *testing.T, path string) time.Time {
	t.Helper()
	return time.Unix(0, mustInt(t, path))
}

// 11. `etcdctl lock <prefix>/locks/NAME` and `coord lock NAME` exclude each
// other, both ways: they share concurrency.Mutex's key layout.
func TestEtcdctlInterop(t *testing.T) {
	etcdctl, err := exec.LookPath("etcdctl")
	if err != nil {
		t.Skip("etcdctl not installed (Debian: etcd-client)")
	}
	etcdBackends(t, func(t *testing.T, be *backend) {
		w := newWorld(t, be)
		// etcdctl lock KEY -- CMD: etcdctl runs CMD while it holds KEY.
		// Without "--" it would take sh's -c for a flag of its own.
		ctl := func(script string) *proc {
			args := append(be.etcdctlArgs(), "lock", w.prefix+"/locks/ix", "--", "sh", "-c", script)
			return start(t, w.root, w.env("ETCDCTL_API=3"), etcdctl, args...)
		}
		const hold = `date +%s%N > $1.start; while [ ! -e $1.go ]; do sleep 0.01; done; date +%s%N > $1.end`

		// etcdctl holds: coord's single try fails, a waiting coord gets the
		// lock only after etcdctl's command ended.
		e := ctl(strings.ReplaceAll(hold, "$1", "e1"))
		waitFor(t, w.path("e1.start"), 10*time.Second)
		start := time.Now()
		code, out := w.runCoord("lock", "--timeout", "0", "ix", "--", "touch", "ran")
		if code != 75 {
			t.Fatalf("`coord lock --timeout 0 ix` while etcdctl holds it exited %d, want 75:\n%s", code, out)
		}
		t.Logf("while etcdctl holds: `coord lock --timeout 0` exited 75 in %s", time.Since(start).Round(time.Millisecond))
		if _, err := os.Stat(w.path("ran")); err == nil {
			t.Fatal("coord ran its command while etcdctl held the lock")
		}
		c := w.startCoord("lock", "--timeout", "20s", "ix", "--", "sh", "-c", "date +%s%N > c1.start")
		w.waitWaiters("ix", 1, 10*time.Second)
		if err := os.WriteFile(w.path("e1.go"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if code := e.wait(10 * time.Second); code != 0 {
			t.Fatalf("etcdctl lock exited %d, want 0:\n%s", code, e.output())
		}
		if code := c.wait(20 * time.Second); code != 0 {
			t.Fatalf("coord lock waiting on etcdctl exited %d, want 0:\n%s", code, c.output())
		}
		eEnd, cStart := nanos(t, w.path("e1.end")), nanos(t, w.path("c1.start"))
		if !cStart.After(eEnd) {
			t.Fatalf("coord's command started %s before etcdctl's ended", eEnd.Sub(cStart))
		}
		t.Logf("etcdctl → coord: coord's command started %s after etcdctl's ended", cStart.Sub(eEnd).Round(time.Microsecond))

		// coord holds: etcdctl waits until coord's command ended.
		c = w.startCoord("lock", "ix", "--", "sh", "-c", strings.ReplaceAll(hold, "$1", "c2"))
		waitFor(t, w.path("c2.start"), 10*time.Second)
		e = ctl("date +%s%N > e2.start")
		w.waitWaiters("ix", 1, 10*time.Second)
		time.Sleep(100 * time.Millisecond) // a broken exclusion would show by now
		if _, err := os.Stat(w.path("e2.start")); err == nil {
			t.Fatal("etcdctl ran its command while coord held the lock")
		}
		if err := os.WriteFile(w.path("c2.go"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if code := c.wait(10 * time.Second); code != 0 {
			t.Fatalf("coord lock exited %d, want 0:\n%s", code, c.output())
		}
		if code := e.wait(20 * time.Second); code != 0 {
			t.Fatalf("etcdctl lock waiting on coord exited %d, want 0:\n%s", code, e.output())
		}
		cEnd, eStart := nanos(t, w.path("c2.end")), nanos(t, w.path("e2.start"))
		if !eStart.After(cEnd) {
			t.Fatalf("etcdctl's command started %s before coord's ended", cEnd.Sub(eStart))
		}
		t.Logf("coord → etcdctl: etcdctl's command started %s after coord's ended", eStart.Sub(cEnd).Round(time.Microsecond))
	})
}

// 12. Endpoints configured and nothing listening: coord fails closed (69)
// within the dial timeout (default 5 s), runs nothing and says which
// endpoint and how to opt in to --fallback; with --fallback file it runs.
// An explicit --backend etcd fails the same way. No etcd needed.
func TestEtcdUnreachable(t *testing.T) {
	dir := t.TempDir()
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", freePorts(t, 1)[0])
	env := append(cleanEnv(), "COORD_LOCK_DIR="+dir+"/locks", "COORD_ETCD_ENDPOINTS="+endpoint)
	// The three wait for the dial timeout side by side.
	began := time.Now()
	auto := start(t, dir, env, coordBin, "lock", "x", "--", "touch", "auto")
	explicit := start(t, dir, env, coordBin, "--backend", "etcd", "lock", "x", "--", "touch", "explicit")
	fallback := start(t, dir, env, coordBin, "--fallback", "file", "lock", "x", "--", "touch", "fallback")

	for _, tc := range []struct {
		what, file string
		p          *proc
	}{{"auto", "auto", auto}, {"--backend etcd", "explicit", explicit}} {
		code := tc.p.wait(30 * time.Second)
		took := tc.p.end.Sub(began)
		out := tc.p.output()
		if code != 69 {
			t.Errorf("%s, %s not listening: exit %d, want 69:\n%s", tc.what, endpoint, code, out)
		}
		if took > 12*time.Second {
			t.Errorf("%s, %s not listening: exited after %s, want under 12s", tc.what, endpoint, took)
		}
		if _, err := os.Stat(dir + "/" + tc.file); err == nil {
			t.Errorf("%s: the command ran although etcd was unreachable", tc.what)
		}
		if n := strings.Count(strings.TrimSpace(out), "\n"); n != 0 || !strings.Contains(out, endpoint) {
			t.Errorf("%s: stderr is not one line naming %s:\n%s", tc.what, endpoint, out)
		}
		if tc.what == "auto" && !strings.Contains(out, "--fallback") {
			t.Errorf("%s: stderr does not mention --fallback:\n%s", tc.what, out)
		}
		t.Logf("%s: exit %d after %s: %s", tc.what, code, took.Round(time.Millisecond), strings.TrimSpace(out))
	}
	if code := fallback.wait(30 * time.Second); code != 0 {
		t.Fatalf("--fallback file, %s not listening: exit %d, want 0:\n%s", endpoint, code, fallback.output())
	}
	if _, err := os.Stat(dir + "/fallback"); err != nil {
		t.Fatalf("--fallback file: the command did not run: %v", err)
	}
	if out := fallback.output(); !strings.Contains(out, "falling back") {
		t.Errorf("--fallback file: no warning that it locks on this host only:\n%s", out)
	}
	t.Logf("--fallback file: ran under a file lock, exited after %s", fallback.end.Sub(began).Round(time.Millisecond))
}

// 13. etcd settings given wrong, by flag and by environment: one line on
// stderr, exit 64, the command not run, no waiting for etcd.
func TestEtcdBadInput(t *testing.T) {
	etcdBackends(t, func(t *testing.T, be *backend) {
		w := newWorld(t, be)
		for _, tc := range []struct{ flag, env, value string }{
			{"--etcd-endpoints", "COORD_ETCD_ENDPOINTS", "http://[::1"},
			{"--etcd-endpoints", "COORD_ETCD_ENDPOINTS", "ftp://h:1"},
			{"--etcd-endpoints", "COORD_ETCD_ENDPOINTS", "h"},
			{"--etcd-endpoints", "COORD_ETCD_ENDPOINTS", be.endpoint + ",h"},
			{"--etcd-ttl", "COORD_ETCD_TTL", "0"},
			{"--etcd-ttl", "COORD_ETCD_TTL", "1ms"},
			{"--etcd-ttl", "COORD_ETCD_TTL", "2500ms"},
			{"--etcd-ttl", "COORD_ETCD_TTL", "-3s"},
			{"--etcd-prefix", "COORD_ETCD_PREFIX", "noslash"},
			{"--etcd-dial-timeout", "COORD_ETCD_DIAL_TIMEOUT", "-1s"},
		} {
			for _, how := range []string{"flag", "env"} {
				label := fmt.Sprintf("%s %q", tc.flag, tc.value)
				var p *proc
				began := time.Now()
				if how == "flag" {
					p = w.startCoord(tc.flag+"="+tc.value, "lock", "x", "--", "touch", "ran")
				} else {
					label = fmt.Sprintf("%s=%q", tc.env, tc.value)
					p = start(t, w.root, w.env(tc.env+"="+tc.value), coordBin, "lock", "x", "--", "touch", "ran")
				}
				code := p.wait(30 * time.Second)
				out := strings.TrimSpace(p.output())
				took := p.end.Sub(began)
				switch {
				case code != 64:
					t.Errorf("%s: exit %d, want 64:\n%s", label, code, out)
				case out == "" || strings.Contains(out, "\n"):
					t.Errorf("%s: stderr is not one line:\n%s", label, out)
				case strings.Contains(out, "panic"):
					t.Errorf("%s: stderr mentions a panic:\n%s", label, out)
				}
				// Exit 64 (not 69) says it was refused before reaching etcd;
				// the time is logged only: a loaded host took 9 s to run it.
				if _, err := os.Stat(w.path("ran")); err == nil {
					t.Fatalf("%s: the command ran", label)
				}
				if how == "flag" {
					t.Logf("%s: exit %d in %s: %s", label, code, took.Round(time.Millisecond), out)
				}
			}
		}
	})
}

// 14. 8 OS processes × 25 increments under `coord --backend etcd lock`
// against a `coord server` process: none lost.
func TestCLICounterCoordServer(t *testing.T) {
	srv, client := startCoordServer(t)
	be := &backend{name: "coord-server", endpoint: client}
	cliCounter(t, newWorld(t, be), "GLOBAL=--backend etcd --etcd-endpoints "+client)

	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := srv.wait(10 * time.Second); code != 0 {
		t.Errorf("coord server exited %d after SIGTERM, want 0:\n%s", code, srv.output())
	}
}

// A lock lost while its command runs (here: its key deleted by hand): the
// command gets SIGTERM and coord exits 74; with --on-lost warn the command
// runs on and coord still exits 74.
func TestEtcdLostLock(t *testing.T) {
	etcdBackends(t, func(t *testing.T, be *backend) {
		w := newWorld(t, be)
		ctx := context.Background()
		c := etcdClient(t, be)
		drop := func(name string) {
			if _, err := c.Delete(ctx, w.prefix+"/locks/"+name+"/", clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
		}

		p := w.startCoord("lock", "lost", "--", "sh", "-c", `echo $$ > pid; trap 'echo term > got; exit 3' TERM; sleep 30 & wait`)
		pid := childPID(t, w.path("pid"))
		dropped := time.Now()
		drop("lost")
		if code := p.wait(10 * time.Second); code != 74 {
			t.Fatalf("coord exited %d after its lock was lost, want 74:\n%s", code, p.output())
		}
		t.Logf("lost lock: coord exited 74 %s after the key was deleted", time.Since(dropped).Round(time.Millisecond))
		if b, _ := os.ReadFile(w.path("got")); strings.TrimSpace(string(b)) != "term" {
			t.Fatalf("the command did not get SIGTERM (got %q)", b)
		}
		waitGone(t, pid, loadSlack)
		if !strings.Contains(p.output(), "lock lost") {
			t.Errorf("stderr does not say the lock was lost:\n%s", p.output())
		}

		p = w.startCoord("lock", "--on-lost", "warn", "warned", "--", "sh", "-c",
			`echo $$ > pid2; while [ ! -e go ]; do sleep 0.01; done; echo done > finished`)
		childPID(t, w.path("pid2"))
		drop("warned")
		// The command ends only once coord has said the lock is lost.
		waitUntil(t, 10*time.Second, func() error {
			if out := p.output(); !strings.Contains(out, "warning: lock lost") {
				return fmt.Errorf("--on-lost warn: no warning since the key was deleted:\n%s", out)
			}
			return nil
		})
		os.WriteFile(w.path("go"), nil, 0o644)
		if code := p.wait(10 * time.Second); code != 74 {
			t.Fatalf("--on-lost warn: coord exited %d, want 74:\n%s", code, p.output())
		}
		if _, err := os.Stat(w.path("finished")); err != nil {
			t.Fatalf("--on-lost warn: the command did not run to its end: %v", err)
		}
		if !strings.Contains(p.output(), "warning: lock lost") {
			t.Errorf("--on-lost warn: no warning on stderr:\n%s", p.output())
		}
	})
}

// `coord server` runs coord-server from beside coord or from PATH; without
// one, or with a plain coord in its place, it says so (69) and stops.
func TestServerBinaryMissing(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "coord")
	b, err := os.ReadFile(coordBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(cleanEnv(), "PATH=/usr/bin:/bin")
	p := start(t, dir, env, bin, "server", "--data-dir", filepath.Join(dir, "etcd"))
	if code := p.wait(10 * time.Second); code != 69 || !strings.Contains(p.output(), "coord-server, found neither beside coord nor on PATH") {
		t.Fatalf("coord server without coord-server exited %d, want 69 and a hint:\n%s", code, p.output())
	}
	if err := os.WriteFile(filepath.Join(dir, "coord-server"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	p = start(t, dir, env, bin, "server", "--data-dir", filepath.Join(dir, "etcd"))
	if code := p.wait(10 * time.Second); code != 69 || !strings.Contains(p.output(), "is a plain coord, without the server") {
		t.Fatalf("coord server with a plain coord as coord-server exited %d, want 69 and why:\n%s", code, p.output())
	}
	if _, err := os.Stat(filepath.Join(dir, "etcd")); !os.IsNotExist(err) {
		t.Fatalf("the data dir was created (%v)", err)
	}
}
