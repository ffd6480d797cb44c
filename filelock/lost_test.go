package filelock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/toolchainkit/coord/filelock"
	"github.com/toolchainkit/coord/internal/wintest"
)

// lostWithin waits for k's Lost channel and returns how long after since it
// closed; it fails the test if that takes longer than bound.
func lostWithin(t *testing.T, k *filelock.Lock, since time.Time, bound time.Duration) time.Duration {
	t.Helper()
	select {
	case <-k.Lost():
		return time.Since(since)
	case <-time.After(bound):
		t.Fatalf("Lost() still open %s after the lock file was taken away", bound)
		return 0
	}
}

// A holder whose lock file is unlinked, replaced or whose directory is
// removed learns it: Lost() closes, on Linux from inotify within
// milliseconds, elsewhere from a check every 100 ms. The bound asserted is
// 2 s, 20 times the promised 100 ms, for a loaded machine. Windows refuses
// to delete or replace a file that is open without FILE_SHARE_DELETE, and
// to remove or rename a directory with such a file in it: there the
// holder keeps its lock, and Lost() stays open. (Wine 8 allows the rename
// of the directory; Lost() then closes as elsewhere.)
func TestLostWhenLockFileTakenAway(t *testing.T) {
	const bound = 2 * time.Second
	cases := []struct {
		name string
		take func(dir, file string) error
	}{
		{"unlink", func(_, file string) error { return os.Remove(file) }},
		{"replace", func(dir, file string) error {
			tmp := filepath.Join(dir, "new.tmp")
			if err := os.WriteFile(tmp, nil, 0o644); err != nil {
				return err
			}
			return os.Rename(tmp, file)
		}},
		{"rm -rf dir", func(dir, _ string) error { return os.RemoveAll(dir) }},
		{"rename dir", func(dir, _ string) error { return os.Rename(dir, dir+".old") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			dir := filepath.Join(wintest.TempDir(t), "locks")
			l := newLocker(t, dir)
			for _, shared := range []bool{false, true} {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				k := lock(t, l, "x", modeOf(shared))
				fname, _ := filelock.FileName("x")
				select {
				case <-k.Lost():
					t.Fatal("Lost() closed before anything was taken away")
				default:
				}
				at := time.Now()
				err := c.take(dir, filepath.Join(dir, fname))
				switch {
				case err != nil && runtime.GOOS == "windows":
					// Three of the watcher's checks.
					time.Sleep(300 * time.Millisecond)
					select {
					case <-k.Lost():
						t.Fatalf("%s refused (%v), yet Lost() closed", c.name, err)
					default:
					}
					t.Logf("%s, shared=%v: refused while held (%v); the lock stays", c.name, shared, err)
				case err != nil:
					t.Fatal(err)
				default:
					took := lostWithin(t, k, at, bound)
					t.Logf("%s, shared=%v: Lost() closed %s after", c.name, shared, took.Round(time.Microsecond))
				}
				k.Unlock()
				l.Close()
				wintest.RemoveAll(dir + ".old")
				l = newLocker(t, dir)
			}
			l.Close()
		})
	}
}

// A lock with nothing taken away never reports Lost, through hundreds of
// lock/unlock cycles while other names' files come and go in the same
// directory (each an inotify event the watcher looks at).
func TestNotLostWhileFileStays(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := wintest.TempDir(t)
	l, other := newLocker(t, dir), newLocker(t, dir)
	long := lock(t, l, "long", filelock.Exclusive)
	for i := range 300 {
		k := lock(t, l, "x", modeOf(i%2 == 1))
		o := lock(t, other, fmt.Sprint("o", i), filelock.Exclusive)
		o.Unlock()
		fname, _ := filelock.FileName(fmt.Sprint("o", i))
		// On Windows other keeps its idle file open, which stops its
		// deletion (and that of a held file): there is nothing to remove.
		if err := os.Remove(filepath.Join(dir, fname)); err != nil && runtime.GOOS != "windows" {
			t.Fatal(err)
		}
		select {
		case <-k.Lost():
			t.Fatalf("cycle %d: Lost() closed on a lock whose file stayed", i)
		default:
		}
		k.Unlock()
	}
	// Let the watcher look at the events and run its periodic check.
	time.Sleep(1500 * time.Millisecond)
	select {
	case <-long.Lost():
		t.Fatal("Lost() closed on a lock held throughout whose file stayed")
	default:
	}
	long.Unlock()
}

// The watcher runs only while a lock is held: it is gone soon after the
// last Unlock, before Close, and Close waits for it.
func TestWatcherStopsWithLastUnlock(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := newLocker(t, wintest.TempDir(t))
	before := runtime.NumGoroutine()
	a, b := lock(t, l, "a", filelock.Exclusive), lock(t, l, "b", filelock.Shared)
	if n := runtime.NumGoroutine() - before; n != 1 {
		t.Errorf("%d goroutines started while 2 locks are held; want 1 watcher", n)
	}
	a.Unlock()
	b.Unlock()
	if err := goleak.Find(); err != nil {
		t.Fatalf("after the last Unlock, before Close: %v", err)
	}
	held := lock(t, l, "c", filelock.Exclusive)
	l.Close() // with a lock still held: the watcher stops too
	if err := goleak.Find(); err != nil {
		t.Fatalf("after Close with a lock held: %v", err)
	}
	held.Unlock()
}

// Tokens never go backwards for a name on a host, even when its lock file
// or the whole directory is deleted and made anew.
func TestTokensSurviveDeletion(t *testing.T) {
	for _, c := range []struct {
		name   string
		delete func(dir, file string) error
	}{
		{"file", func(_, file string) error { return os.Remove(file) }},
		{"dir", func(dir, _ string) error { return wintest.RemoveAll(dir) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(wintest.TempDir(t), "locks")
			fname, _ := filelock.FileName("x")
			var last int64
			for i := range 5 {
				l, err := filelock.New(dir)
				if err != nil {
					t.Fatal(err)
				}
				k := lock(t, l, "x", filelock.Exclusive)
				if k.Token() <= last {
					t.Fatalf("round %d: exclusive token %d after %d", i, k.Token(), last)
				}
				last = k.Token()
				if i == 0 {
					k.Unlock()
					k = lock(t, l, "x", filelock.Shared)
					if k.Token() < last {
						t.Fatalf("shared token %d; want at least the last exclusive token %d", k.Token(), last)
					}
					last = k.Token()
				}
				k.Unlock()
				l.Close()
				if err := c.delete(dir, filepath.Join(dir, fname)); err != nil {
					t.Fatal(err)
				}
				t.Logf("round %d: token %d", i, last)
			}
			// A shared holder of a fresh file reports no less than the last
			// exclusive token either.
			l := newLocker(t, dir)
			k := lock(t, l, "x", filelock.Shared)
			defer k.Unlock()
			if k.Token() < last {
				t.Fatalf("shared token %d on a fresh file; want at least %d", k.Token(), last)
			}
		})
	}
}

// A Locker whose directory was removed, or moved away, opens it anew at its
// path, as a new process would: its next locks exclude other processes
// again, and are watched there.
func TestLockerFollowsItsDirectory(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, c := range []struct {
		name string
		take func(dir string) error
	}{
		{"rm -rf", os.RemoveAll},
		{"rename", func(dir string) error { return os.Rename(dir, dir+".old") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			if runtime.GOOS == "windows" {
				t.Skip("Windows refuses to remove or rename a directory while a lock file in it is open")
			}
			dir := filepath.Join(wintest.TempDir(t), "locks")
			l := newLocker(t, dir)
			k := lock(t, l, "a", filelock.Exclusive)
			if err := c.take(dir); err != nil {
				t.Fatal(err)
			}
			lostWithin(t, k, time.Now(), 2*time.Second)
			k.Unlock()

			k = lock(t, l, "a", filelock.Exclusive)
			defer k.Unlock()
			other := newLocker(t, dir) // a process started after the clean-up
			if _, err := other.TryLock(context.Background(), "a", filelock.Exclusive, nil); !errors.Is(err, filelock.ErrBusy) {
				t.Fatalf("another Locker on the path: Lock = %v; want ErrBusy", err)
			}
			fname, _ := filelock.FileName("a")
			at := time.Now()
			if err := os.Remove(filepath.Join(dir, fname)); err != nil {
				t.Fatal(err)
			}
			took := lostWithin(t, k, at, 2*time.Second)
			t.Logf("after %s and a new Lock: Lost() closed %s after an unlink in the new directory", c.name, took.Round(time.Microsecond))
		})
	}
}
