//go:build unix

package coord_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofrs/flock"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/toolchainkit/coord/coord"
)

// Benchmarks of the library as a whole: how fast a committed download
// releases its waiters, and what held locks and waiters cost in memory.
// The anchors are what one would write without coord: gofrs/flock on a
// lock file, a bare concurrency.Mutex on etcd.

// benchEtcd is where a benchmark locks on etcd: the package's shared
// embedded etcd (no fsync) and a key prefix of the benchmark's own.
type benchEtcd struct{ endpoint, prefix string }

func newBenchEtcd(b *testing.B) benchEtcd {
	return benchEtcd{etcdEndpoint(b), etcdPrefix(b)}
}

// benchManager returns a Manager on the file backend in lockDir, or on
// etcd when e is set.
func benchManager(b *testing.B, lockDir string, e benchEtcd) *coord.Manager {
	cfg := coord.Config{Backend: coord.BackendFile, LockDir: lockDir}
	if e.endpoint != "" {
		cfg = coord.Config{Backend: coord.BackendEtcd, Endpoints: []string{e.endpoint}, Prefix: e.prefix}
	}
	m, err := coord.New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// benchMutexes returns n makers of concurrency.Mutex, each on a session
// (and client) of its own, as n processes would have; a key is put under
// e's prefix.
func benchMutexes(b *testing.B, e benchEtcd, n int) []func(key string) *concurrency.Mutex {
	var ms []func(string) *concurrency.Mutex
	for range n {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.endpoint}, DialTimeout: 5 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		s, err := concurrency.NewSession(c, concurrency.WithTTL(10))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close(); c.Close() })
		ms = append(ms, func(key string) *concurrency.Mutex { return concurrency.NewMutex(s, e.prefix+key) })
	}
	return ms
}

// benchFanouts are the numbers of waiters of the Fanout benchmarks.
var benchFanouts = []int{1, 8, 32}

// fanoutSide is one way to download once with waiters.
type fanoutSide struct {
	// settle is how long the waiters get to be waiting before the commit.
	settle time.Duration
	// download makes the downloader of id (dest is not there yet) and
	// returns its commit, after which dest is complete, and its release.
	download func(id, dest string) (commit, release func())
	// wait is waiter i: it returns once dest is usable.
	wait func(i int, id, dest string)
}

// fanout runs, per iteration, one downloader and n waiters of one
// download and reports the medians of the time from the start of the
// commit to the last waiter's return, as ns/spread, and of the commit
// itself, as ns/commit. The spread is counted from the commit's start
// because a waiter may be back before the commit returns: on etcd it is
// woken by the done record, which Commit writes before its last step.
func fanout(b *testing.B, n int, side fanoutSide) {
	root := b.TempDir()
	var spreads, commits []time.Duration
	iter := 0
	for b.Loop() {
		iter++
		id := fmt.Sprintf("fan%d-%d", n, iter)
		dest := filepath.Join(root, id)
		commit, release := side.download(id, dest)
		ends := make([]time.Time, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { side.wait(i, id, dest); ends[i] = time.Now() })
		}
		time.Sleep(side.settle)
		begin := time.Now()
		commit()
		commits = append(commits, time.Since(begin))
		release()
		wg.Wait()
		for i, e := range ends {
			if e.Before(begin) {
				b.Fatalf("waiter %d returned %s before the commit began", i, begin.Sub(e))
			}
		}
		spreads = append(spreads, slices.MaxFunc(ends, time.Time.Compare).Sub(begin))
	}
	for _, m := range []struct {
		d    []time.Duration
		unit string
	}{{spreads, "ns/spread"}, {commits, "ns/commit"}} {
		slices.Sort(m.d)
		b.ReportMetric(float64(m.d[len(m.d)/2].Nanoseconds()), m.unit)
	}
}

// coordSide downloads with DownloadCoordinator, one Manager per caller as
// separate processes would have.
func coordSide(b *testing.B, n int, e benchEtcd, settle time.Duration) fanoutSide {
	locks := b.TempDir()
	dcs := make([]*coord.DownloadCoordinator, n+1)
	for i := range dcs {
		dcs[i] = coord.NewDownloadCoordinator(benchManager(b, locks, e))
	}
	ctx := context.Background()
	return fanoutSide{
		settle: settle,
		download: func(id, dest string) (func(), func()) {
			d, err := dcs[n].Coordinate(ctx, id, dest)
			if err != nil || !d.ShouldDownload() {
				b.Fatalf("downloader: ShouldDownload %v, %v", err == nil && d.ShouldDownload(), err)
			}
			if err := os.WriteFile(filepath.Join(d.StagingDir(), "bin"), []byte("x"), 0o644); err != nil {
				b.Fatal(err)
			}
			return func() {
				if err := d.Commit(context.Background()); err != nil {
					b.Error(err)
				}
			}, func() { d.Close() }
		},
		wait: func(i int, id, dest string) {
			d, err := dcs[i].Coordinate(ctx, id, dest)
			if err != nil {
				b.Error(err)
				return
			}
			if d.ShouldDownload() {
				b.Errorf("waiter %d downloads", i)
			}
			d.Close()
		},
	}
}

// naiveCommit publishes dest the way the naive side does, as durably as
// Commit: a staging directory with the marker synced, renamed into place,
// the parent directory synced.
func naiveCommit(b *testing.B, dest string) {
	staging := dest + ".tmp"
	if err := os.Mkdir(staging, 0o755); err != nil {
		b.Error(err)
		return
	}
	os.WriteFile(filepath.Join(staging, "bin"), []byte("x"), 0o644)
	f, err := os.Create(filepath.Join(staging, coord.MarkerName))
	if err != nil {
		b.Error(err)
		return
	}
	f.Sync()
	f.Close()
	if err := os.Rename(staging, dest); err != nil {
		b.Error(err)
		return
	}
	if d, err := os.Open(filepath.Dir(dest)); err == nil {
		d.Sync()
		d.Close()
	}
}

// naiveSide: every waiter takes the lock in turn and re-checks the marker;
// lock and unlock are given per caller i.
func naiveSide(b *testing.B, settle time.Duration, lock func(i int, id string) (unlock func())) fanoutSide {
	return fanoutSide{
		settle: settle,
		download: func(id, dest string) (func(), func()) {
			unlock := lock(-1, id)
			return func() { naiveCommit(b, dest) }, unlock
		},
		wait: func(i int, id, dest string) {
			if coord.IsComplete(dest) {
				return
			}
			unlock := lock(i, id)
			defer unlock()
			if !coord.IsComplete(dest) {
				b.Errorf("waiter %d: no marker after the downloader let go", i)
			}
		},
	}
}

func BenchmarkFanoutFile_Coord(b *testing.B) {
	for _, n := range benchFanouts {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			fanout(b, n, coordSide(b, n, benchEtcd{}, 50*time.Millisecond))
		})
	}
}

// Anchor: gofrs/flock's blocking Lock, one waiter after the other.
func BenchmarkFanoutFile_Naive(b *testing.B) {
	for _, n := range benchFanouts {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			locks := b.TempDir()
			fanout(b, n, naiveSide(b, 50*time.Millisecond, func(_ int, id string) func() {
				f := flock.New(filepath.Join(locks, id+".lock"))
				if err := f.Lock(); err != nil {
					b.Error(err)
				}
				return func() { f.Unlock() }
			}))
		})
	}
}

// The etcd waiters get 300 ms to settle: longer than the ~100 ms it takes a
// new watch to be synced, so that the anchor is not slowed by that.
const benchEtcdSettle = 300 * time.Millisecond

func BenchmarkFanoutEtcd_Coord(b *testing.B) {
	for _, n := range benchFanouts {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			fanout(b, n, coordSide(b, n, newBenchEtcd(b), benchEtcdSettle))
		})
	}
}

// Anchor: a bare concurrency.Mutex per caller, one waiter after the other.
func BenchmarkFanoutEtcd_Naive(b *testing.B) {
	ctx := context.Background()
	for _, n := range benchFanouts {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			mutexes := benchMutexes(b, newBenchEtcd(b), n+1)
			fanout(b, n, naiveSide(b, benchEtcdSettle, func(i int, id string) func() {
				m := mutexes[i+1]("/naive/locks/" + id)
				if err := m.Lock(ctx); err != nil {
					b.Error(err)
				}
				return func() { m.Unlock(ctx) }
			}))
		})
	}
}

// footprint is what the process uses now: live heap after a GC,
// goroutines and OS threads.
type footprint struct {
	heap       uint64
	goroutines int
	threads    int
}

func measure() footprint {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return footprint{heap: ms.HeapAlloc, goroutines: runtime.NumGoroutine(), threads: osThreads()}
}

// osThreads reads the process's thread count from /proc; 0 elsewhere.
func osThreads() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// report reports the growth from before to after per unit (n of them).
func (after footprint) report(b *testing.B, before footprint, n int, unit string) {
	b.ReportMetric(float64(int64(after.heap)-int64(before.heap))/float64(n), "B/"+unit)
	b.ReportMetric(float64(after.goroutines-before.goroutines)/float64(n), "goroutines/"+unit)
	b.ReportMetric(float64(after.threads-before.threads)/float64(n), "threads/"+unit)
}

// benchHeld is how many locks the HeldLocks benchmarks hold at once.
const benchHeld = 10000

// heldLocks takes benchHeld distinct locks with take, and reports the
// heap, goroutines and threads per held lock.
func heldLocks(b *testing.B, take func(i int) (release func())) {
	for b.Loop() {
		release := make([]func(), benchHeld)
		before := measure()
		for i := range release {
			release[i] = take(i)
		}
		measure().report(b, before, benchHeld, "lock")
		for _, r := range release {
			r()
		}
	}
}

func BenchmarkHeldLocksFile_Coord(b *testing.B) {
	m := benchManager(b, b.TempDir(), benchEtcd{})
	ctx := context.Background()
	heldLocks(b, func(i int) func() {
		l, err := m.Lock(ctx, "held/"+strconv.Itoa(i), coord.WithTimeout(0))
		if err != nil {
			b.Fatal(err)
		}
		return func() { l.Unlock() }
	})
}

// Anchor: gofrs/flock, one open lock file per lock.
func BenchmarkHeldLocksFile_GofrsFlock(b *testing.B) {
	dir := b.TempDir()
	heldLocks(b, func(i int) func() {
		f := flock.New(filepath.Join(dir, strconv.Itoa(i)+".lock"))
		if ok, err := f.TryLock(); !ok || err != nil {
			b.Fatal(ok, err)
		}
		return func() { f.Unlock() }
	})
}

func BenchmarkHeldLocksEtcd_Coord(b *testing.B) {
	m := benchManager(b, "", newBenchEtcd(b))
	ctx := context.Background()
	heldLocks(b, func(i int) func() {
		l, err := m.Lock(ctx, "held/"+strconv.Itoa(i), coord.WithTimeout(0))
		if err != nil {
			b.Fatal(err)
		}
		return func() { l.Unlock() }
	})
}

// Anchor: bare concurrency.Mutex, all on one session.
func BenchmarkHeldLocksEtcd_Mutex(b *testing.B) {
	mutex := benchMutexes(b, newBenchEtcd(b), 1)[0]
	ctx := context.Background()
	heldLocks(b, func(i int) func() {
		m := mutex("/held/" + strconv.Itoa(i))
		if err := m.Lock(ctx); err != nil {
			b.Fatal(err)
		}
		return func() { m.Unlock(ctx) }
	})
}

// benchWaiters is how many goroutines of one process wait at once in the
// Waiters benchmarks.
const benchWaiters = 100

// waiters holds a lock with hold, starts benchWaiters goroutines that wait
// for it with wait (which returns once it had the lock, or ctx ended), and
// reports the heap, goroutines and threads per waiter once they settled.
func waiters(b *testing.B, settle time.Duration, hold func() (release func()), wait func(ctx context.Context)) {
	for b.Loop() {
		base := runtime.NumGoroutine()
		release := hold()
		ctx, cancel := context.WithCancel(context.Background())
		before := measure()
		var wg sync.WaitGroup
		for range benchWaiters {
			wg.Go(func() { wait(ctx) })
		}
		time.Sleep(settle)
		measure().report(b, before, benchWaiters, "waiter")
		cancel()
		release()
		wg.Wait()
		// A cancelled wait may finish in the background: let it, so that
		// the next measurement starts clean.
		for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > base && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// coordWaiters: the waiters share one Manager, as goroutines of one
// program do; the holder is another Manager.
func coordWaiters(b *testing.B, settle time.Duration, lockDir string, e benchEtcd) {
	holder, m := benchManager(b, lockDir, e), benchManager(b, lockDir, e)
	waiters(b, settle, func() func() {
		l, err := holder.Lock(context.Background(), "w")
		if err != nil {
			b.Fatal(err)
		}
		return func() { l.Unlock() }
	}, func(ctx context.Context) {
		if l, err := m.Lock(ctx, "w", coord.WithTimeout(time.Minute)); err == nil {
			l.Unlock()
		}
	})
}

func BenchmarkWaitersFile_Coord(b *testing.B) {
	coordWaiters(b, 100*time.Millisecond, b.TempDir(), benchEtcd{})
}

// Anchor: gofrs/flock's blocking Lock (it cannot be cancelled: each waiter
// takes the lock in turn once the holder lets go).
func BenchmarkWaitersFile_GofrsFlock(b *testing.B) {
	path := filepath.Join(b.TempDir(), "w.lock")
	waiters(b, 100*time.Millisecond, func() func() {
		f := flock.New(path)
		if err := f.Lock(); err != nil {
			b.Fatal(err)
		}
		return func() { f.Unlock() }
	}, func(context.Context) {
		f := flock.New(path)
		if err := f.Lock(); err == nil {
			f.Unlock()
		}
	})
}

func BenchmarkWaitersEtcd_Coord(b *testing.B) {
	coordWaiters(b, benchEtcdSettle, "", newBenchEtcd(b))
}

// Anchor: bare concurrency.Mutex waiters on one session, one watch each.
func BenchmarkWaitersEtcd_Mutex(b *testing.B) {
	mutexes := benchMutexes(b, newBenchEtcd(b), 2)
	waiters(b, benchEtcdSettle, func() func() {
		m := mutexes[0]("/w")
		if err := m.Lock(context.Background()); err != nil {
			b.Fatal(err)
		}
		return func() { m.Unlock(context.Background()) }
	}, func(ctx context.Context) {
		m := mutexes[1]("/w")
		if err := m.Lock(ctx); err == nil {
			m.Unlock(context.Background())
		}
	})
}
