//go:build unix

package filelock_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gofrs/flock"
	"golang.org/x/sys/unix"

	"github.com/toolchainkit/coord/filelock"
	"github.com/toolchainkit/coord/internal/benchpeer"
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
		k, err := l.Lock(ctx, "bench", filelock.Exclusive, benchRecord)
		if err != nil {
			b.Fatal(err)
		}
		k.Unlock()
	}
}

// Anchor: blocking flock(2) on two descriptors.
func BenchmarkHandoff_RawFlock(b *testing.B) {
	path := filepath.Join(b.TempDir(), "raw")
	benchpeer.InProcess(b, 300*time.Microsecond, func() func() {
		fd, _ := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		unix.Flock(fd, unix.LOCK_EX)
		return func() { unix.Flock(fd, unix.LOCK_UN); unix.Close(fd) }
	})
}

// Anchor: gofrs/flock's TryLockContext, which polls (here every 10ms).
func BenchmarkHandoff_GofrsPolling(b *testing.B) {
	path := filepath.Join(b.TempDir(), "gofrs")
	benchpeer.InProcess(b, 300*time.Microsecond, func() func() {
		f := flock.New(path)
		f.TryLockContext(context.Background(), 10*time.Millisecond)
		return func() { f.Unlock() }
	})
}

func BenchmarkHandoff_Locker(b *testing.B) {
	dir := b.TempDir()
	a, c := mustNew(b, dir), mustNew(b, dir)
	i := 0
	benchpeer.InProcess(b, 300*time.Microsecond, func() func() {
		l := a
		if i++; i%2 == 0 {
			l = c
		}
		k, err := l.Lock(context.Background(), "bench", filelock.Exclusive, benchRecord)
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

// Two processes: this test binary re-executed as the waiter (TestBenchPeer,
// run by benchpeer). Times are CLOCK_MONOTONIC, which both processes on
// one host read from the same clock.

// envPeerPath is the lock file (raw, gofrs) or lock directory (locker) of
// the peer, whose mode is "raw", "gofrs" or "locker".
const envPeerPath = "COORD_BENCH_PEER_PATH"

func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// acquirer returns a function that blocks until it holds the lock of mode
// at path and returns its release.
func acquirer(tb testing.TB, mode, path string) func() func() {
	switch mode {
	case "raw":
		return func() func() {
			fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
			if err != nil {
				tb.Fatal(err)
			}
			if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
				tb.Fatal(err)
			}
			return func() { unix.Flock(fd, unix.LOCK_UN); unix.Close(fd) }
		}
	case "gofrs":
		return func() func() {
			f := flock.New(path)
			if _, err := f.TryLockContext(context.Background(), 10*time.Millisecond); err != nil {
				tb.Fatal(err)
			}
			return func() { f.Unlock() }
		}
	case "locker":
		l, err := filelock.New(path)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { l.Close() })
		return func() func() {
			k, err := l.Lock(context.Background(), "bench", filelock.Exclusive, benchRecord)
			if err != nil {
				tb.Fatal(err)
			}
			return func() { k.Unlock() }
		}
	}
	tb.Fatalf("unknown mode %q", mode)
	return nil
}

// TestBenchPeer is the other process of the HandoffProcess benchmarks; run
// by them only.
func TestBenchPeer(t *testing.T) {
	mode := benchpeer.Mode()
	if mode == "" {
		t.Skip("the waiter process of the HandoffProcess benchmarks")
	}
	acquire := acquirer(t, mode, os.Getenv(envPeerPath))
	if err := benchpeer.Serve(os.Stdin, os.Stdout, acquire, monotonic); err != nil {
		t.Fatal(err)
	}
}

// handoffProcess measures, as ns/handoff (median), the time from this
// process's unlock to a waiter in another process holding the lock. The
// waiter has announced its wait 2 ms before the unlock.
func handoffProcess(b *testing.B, mode, path string) {
	benchpeer.Handoff{
		Test:    "TestBenchPeer",
		Mode:    mode,
		Env:     []string{envPeerPath + "=" + path},
		Acquire: acquirer(b, mode, path),
		Settle:  func() { time.Sleep(2 * time.Millisecond) }, // let it block
		Now:     monotonic,
	}.Run(b)
}

// Anchor: blocking flock(2) in both processes.
func BenchmarkHandoffProcess_RawFlock(b *testing.B) {
	handoffProcess(b, "raw", filepath.Join(b.TempDir(), "raw"))
}

// Anchor: gofrs/flock TryLockContext polling every 10 ms in both.
func BenchmarkHandoffProcess_GofrsPolling(b *testing.B) {
	handoffProcess(b, "gofrs", filepath.Join(b.TempDir(), "gofrs"))
}

func BenchmarkHandoffProcess_Locker(b *testing.B) {
	handoffProcess(b, "locker", b.TempDir())
}
