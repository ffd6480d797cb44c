package etcdlock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/toolchainkit/coord/etcdlock"
	"github.com/toolchainkit/coord/internal/etcdtest"
)

// servers are the etcds every test runs against: embedded 3.7 always, the
// system's etcd (Debian's 3.4) when installed.
var servers []*etcdtest.Server

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "etcdlock-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	s, err := etcdtest.StartEmbedded(dir + "/embedded")
	if err != nil {
		fmt.Fprintln(os.Stderr, "embedded etcd:", err)
		return 1
	}
	defer s.Stop()
	servers = append(servers, s)
	if etcdtest.SystemBinary() != "" {
		os.Mkdir(dir+"/system", 0o700)
		s, err := etcdtest.StartSystem(dir + "/system")
		if err != nil {
			fmt.Fprintln(os.Stderr, "system etcd:", err)
			return 1
		}
		defer s.Stop()
		servers = append(servers, s)
	}
	return m.Run()
}

// each runs f against every server, with a fresh prefix.
func each(t *testing.T, f func(t *testing.T, cfg etcdlock.Config)) {
	for i, s := range servers {
		t.Run(s.Version, func(t *testing.T) {
			f(t, etcdlock.Config{
				Endpoints: []string{s.Endpoint},
				Prefix:    fmt.Sprintf("/test/%s/%d", t.Name(), i),
				TTL:       2 * time.Second,
			})
		})
	}
}

func newLocker(t *testing.T, cfg etcdlock.Config) *etcdlock.Locker {
	t.Helper()
	l, err := etcdlock.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func rawClient(t *testing.T, cfg etcdlock.Config) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustLock(t *testing.T, l *etcdlock.Locker, name string, mode etcdlock.Mode) *etcdlock.Lock {
	t.Helper()
	k, err := l.TryLock(context.Background(), name, mode, []byte(`{"pid":1}`))
	if err != nil {
		t.Fatalf("TryLock(%q, %v): %v", name, mode, err)
	}
	return k
}

func TestExclusive(t *testing.T) {
	each(t, func(t *testing.T, cfg etcdlock.Config) {
		a, b := newLocker(t, cfg), newLocker(t, cfg)
		held := mustLock(t, a, "x", etcdlock.Exclusive)
		if _, err := b.TryLock(context.Background(), "x", etcdlock.Exclusive, nil); !errors.Is(err, etcdlock.ErrBusy) {
			t.Fatalf("try while held = %v; want ErrBusy", err)
		}
		got := make(chan *etcdlock.Lock)
		go func() {
			k, err := b.Lock(context.Background(), "x", etcdlock.Exclusive, []byte(`{"pid":2}`))
			if err != nil {
				t.Error(err)
			}
			got <- k
		}()
		waitWaiters(t, b, "x", 1)
		select {
		case <-got:
			t.Fatal("granted while held")
		case <-time.After(100 * time.Millisecond):
		}
		released := time.Now()
		held.Unlock()
		k := <-got
		if k == nil {
			return
		}
		t.Logf("handoff %s", time.Since(released))
		if k.Token() <= held.Token() {
			t.Errorf("token %d after %d; want greater", k.Token(), held.Token())
		}
		info, err := a.Inspect(context.Background(), "x")
		if err != nil || !info.Held || info.Token != k.Token() || string(info.Record) != `{"pid":2}` || len(info.Waiters) != 0 {
			t.Errorf("Inspect = %+v, %v", info, err)
		}
		k.Unlock()
	})
}

// waitUntil returns once cond returns nil, and fails t with cond's last
// error if that takes longer than d.
func waitUntil(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitWaiters waits until the lock has n waiters: a waiter queues in
// milliseconds; 10s holds on a loaded host.
func waitWaiters(t *testing.T, l *etcdlock.Locker, name string, n int) {
	t.Helper()
	waitUntil(t, 10*time.Second, func() error {
		info, err := l.Inspect(context.Background(), name)
		if err == nil && len(info.Waiters) == n {
			return nil
		}
		return fmt.Errorf("lock %q: %+v, %v; want %d waiters", name, info, err, n)
	})
}

// watchers returns how many watches the etcd at endpoint serves, as its
// metrics say: a test learns from it that a watch it cannot see (one
// inside WaitDone) is in place.
func watchers(t *testing.T, endpoint string) int {
	t.Helper()
	resp, err := http.Get(endpoint + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "etcd_debugging_mvcc_watcher_total "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatalf("%s/metrics: no etcd_debugging_mvcc_watcher_total (%v)", endpoint, sc.Err())
	return 0
}

func TestShared(t *testing.T) {
	each(t, func(t *testing.T, cfg etcdlock.Config) {
		a, b, c := newLocker(t, cfg), newLocker(t, cfg), newLocker(t, cfg)
		s1, s2 := mustLock(t, a, "s", etcdlock.Shared), mustLock(t, b, "s", etcdlock.Shared)
		if _, err := c.TryLock(context.Background(), "s", etcdlock.Exclusive, nil); !errors.Is(err, etcdlock.ErrBusy) {
			t.Fatalf("exclusive while shared = %v; want ErrBusy", err)
		}
		info, _ := c.Inspect(context.Background(), "s")
		if !info.Held || !info.Shared || len(info.Holders) != 2 {
			t.Fatalf("Inspect = %+v; want 2 shared holders", info)
		}
		got := make(chan error)
		go func() {
			k, err := c.Lock(context.Background(), "s", etcdlock.Exclusive, nil)
			if err == nil {
				k.Unlock()
			}
			got <- err
		}()
		waitWaiters(t, c, "s", 1)
		// A reader arriving after a queued writer waits for it.
		if _, err := a.TryLock(context.Background(), "s", etcdlock.Shared, nil); !errors.Is(err, etcdlock.ErrBusy) {
			t.Fatalf("shared behind a queued exclusive = %v; want ErrBusy", err)
		}
		s1.Unlock()
		select {
		case err := <-got:
			t.Fatalf("exclusive granted with a shared holder left: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		s2.Unlock()
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	})
}

func TestConcurrentLocksOfOneLocker(t *testing.T) {
	each(t, func(t *testing.T, cfg etcdlock.Config) {
		l := newLocker(t, cfg)
		inside, max := 0, 0
		done := make(chan bool)
		var mu = make(chan struct{}, 1)
		for range 4 {
			go func() {
				for range 5 {
					k, err := l.Lock(context.Background(), "same", etcdlock.Exclusive, nil)
					if err != nil {
						t.Error(err)
						done <- false
						return
					}
					mu <- struct{}{}
					inside++
					max = maxInt(max, inside)
					<-mu
					time.Sleep(time.Millisecond)
					mu <- struct{}{}
					inside--
					<-mu
					k.Unlock()
				}
				done <- true
			}()
		}
		for range 4 {
			<-done
		}
		if max != 1 {
			t.Fatalf("%d goroutines of one Locker inside at once; want 1", max)
		}
	})
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// Cancelling a wait removes the waiter key (etcd issue 18082).
func TestCancelRemovesWaiterKey(t *testing.T) {
	each(t, func(t *testing.T, cfg etcdlock.Config) {
		a, b := newLocker(t, cfg), newLocker(t, cfg)
		held := mustLock(t, a, "c", etcdlock.Exclusive)
		defer held.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if _, err := b.Lock(ctx, "c", etcdlock.Exclusive, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock = %v; want DeadlineExceeded", err)
		}
		if info, _ := a.Inspect(context.Background(), "c"); len(info.Waiters) != 0 {
			t.Fatalf("%d waiters after the cancelled wait; want 0", len(info.Waiters))
		}
	})
}

// Unlock deletes only the key it created (etcd issue 22082). A deleted key
// closes Lost, whether Lost was first called before the delete or after
// (the key is watched from its creation on).
func TestUnlockDeletesOnlyItsOwnKey(t *testing.T) {
	each(t, func(t *testing.T, cfg etcdlock.Config) {
		l := newLocker(t, cfg)
		c := rawClient(t, cfg)
		early := mustLock(t, l, "early", etcdlock.Exclusive)
		// No wait for the watch to be in place: it starts at the key's
		// creation, so a delete that comes before it is seen too.
		lost := early.Lost()
		c.Delete(context.Background(), early.Key())
		select {
		case <-lost:
		case <-time.After(2 * time.Second):
			t.Fatal("Lost not closed 2s after the key was deleted")
		}
		k := mustLock(t, l, "own", etcdlock.Exclusive)
		c.Delete(context.Background(), k.Key())
		select {
		case <-k.Lost():
		case <-time.After(2 * time.Second):
			t.Fatal("Lost not closed 2s after the key was deleted")
		}
		c.Put(context.Background(), k.Key(), "newer")
		k.Unlock()
		g, err := c.Get(context.Background(), k.Key())
		if err != nil || len(g.Kvs) != 1 || string(g.Kvs[0].Value) != "newer" {
			t.Fatalf("after Unlock the newer key is %v, %v; want it kept", g.Kvs, err)
		}
		c.Delete(context.Background(), k.Key())
	})
}

// A revoked lease is noticed, and a waiter whose lease is gone stops
// waiting (etcd issue 19597).
func TestLeaseGone(t *testing.T) {
	each(t, func(t *testing.T, cfg etcdlock.Config) {
		a, b := newLocker(t, cfg), newLocker(t, cfg)
		held := mustLock(t, a, "lease", etcdlock.Exclusive)
		defer held.Unlock()
		errc := make(chan error)
		go func() {
			_, err := b.Lock(context.Background(), "lease", etcdlock.Exclusive, nil)
			errc <- err
		}()
		waitWaiters(t, a, "lease", 1)
		info, _ := a.Inspect(context.Background(), "lease")
		_ = info
		c := rawClient(t, cfg)
		leases, err := c.Leases(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		// Revoke the waiter's lease: the one that is not the holder's.
		hk, _ := c.Get(context.Background(), held.Key())
		for _, ls := range leases.Leases {
			if ls.ID != clientv3.LeaseID(hk.Kvs[0].Lease) {
				c.Revoke(context.Background(), ls.ID)
			}
		}
		select {
		case err := <-errc:
			if !errors.Is(err, etcdlock.ErrSessionLost) {
				t.Fatalf("waiter with a revoked lease = %v; want ErrSessionLost", err)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("waiter still waiting 3s after its lease was revoked")
		}
		select {
		case <-b.Lost():
		default:
			t.Fatal("Lost not closed")
		}
	})
}

func TestDone(t *testing.T) {
	each(t, func(t *testing.T, cfg etcdlock.Config) {
		a, b := newLocker(t, cfg), newLocker(t, cfg)
		k := mustLock(t, a, "toolchain/x", etcdlock.Exclusive)
		errc := make(chan error)
		before := watchers(t, cfg.Endpoints[0])
		go func() { errc <- b.WaitDone(context.Background(), "x") }()
		// WaitDone sees only records put once its watch is in place.
		waitUntil(t, 10*time.Second, func() error {
			if n := watchers(t, cfg.Endpoints[0]); n <= before {
				return fmt.Errorf("%d watches on etcd, as before WaitDone", n)
			}
			return nil
		})
		if err := a.MarkDone(context.Background(), k, "x", []byte(`{"dest":"/d"}`)); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("WaitDone did not return 2s after MarkDone")
		}
		k.Unlock()
		if err := a.MarkDone(context.Background(), k, "x", nil); !errors.Is(err, etcdlock.ErrNotHeld) {
			t.Fatalf("MarkDone after Unlock = %v; want ErrNotHeld", err)
		}
	})
}

// With etcd gone, a cancelled wait returns within the cleanup bound and
// leaves no goroutine behind.
func TestCancelWithEtcdStopped(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // the shared servers run on
	s, err := etcdtest.StartEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// A TTL long enough that the session outlives stopping etcd.
	cfg := etcdlock.Config{Endpoints: []string{s.Endpoint}, TTL: 10 * time.Second, DialTimeout: time.Second}
	a, err := etcdlock.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := etcdlock.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	held := mustLock(t, a, "down", etcdlock.Exclusive)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := b.Lock(ctx, "down", etcdlock.Exclusive, nil)
		errc <- err
	}()
	waitWaiters(t, a, "down", 1)
	s.Stop()
	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Lock = %v; want context.Canceled", err)
		}
		t.Logf("cancelled wait returned %s after cancel, etcd down", time.Since(start))
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("returned after %s; want within the 1s cleanup bound (+slack)", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled wait still blocked 10s later with etcd down")
	}
	held.Unlock()
	a.Close()
	b.Close()
}

// Waits that time out at random moments, the queueing request included,
// leave no key behind.
func TestTimeoutsLeaveNoKeys(t *testing.T) {
	each(t, func(t *testing.T, cfg etcdlock.Config) {
		holder := newLocker(t, cfg)
		held := mustLock(t, holder, "stray", etcdlock.Exclusive)
		l := newLocker(t, cfg)
		done := make(chan struct{})
		for i := range 24 {
			go func() {
				defer func() { done <- struct{}{} }()
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+i*40/24)*time.Millisecond)
				defer cancel()
				mode := etcdlock.Exclusive
				if i%3 == 0 {
					mode = etcdlock.Shared
				}
				if k, err := l.Lock(ctx, "stray", mode, nil); err == nil {
					t.Errorf("granted while held")
					k.Unlock()
				}
			}()
		}
		for range 24 {
			<-done
		}
		info, err := holder.Inspect(context.Background(), "stray")
		if err != nil || len(info.Waiters) != 0 || len(info.Holders) != 1 {
			t.Fatalf("after 24 timed-out waits: %+v, %v; want the holder alone", info, err)
		}
		held.Unlock()
		if _, err := l.TryLock(context.Background(), "stray", etcdlock.Exclusive, nil); err != nil {
			t.Fatalf("lock after the holder let go: %v", err)
		}
	})
}

// With etcd gone right after the grant, Lost closes before the lease could
// expire, and a single try returns within the cleanup bound.
func TestLostWhenEtcdStops(t *testing.T) {
	s, err := etcdtest.StartEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := etcdlock.Config{Endpoints: []string{s.Endpoint}, TTL: 2 * time.Second, DialTimeout: time.Second}
	l, err := etcdlock.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	k := mustLock(t, l, "gone", etcdlock.Exclusive)
	stopped := time.Now()
	s.Stop()
	select {
	case <-k.Lost():
		t.Logf("Lost closed %s after etcd stopped (TTL 2s, margin %s)", time.Since(stopped).Round(time.Millisecond), l.LostMargin())
	case <-time.After(2 * time.Second):
		t.Fatal("Lost still open 2s (the TTL) after etcd stopped")
	}
	start := time.Now()
	if _, err := l.TryLock(context.Background(), "other", etcdlock.Exclusive, nil); err == nil {
		t.Fatal("Lock succeeded with etcd stopped")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("a single try with etcd stopped took %s", d)
	}
}

// A keep-alive lost to a short network blip is retried in time: at the
// shortest TTL (2 s, trusted for 1 s, renewed every 1/3 s) a 450 ms
// partition at any phase of the renewal cycle costs no lock. Eight
// sessions, each behind a proxy of its own, meet a blip at random phases.
func TestKeepAliveSurvivesBlip(t *testing.T) {
	const n, blip = 8, 450 * time.Millisecond
	errc := make(chan error, n)
	for i := range n {
		px, err := etcdtest.StartProxy(strings.TrimPrefix(servers[0].Endpoint, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { px.Close() })
		l := newLocker(t, etcdlock.Config{Endpoints: []string{px.Endpoint()}, Prefix: fmt.Sprintf("/test/%s/%d", t.Name(), i), TTL: 2 * time.Second})
		k := mustLock(t, l, "blip", etcdlock.Exclusive)
		go func() {
			time.Sleep(time.Duration(rand.Int64N(int64(time.Second))))
			px.Cut()
			time.Sleep(blip)
			px.Restore()
			select {
			case <-k.Lost():
				errc <- fmt.Errorf("session %d: lost after a %s blip", i, blip)
			case <-time.After(1500 * time.Millisecond):
				errc <- nil
			}
		}()
	}
	for range n {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

// A Locker made while its cluster elects a new leader gets its lease from
// the new leader, in about a second, instead of waiting out the dial
// timeout on a member that holds the request for its dead leader; a Lock
// queued then does the same instead of failing after the cleanup bound.
func TestNewDuringElection(t *testing.T) {
	if etcdtest.SystemBinary() == "" {
		t.Skip("needs an etcd binary for a 3-member cluster (apt-get install etcd-server)")
	}
	c, err := etcdtest.StartCluster(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	// A Locker made before: its next Lock, during the election, queues
	// on the new leader too.
	pre, err := etcdlock.New(context.Background(), etcdlock.Config{Endpoints: c.Endpoints(), TTL: 5 * time.Second, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pre.Close()
	lead, err := c.Leader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(lead); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	errc := make(chan error, 4)
	go func() {
		k, err := pre.TryLock(context.Background(), "x", etcdlock.Exclusive, nil)
		if err == nil {
			err = k.Unlock()
		}
		if err != nil {
			err = fmt.Errorf("Lock during the election: %w", err)
		}
		errc <- err
	}()
	for range 3 {
		go func() {
			l, err := etcdlock.New(context.Background(), etcdlock.Config{Endpoints: c.Endpoints(), TTL: 3 * time.Second, DialTimeout: 5 * time.Second})
			if err == nil {
				l.Close()
			}
			errc <- err
		}()
	}
	for range 4 {
		if err := <-errc; err != nil {
			t.Errorf("after the leader died: %v", err)
		}
	}
	if took := time.Since(start); took > 4500*time.Millisecond {
		t.Errorf("New took %s after the leader died; want under the 5s dial timeout", took.Round(time.Millisecond))
	} else {
		t.Logf("3 Lockers made and a Lock taken and released %s after the leader was killed", took.Round(time.Millisecond))
	}
}

// DeleteDone removes the version of a record that Downloads read, never a
// newer one.
func TestDeleteDone(t *testing.T) {
	each(t, func(t *testing.T, cfg etcdlock.Config) {
		ctx := context.Background()
		l := newLocker(t, cfg)
		k := mustLock(t, l, "toolchain/a/b", etcdlock.Exclusive)
		defer k.Unlock()
		if err := l.MarkDone(ctx, k, "a/b", []byte("v1")); err != nil {
			t.Fatal(err)
		}
		ds, err := l.Downloads(ctx)
		if err != nil || len(ds) != 1 || ds[0].ID != "a/b" || string(ds[0].Value) != "v1" {
			t.Fatalf("Downloads = %+v, %v; want the record of a/b", ds, err)
		}
		if err := l.MarkDone(ctx, k, "a/b", []byte("v2")); err != nil {
			t.Fatal(err)
		}
		if ok, err := l.DeleteDone(ctx, ds[0]); ok || err != nil {
			t.Fatalf("DeleteDone of a rewritten record = %v, %v; want false, nil", ok, err)
		}
		ds, _ = l.Downloads(ctx)
		if len(ds) != 1 || string(ds[0].Value) != "v2" {
			t.Fatalf("after a refused DeleteDone: %+v", ds)
		}
		if ok, err := l.DeleteDone(ctx, ds[0]); !ok || err != nil {
			t.Fatalf("DeleteDone = %v, %v; want true", ok, err)
		}
		if ds, _ = l.Downloads(ctx); len(ds) != 0 {
			t.Fatalf("after DeleteDone: %+v", ds)
		}
	})
}
