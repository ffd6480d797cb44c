package etcdlock_test

import (
	"context"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/toolchainkit/coord/etcdlock"
)

// Benchmarks against the embedded etcd (no fsync): coord's Locker beside a
// bare concurrency.Mutex, the anchor.

func benchConfig(b *testing.B) etcdlock.Config {
	return etcdlock.Config{Endpoints: []string{servers[0].Endpoint}, Prefix: "/bench/" + b.Name()}
}

func benchMutex(b *testing.B) (*concurrency.Session, func() *concurrency.Mutex) {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{servers[0].Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	s, err := concurrency.NewSession(c, concurrency.WithTTL(10))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close(); c.Close() })
	return s, func() *concurrency.Mutex { return concurrency.NewMutex(s, "/bench/"+b.Name()+"/locks/x") }
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
		k, err := l.Lock(ctx, "x", false, true, []byte(`{"host":"bench","pid":1}`))
		if err != nil {
			b.Fatal(err)
		}
		k.Unlock()
	}
}

// etcdHandoff measures unlock → blocked waiter holds, median as
// ns/handoff; the waiter is given 50 ms to settle in its wait.
func etcdHandoff(b *testing.B, acquire func() func()) {
	var lat []time.Duration
	for b.Loop() {
		release := acquire()
		got := make(chan time.Time)
		go func() {
			r := acquire()
			got <- time.Now()
			r()
		}()
		time.Sleep(50 * time.Millisecond)
		t0 := time.Now()
		release()
		lat = append(lat, (<-got).Sub(t0))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "ns/handoff")
}

func BenchmarkEtcdHandoff_Mutex(b *testing.B) {
	_, mutex1 := benchMutex(b)
	_, mutex2 := benchMutex(b)
	ctx := context.Background()
	i := 0
	etcdHandoff(b, func() func() {
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
	etcdHandoff(b, func() func() {
		l := l1
		if i++; i%2 == 0 {
			l = l2
		}
		k, err := l.Lock(context.Background(), "x", false, true, nil)
		if err != nil {
			b.Fatal(err)
		}
		return func() { k.Unlock() }
	})
}
