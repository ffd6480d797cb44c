package coord_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/etcdtest"
	"github.com/toolchainkit/coord/internal/wintest"
)

func startEtcd(t *testing.T, opts ...etcdtest.Option) *etcdtest.Server {
	t.Helper()
	needEtcd(t)
	s, err := etcdtest.StartEmbedded(wintest.TempDir(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

func etcdManager(t *testing.T, cfg coord.Config) *coord.Manager {
	t.Helper()
	cfg.Backend = coord.BackendEtcd
	m, err := coord.New(context.Background(), cfg, coord.WithLogger(zaptest.NewLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestEtcdTLS(t *testing.T) {
	certs, err := etcdtest.WriteCerts(wintest.TempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	other, err := etcdtest.WriteCerts(wintest.TempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	s := startEtcd(t, etcdtest.WithTLS(certs, true))
	base := coord.Config{Endpoints: []string{s.Endpoint}, DialTimeout: loadedDial}
	for _, tc := range []struct {
		name    string
		cfg     func(c *coord.Config)
		wantErr error
		say     string
	}{
		{"mutual TLS", func(c *coord.Config) { c.CACert, c.Cert, c.Key = certs.CA, certs.ClientCert, certs.ClientKey }, nil, ""},
		{"wrong CA", func(c *coord.Config) { c.CACert, c.Cert, c.Key = other.CA, certs.ClientCert, certs.ClientKey }, coord.ErrBackendUnavailable, "etcd's certificate is not signed by the CA in " + other.CA + ": x509: "},
		// TLS 1.3: etcd (Go) refuses in an alert after the handshake.
		{"no client certificate", func(c *coord.Config) { c.CACert = certs.CA }, coord.ErrBackendUnavailable, "etcd requires a client certificate, and none is configured"},
		{"client certificate of another CA", func(c *coord.Config) { c.CACert, c.Cert, c.Key = certs.CA, other.ClientCert, other.ClientKey }, coord.ErrBackendUnavailable, "etcd rejects the client certificate " + other.ClientCert + ": "},
		{"missing CA file", func(c *coord.Config) { c.CACert = filepath.Join(wintest.TempDir(t), "none.pem") }, coord.ErrInvalidArgument, "CA certificate"},
		{"key without certificate", func(c *coord.Config) { c.CACert, c.Key = certs.CA, certs.ClientKey }, coord.ErrInvalidArgument, "go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			cfg.Backend = coord.BackendEtcd
			tc.cfg(&cfg)
			m, err := coord.New(context.Background(), cfg)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				l, err := m.Lock(context.Background(), "tls", coord.WithTimeout(0))
				if err != nil {
					t.Fatal(err)
				}
				l.Unlock()
				m.Close()
				return
			}
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.say) {
				t.Fatalf("New = %v; want %v saying %q", err, tc.wantErr, tc.say)
			}
			// The Config field that the refusal is about, for a CLI to name.
			field := map[string]string{"wrong CA": "CACert", "no client certificate": "Cert", "client certificate of another CA": "Cert"}[tc.name]
			got := ""
			if ce := (*coord.ConfigError)(nil); errors.As(err, &ce) {
				got = ce.Field
			}
			if got != field {
				t.Fatalf("New = %v: ConfigError on %q; want %q", err, got, field)
			}
		})
	}
	// A refusal is a mistake to fix: --fallback file does not hide it.
	t.Run("no client certificate, fallback file", func(t *testing.T) {
		cfg := base
		cfg.Backend, cfg.Fallback, cfg.CACert, cfg.LockDir = coord.BackendAuto, coord.BackendFile, certs.CA, wintest.TempDir(t)
		m, err := coord.New(context.Background(), cfg)
		if err == nil {
			m.Close()
			t.Fatalf("New fell back to %q; want the refusal", m.Backend())
		}
		if !errors.Is(err, coord.ErrBackendUnavailable) || !strings.Contains(err.Error(), "requires a client certificate") || strings.Contains(err.Error(), "fallback") {
			t.Fatalf("New = %v; want the refusal, without a fallback hint", err)
		}
	})
}

func TestEtcdAuth(t *testing.T) {
	s := startEtcd(t, etcdtest.FastAuth)
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := etcdtest.EnableAuth(ctx, c, "s3cret-root", "s3cret-limited"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// etcd checks a password with bcrypt: slow under -race on a loaded machine.
	cfg := coord.Config{Backend: coord.BackendEtcd, Endpoints: []string{s.Endpoint}, DialTimeout: loadedDial, Username: "root", Password: "wrong-password"}
	_, err = coord.New(ctx, cfg)
	if !errors.Is(err, coord.ErrBackendUnavailable) || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("wrong password: %v; want ErrBackendUnavailable saying authentication failed", err)
	}
	if strings.Contains(err.Error(), "wrong-password") {
		t.Fatalf("the error shows the password: %v", err)
	}
	// A user outside the prefix it may use: refused at its first request,
	// naming the user and the prefix.
	limited := etcdManager(t, coord.Config{Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout, Username: "limited", Password: "s3cret-limited", Prefix: "/other"})
	_, err = limited.Lock(ctx, "auth")
	if want := `etcd user "limited" may not use prefix /other: permission denied`; !errors.Is(err, coord.ErrBackendUnavailable) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Lock outside the permitted prefix = %v; want ErrBackendUnavailable saying %q", err, want)
	}
	limited = etcdManager(t, coord.Config{Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout, Username: "limited", Password: "s3cret-limited", Prefix: "/mine"})
	l, err := limited.Lock(ctx, "auth")
	if err != nil {
		t.Fatalf("Lock inside the permitted prefix: %v", err)
	}
	l.Unlock()

	cfg.Password = "s3cret-root"
	m := etcdManager(t, cfg)
	l, err = m.Lock(ctx, "auth")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	st, err := m.Locks(ctx)
	if err != nil || len(st) != 1 || st[0].Holder == nil || st[0].Holder.PID != os.Getpid() {
		t.Fatalf("Locks = %+v, %v", st, err)
	}
}

func TestEtcdBadConfig(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []coord.Config{
		{Endpoints: []string{"http://[::1"}},
		{Endpoints: []string{"ftp://127.0.0.1:2379"}},
		{Endpoints: []string{"127.0.0.1"}},
		{Endpoints: []string{"http://127.0.0.1:2379/path"}},
		{Endpoints: []string{"http://u:p@127.0.0.1:2379"}},
		{Endpoints: []string{"http://127.0.0.1:2379"}, TTL: time.Millisecond},
		{Endpoints: []string{"http://127.0.0.1:2379"}, TTL: 2500 * time.Millisecond},
		{Endpoints: []string{"http://127.0.0.1:2379"}, Prefix: "toolchainkit"},
		{Endpoints: []string{"http://127.0.0.1:2379"}, Prefix: "/toolchainkit/"},
		{Endpoints: []string{"http://127.0.0.1:2379"}, DialTimeout: -time.Second},
	} {
		start := time.Now()
		_, err := coord.New(ctx, cfg)
		if !errors.Is(err, coord.ErrInvalidArgument) {
			t.Errorf("New(%+v) = %v; want ErrInvalidArgument", cfg, err)
		}
		// Well under the 5s default dial timeout: it never dialled.
		if time.Since(start) > 4*time.Second {
			t.Errorf("New(%+v) took %s: bad input must fail before dialling", cfg, time.Since(start))
		}
	}
}

// The download contract on etcd: one fetch, everyone returns together,
// woken by the download record.
func TestEtcdDownloadOnce(t *testing.T) {
	cfg := sharedConfig(t)
	checkDoOnce(t, func() *coord.Manager { return etcdManager(t, cfg) })
}

// The marker in dest is the truth: a waiter told by etcd that the download
// is done, whose dest has no marker (storage not shared), downloads itself.
func TestEtcdDoneButDestNotShared(t *testing.T) {
	cfg := sharedConfig(t)
	ma := etcdManager(t, cfg)
	a := coord.NewDownloadCoordinator(ma)
	b := coord.NewDownloadCoordinator(etcdManager(t, cfg))
	hostA, hostB := filepath.Join(wintest.TempDir(t), "sdk"), filepath.Join(wintest.TempDir(t), "sdk")
	first, err := a.Coordinate(context.Background(), "sdk", hostA)
	if err != nil || !first.ShouldDownload() {
		t.Fatalf("first = %v, %v", first, err)
	}
	got := make(chan *coord.Download)
	go func() {
		d, err := b.Coordinate(context.Background(), "sdk", hostB, coord.WithTimeout(10*time.Second))
		if err != nil {
			t.Error(err)
		}
		got <- d
	}()
	waitUntil(t, 10*time.Second, func() error { return queued(ma, coord.ToolchainLockName("sdk")) })
	os.WriteFile(filepath.Join(first.StagingDir(), "f"), nil, 0o644)
	if err := first.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	first.Close()
	second := <-got
	if second == nil {
		return
	}
	defer second.Close()
	if !second.ShouldDownload() {
		t.Fatal("told done by etcd, without a marker in its own dest, the waiter did not download")
	}
}

// A downloader whose lock went to another, who cleared its staging
// directory, is told at Commit that it lost the lock.
func TestEtcdCommitAfterTakeover(t *testing.T) {
	cfg := sharedConfig(t)
	a := coord.NewDownloadCoordinator(etcdManager(t, cfg))
	b := coord.NewDownloadCoordinator(etcdManager(t, cfg))
	dest := filepath.Join(wintest.TempDir(t), "sdk")
	stale, err := a.Coordinate(context.Background(), "sdk", dest)
	if err != nil || !stale.ShouldDownload() {
		t.Fatalf("first = %v, %v", stale, err)
	}
	defer stale.Close()
	c, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Delete(context.Background(), cfg.Prefix+"/locks/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	next, err := b.Coordinate(context.Background(), "sdk", dest, coord.WithTimeout(5*time.Second))
	if err != nil || !next.ShouldDownload() {
		t.Fatalf("second = %v, %v", next, err)
	}
	defer next.Close()
	if _, err := os.Stat(stale.StagingDir()); !os.IsNotExist(err) {
		t.Fatalf("the new downloader left the stale staging directory (%v)", err)
	}
	if err := stale.Commit(context.Background()); !errors.Is(err, coord.ErrLockLost) {
		t.Fatalf("stale Commit = %v, want ErrLockLost", err)
	}
	if coord.IsComplete(dest) {
		t.Fatal("the stale downloader published")
	}
}

// One endpoint that refuses us (another cluster's CA) does not decide for
// the others: with the other endpoint down, the message says both, not
// only the refusal, and does not claim a certificate problem.
func TestEtcdOneEndpointRefuses(t *testing.T) {
	other, err := etcdtest.WriteCerts(wintest.TempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := etcdtest.WriteCerts(wintest.TempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	stray := startEtcd(t, etcdtest.WithTLS(other, true))
	ports, err := etcdtest.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	down := fmt.Sprintf("https://127.0.0.1:%d", ports[0])
	_, err = coord.New(context.Background(), coord.Config{
		Backend:   coord.BackendEtcd,
		Endpoints: []string{down, stray.Endpoint},
		// One endpoint down: the refusal is certain only once the dial
		// timeout ends.
		DialTimeout: 5 * time.Second,
		CACert:      certs.CA, Cert: certs.ClientCert, Key: certs.ClientKey,
	})
	if !errors.Is(err, coord.ErrBackendUnavailable) || !strings.Contains(err.Error(), down+": dial tcp") || strings.Contains(err.Error(), "etcd's certificate is not signed") {
		t.Fatalf("New = %v; want unavailable, naming %s as down and %s's certificate", err, down, stray.Endpoint)
	}
}
