//go:build unix

package integration_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toolchainkit/coord/coord"
)

// A fenced store is what a resource guarded by a lock should be: it accepts
// a write only with a fencing token higher than any it accepted before. It
// lives in a directory of the test (its own flock on "store" serialises the
// processes that write to it, independently of coord's locks) and keeps:
//
//	store     the highest token accepted so far
//	accepted  one line per accepted write: "token pid unixnano"
//	rejected  one line per rejected write: "token pid unixnano max"
//
// A lock that excludes correctly never sees a rejection; a paused holder's
// stale write must be one.
func fencedWrite(dir string, token int64) (bool, error) {
	f, err := os.OpenFile(filepath.Join(dir, "store"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return false, err
	}
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	var high int64
	if s := strings.TrimSpace(string(b[:n])); s != "" {
		if high, err = strconv.ParseInt(s, 10, 64); err != nil {
			return false, fmt.Errorf("fenced store corrupt: %q", s)
		}
	}
	now := time.Now().UnixNano()
	if token <= high {
		return false, appendLine(filepath.Join(dir, "rejected"), fmt.Sprintf("%d %d %d %d", token, os.Getpid(), now, high))
	}
	if err := f.Truncate(0); err != nil {
		return false, err
	}
	if _, err := f.WriteAt([]byte(strconv.FormatInt(token, 10)+"\n"), 0); err != nil {
		return false, err
	}
	return true, appendLine(filepath.Join(dir, "accepted"), fmt.Sprintf("%d %d %d", token, os.Getpid(), now))
}

// fencedWorker is the worker role "fenced": until <root>/stop exists, or
// COORD_TEST_ITER writes were accepted, it takes the lock "fenced" and
// writes its token to the fenced store in root, logging "+ pid unixnano" /
// "- pid unixnano" around it to <root>/inout like the counter worker. A
// lock that reports Lost before the write is not written with (the write
// would be rejected or worse); a session lost to a fault is replaced by a
// new Manager, each failure logged to <root>/errors as "pid unixnano err".
func fencedWorker(dir string) error {
	root := filepath.Dir(dir)
	n, err := strconv.Atoi(os.Getenv(envWorkerIter))
	if err != nil {
		return err
	}
	cfg, err := workerConfig()
	if err != nil {
		return err
	}
	ctx := context.Background()
	logErr := func(err error) error {
		return appendLine(filepath.Join(root, "errors"), fmt.Sprintf("%d %d %s", os.Getpid(), time.Now().UnixNano(), strings.ReplaceAll(err.Error(), "\n", " ")))
	}
	var m *coord.Manager
	defer func() {
		if m != nil {
			m.Close()
		}
	}()
	for done := 0; done < n; {
		if _, err := os.Stat(filepath.Join(root, "stop")); err == nil {
			return nil
		}
		if m == nil {
			if m, err = coord.New(ctx, cfg); err != nil {
				m = nil
				if err := logErr(err); err != nil {
					return err
				}
				time.Sleep(50 * time.Millisecond)
				continue
			}
		}
		l, err := m.Lock(ctx, "fenced", coord.WithTimeout(20*time.Second))
		if err != nil {
			if err := logErr(err); err != nil {
				return err
			}
			if errors.Is(err, coord.ErrBackendUnavailable) || errors.Is(err, coord.ErrLockLost) {
				m.Close()
				m = nil
			}
			continue
		}
		if err := appendLine(filepath.Join(root, "inout"), fmt.Sprintf("+ %d %d", os.Getpid(), time.Now().UnixNano())); err != nil {
			return err
		}
		select {
		case <-l.Lost():
			err = logErr(fmt.Errorf("token %d: %w before the write", l.Token(), coord.ErrLockLost))
		default:
			var ok bool
			if ok, err = fencedWrite(root, l.Token()); err == nil && ok {
				done++
			}
		}
		if err != nil {
			return err
		}
		if err := appendLine(filepath.Join(root, "inout"), fmt.Sprintf("- %d %d", os.Getpid(), time.Now().UnixNano())); err != nil {
			return err
		}
		if err := l.Unlock(); err != nil && !errors.Is(err, coord.ErrLockLost) {
			if err := logErr(err); err != nil {
				return err
			}
		}
	}
	return nil
}

// fencedReport checks what the fenced store in root and the inout log say
// after a run: no rejected write, accepted tokens strictly increasing in
// the order the store accepted them, never two processes inside at once.
// It returns the number of accepted writes and the longest gap between two
// of them.
func fencedReport(t *testing.T, root string) (writes int, longest time.Duration) {
	t.Helper()
	if rej := lines(t, filepath.Join(root, "rejected")); len(rej) > 0 {
		t.Errorf("the fenced store rejected %d writes (token pid time highest): %q", len(rej), rej)
	}
	writes, longest = acceptedWrites(t, root)
	if most := mostInside(t, filepath.Join(root, "inout")); most > 1 {
		t.Errorf("up to %d processes were inside the critical section at once, want at most 1", most)
	}
	return writes, longest
}

// acceptedWrites counts the writes the fenced store in root accepted,
// checking that their tokens rose, and returns the longest gap between two
// of them.
func acceptedWrites(t *testing.T, root string) (n int, longest time.Duration) {
	t.Helper()
	var prevTok, prevTS int64
	for _, l := range lines(t, filepath.Join(root, "accepted")) {
		var tok, pid, ts int64
		if _, err := fmt.Sscan(l, &tok, &pid, &ts); err != nil {
			t.Fatalf("accepted log line %q: %v", l, err)
		}
		if tok <= prevTok {
			t.Errorf("token %d accepted after %d", tok, prevTok)
		}
		if prevTS != 0 {
			longest = max(longest, time.Duration(ts-prevTS))
		}
		prevTok, prevTS = tok, ts
		n++
	}
	return n, longest
}

// mostInside replays an inout log and returns the most processes that were
// inside at once.
func mostInside(t *testing.T, path string) int {
	t.Helper()
	inside, most := 0, 0
	for _, l := range lines(t, path) {
		if strings.HasPrefix(l, "-") {
			inside--
		} else {
			inside++
		}
		most = max(most, inside)
	}
	return most
}

// The fenced store refuses what it must, and four processes writing
// through coord's locks get every write accepted, in token order.
func TestFencedStore(t *testing.T) {
	t.Run("store", func(t *testing.T) {
		root := t.TempDir()
		for _, c := range []struct {
			token int64
			want  bool
		}{{5, true}, {5, false}, {4, false}, {6, true}} {
			if ok, err := fencedWrite(root, c.token); err != nil || ok != c.want {
				t.Fatalf("write with token %d: accepted %v, %v; want %v", c.token, ok, err, c.want)
			}
		}
		if rej := lines(t, filepath.Join(root, "rejected")); len(rej) != 2 {
			t.Fatalf("rejected log %q, want 2 lines", rej)
		}
	})
	eachBackend(t, func(t *testing.T, be *backend) {
		const procs, iters = 4, 20
		w := newWorld(t, be)
		ps := make([]*proc, procs)
		for i := range ps {
			ps[i] = start(t, w.root, w.env(envWorker+"=fenced", envWorkerDir+"="+w.dir, envWorkerIter+"="+strconv.Itoa(iters)), os.Args[0])
		}
		for i, p := range ps {
			if code := p.wait(procTimeout); code != 0 {
				t.Fatalf("worker %d exited %d:\n%s", i, code, p.output())
			}
		}
		if n, _ := fencedReport(t, w.root); n != procs*iters {
			t.Fatalf("%d writes accepted, want %d", n, procs*iters)
		}
		if errs := lines(t, w.path("errors")); len(errs) > 0 {
			t.Fatalf("workers logged errors: %q", errs)
		}
	})
}
