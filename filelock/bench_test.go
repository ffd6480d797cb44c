//go:build unix

package filelock_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gofrs/flock"
	"golang.org/x/sys/unix"

	"github.com/toolchainkit/coord/filelock"
)

var benchRecord = []byte(`{"host":"bench","pid":4242,"cmd":["coord","lock","x"]}`)

// Anchor: flock(2) EX then UN on a descriptor kept open.
func BenchmarkUncontended_RawFlock(b *testing.B) {
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "raw"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	for b.Loop() {
		unix.Flock(fd, unix.LOCK_EX)
		unix.Flock(fd, unix.LOCK_UN)
	}
}

// Anchor: open, flock, close: what a fresh process pays.
func BenchmarkUncontended_RawOpenFlockClose(b *testing.B) {
	path := filepath.Join(b.TempDir(), "raw")
	for b.Loop() {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		unix.Flock(fd, unix.LOCK_EX)
		unix.Flock(fd, unix.LOCK_UN)
		unix.Close(fd)
	}
}

// Anchor: github.com/gofrs/flock Lock+Unlock (Unlock closes the file).
func BenchmarkUncontended_GofrsFlock(b *testing.B) {
	f := flock.New(filepath.Join(b.TempDir(), "gofrs"))
	for b.Loop() {
		if err := f.Lock(); err != nil {
			b.Fatal(err)
		}
		f.Unlock()
	}
}

// coord's file backend: lock, token, holder record, unlock.
func BenchmarkUncontended_Locker(b *testing.B) {
	l, err := filelock.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	for b.Loop() {
		k, err := l.Lock(ctx, "bench", false, true, benchRecord)
		if err != nil {
			b.Fatal(err)
		}
		k.Unlock()
	}
}

// handoff measures the time from the holder's unlock to the blocked
// waiter's acquire, and reports its median as ns/handoff. acquire must
// block until it holds the lock; it returns the release function.
func handoff(b *testing.B, acquire func() func()) {
	var lat []time.Duration
	for b.Loop() {
		release := acquire()
		got := make(chan time.Time)
		go func() {
			r := acquire()
			got <- time.Now()
			r()
		}()
		time.Sleep(300 * time.Microsecond) // let the waiter block
		t0 := time.Now()
		release()
		lat = append(lat, (<-got).Sub(t0))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "ns/handoff")
}

// Anchor: blocking flock(2) on two descriptors.
func BenchmarkHandoff_RawFlock(b *testing.B) {
	path := filepath.Join(b.TempDir(), "raw")
	handoff(b, func() func() {
		fd, _ := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		unix.Flock(fd, unix.LOCK_EX)
		return func() { unix.Flock(fd, unix.LOCK_UN); unix.Close(fd) }
	})
}

// Anchor: gofrs/flock's TryLockContext, which polls (here every 10ms).
func BenchmarkHandoff_GofrsPolling(b *testing.B) {
	path := filepath.Join(b.TempDir(), "gofrs")
	handoff(b, func() func() {
		f := flock.New(path)
		f.TryLockContext(context.Background(), 10*time.Millisecond)
		return func() { f.Unlock() }
	})
}

func BenchmarkHandoff_Locker(b *testing.B) {
	dir := b.TempDir()
	a, c := mustNew(b, dir), mustNew(b, dir)
	i := 0
	handoff(b, func() func() {
		l := a
		if i++; i%2 == 0 {
			l = c
		}
		k, err := l.Lock(context.Background(), "bench", false, true, benchRecord)
		if err != nil {
			b.Fatal(err)
		}
		return func() { k.Unlock() }
	})
}

func mustNew(b *testing.B, dir string) *filelock.Locker {
	l, err := filelock.New(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}
