package coord_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/etcdtest"
)

// The package's tests share one embedded etcd, started by the first test
// that needs it (a crash worker or a file-only run starts none) and
// stopped before the leak check; each test keeps to a key prefix of its
// own (etcdPrefix). Tests that need a server configured otherwise (TLS,
// auth) start their own with startEtcd.
func TestMain(m *testing.M) {
	// No goroutine needs ignoring: the embedded etcd's all end with
	// Close, and the clients' with theirs.
	goleak.VerifyTestMain(&sharedEtcd{m: m})
}

// sharedEtcd runs the package's tests and stops the shared etcd, if one
// was started, before goleak looks for goroutines left behind.
type sharedEtcd struct {
	m *testing.M

	once     sync.Once
	dir      string
	server   *etcdtest.Server
	err      error
	prefixes atomic.Int64
}

// the one sharedEtcd of this test binary: TestMain's, for etcdEndpoint.
var shared *sharedEtcd

func (s *sharedEtcd) Run() int {
	shared = s
	code := s.m.Run()
	if s.server != nil {
		s.server.Stop()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
	return code
}

// envBackends is COORD_TEST_BACKENDS: the backends whose tests run, by
// name ("file", "etcd"), comma-separated; empty means both. make
// test-windows runs this package under Wine on the file backend alone.
const envBackends = "COORD_TEST_BACKENDS"

// needEtcd skips tb unless the etcd backend's tests run (envBackends).
func needEtcd(tb testing.TB) {
	tb.Helper()
	if only := os.Getenv(envBackends); only != "" && !slices.Contains(strings.Split(only, ","), "etcd") {
		tb.Skipf("needs etcd; %s=%s", envBackends, only)
	}
}

// etcdEndpoint returns the client URL of the package's shared etcd,
// starting it on first use.
func etcdEndpoint(tb testing.TB) string {
	tb.Helper()
	needEtcd(tb)
	s := shared
	s.once.Do(func() {
		if s.dir, s.err = os.MkdirTemp("", "coord-test-etcd-"); s.err != nil {
			return
		}
		s.server, s.err = etcdtest.StartEmbedded(s.dir)
	})
	if s.err != nil {
		tb.Fatalf("shared embedded etcd: %v", s.err)
	}
	return s.server.Endpoint
}

// etcdPrefix returns a key prefix on the shared etcd that no other test
// (nor another run of this one, under -count) uses.
func etcdPrefix(tb testing.TB) string {
	return fmt.Sprintf("/test/%d/%s", shared.prefixes.Add(1), strings.ReplaceAll(tb.Name(), "/", "_"))
}

// sharedConfig is an etcd Config on the shared etcd, under a prefix of
// tb's own.
func sharedConfig(tb testing.TB) coord.Config {
	return coord.Config{Endpoints: []string{etcdEndpoint(tb)}, Prefix: etcdPrefix(tb)}
}

// waitUntil returns once cond returns nil, and fails tb with cond's last
// error if that takes longer than d.
func waitUntil(tb testing.TB, d time.Duration, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// queued reports nil once m's backend shows a process waiting for lock
// name, and else why not.
func queued(m *coord.Manager, name string) error {
	st, err := m.Inspect(context.Background(), name)
	switch {
	case err != nil:
		return err
	case len(st.Waiters) > 0:
		return nil
	}
	return fmt.Errorf("lock %q: %+v; want a waiter", name, st)
}
