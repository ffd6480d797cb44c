package etcdlock_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/toolchainkit/coord/etcdlock"
	"github.com/toolchainkit/coord/internal/benchpeer"
)

// Benchmarks against the embedded etcd (no fsync): coord's Locker beside a
// bare concurrency.Mutex, the anchor.

func benchConfig(b *testing.B) etcdlock.Config {
	return etcdlock.Config{Endpoints: []string{servers[0].Endpoint}, Prefix: "/bench/" + b.Name()}
}

func benchMutex(b *testing.B) (*concurrency.Session, func() *concurrency.Mutex) {
	return newBenchMutex(b, servers[0].Endpoint, "/bench/"+b.Name()+"/locks/x")
}

// newBenchMutex returns a session of its own and a maker of mutexes on key.
func newBenchMutex(tb testing.TB, endpoint, key string) (*concurrency.Session, func() *concurrency.Mutex) {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	s, err := concurrency.NewSession(c, concurrency.WithTTL(10))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close(); c.Close() })
	return s, func() *concurrency.Mutex { return concurrency.NewMutex(s, key) }
}

func BenchmarkEtcdUncontended_Mutex(b *testing.B) {
	_, mutex := benchMutex(b)
	ctx := context.Background()
	for b.Loop() {
		m := mutex()
		if err := m.Lock(ctx); err != nil {
			b.Fatal(err)
		}
		m.Unlock(ctx)
	}
}

func BenchmarkEtcdUncontended_Locker(b *testing.B) {
	l, err := etcdlock.New(context.Background(), benchConfig(b))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	for b.Loop() {
		k, err := l.Lock(ctx, "x", etcdlock.Exclusive, []byte(`{"host":"bench","pid":1}`))
		if err != nil {
			b.Fatal(err)
		}
		k.Unlock()
	}
}

func BenchmarkEtcdHandoff_Mutex(b *testing.B) {
	_, mutex1 := benchMutex(b)
	_, mutex2 := benchMutex(b)
	ctx := context.Background()
	i := 0
	benchpeer.InProcess(b, 50*time.Millisecond, func() func() {
		mutex := mutex1
		if i++; i%2 == 0 {
			mutex = mutex2
		}
		m := mutex()
		if err := m.Lock(ctx); err != nil {
			b.Fatal(err)
		}
		return func() { m.Unlock(ctx) }
	})
}

func BenchmarkEtcdHandoff_Locker(b *testing.B) {
	cfg := benchConfig(b)
	l1, err := etcdlock.New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer l1.Close()
	l2, err := etcdlock.New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer l2.Close()
	i := 0
	benchpeer.InProcess(b, 50*time.Millisecond, func() func() {
		l := l1
		if i++; i%2 == 0 {
			l = l2
		}
		k, err := l.Lock(context.Background(), "x", etcdlock.Exclusive, nil)
		if err != nil {
			b.Fatal(err)
		}
		return func() { k.Unlock() }
	})
}

// Two processes: this test binary re-executed as the waiter (TestBenchPeer,
// run by benchpeer) on the parent's embedded etcd. Times are
// time.Now().UnixNano(), one clock for both processes on one host.

const (
	envPeerEndpoint = "COORD_BENCH_PEER_ENDPOINT" // the etcd to lock on
	envPeerPrefix   = "COORD_BENCH_PEER_PREFIX"   // the key prefix; the lock is "x" under it
)

// acquirer returns a function that blocks until it holds lock "x" under
// prefix, the coord way (mode "locker") or with a bare concurrency.Mutex
// ("mutex"), and returns its release.
func acquirer(tb testing.TB, mode, endpoint, prefix string) func() func() {
	ctx := context.Background()
	switch mode {
	case "mutex":
		_, mutex := newBenchMutex(tb, endpoint, prefix+"/locks/x")
		return func() func() {
			m := mutex()
			if err := m.Lock(ctx); err != nil {
				tb.Fatal(err)
			}
			return func() { m.Unlock(ctx) }
		}
	case "locker":
		l, err := etcdlock.New(ctx, etcdlock.Config{Endpoints: []string{endpoint}, Prefix: prefix})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { l.Close() })
		return func() func() {
			k, err := l.Lock(ctx, "x", etcdlock.Exclusive, []byte(`{"host":"bench","pid":2}`))
			if err != nil {
				tb.Fatal(err)
			}
			return func() { k.Unlock() }
		}
	}
	tb.Fatalf("unknown mode %q", mode)
	return nil
}

func unixNano() int64 { return time.Now().UnixNano() }

// TestBenchPeer is the other process of the EtcdHandoffProcess benchmarks;
// run by them only.
func TestBenchPeer(t *testing.T) {
	mode := benchpeer.Mode()
	if mode == "" {
		t.Skip("the waiter process of the EtcdHandoffProcess benchmarks")
	}
	acquire := acquirer(t, mode, os.Getenv(envPeerEndpoint), os.Getenv(envPeerPrefix))
	if err := benchpeer.Serve(os.Stdin, os.Stdout, acquire, unixNano); err != nil {
		t.Fatal(err)
	}
}

// etcdHandoffProcess measures, as ns/handoff (median), the time from this
// process's unlock to a waiter in another process holding the lock; the
// waiter began its wait a random 0–100 ms before the unlock, so a waiter
// whose watch is not yet synced counts as it would in a real queue.
func etcdHandoffProcess(b *testing.B, mode string) {
	endpoint, prefix := servers[0].Endpoint, "/bench/"+b.Name()
	benchpeer.Handoff{
		Test:    "TestBenchPeer",
		Mode:    mode,
		Env:     []string{envPeerEndpoint + "=" + endpoint, envPeerPrefix + "=" + prefix},
		Acquire: acquirer(b, mode, endpoint, prefix),
		Settle:  func() { time.Sleep(rand.N(100 * time.Millisecond)) },
		Now:     unixNano,
	}.Run(b)
}

func BenchmarkEtcdHandoffProcess_Mutex(b *testing.B)  { etcdHandoffProcess(b, "mutex") }
func BenchmarkEtcdHandoffProcess_Locker(b *testing.B) { etcdHandoffProcess(b, "locker") }

// throughputClients is how many clients lock and unlock at once, each its
// own name, in the EtcdThroughput benchmarks.
const throughputClients = 16

// throughput runs b.N lock+unlock pairs spread over throughputClients
// goroutines, each with its own client and name (made by newClient), and
// reports the pairs per second.
func throughput(b *testing.B, newClient func(i int) func()) {
	locks := make([]func(), throughputClients)
	for i := range locks {
		locks[i] = newClient(i)
	}
	var next atomic.Int64
	b.SetParallelism((throughputClients + 1) / 2) // × GOMAXPROCS goroutines; 16 on this 2-core machine
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		lock := locks[int(next.Add(1)-1)%throughputClients]
		for pb.Next() {
			lock()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkEtcdThroughput_Mutex(b *testing.B) {
	ctx := context.Background()
	throughput(b, func(i int) func() {
		_, mutex := newBenchMutex(b, servers[0].Endpoint, fmt.Sprintf("/bench/%s/locks/x%d", b.Name(), i))
		return func() {
			m := mutex()
			if err := m.Lock(ctx); err != nil {
				b.Error(err)
				return
			}
			m.Unlock(ctx)
		}
	})
}

func BenchmarkEtcdThroughput_Locker(b *testing.B) {
	ctx := context.Background()
	throughput(b, func(i int) func() {
		l, err := etcdlock.New(ctx, benchConfig(b))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { l.Close() })
		name := fmt.Sprintf("x%d", i)
		return func() {
			k, err := l.Lock(ctx, name, etcdlock.Exclusive, []byte(`{"host":"bench","pid":1}`))
			if err != nil {
				b.Error(err)
				return
			}
			k.Unlock()
		}
	})
}
