//go:build unix

package integration_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/toolchainkit/coord/coord"
)

// 5. Of many concurrent `coord download`s exactly one runs its command;
// all exit 0 once DEST is complete, none before the download command
// finished, and nothing is left beside DEST. Whether the waiters wake
// together (the spread of their exits does not grow with their number) is
// a timing question: make bench measures it (the fan-out rows), since on a
// loaded 2-core host scheduler noise alone spreads 16 exits by tens of ms.
func TestDownloadExactlyOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, be *backend) {
		s4 := downloadOnce(t, be, 4)
		s16 := downloadOnce(t, be, 16)
		t.Logf("release spread: %s for the 3 waiters of 4 downloads, %s for the 15 of 16",
			s4.Round(time.Microsecond), s16.Round(time.Microsecond))
	})
}

// downloadOnce runs n concurrent `coord download`s of one id in a new world
// on be, checks that exactly one ran its command, that all exited 0 and
// that DEST is complete with nothing beside it, and returns the spread of
// the waiters' exits after the download command finished.
//
// The download command holds on until all n-1 others wait for it (coord
// status counts them), and a little longer for their etcd watches to be
// set up, so that the spread measures the wake-up of settled waiters, not
// how long 16 processes take to start on 2 cores.
func downloadOnce(t *testing.T, be *backend, n int) time.Duration {
	t.Helper()
	w := newWorld(t, be)
	dest := w.path("dl/tc")
	// $COORD_PID is the coord process that downloads.
	const fetch = `echo $COORD_PID >> runlog; while [ ! -e go ]; do sleep 0.01; done; echo payload > "$COORD_DEST/file"; date +%s%N > childdone`
	ps := make([]*proc, n)
	for i := range ps {
		ps[i] = w.startCoord("download", "tc-1", dest, "--", "sh", "-c", fetch)
	}
	waitFor(t, w.path("runlog"), 30*time.Second)
	w.waitWaiters(coord.ToolchainLockName("tc-1"), n-1, 30*time.Second)
	time.Sleep(150 * time.Millisecond)
	if err := os.WriteFile(w.path("go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, p := range ps {
		if code := p.wait(15 * time.Second); code != 0 {
			t.Fatalf("download %d of %d exited %d, want 0:\n%s", i, n, code, p.output())
		}
	}
	runs := lines(t, w.path("runlog"))
	if len(runs) != 1 {
		t.Fatalf("the download command ran %d times for %d concurrent `coord download`s, want 1", len(runs), n)
	}
	checkDest(t, dest, map[string]string{"file": "payload\n"})
	if be.etcd() {
		key := w.prefix + "/downloads/tc-1"
		if v := etcdGet(t, be, key); v == nil {
			t.Fatalf("no download record at %s after the commit", key)
		}
	}

	done := time.Unix(0, mustInt(t, w.path("childdone")))
	var after []time.Duration // each waiter's exit, after the command finished
	var downloader time.Duration
	for _, p := range ps {
		if strconv.Itoa(p.cmd.Process.Pid) != runs[0] {
			after = append(after, p.end.Sub(done))
		} else {
			downloader = p.end.Sub(done)
		}
	}
	if len(after) != n-1 {
		t.Fatalf("%d waiters, want %d: the download command's $COORD_PID %s is none of the coord processes", len(after), n-1, runs[0])
	}
	slices.Sort(after)
	first, last := after[0], after[len(after)-1]
	spread := last - first
	t.Logf("%d downloads: downloader exited %s and its %d waiters %s to %s after the download command finished: spread %s",
		n, downloader.Round(time.Microsecond), len(after), first.Round(time.Microsecond), last.Round(time.Microsecond), spread.Round(time.Microsecond))
	if first < 0 {
		t.Fatalf("a waiter exited %s before the download command finished, want none before", -first)
	}
	if last > loadSlack {
		t.Fatalf("last of %d waiters exited %s after the download finished, want soon after", len(after), last)
	}
	return spread
}

// waitWaiters polls `coord status --json` until the lock called name has
// at least n waiters; it fails the test after d.
func (w *world) waitWaiters(name string, n int, d time.Duration) {
	t := w.t
	t.Helper()
	waitUntil(t, d, func() error {
		code, out := w.runCoord("status", "--json")
		if code != 0 {
			return fmt.Errorf("coord status --json exited %d:\n%s", code, out)
		}
		var locks []struct {
			Name    string `json:"name"`
			Waiters *int   `json:"waiters"`
		}
		if err := json.Unmarshal([]byte(out), &locks); err != nil {
			t.Fatalf("coord status --json: %v:\n%s", err, out)
		}
		for _, l := range locks {
			if l.Name == name && l.Waiters != nil && *l.Waiters >= n {
				return nil
			}
		}
		return fmt.Errorf("lock %q does not have %d waiters; `coord status --json`:\n%s", name, n, out)
	})
}

// 6. A downloader killed mid-download leaves nothing at DEST; the next
// caller downloads afresh and clears the leftovers, the one after that
// downloads nothing.
func TestDownloaderKilled(t *testing.T) {
	eachBackend(t, testDownloaderKilled)
}

func testDownloaderKilled(t *testing.T, be *backend) {
	w := newWorld(t, be)
	parent := w.path("dl")
	dest := filepath.Join(parent, "tc")
	download := func(fetch string) *proc {
		return w.startCoord("download", "tc-2", dest, "--", "sh", "-c", fetch)
	}

	first := download(`echo partial > "$COORD_DEST/partial"; echo $$ > ready; exec sleep 60`)
	child := childPID(t, w.path("ready"))
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if code := first.wait(5 * time.Second); code != -1 {
		t.Fatalf("killed downloader exited %d, want -1 (killed by a signal)", code)
	}
	if runtime.GOOS == "linux" {
		waitGone(t, child, loadSlack)
	}
	if _, err := os.Lstat(dest); !os.IsNotExist(err) {
		t.Fatalf("DEST after the downloader was killed: %v (entries %q), want it absent", err, dirNames(t, parent))
	}

	// On etcd the second waits for the killed downloader's lease to end.
	second := download(`echo good > "$COORD_DEST/good"`)
	if code := second.wait(30 * time.Second); code != 0 {
		t.Fatalf("second download exited %d, want 0:\n%s", code, second.output())
	}
	checkDest(t, dest, map[string]string{"good": "good\n"})

	third := download(`echo ran >> third.log`)
	if code := third.wait(30 * time.Second); code != 0 {
		t.Fatalf("third download exited %d, want 0:\n%s", code, third.output())
	}
	if ls := lines(t, w.path("third.log")); len(ls) != 0 {
		t.Fatalf("third download ran its command (%d lines logged) although DEST was complete", len(ls))
	}
	checkDest(t, dest, map[string]string{"good": "good\n"})
}

// checkDest checks that dest holds exactly files (name → content) and the
// completion marker, and that its parent holds nothing but dest.
func checkDest(t *testing.T, dest string, files map[string]string) {
	t.Helper()
	want := []string{".coord-complete"}
	for name, content := range files {
		want = append(want, name)
		if b, err := os.ReadFile(filepath.Join(dest, name)); string(b) != content {
			t.Fatalf("%s holds %q (%v), want %q", name, b, err, content)
		}
	}
	slices.Sort(want)
	if got := dirNames(t, dest); !slices.Equal(got, want) {
		t.Fatalf("DEST holds %q, want %q", got, want)
	}
	if fi, err := os.Lstat(filepath.Join(dest, ".coord-complete")); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("completion marker: %v, want a regular file", err)
	}
	if got := dirNames(t, filepath.Dir(dest)); !slices.Equal(got, []string{filepath.Base(dest)}) {
		t.Fatalf("parent of DEST holds %q, want only %q (no staging or leftover directories)", got, filepath.Base(dest))
	}
}
