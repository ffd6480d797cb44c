//go:build unix

package integration_test

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"
)

// 5. Of many concurrent `coord download`s exactly one runs its command;
// all exit 0 once DEST is complete, and the waiters wake together.
func TestDownloadExactlyOnce(t *testing.T) {
	const n = 16
	dir, root := lockDir(t)
	dest := filepath.Join(root, "dl", "tc")
	// $PPID is the coord process that downloads.
	const fetch = `echo $PPID >> runlog; sleep 0.3; echo payload > "$COORD_DEST/file"; date +%s%N > childdone`
	ps := make([]*proc, n)
	for i := range ps {
		ps[i] = startCoord(t, dir, "download", "tc-1", dest, "--", "sh", "-c", fetch)
	}
	for i, p := range ps {
		if code := p.wait(30 * time.Second); code != 0 {
			t.Fatalf("download %d of %d exited %d, want 0:\n%s", i, n, code, p.output())
		}
	}
	runs := lines(t, filepath.Join(root, "runlog"))
	if len(runs) != 1 {
		t.Fatalf("the download command ran %d times for %d concurrent `coord download`s, want 1", len(runs), n)
	}
	checkDest(t, dest, map[string]string{"file": "payload\n"})

	done := time.Unix(0, mustInt(t, filepath.Join(root, "childdone")))
	var after []time.Duration // each waiter's exit, after the command finished
	for _, p := range ps {
		if strconv.Itoa(p.cmd.Process.Pid) != runs[0] {
			after = append(after, p.end.Sub(done))
		}
	}
	slices.Sort(after)
	first, last := after[0], after[len(after)-1]
	t.Logf("%d waiters exited %s to %s after the download command finished: spread %s",
		len(after), first.Round(time.Microsecond), last.Round(time.Microsecond), (last - first).Round(time.Microsecond))
	if first < 0 {
		t.Fatalf("a waiter exited %s before the download command finished, want none before", -first)
	}
	if last > time.Second {
		t.Fatalf("last of %d waiters exited %s after the download finished, want within 1s", len(after), last)
	}
}

// 6. A downloader killed mid-download leaves nothing at DEST; the next
// caller downloads afresh and clears the leftovers, the one after that
// downloads nothing.
func TestDownloaderKilled(t *testing.T) {
	dir, root := lockDir(t)
	parent := filepath.Join(root, "dl")
	dest := filepath.Join(parent, "tc")
	download := func(fetch string) *proc {
		return startCoord(t, dir, "download", "tc-2", dest, "--", "sh", "-c", fetch)
	}

	first := download(`echo partial > "$COORD_DEST/partial"; echo $$ > ready; exec sleep 60`)
	child := childPID(t, filepath.Join(root, "ready"))
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if code := first.wait(5 * time.Second); code != -1 {
		t.Fatalf("killed downloader exited %d, want -1 (killed by a signal)", code)
	}
	if runtime.GOOS == "linux" {
		waitGone(t, child, time.Second)
	}
	if _, err := os.Lstat(dest); !os.IsNotExist(err) {
		t.Fatalf("DEST after the downloader was killed: %v (entries %q), want it absent", err, dirNames(t, parent))
	}

	second := download(`echo good > "$COORD_DEST/good"`)
	if code := second.wait(30 * time.Second); code != 0 {
		t.Fatalf("second download exited %d, want 0:\n%s", code, second.output())
	}
	checkDest(t, dest, map[string]string{"good": "good\n"})

	third := download(`echo ran >> third.log`)
	if code := third.wait(30 * time.Second); code != 0 {
		t.Fatalf("third download exited %d, want 0:\n%s", code, third.output())
	}
	if ls := lines(t, filepath.Join(root, "third.log")); len(ls) != 0 {
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
