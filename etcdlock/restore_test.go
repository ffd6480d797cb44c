package etcdlock_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/toolchainkit/coord/etcdlock"
	"github.com/toolchainkit/coord/internal/etcdtest"
)

// An etcd restored from a snapshot forgets what came after it, and hands
// out again the revisions it forgot: a holder's key vanishes without a
// delete event, and a newcomer may be granted the lock with the holder's
// own token. The holder must be told at its first contact with the
// restored etcd, no later than a newcomer can be granted: the lease older
// than the snapshot (it survives the restore) with the key newer, and
// both newer (the lease is gone too). Debian's etcd 3.4, whose restore
// cannot keep revisions rising.
func TestRestoredFromSnapshot(t *testing.T) {
	if etcdtest.SystemBinary() == "" {
		t.Skip("no etcd binary installed")
	}
	for _, tc := range []struct {
		name       string
		leaseOlder bool // the holder's lease exists before the snapshot
		lost       bool // the holder calls Lost before the restore (watches its key)
	}{
		{"lease older, key newer", true, false},
		{"lease older, key newer, watched", true, true},
		{"lease and key newer", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restoreTrial(t, tc.leaseOlder, tc.lost)
		})
	}
}

func restoreTrial(t *testing.T, leaseOlder, watched bool) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := etcdtest.StartSystem(dir)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			s.Stop()
		}
	})
	cfg := etcdlock.Config{Endpoints: []string{s.Endpoint}, Prefix: "/restore", TTL: 10 * time.Second, DialTimeout: time.Second}
	// Other keys before the snapshot, so that the holder's token lies
	// among the revisions the restored etcd hands out again.
	filler := newLocker(t, cfg)
	for range 5 {
		mustLock(t, filler, "filler", etcdlock.Exclusive).Unlock()
	}
	var holder *etcdlock.Locker
	if leaseOlder {
		holder = newLocker(t, cfg)
	}
	snap := filepath.Join(dir, "snap.db")
	if err := s.Snapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if !leaseOlder {
		holder = newLocker(t, cfg)
	}
	held := mustLock(t, holder, "r", etcdlock.Exclusive)
	var lost <-chan struct{}
	if watched {
		lost = held.Lost()
	}
	t.Logf("holder's token %d", held.Token())

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	down := time.Now()
	// The newcomer tries from the moment etcd is down: it is granted as
	// early as anyone can be.
	type grant struct {
		at    time.Time
		token int64
		err   error
	}
	granted := make(chan grant, 1)
	nctx, ncancel := context.WithTimeout(ctx, time.Minute)
	defer ncancel()
	go func() {
		for {
			l, err := etcdlock.New(nctx, cfg)
			if err != nil {
				if nctx.Err() != nil {
					granted <- grant{err: err}
					return
				}
				continue
			}
			defer l.Close()
			k, err := l.Lock(nctx, "r", etcdlock.Exclusive, nil)
			if err != nil {
				granted <- grant{err: err}
				return
			}
			granted <- grant{at: time.Now(), token: k.Token()}
			k.Unlock()
			return
		}
	}()
	data := filepath.Join(dir, "restored")
	if err := s.Restore(ctx, snap, data); err != nil {
		t.Fatal(err)
	}
	s2, err := etcdtest.StartSystemOn(dir, data, s.Endpoint, s.Peer)
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
		t.Fatalf("%v\n%s", err, b)
	}
	back := time.Now()
	t.Cleanup(func() { s2.Stop() })

	if lost == nil {
		lost = held.Lost()
	}
	var told time.Time
	select {
	case <-lost:
		told = time.Now()
	case <-time.After(cfg.TTL):
		t.Fatalf("the holder's Lost did not fire within the TTL (%s) of etcd's restart from a snapshot older than its key", cfg.TTL)
	}
	g := <-granted
	if g.err != nil {
		t.Fatalf("newcomer: %v", g.err)
	}
	t.Logf("etcd down %s; after it was back: holder told %s, newcomer granted %s (token %d; the holder's was %d)",
		back.Sub(down).Round(time.Millisecond), told.Sub(back).Round(time.Millisecond), g.at.Sub(back).Round(time.Millisecond), g.token, held.Token())
	// Told before the newcomer was granted: on a loaded machine the two can
	// come within milliseconds of each other either way; a holder told
	// late is told within 100 ms (gRPC's reconnect backoff) of it.
	if late := told.Sub(g.at); late > 500*time.Millisecond {
		t.Errorf("the holder was told %s after the newcomer was granted", late)
	}
	// The holder's Locker hands out no token it saw: it refuses (the
	// store went back below what it saw), or grants a newer one (the
	// store had risen past it again, and only the key was missing).
	k, err := holder.TryLock(ctx, "other", etcdlock.Exclusive, nil)
	switch {
	case errors.Is(err, etcdlock.ErrSessionLost):
		t.Logf("the holder's Locker refuses new locks: its session is lost")
	case err != nil:
		t.Errorf("the holder's Locker after the restore: Lock = %v, want ErrSessionLost or a new token", err)
	case k.Token() <= held.Token():
		t.Errorf("the holder's Locker after the restore granted token %d, at most the %d it held", k.Token(), held.Token())
	default:
		t.Logf("the holder's Locker granted token %d, above the %d it held", k.Token(), held.Token())
	}
}
