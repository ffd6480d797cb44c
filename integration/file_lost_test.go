//go:build unix

package integration_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// A file lock whose lock file is deleted, or whose lock directory is
// removed (a cache clean-up), while `coord lock` runs its command: coord
// learns it (Linux: inotify), stops the command as for a lost etcd lock and
// exits 74; with --on-lost warn the command runs on and coord still exits
// 74. The next holder's token is above the lost one's although its lock
// file is new, and it runs only after every process of the first command
// is gone (asserted from the commands' own marker files). File-only.
func TestFileLockDeleted(t *testing.T) {
	eachBackend(t, func(t *testing.T, be *backend) {
		if be.etcd() {
			t.Skip("file-only: an etcd lock has no lock file to delete (TestEtcdLostLock deletes its key)")
		}
		for _, c := range []struct {
			name   string
			delete func(w *world) error
		}{
			{"rm -rf dir", func(w *world) error { return os.RemoveAll(w.dir) }},
			{"rm file", func(w *world) error { return os.Remove(filepath.Join(w.dir, "x.lock")) }},
		} {
			t.Run(c.name, func(t *testing.T) { testFileLockDeleted(t, be, c.delete) })
		}
	})
}

func testFileLockDeleted(t *testing.T, be *backend, del func(w *world) error) {
	w := newWorld(t, be)
	// The critical section writes "in" at its start and "out" at its end.
	p := w.startCoord("lock", "x", "--", "sh", "-c",
		`echo $COORD_FENCING_TOKEN > tok1; echo in > a.in; trap 'echo term > got; exit 3' TERM; sleep 30 & echo $! > sleeper; echo $$ > pid; wait; echo out > a.out`)
	pid := childPID(t, w.path("pid"))
	sleeper := childPID(t, w.path("sleeper"))
	deleted := time.Now()
	if err := del(w); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(10 * time.Second); code != 74 {
		t.Fatalf("coord exited %d after its lock file was deleted, want 74:\n%s", code, p.output())
	}
	exited := p.end.Sub(deleted)
	if b, _ := os.ReadFile(w.path("got")); strings.TrimSpace(string(b)) != "term" {
		t.Fatalf("the command did not get SIGTERM (got %q):\n%s", b, p.output())
	}
	if !strings.Contains(p.output(), "lock lost") {
		t.Errorf("stderr does not say the lock was lost:\n%s", p.output())
	}
	if runtime.GOOS == "linux" {
		waitGone(t, pid, loadSlack)
		waitGone(t, sleeper, loadSlack)
	}
	t.Logf("coord exited 74 %s after the deletion", exited.Round(time.Microsecond))

	// The next holder: a new lock file, a greater token; the first
	// command's processes are gone and it never finished its section.
	// alive: a zombie (the first command's sleep, reparented to an init
	// that reaps slowly) is dead.
	const alive = `alive() { if [ -d /proc/self ]; then s=$(cat /proc/$1/stat 2>/dev/null) && case "$s" in *") Z "*) false;; esac; else kill -0 $1 2>/dev/null; fi; }; `
	code, out := w.runCoord("lock", "--timeout", "10s", "x", "--", "sh", "-c",
		alive+`echo $COORD_FENCING_TOKEN > tok2; alive $(cat pid) || alive $(cat sleeper) || echo alone > b.in`)
	if code != 0 {
		t.Fatalf("next `coord lock x` exited %d, want 0:\n%s", code, out)
	}
	if _, err := os.Stat(w.path("b.in")); err != nil {
		t.Errorf("the next holder ran while a process of the first command was alive")
	}
	if _, err := os.Stat(w.path("a.out")); err == nil {
		t.Errorf("the first command finished its critical section after its lock was lost")
	}
	if t1, t2 := mustInt(t, w.path("tok1")), mustInt(t, w.path("tok2")); t2 <= t1 {
		t.Errorf("token %d after %d on a lock file made anew; want it to rise", t2, t1)
	}

	// --on-lost warn: the command runs to its end, coord warns and exits 74.
	p = w.startCoord("lock", "--on-lost", "warn", "warned", "--", "sh", "-c",
		`echo $$ > pid2; while [ ! -e go ]; do sleep 0.01; done; echo done > finished`)
	childPID(t, w.path("pid2"))
	if err := os.Remove(filepath.Join(w.dir, "warned.lock")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, func() error {
		if out := p.output(); !strings.Contains(out, "warning: lock lost") {
			return fmt.Errorf("--on-lost warn: no warning since the lock file was deleted:\n%s", out)
		}
		return nil
	})
	if err := os.WriteFile(w.path("go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(10 * time.Second); code != 74 {
		t.Fatalf("--on-lost warn: coord exited %d, want 74:\n%s", code, p.output())
	}
	if _, err := os.Stat(w.path("finished")); err != nil {
		t.Fatalf("--on-lost warn: the command did not run to its end: %v", err)
	}
}
