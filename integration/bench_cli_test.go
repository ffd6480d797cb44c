//go:build linux

package integration_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toolchainkit/coord/filelock"
)

// What a shell script feels of the CLI beyond one uncontended run: the
// handoff from one process's command to the next one's, a burst of
// processes on one name, and status in a lock directory of thousands of
// locks. Each against its anchor, measured the same way.

// stampCmd is a command line, run under a lock, that writes bash's
// $EPOCHREALTIME (µs) to the file named by its first argument: $0 of the
// script. With a FIFO as second argument it first creates the file named
// by the third ("running") and then waits for a line on the FIFO, so that
// the stamp is the last thing it does.
var (
	stampNow  = []string{"bash", "-c", `echo "$EPOCHREALTIME" > "$0"`}
	stampLast = []string{"bash", "-c", `: > "$2"; read -r _ < "$1"; echo "$EPOCHREALTIME" > "$0"`}
)

// readStamp reads a stamp file as microseconds.
func readStamp(b *testing.B, path string) int64 {
	s, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	us, err := strconv.ParseInt(strings.ReplaceAll(strings.TrimSpace(string(s)), ".", ""), 10, 64)
	if err != nil {
		b.Fatalf("%s: %q: %v", path, s, err)
	}
	return us
}

// pollUntil polls until cond holds, for at most a minute.
func pollUntil(b *testing.B, what string, cond func() bool) {
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("no %s after a minute", what)
		}
	}
}

// flockWaiters counts the processes /proc/locks shows waiting for a flock
// on the file at path.
func flockWaiters(path string) int {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return 0
	}
	locks, _ := os.ReadFile("/proc/locks")
	suffix := ":" + strconv.FormatUint(st.Ino, 10)
	n := 0
	for line := range strings.Lines(string(locks)) {
		f := strings.Fields(line)
		if len(f) > 6 && f[1] == "->" && f[2] == "FLOCK" && strings.HasSuffix(f[6], suffix) {
			n++
		}
	}
	return n
}

// cliHandoff measures, per iteration, the time from the end of the
// holder's command to the start of the waiter's: the holder runs
// stampLast under the lock, the waiter, started once the holder runs,
// runs stampNow under it. settled reports when the waiter is queued for
// the lock. It reports the median as ns/handoff.
func cliHandoff(b *testing.B, env []string, holder, waiter []string, settled func() bool) {
	dir := b.TempDir()
	fifo := filepath.Join(dir, "go")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		b.Fatal(err)
	}
	env = append(os.Environ(), env...)
	var lat []time.Duration
	for b.Loop() {
		t0, t1, running := filepath.Join(dir, "t0"), filepath.Join(dir, "t1"), filepath.Join(dir, "running")
		os.Remove(running)
		h := exec.Command(holder[0], append(slices.Clone(holder[1:]), append(slices.Clone(stampLast), t0, fifo, running)...)...)
		h.Env = env
		if out, err := startOut(h); err != nil {
			b.Fatalf("holder: %v %s", err, out)
		}
		pollUntil(b, "holder running", func() bool { _, err := os.Stat(running); return err == nil })
		w := exec.Command(waiter[0], append(slices.Clone(waiter[1:]), append(slices.Clone(stampNow), t1)...)...)
		w.Env = env
		wout, err := startOut(w)
		if err != nil {
			b.Fatal(err)
		}
		pollUntil(b, "waiter queued", settled)
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		f.WriteString("go\n")
		f.Close()
		if err := h.Wait(); err != nil {
			b.Fatalf("holder %v: %v", h.Args, err)
		}
		if err := w.Wait(); err != nil {
			b.Fatalf("waiter %v: %v\n%s", w.Args, err, wout)
		}
		d := time.Duration(readStamp(b, t1)-readStamp(b, t0)) * time.Microsecond
		if d < 0 {
			b.Fatalf("the waiter's command ran %s before the holder's ended", -d)
		}
		lat = append(lat, d)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "ns/handoff")
}

// startOut starts cmd with its stdout and stderr in a buffer.
func startOut(cmd *exec.Cmd) (*strings.Builder, error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	return &out, cmd.Start()
}

func BenchmarkCLIHandoff_Coord(b *testing.B) {
	locks := filepath.Join(b.TempDir(), "locks")
	argv := []string{coordBin, "lock", "handoff", "--"}
	cliHandoff(b, []string{"COORD_LOCK_DIR=" + locks}, argv, argv,
		func() bool { return flockWaiters(filepath.Join(locks, "handoff.lock")) > 0 })
}

func BenchmarkCLIHandoff_Flock1(b *testing.B) {
	path := filepath.Join(b.TempDir(), "handoff.lock")
	argv := []string{benchLookPath(b, "flock"), path}
	cliHandoff(b, nil, argv, argv, func() bool { return flockWaiters(path) > 0 })
}

// etcdSettle is how long a waiter on etcd is given to start, connect and
// queue: a new watch can take ~100 ms to be synced (NOTES.md).
const etcdSettle = 300 * time.Millisecond

func BenchmarkCLIHandoffEtcd_Coord(b *testing.B) {
	env := benchEtcdEnv(benchEndpoint(b))
	argv := []string{coordBin, "lock", "clihandoff", "--"}
	cliHandoff(b, env, argv, argv, settleFor(etcdSettle))
}

func BenchmarkCLIHandoffEtcd_Etcdctl(b *testing.B) {
	argv := []string{benchLookPath(b, "etcdctl"), "--endpoints=" + benchEndpoint(b), "lock", "/bench/locks/clihandoff", "--"}
	cliHandoff(b, nil, argv, argv, settleFor(etcdSettle))
}

// settleFor is a settled func that holds d after its first call.
func settleFor(d time.Duration) func() bool {
	var until time.Time
	return func() bool {
		if until.IsZero() {
			until = time.Now().Add(d)
		}
		return time.Now().After(until)
	}
}

// burstSize is how many processes a burst starts at once.
const burstSize = 200

// burst starts burstSize processes of argv at once, each adding one to a
// counter file under its lock, waits for all and reports the time from
// the first start to the last exit as ns/burst; the counter must reach
// burstSize.
func burst(b *testing.B, env []string, argv func(dir string) []string) {
	script := `n=$(cat "$0"); echo $((n+1)) > "$0"`
	for b.Loop() {
		dir := b.TempDir()
		counter := filepath.Join(dir, "counter")
		if err := os.WriteFile(counter, []byte("0\n"), 0o644); err != nil {
			b.Fatal(err)
		}
		args := append(argv(dir), "sh", "-c", script, counter)
		cmds := make([]*exec.Cmd, burstSize)
		start := time.Now()
		for i := range cmds {
			cmds[i] = exec.Command(args[0], args[1:]...)
			cmds[i].Env = append(os.Environ(), env...)
			cmds[i].Env = append(cmds[i].Env, "COORD_LOCK_DIR="+filepath.Join(dir, "locks"))
			if err := cmds[i].Start(); err != nil {
				b.Fatal(err)
			}
		}
		failed := 0
		for _, c := range cmds {
			if c.Wait() != nil {
				failed++
			}
		}
		took := time.Since(start)
		if n := strings.TrimSpace(string(must(os.ReadFile(counter)))); failed > 0 || n != strconv.Itoa(burstSize) {
			b.Fatalf("%d of %d failed, counter %s", failed, burstSize, n)
		}
		b.ReportMetric(float64(took.Nanoseconds()), "ns/burst")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func BenchmarkBurst_Coord(b *testing.B) {
	burst(b, nil, func(string) []string { return []string{coordBin, "lock", "--timeout", "10m", "burst", "--"} })
}

func BenchmarkBurst_Flock1(b *testing.B) {
	flock := benchLookPath(b, "flock")
	burst(b, nil, func(dir string) []string { return []string{flock, filepath.Join(dir, "burst.lock")} })
}

// BenchmarkStatus5000_Coord is `coord status` in a lock directory of 5000
// lock files, three of them held.
func BenchmarkStatus5000_Coord(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "locks")
	l, err := filelock.New(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	var want []string
	for i := range 5000 {
		name := fmt.Sprintf("toolchain/llvm-%04d", i)
		k, err := l.Lock(ctx, name, filelock.Exclusive, []byte(`{"pid":1}`))
		if err != nil {
			b.Fatal(err)
		}
		if i%1700 == 0 {
			want = append(want, name)
			defer k.Unlock()
			continue
		}
		k.Unlock()
	}
	env := append(os.Environ(), "COORD_LOCK_DIR="+dir)
	for b.Loop() {
		cmd := exec.Command(coordBin, "status")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("%v: %v\n%s", cmd.Args, err, out)
		}
		if lines := strings.Count(string(out), "\n"); lines != 1+len(want) {
			b.Fatalf("status shows %d lines; want a header and %q:\n%s", lines, want, out)
		}
		for _, name := range want {
			if !strings.Contains(string(out), name+" ") {
				b.Fatalf("status does not show %s:\n%s", name, out)
			}
		}
	}
}
