//go:build unix

package integration_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toolchainkit/coord/coord"
)

// A holder paused (SIGSTOP: a GC pause, a swapped-out VM, a laptop lid)
// for longer than its lease. On etcd the lease expires and another process
// takes the lock while the holder still believes it holds it; once it runs
// again its Lost closes at once, and the fenced store refuses its write
// with the stale token, which is what fencing tokens are for. A download
// commit is the same story with the destination directory as the store:
// the stale Commit fails with ErrLockLost and the newer download stays.
// On the file backend a stopped process is alive and keeps its flock: the
// others wait, however long the pause.
//
// The tests let a resumed process go on only once its Lost has fired
// (within a millisecond of SIGCONT here): a Commit racing its own
// keep-alive loop's verdict would instead fail on the staging directory
// the next downloader removed (an error, but not ErrLockLost), or find
// dest complete and keep it; nothing stale is published either way.
//
// What remains: Commit checks with etcd that it still holds the lock and
// then renames; a holder paused between the two steps, past its lease,
// publishes after another downloader took over (coord/download.go says
// so). Nothing closes that window but a resource that checks the token
// itself, as the fenced store does; a rename cannot.

// pauseWorker is the worker role "pause"; its files in root are named by
// faultTagEnv (TAG below). It records the unixnano time its lock's Lost
// fires, if it does, in TAG.lost, and does nothing else until TAG.go
// exists; then:
//
//	hold      it took the lock "fenced" before writing its token to
//	          TAG.granted; it writes to the fenced store with that token,
//	          whatever Lost says, writes "LOST WRITE" to TAG.result (LOST:
//	          whether Lost was closed before the write; WRITE: accepted
//	          or rejected), unlocks, and writes the unixnano time it
//	          began to unlock to TAG.released
//	download  it coordinated the download "tc" into <root>/dl/tc and put
//	          the file payload (TAG) in the staging directory before
//	          TAG.staging; it commits and closes, and writes to
//	          TAG.commit: "ok", "lost" (ErrLockLost) or "error MESSAGE"
//	          ("skipped" before TAG.staging if it need not download)
func pauseWorker(dir string) error {
	root := filepath.Dir(dir)
	tag := os.Getenv(faultTagEnv)
	file := func(suffix string) string { return filepath.Join(root, tag+"."+suffix) }
	write := func(suffix, format string, args ...any) error {
		return os.WriteFile(file(suffix), fmt.Appendf(nil, format+"\n", args...), 0o644)
	}
	ctx := context.Background()
	m, err := workerManager(ctx)
	if err != nil {
		return err
	}
	defer m.Close()

	// recordLost writes TAG.lost once lost closes; the caller stops it
	// and waits for it before returning.
	stop := make(chan struct{})
	recorded := make(chan error, 1)
	recordLost := func(lost <-chan struct{}) {
		go func() {
			select {
			case <-lost:
				recorded <- write("lost", "%d", time.Now().UnixNano())
			case <-stop:
				recorded <- nil
			}
		}()
	}
	waitGo := func() error {
		for deadline := time.Now().Add(2 * procTimeout / 3); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if _, err := os.Stat(file("go")); err == nil {
				return nil
			}
		}
		return fmt.Errorf("%s did not appear", file("go"))
	}
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}

	switch step := os.Getenv(faultStepEnv); step {
	case "hold":
		l, err := m.Lock(ctx, "fenced", coord.WithTimeout(20*time.Second))
		if err != nil {
			return err
		}
		recordLost(l.Lost())
		if err := write("granted", "%d", l.Token()); err != nil {
			return err
		}
		if err := waitGo(); err != nil {
			return err
		}
		lost := closed(l.Lost())
		// Deliberately, even if Lost fired: the store must refuse it.
		ok, err := fencedWrite(root, l.Token())
		if err != nil {
			return err
		}
		released := time.Now().UnixNano() // the lock may pass on within Unlock
		if err := l.Unlock(); err != nil && !errors.Is(err, coord.ErrLockLost) {
			return err
		}
		close(stop)
		if err := <-recorded; err != nil {
			return err
		}
		result := "rejected"
		if ok {
			result = "accepted"
		}
		if err := write("result", "%t %s", lost, result); err != nil {
			return err
		}
		return write("released", "%d", released)
	case "download":
		dc := coord.NewDownloadCoordinator(m)
		d, err := dc.Coordinate(ctx, "tc", filepath.Join(root, "dl", "tc"), coord.WithTimeout(30*time.Second))
		if err != nil {
			return err
		}
		defer d.Close()
		if !d.ShouldDownload() {
			return write("commit", "skipped")
		}
		recordLost(d.Lost())
		if err := os.WriteFile(filepath.Join(d.StagingDir(), "payload"), []byte(tag+"\n"), 0o644); err != nil {
			return err
		}
		if err := write("staging", "%s", d.StagingDir()); err != nil {
			return err
		}
		if err := waitGo(); err != nil {
			return err
		}
		err = d.Commit(context.Background())
		if cerr := d.Close(); cerr != nil && !errors.Is(cerr, coord.ErrLockLost) {
			err = errors.Join(err, cerr)
		}
		close(stop)
		if err := <-recorded; err != nil {
			return err
		}
		switch {
		case err == nil:
			return write("commit", "ok")
		case errors.Is(err, coord.ErrLockLost):
			return write("commit", "lost")
		default:
			return write("commit", "error %s", strings.ReplaceAll(err.Error(), "\n", " "))
		}
	default:
		return fmt.Errorf("pause worker: unknown step %q", step)
	}
}

// pauseEnv is the environment of a pause worker doing step as tag in w,
// with a lease of ttl.
func (w *world) pauseEnv(step, tag string, ttl time.Duration) []string {
	return w.env(envWorker+"=pause", envWorkerDir+"="+w.dir, faultStepEnv+"="+step, faultTagEnv+"="+tag,
		"COORD_ETCD_TTL="+ttl.String())
}

// fencedEnv is the environment of a fenced worker in w writing once, with
// a lease of calmTTL.
func (w *world) fencedEnv() []string {
	return w.env(envWorker+"=fenced", envWorkerDir+"="+w.dir, envWorkerIter+"=1", "COORD_ETCD_TTL="+calmTTL.String())
}

// signal sends sig to p, failing the test if it cannot.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := syscall.Kill(p.cmd.Process.Pid, sig); err != nil {
		p.t.Fatalf("%v: %v", sig, err)
	}
}

// resume SIGCONTs p, waits for it to record that its Lost fired (file
// tag.lost) and returns how long after SIGCONT that was. Lost closing
// before the pause would be a failure of the setup: it must close after.
func (w *world) resume(p *proc, tag string) time.Duration {
	t := w.t
	t.Helper()
	cont := time.Now()
	p.signal(syscall.SIGCONT)
	waitFor(t, w.path(tag+".lost"), 5*time.Second)
	d := nanos(t, w.path(tag+".lost")).Sub(cont)
	if d < 0 {
		t.Fatalf("Lost fired %s before SIGCONT, while the holder was meant to hold", -d)
	}
	// The keep-alive loop's timer is long overdue when the process runs
	// again: Lost closes as soon as it is scheduled.
	if d > time.Second {
		t.Errorf("Lost fired %s after SIGCONT, want within 1s", d)
	}
	return d
}

// goOn creates tag.go, which a pause worker waits for.
func (w *world) goOn(tag string) {
	w.t.Helper()
	if err := os.WriteFile(w.path(tag+".go"), nil, 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// storeLine is one line of the fenced store's accepted or rejected log.
type storeLine struct{ token, pid, at, high int64 }

func storeLines(t *testing.T, path string) []storeLine {
	t.Helper()
	var ls []storeLine
	for _, l := range lines(t, path) {
		var s storeLine
		if _, err := fmt.Sscan(l, &s.token, &s.pid, &s.at); err != nil {
			t.Fatalf("%s: line %q: %v", path, l, err)
		}
		if f := strings.Fields(l); len(f) == 4 {
			fmt.Sscan(f[3], &s.high)
		}
		ls = append(ls, s)
	}
	return ls
}

// (a) etcd: the holder, stopped past its lease, loses the lock to another
// process whose write the store accepts; resumed, it sees Lost closed and
// its write with the stale token is rejected.
func TestPauseHolderEtcd(t *testing.T) {
	const n = 3
	etcdBackends(t, func(t *testing.T, be *backend) {
		var m durations
		trials(t, n, n, func(t *testing.T) {
			w := newWorld(t, be)
			holder := start(t, w.root, w.pauseEnv("hold", "holder", faultTTL), os.Args[0])
			if !holder.waitFile(w.path("holder.granted"), 20*time.Second) {
				t.Fatalf("holder exited %d before holder.granted:\n%s", holder.code, holder.output())
			}
			token := mustInt(t, w.path("holder.granted"))
			holder.signal(syscall.SIGSTOP)
			stopped := time.Now()
			other := start(t, w.root, w.fencedEnv(), os.Args[0])
			if code := other.wait(30 * time.Second); code != 0 {
				t.Fatalf("the other process exited %d:\n%s", code, other.output())
			}
			if errs := lines(t, w.path("errors")); len(errs) > 0 {
				t.Fatalf("the other process logged errors: %q", errs)
			}
			if d := time.Since(stopped); d < faultTTL {
				t.Fatalf("the other process wrote %s into the pause, before the paused lease (%s) could expire", d, faultTTL)
			}
			m.add("took over", time.Since(stopped))
			m.add("Lost after SIGCONT", w.resume(holder, "holder"))
			w.goOn("holder")
			if code := holder.wait(10 * time.Second); code != 0 {
				t.Fatalf("resumed holder exited %d:\n%s", code, holder.output())
			}
			if r := strings.TrimSpace(string(mustRead(t, w.path("holder.result")))); r != "true rejected" {
				t.Fatalf("resumed holder (Lost closed, its stale write): %q, want \"true rejected\"", r)
			}
			acc := storeLines(t, w.path("accepted"))
			if len(acc) != 1 || acc[0].pid != int64(other.cmd.Process.Pid) || acc[0].token <= token {
				t.Fatalf("accepted writes %+v, want one: the other process's, with a token above the holder's %d", acc, token)
			}
			rej := storeLines(t, w.path("rejected"))
			if len(rej) != 1 || rej[0].token != token || rej[0].pid != int64(holder.cmd.Process.Pid) || rej[0].high != acc[0].token {
				t.Fatalf("rejected writes %+v, want one: the holder's token %d, below the other's %d", rej, token, acc[0].token)
			}
		})
		if !t.Failed() {
			t.Logf("another process wrote after the pause began: %s", spread(m.get("took over")))
			t.Logf("the resumed holder's Lost fired after SIGCONT: %s", spread(m.get("Lost after SIGCONT")))
		}
	})
}

// (b) etcd: a downloader stopped past its lease before Commit; another
// downloader takes over, clears its staging directory and commits. The
// resumed one's Commit fails with ErrLockLost, dest holds the second's
// bytes alone and nothing is left beside it.
func TestPauseDownloadCommit(t *testing.T) {
	etcdBackends(t, func(t *testing.T, be *backend) {
		w := newWorld(t, be)
		dest := w.path("dl/tc")
		first := start(t, w.root, w.pauseEnv("download", "first", faultTTL), os.Args[0])
		if !first.waitFile(w.path("first.staging"), 20*time.Second) {
			t.Fatalf("first exited %d before first.staging:\n%s", first.code, first.output())
		}
		staging := strings.TrimSpace(string(mustRead(t, w.path("first.staging"))))
		first.signal(syscall.SIGSTOP)
		stopped := time.Now()
		w.goOn("second")
		second := start(t, w.root, w.pauseEnv("download", "second", calmTTL), os.Args[0])
		if code := second.wait(30 * time.Second); code != 0 {
			t.Fatalf("second downloader exited %d:\n%s", code, second.output())
		}
		took := time.Since(stopped)
		if c := strings.TrimSpace(string(mustRead(t, w.path("second.commit")))); c != "ok" {
			t.Fatalf("second downloader's commit: %q, want ok", c)
		}
		if _, err := os.Lstat(staging); !os.IsNotExist(err) {
			t.Fatalf("the paused downloader's staging directory after the second committed: %v, want it removed", err)
		}
		checkDest(t, dest, map[string]string{"payload": "second\n"})

		lat := w.resume(first, "first")
		w.goOn("first")
		if code := first.wait(10 * time.Second); code != 0 {
			t.Fatalf("resumed downloader exited %d:\n%s", code, first.output())
		}
		if c := strings.TrimSpace(string(mustRead(t, w.path("first.commit")))); c != "lost" {
			t.Fatalf("stale Commit: %q, want it to fail with ErrLockLost", c)
		}
		checkDest(t, dest, map[string]string{"payload": "second\n"})
		t.Logf("second downloader committed %s into the pause; the resumed one's Lost fired %s after SIGCONT",
			took.Round(time.Millisecond), lat.Round(time.Microsecond))
	})
}

// (c) file: a stopped holder is alive and keeps its flock, however long
// the pause (here longer than an etcd lease): another process provably
// waits, and is granted the lock right after the holder resumes and
// releases it. The holder's Lost never closes, and its write after the
// pause is accepted: nobody else wrote in between.
func TestPauseHolderFile(t *testing.T) {
	be := backends[0]
	if be.etcd() {
		t.Fatal("backends[0] is not the file backend")
	}
	w := newWorld(t, be)
	holder := start(t, w.root, w.pauseEnv("hold", "holder", faultTTL), os.Args[0])
	if !holder.waitFile(w.path("holder.granted"), 20*time.Second) {
		t.Fatalf("holder exited %d before holder.granted:\n%s", holder.code, holder.output())
	}
	holder.signal(syscall.SIGSTOP)
	stopped := time.Now()
	other := start(t, w.root, w.fencedEnv(), os.Args[0])
	pid := fmt.Sprint(holder.cmd.Process.Pid)
	for i := 0; i < 3 || time.Since(stopped) < 2*faultTTL; i++ {
		began := time.Now()
		code, out := w.runCoord("lock", "--timeout", "500ms", "fenced", "--", "true")
		if code != 75 {
			t.Fatalf("coord lock --timeout 500ms while the holder is stopped exited %d, want 75:\n%s", code, out)
		}
		if d := time.Since(began); d < 500*time.Millisecond {
			t.Fatalf("coord lock --timeout 500ms gave up after %s", d)
		}
		if !strings.Contains(out, "held by pid "+pid) {
			t.Fatalf("coord lock does not name the stopped holder (pid %s):\n%s", pid, out)
		}
	}
	if ls := lines(t, w.path("inout")); len(ls) > 0 {
		t.Fatalf("the other process got the lock from a stopped holder: %q", ls)
	}
	paused := time.Since(stopped)
	holder.signal(syscall.SIGCONT)
	w.goOn("holder")
	if code := holder.wait(10 * time.Second); code != 0 {
		t.Fatalf("resumed holder exited %d:\n%s", code, holder.output())
	}
	if code := other.wait(10 * time.Second); code != 0 {
		t.Fatalf("the other process exited %d:\n%s", code, other.output())
	}
	if r := strings.TrimSpace(string(mustRead(t, w.path("holder.result")))); r != "false accepted" {
		t.Fatalf("resumed holder (Lost closed, its write): %q, want \"false accepted\"", r)
	}
	if _, err := os.Stat(w.path("holder.lost")); err == nil {
		t.Fatal("the file lock's Lost fired during the pause")
	}
	released := nanos(t, w.path("holder.released"))
	var in []time.Time
	for _, l := range lines(t, w.path("inout")) {
		var sign string
		var p, at int64
		if _, err := fmt.Sscan(l, &sign, &p, &at); err != nil {
			t.Fatalf("inout line %q: %v", l, err)
		}
		if sign == "+" {
			in = append(in, time.Unix(0, at))
		}
	}
	if len(in) != 1 {
		t.Fatalf("the other process entered %d times, want once", len(in))
	}
	wait := in[0].Sub(released)
	if wait < 0 || wait > time.Second {
		t.Fatalf("the other process was granted the lock %s after the holder released it, want within 0..1s", wait)
	}
	if n, _ := fencedReport(t, w.root); n != 2 {
		t.Fatalf("%d writes accepted, want 2: the holder's after the pause, then the other's", n)
	}
	t.Logf("paused %s: every `coord lock --timeout 500ms` exited 75; the waiter was granted the lock %s after the release",
		paused.Round(time.Millisecond), wait.Round(time.Microsecond))
}

// mustRead returns a file's content, failing the test if it cannot.
func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
