package coord_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/wintest"
)

// Time bounds in these tests hold on a loaded 2-core machine: a bound is
// tied to a configured timeout plus slack, at least 10× the quiet figure
// (tens of ms). How fast things are is measured by make bench.
const (
	slack = 5 * time.Second
	// loadedDial is the dial timeout of tests that expect etcd to answer:
	// a 1s one ran out on a busy host before etcd said "authentication
	// failed".
	loadedDial = 10 * time.Second
)

func newManager(t *testing.T, dir string) *coord.Manager {
	t.Helper()
	m, err := coord.New(context.Background(), coord.Config{Backend: coord.BackendFile, LockDir: dir}, coord.WithLogger(zaptest.NewLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestTimeoutErrorNamesHolder(t *testing.T) {
	dir := wintest.TempDir(t)
	a, b := newManager(t, dir), newManager(t, dir)
	l, err := a.RegistryLock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()

	start := time.Now()
	_, err = b.RegistryLock(context.Background(), coord.WithTimeout(150*time.Millisecond))
	waited := time.Since(start)
	var te *coord.TimeoutError
	if !errors.Is(err, coord.ErrTimeout) || !errors.As(err, &te) {
		t.Fatalf("err = %v; want a *TimeoutError", err)
	}
	host, _ := os.Hostname()
	switch {
	case te.Name != "registry":
		t.Errorf("Name = %q", te.Name)
	case te.Waited < 150*time.Millisecond || waited > 150*time.Millisecond+slack:
		t.Errorf("Waited = %s, returned after %s; want about 150ms", te.Waited, waited)
	case te.Holder == nil || te.Holder.PID != os.Getpid() || te.Holder.Host != host || te.Holder.Token != l.Token():
		t.Errorf("Holder = %+v; want pid %d on %s with token %d", te.Holder, os.Getpid(), host, l.Token())
	case !strings.Contains(err.Error(), "pid ") || !strings.Contains(err.Error(), host):
		t.Errorf("message %q does not name the holder", err)
	}

	// WithTimeout(0) tries once.
	start = time.Now()
	_, err = b.Lock(context.Background(), "registry", coord.WithTimeout(0))
	if !errors.As(err, &te) || te.Waited != 0 || time.Since(start) > slack {
		t.Fatalf("try once = %v after %s", err, time.Since(start))
	}

	// A ctx deadline bounds the wait when no WithTimeout is given.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	other, err := b.ToolchainLock(ctx, "x")
	if err != nil {
		t.Fatalf("other lock: %v", err)
	}
	defer other.Unlock()
	if _, err := b.RegistryLock(ctx); !errors.Is(err, coord.ErrTimeout) {
		t.Fatalf("with ctx deadline = %v; want ErrTimeout", err)
	}

	// A cancelled ctx is not a timeout.
	cctx, ccancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, ccancel)
	if _, err := b.RegistryLock(cctx); !errors.Is(err, context.Canceled) || errors.Is(err, coord.ErrTimeout) {
		t.Fatalf("cancelled = %v; want context.Canceled", err)
	}
}

func TestInvalidInput(t *testing.T) {
	m := newManager(t, wintest.TempDir(t))
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"empty name", func() error { _, err := m.Lock(ctx, ""); return err }, coord.ErrInvalidName},
		{"5000-byte name", func() error { _, err := m.Lock(ctx, strings.Repeat("n", 5000)); return err }, coord.ErrInvalidName},
		{"empty id", func() error { _, err := m.ToolchainLock(ctx, ""); return err }, coord.ErrInvalidName},
		{"empty project", func() error { _, err := m.ProjectLock(ctx, ""); return err }, coord.ErrInvalidName},
		{"negative timeout", func() error { _, err := m.Lock(ctx, "x", coord.WithTimeout(-time.Second)); return err }, coord.ErrInvalidArgument},
		{"inspect empty", func() error { _, err := m.Inspect(ctx, ""); return err }, coord.ErrInvalidName},
	} {
		if err := tc.call(); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v; want %v", tc.name, err, tc.want)
		}
	}
	for _, cfg := range []coord.Config{{Backend: "zookeeper"}, {Fallback: "maybe"}} {
		if _, err := coord.New(ctx, cfg); !errors.Is(err, coord.ErrInvalidArgument) {
			t.Errorf("New(%+v) = %v; want ErrInvalidArgument", cfg, err)
		}
	}
}

// Names are data: hostile names lock files inside the lock directory only.
func TestHostileNamesStayInLockDir(t *testing.T) {
	root := wintest.TempDir(t)
	dir := filepath.Join(root, "locks")
	m := newManager(t, dir)
	names := []string{"../x", "/abs", ".", "..", "a/../../b", "nul\x00byte", "\x1b[31m", "\xff\xfe", strings.Repeat("long", 1000)}
	for _, n := range names {
		l, err := m.Lock(context.Background(), n, coord.WithTimeout(0))
		if err != nil {
			t.Errorf("Lock(%q): %v", n, err)
			continue
		}
		l.Unlock()
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != len(names) {
		t.Errorf("lock dir has %d entries; want %d", len(ents), len(names))
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			t.Errorf("lock dir entry %q is not a regular file", e.Name())
		}
	}
	if top, _ := os.ReadDir(root); len(top) != 1 {
		t.Errorf("%d entries beside the lock dir; want none", len(top)-1)
	}
}

func TestProjectLockCleansPath(t *testing.T) {
	dir := wintest.TempDir(t)
	a, b := newManager(t, dir), newManager(t, dir)
	proj := wintest.TempDir(t)
	l, err := a.ProjectLock(context.Background(), proj)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	other := filepath.Join(proj, "sub", "..", ".") + "/"
	if _, err := b.ProjectLock(context.Background(), other, coord.WithTimeout(0)); !errors.Is(err, coord.ErrTimeout) {
		t.Fatalf("ProjectLock(%q) while %q is held = %v; want ErrTimeout", other, proj, err)
	}
	if got, want := l.Name(), "project/"+proj; got != want {
		t.Fatalf("Name = %q; want %q", got, want)
	}
}

func TestSharedAndExclusive(t *testing.T) {
	dir := wintest.TempDir(t)
	a, b, c := newManager(t, dir), newManager(t, dir), newManager(t, dir)
	ctx := context.Background()
	s1, err := a.Lock(ctx, "s", coord.Shared(), coord.WithTimeout(0))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := b.Lock(ctx, "s", coord.Shared(), coord.WithTimeout(0))
	if err != nil {
		t.Fatalf("second shared lock: %v", err)
	}
	got := make(chan *coord.Lock)
	go func() {
		l, err := c.Lock(ctx, "s", coord.WithTimeout(5*time.Second))
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	s1.Unlock()
	select {
	case <-got:
		t.Fatal("exclusive granted while one shared holder remains")
	case <-time.After(100 * time.Millisecond):
	}
	s2.Unlock()
	if l := <-got; l != nil {
		l.Unlock()
	}
}

func TestUnlockTwice(t *testing.T) {
	m := newManager(t, wintest.TempDir(t))
	l, err := m.Lock(context.Background(), "u")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatalf("second Unlock = %v; want nil: Unlock is idempotent", err)
	}
	select {
	case <-l.Lost():
		t.Fatal("file lock reported lost")
	default:
	}
}

func TestEtcdSelectedButMissingFailsClosed(t *testing.T) {
	ctx := context.Background()
	cfg := coord.Config{Endpoints: []string{"http://127.0.0.1:1"}, LockDir: wintest.TempDir(t), DialTimeout: 500 * time.Millisecond}
	start := time.Now()
	_, err := coord.New(ctx, cfg)
	var ce *coord.ConfigError
	if !errors.Is(err, coord.ErrBackendUnavailable) || !strings.Contains(err.Error(), "127.0.0.1:1") || !errors.As(err, &ce) || ce.Field != "Fallback" {
		t.Fatalf("New with endpoints = %v; want ErrBackendUnavailable naming the endpoint, a ConfigError on Fallback", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("New failed after %s; want about the 500ms dial timeout, not the 5s default", d)
	}
	cfg.Fallback = coord.BackendFile
	m, err := coord.New(ctx, cfg)
	if err != nil {
		t.Fatalf("New with fallback: %v", err)
	}
	defer m.Close()
	if m.Backend() != coord.BackendFile {
		t.Fatalf("Backend = %q; want file", m.Backend())
	}
}

// Holder records stay within what backends store, however long or
// escape-heavy the command line.
func TestLongCommandsAreClipped(t *testing.T) {
	dir := wintest.TempDir(t)
	for _, cmd := range [][]string{make([]string, 6000), {strings.Repeat("\x01", 100000)}, {strings.Repeat("x", 1<<20)}} {
		m, err := coord.New(context.Background(), coord.Config{Backend: coord.BackendFile, LockDir: dir}, coord.WithCommand(cmd))
		if err != nil {
			t.Fatal(err)
		}
		l, err := m.Lock(context.Background(), "long", coord.WithTimeout(0))
		if err != nil {
			t.Fatalf("Lock with a %d-argument command: %v", len(cmd), err)
		}
		s, err := newManager(t, dir).Inspect(context.Background(), "long")
		if err != nil || s.Holder == nil || s.Holder.PID != os.Getpid() {
			t.Fatalf("Inspect = %+v, %v; want our record", s, err)
		}
		l.Unlock()
		m.Close()
	}
}

// Progress published by the downloader is what other processes see.
func TestProgressVisibleToOthers(t *testing.T) {
	locks := wintest.TempDir(t)
	d, err := coord.NewDownloadCoordinator(newManager(t, locks)).Coordinate(context.Background(), "p", filepath.Join(wintest.TempDir(t), "p"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.SetProgress(300, 1000); err != nil {
		t.Fatal(err)
	}
	s, err := newManager(t, locks).Inspect(context.Background(), "toolchain/p")
	if err != nil || s.Holder == nil {
		t.Fatalf("Inspect = %+v, %v", s, err)
	}
	if p := s.Holder.Progress; p == nil || p.Done != 300 || p.Total != 1000 || s.Holder.Dest != d.Dest() || s.Holder.Token != d.Token() {
		t.Fatalf("holder seen by another manager = %+v (progress %+v); want 300 of 1000 into %s, token %d", s.Holder, p, d.Dest(), d.Token())
	}
	if !strings.Contains(s.Holder.String(), "300 B of 1000 B (30%)") {
		t.Errorf("holder description %q lacks the progress", s.Holder.String())
	}
}

// A timeout that ends while another caller downloads is a timeout, never
// a "done" for a dest that is not complete.
func TestCoordinateTimesOutDuringDownload(t *testing.T) {
	locks, dest := wintest.TempDir(t), filepath.Join(wintest.TempDir(t), "slow")
	first, err := coord.NewDownloadCoordinator(newManager(t, locks)).Coordinate(context.Background(), "slow", dest)
	if err != nil || !first.ShouldDownload() {
		t.Fatalf("first Coordinate = %v, %v", first, err)
	}
	defer first.Close()
	start := time.Now()
	_, err = coord.NewDownloadCoordinator(newManager(t, locks)).Coordinate(context.Background(), "slow", dest, coord.WithTimeout(200*time.Millisecond))
	var te *coord.TimeoutError
	if !errors.As(err, &te) || te.Waited < 200*time.Millisecond || time.Since(start) > 200*time.Millisecond+slack {
		t.Fatalf("Coordinate during a download = %v after %s; want a *TimeoutError after ~200ms", err, time.Since(start))
	}
	if te.Holder == nil || te.Holder.PID != os.Getpid() {
		t.Fatalf("TimeoutError.Holder = %+v; want this process", te.Holder)
	}
}
