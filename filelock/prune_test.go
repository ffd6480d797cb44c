//go:build unix

package filelock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/toolchainkit/coord/filelock"
)

func prune(t *testing.T, l *filelock.Locker, o filelock.PruneOptions) map[string]filelock.Pruned {
	t.Helper()
	ps, err := l.Prune(context.Background(), o)
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	out := map[string]filelock.Pruned{}
	for _, p := range ps {
		out[p.Name] = p
	}
	return out
}

func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Lstat(path)
	return err == nil
}

func TestPruneRemovesIdleKeepsHeldAndAwaited(t *testing.T) {
	dir := t.TempDir()
	a, b, c := newLocker(t, dir), newLocker(t, dir), newLocker(t, dir)
	lock(t, a, "idle", filelock.Exclusive).Unlock()
	lock(t, a, "idle-shared", filelock.Shared).Unlock()
	held := lock(t, a, "held", filelock.Exclusive)
	defer held.Unlock()
	sh := lock(t, a, "shared", filelock.Shared)
	defer sh.Unlock()
	// A waiter behind a holder: kept, and still gets the lock after.
	ah := lock(t, a, "awaited", filelock.Exclusive)
	got := make(chan error, 1)
	go func() {
		k, err := c.Lock(context.Background(), "awaited", filelock.Exclusive, nil)
		if err == nil {
			k.Unlock()
		}
		got <- err
	}()
	waitQueued(t, b, "awaited")

	ps := prune(t, b, filelock.PruneOptions{})
	want := map[string]string{"idle": "", "idle-shared": "", "held": filelock.KeptHeld, "shared": filelock.KeptHeld, "awaited": filelock.KeptHeld}
	for name, kept := range want {
		p, ok := ps[name]
		if !ok {
			t.Errorf("%s: not reported", name)
			continue
		}
		if p.Kept != kept || p.Removed != (kept == "") {
			t.Errorf("%s: Removed=%v Kept=%q; want Kept=%q", name, p.Removed, p.Kept, kept)
		}
		if exists(t, p.File) != (kept != "") {
			t.Errorf("%s: file exists=%v after Prune", name, exists(t, p.File))
		}
	}
	ah.Unlock()
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	// The lock still excludes after a removal: a fresh file.
	k := lock(t, a, "idle", filelock.Exclusive)
	if _, err := b.TryLock(context.Background(), "idle", filelock.Exclusive, nil); !errors.Is(err, filelock.ErrBusy) {
		t.Fatalf("second holder of a recreated lock: %v; want ErrBusy", err)
	}
	k.Unlock()
}

// A Locker keeps descriptors of idle lock files; once Prune removed the
// file they all name a dead inode, and Lock must start over on the new file
// instead of failing after a few tries.
func TestPruneIdleDescriptorsStartOver(t *testing.T) {
	dir := t.TempDir()
	a, b := newLocker(t, dir), newLocker(t, dir)
	var ks []*filelock.Lock
	for range 16 { // 16 shared holders: 16 descriptors kept idle after
		ks = append(ks, lock(t, a, "n", filelock.Shared))
	}
	for _, k := range ks {
		k.Unlock()
	}
	if p := prune(t, b, filelock.PruneOptions{})["n"]; !p.Removed {
		t.Fatalf("Prune kept %q: %s", "n", p.Kept)
	}
	k, err := a.TryLock(context.Background(), "n", filelock.Exclusive, []byte("x"))
	if err != nil {
		t.Fatalf("Lock after Prune: %v", err)
	}
	defer k.Unlock()
	if _, err := b.TryLock(context.Background(), "n", filelock.Exclusive, nil); !errors.Is(err, filelock.ErrBusy) {
		t.Fatalf("Lock through another Locker = %v; want ErrBusy (the holder holds the file at the path)", err)
	}
}

func TestPruneDryRunRemovesNothing(t *testing.T) {
	dir := t.TempDir()
	a := newLocker(t, dir)
	for _, n := range []string{"a", "b", "c/d"} {
		lock(t, a, n, filelock.Exclusive).Unlock()
	}
	ps := prune(t, a, filelock.PruneOptions{DryRun: true})
	if len(ps) != 3 {
		t.Fatalf("dry run reported %d files; want 3", len(ps))
	}
	for _, p := range ps {
		if !p.Removed || !exists(t, p.File) {
			t.Errorf("%s: Removed=%v exists=%v; want reported as removable and still there", p.Name, p.Removed, exists(t, p.File))
		}
	}
}

func TestPruneOlderThan(t *testing.T) {
	dir := t.TempDir()
	a := newLocker(t, dir)
	lock(t, a, "old", filelock.Exclusive).Unlock()
	lock(t, a, "new", filelock.Exclusive).Unlock()
	old := time.Now().Add(-2 * time.Hour)
	f, _ := filelock.FileName("old")
	if err := os.Chtimes(filepath.Join(dir, f), old, old); err != nil {
		t.Fatal(err)
	}
	ps := prune(t, a, filelock.PruneOptions{OlderThan: time.Hour})
	if !ps["old"].Removed || ps["new"].Removed || ps["new"].Kept != filelock.KeptRecent {
		t.Fatalf("old: %+v, new: %+v; want old removed, new kept as recent", ps["old"], ps["new"])
	}
	if d := time.Since(ps["new"].ModTime); d < 0 || d > time.Hour {
		t.Errorf("new ModTime %s ago", d)
	}
	// Acquiring moves the modification time: "old" is new once used.
	lock(t, a, "old", filelock.Exclusive).Unlock()
	if p := prune(t, a, filelock.PruneOptions{OlderThan: time.Hour})["old"]; p.Removed {
		t.Fatalf("a lock acquired just now was removed with OlderThan 1h")
	}
	if _, err := a.Prune(context.Background(), filelock.PruneOptions{OlderThan: -time.Second}); err == nil {
		t.Fatal("negative OlderThan accepted")
	}
}

// TestOldSpelling: the file of an older coord that kept upper-case letters
// in file names ("LLVM.lock", not "%4C%4C%56%4D.lock") is listed under its
// lock name, kept while that coord holds it, and removed once idle.
func TestOldSpelling(t *testing.T) {
	dir := t.TempDir()
	l := newLocker(t, dir)
	old := filepath.Join(dir, "LLVM.lock")
	f, err := os.OpenFile(old, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil { // the old coord holds it
		t.Fatal(err)
	}
	// The new coord's LLVM is another file: the two do not exclude each
	// other during an upgrade (README).
	lock(t, l, "LLVM", filelock.Exclusive).Unlock()
	infos, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	var held, free int
	for _, in := range infos {
		switch {
		case in.Name == "LLVM" && in.File == old && in.Held:
			held++
		case in.Name == "LLVM" && in.File != old && !in.Held:
			free++
		default:
			t.Errorf("List: %+v", in)
		}
	}
	if held != 1 || free != 1 {
		t.Errorf("List: %d held LLVM.lock, %d free new LLVM file; want 1 and 1", held, free)
	}
	dry, err := l.Prune(context.Background(), filelock.PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range dry {
		if p.File == old && p.Kept != filelock.KeptHeld {
			t.Errorf("held LLVM.lock: %+v; want kept as held", p)
		}
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	ps, err := l.Prune(context.Background(), filelock.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || !ps[0].Removed || !ps[1].Removed || ps[0].Name != "LLVM" || ps[1].Name != "LLVM" {
		t.Errorf("Prune: %+v; want both LLVM files removed", ps)
	}
	if exists(t, old) {
		t.Errorf("idle LLVM.lock left in place")
	}
}

// Planted files named like locks: never followed, opened for writing or
// removed.
func TestPruneHostileFiles(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(outside, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := newLocker(t, dir)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(outside, filepath.Join(dir, "sym.lock")))
	must(os.Symlink("/nonexistent", filepath.Join(dir, "dangling.lock")))
	must(os.Mkdir(filepath.Join(dir, "dir.lock"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "dir.lock", "inner"), nil, 0o644))
	must(os.WriteFile(filepath.Join(dir, "hard.lock"), nil, 0o644))
	must(os.Link(filepath.Join(dir, "hard.lock"), filepath.Join(dir, "hard-other")))
	must(syscall.Mkfifo(filepath.Join(dir, "fifo.lock"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "%61.lock"), nil, 0o644)) // not FileName's spelling of "a"
	must(os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o644))

	ps := prune(t, a, filelock.PruneOptions{})
	for _, n := range []string{"sym", "dangling", "dir", "hard", "fifo"} {
		if p := ps[n]; p.Removed || p.Kept != filelock.KeptUnsafe {
			t.Errorf("%s: %+v; want kept as unsafe", n, p)
		}
	}
	if len(ps) != 5 {
		t.Errorf("Prune reported %d files; want the 5 named like locks: %v", len(ps), ps)
	}
	for _, f := range []string{"sym.lock", "dangling.lock", "dir.lock/inner", "hard.lock", "hard-other", "fifo.lock", "%61.lock", "notes.txt"} {
		if !exists(t, filepath.Join(dir, f)) {
			t.Errorf("%s removed", f)
		}
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "keep me" {
		t.Errorf("symlink target: %q, %v", b, err)
	}
}

const (
	envRaceLocks = "FILELOCK_TEST_RACE_LOCKS" // lock directory
	envRaceData  = "FILELOCK_TEST_RACE_DATA"  // counters and in/out logs
	envRaceIters = "FILELOCK_TEST_RACE_ITERS"
)

var raceNames = []string{"r0", "r1", "r2", "r3"}

// TestPruneRaceWorker is one of TestPruneRace's processes: it locks the
// names in turn, and while it holds one it logs "in", adds one to the
// name's counter (read, write back) and logs "out".
func TestPruneRaceWorker(t *testing.T) {
	locks := os.Getenv(envRaceLocks)
	if locks == "" {
		t.Skip("a worker of TestPruneRace")
	}
	data := os.Getenv(envRaceData)
	iters, _ := strconv.Atoi(os.Getenv(envRaceIters))
	l, err := filelock.New(locks)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pid := os.Getpid()
	for i := range iters {
		name := raceNames[(i+pid)%len(raceNames)]
		k, err := l.Lock(context.Background(), name, filelock.Exclusive, []byte(`{"pid":1}`))
		if err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		logf, err := os.OpenFile(filepath.Join(data, name+".log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(logf, "in %d\n", pid)
		cf := filepath.Join(data, name+".count")
		b, _ := os.ReadFile(cf)
		n, _ := strconv.Atoi(string(b))
		if err := os.WriteFile(cf, []byte(strconv.Itoa(n+1)), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(logf, "out %d\n", pid)
		logf.Close()
		if err := k.Unlock(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPruneRace runs Prune in a loop while 8 processes lock and unlock the
// same few names: the counters come out exact, the logs never show two
// holders at once, and Prune did remove files meanwhile.
func TestPruneRace(t *testing.T) {
	const procs, iters = 8, 400
	locks, data := t.TempDir(), t.TempDir()
	gc := newLocker(t, locks)

	var cmds []*exec.Cmd
	for range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPruneRaceWorker$", "-test.count=1")
		cmd.Env = append(os.Environ(), envRaceLocks+"="+locks, envRaceData+"="+data, envRaceIters+"="+strconv.Itoa(iters))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var removed, passes, kept int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			ps, err := gc.Prune(ctx, filelock.PruneOptions{})
			if err != nil && ctx.Err() == nil {
				t.Errorf("Prune: %v", err)
				return
			}
			passes++
			for _, p := range ps {
				if p.Removed {
					removed++
				} else {
					kept++
				}
			}
		}
	}()
	start := time.Now()
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("worker %d: %v", i, err)
		}
	}
	elapsed := time.Since(start)
	cancel()
	wg.Wait()

	total := 0
	for _, name := range raceNames {
		b, err := os.ReadFile(filepath.Join(data, name+".count"))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(string(b))
		total += n
		checkLog(t, filepath.Join(data, name+".log"), n)
	}
	t.Logf("%d processes × %d lock/unlock in %s; Prune: %d passes, %d files removed, %d kept; counter %d",
		procs, iters, elapsed.Round(time.Millisecond), passes, removed, kept, total)
	if total != procs*iters {
		t.Errorf("counter %d; want %d", total, procs*iters)
	}
	if removed == 0 {
		t.Errorf("Prune removed no file in %d passes: the race was not exercised", passes)
	}
}

// checkLog asserts that the log alternates "in P" and "out P" of one
// process at a time, n times.
func checkLog(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var in string
	pairs, line := 0, 0
	for sc.Scan() {
		line++
		what, pid, _ := strings.Cut(sc.Text(), " ")
		switch {
		case what == "in" && in == "":
			in = pid
		case what == "out" && in == pid:
			in = ""
			pairs++
		default:
			t.Fatalf("%s:%d: %q while %q holds: two holders at once", path, line, sc.Text(), in)
		}
	}
	if pairs != n {
		t.Errorf("%s: %d in/out pairs; counter says %d", path, pairs, n)
	}
}
