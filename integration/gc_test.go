//go:build unix

package integration_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// `coord gc` in a loop while 8 shells run `coord lock` on the same two
// names: no increment is lost, the in/out log of each name never shows two
// holders at once, and gc did remove lock files meanwhile (each `coord
// lock` is a process of its own, so a name's file is idle between them).
func TestGCWhileLocking(t *testing.T) {
	const procs, iters = 8, 25
	w := newWorld(t, &backend{name: "file"})
	names := []string{"n0", "n1"}
	for _, n := range names {
		if err := os.WriteFile(w.path("counter-"+n), []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const script = `echo "in $$" >> log-$COORD_LOCK_NAME; n=$(cat counter-$COORD_LOCK_NAME); echo $((n+1)) > counter-$COORD_LOCK_NAME; echo "out $$" >> log-$COORD_LOCK_NAME`
	const loop = `i=0; while [ $i -lt "$ITERS" ]; do "$COORD" lock "n$(( (i + $SEQ) % 2 ))" -- sh -c "$SCRIPT" || exit $?; i=$((i+1)); done`
	const gcLoop = `while [ ! -e stop ]; do "$COORD" gc || exit $?; done`
	gc := start(t, w.root, w.env(), "/bin/sh", "-c", gcLoop)
	start0 := time.Now()
	ps := make([]*proc, procs)
	for i := range ps {
		ps[i] = start(t, w.root, w.env("ITERS="+strconv.Itoa(iters), "SEQ="+strconv.Itoa(i), "SCRIPT="+script), "/bin/sh", "-c", loop)
	}
	for i, p := range ps {
		if code := p.wait(procTimeout); code != 0 {
			t.Fatalf("shell %d exited %d:\n%s", i, code, p.output())
		}
	}
	elapsed := time.Since(start0)
	if err := os.WriteFile(w.path("stop"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := gc.wait(procTimeout); code != 0 {
		t.Fatalf("gc loop exited %d:\n%s", code, gc.output())
	}
	out := gc.output()
	removed := strings.Count(out, "\nremoved lock file ")
	if strings.HasPrefix(out, "removed lock file ") {
		removed++
	}
	runs := strings.Count(out, " lock files (file backend)")
	total := int64(0)
	for _, n := range names {
		c := mustInt(t, w.path("counter-"+n))
		total += c
		var in string
		pairs := 0
		for i, l := range lines(t, w.path("log-"+n)) {
			what, pid, _ := strings.Cut(l, " ")
			switch {
			case what == "in" && in == "":
				in = pid
			case what == "out" && in == pid:
				in, pairs = "", pairs+1
			default:
				t.Fatalf("log-%s:%d: %q while %q holds: two holders at once", n, i+1, l, in)
			}
		}
		if int64(pairs) != c {
			t.Errorf("log-%s: %d in/out pairs, counter %d", n, pairs, c)
		}
	}
	t.Logf("%d shells × %d `coord lock` in %s beside %d `coord gc` runs: %d lock files removed; counter %d",
		procs, iters, elapsed.Round(time.Millisecond), runs, removed, total)
	if total != procs*iters {
		t.Errorf("counter %d; want %d", total, procs*iters)
	}
	if removed == 0 {
		t.Errorf("gc removed no lock file in %d runs: the race was not exercised", runs)
	}
}
