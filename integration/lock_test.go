//go:build unix

package integration_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// 1. Increments under `coord lock` from many processes are never lost.
func TestCLICounter(t *testing.T) {
	eachBackend(t, func(t *testing.T, be *backend) {
		cliCounter(t, newWorld(t, be))
	})
}

// cliCounter runs 8 shells × 25 `coord lock` increments of a counter file
// in w and checks that none was lost; extra is added to their environment.
func cliCounter(t *testing.T, w *world, extra ...string) {
	const procs, iters = 8, 25
	counter := w.path("counter")
	if err := os.WriteFile(counter, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	w.runCLILoops(procs, iters, "counter", `n=$(cat counter); echo $((n+1)) > counter`, extra...)
	if got := mustInt(t, counter); got != procs*iters {
		t.Fatalf("counter = %d after %d processes × %d `coord lock` increments, want %d", got, procs, iters, procs*iters)
	}
	t.Logf("%d `coord lock` runs in %s", procs*iters, time.Since(start).Round(time.Millisecond))
}

// 2. Library locks exclude each other across processes: no lost increment,
// never two processes inside the critical section.
func TestLibraryCounter(t *testing.T) {
	eachBackend(t, testLibraryCounter)
}

func testLibraryCounter(t *testing.T, be *backend) {
	const procs, iters = 8, 25
	w := newWorld(t, be)
	counter := w.path("counter")
	w.runWorkers(procs, iters)
	if got := mustInt(t, counter); got != procs*iters {
		t.Fatalf("counter = %d after %d processes × %d library increments, want %d", got, procs, iters, procs*iters)
	}
	log := lines(t, w.path("inout"))
	if len(log) != 2*procs*iters {
		t.Fatalf("enter/leave log has %d lines, want %d", len(log), 2*procs*iters)
	}
	// Replay the log: how many were inside at once, and how long each
	// handoff to another process took (its "+" after the previous "-").
	inside, most := 0, 0
	var handoffs []time.Duration
	var prevPID string
	var firstTS, prevTS int64
	for _, l := range log {
		f := strings.Fields(l)
		ts, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if firstTS == 0 {
			firstTS = ts
		}
		if f[0] == "-" {
			inside--
		} else {
			inside++
			if prevPID != "" && prevPID != f[1] {
				handoffs = append(handoffs, time.Duration(ts-prevTS))
			}
		}
		most = max(most, inside)
		prevPID, prevTS = f[1], ts
	}
	if most != 1 {
		t.Fatalf("up to %d processes were inside the critical section at once, want at most 1", most)
	}
	total := time.Duration(prevTS - firstTS)
	slices.Sort(handoffs)
	var sum time.Duration
	for _, h := range handoffs {
		sum += h
	}
	if len(handoffs) > 0 {
		t.Logf("%d acquisitions by %d processes in %s; %d handoffs between processes: mean %s, median %s, max %s",
			procs*iters, procs, total.Round(time.Millisecond), len(handoffs), (sum / time.Duration(len(handoffs))).Round(time.Microsecond),
			handoffs[len(handoffs)/2].Round(time.Microsecond), handoffs[len(handoffs)-1].Round(time.Microsecond))
	}
}

// parentName returns the command name of pid's parent (Linux).
func parentName(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	comm, err := os.ReadFile("/proc/" + f[1] + "/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(comm))
}

// 3. A holder killed with SIGKILL frees the lock — at once on the file
// backend, once its lease expires on etcd — and its command dies with it
// at once on both (Linux: parent-death signal and the guard).
func TestKilledHolderReleases(t *testing.T) {
	eachBackend(t, func(t *testing.T, be *backend) { testKilledHolderReleases(t, be, coordBin) })
	// Without coord-guard beside it, coord guards its command itself.
	t.Run("file-coord-as-guard", func(t *testing.T) {
		lone := filepath.Join(t.TempDir(), "coord")
		b, err := os.ReadFile(coordBin)
		if err == nil {
			err = os.WriteFile(lone, b, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
		testKilledHolderReleases(t, backends[0], lone)
	})
}

func testKilledHolderReleases(t *testing.T, be *backend, bin string) {
	w := newWorld(t, be)
	// The file lock goes with the process. An etcd lock goes with its lease:
	// after at most the TTL (less the time since the last keep-alive) plus
	// the server's expiry scan (≤ 0.5 s, NOTES.md). Either way coord's own
	// start on a loaded machine adds loadSlack (quiet: tens of ms).
	within := loadSlack
	if be.etcd() {
		within = etcdTTL + loadSlack
	}
	// The command starts a process of its own: it must die too.
	holder := start(t, w.root, w.env(), bin, "lock", "k", "--", "sh", "-c", "sleep 60 & echo $! > grandchild; echo $$ > pidfile; wait")
	child := childPID(t, w.path("pidfile"))
	grandchild := childPID(t, w.path("grandchild"))
	if runtime.GOOS == "linux" {
		// The command's parent is its guard: coord-guard where it is
		// installed beside coord, else coord itself.
		want := "coord-guard"
		if _, err := os.Stat(filepath.Join(filepath.Dir(bin), want)); err != nil {
			want = "coord"
		}
		if got := parentName(t, child); got != want {
			t.Fatalf("the command's parent is %q, want %q", got, want)
		}
	}

	killed := time.Now()
	if err := holder.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	next := w.startCoord("lock", "--timeout", (within + 5*time.Second).String(), "k", "--", "true")
	if runtime.GOOS == "linux" {
		goneAfter := waitGone(t, child, loadSlack).Sub(killed)
		t.Logf("child %d gone %s after the SIGKILL of coord", child, goneAfter.Round(time.Microsecond))
		goneAfter = waitGone(t, grandchild, loadSlack).Sub(killed)
		t.Logf("grandchild %d gone %s after the SIGKILL of coord", grandchild, goneAfter.Round(time.Microsecond))
	}
	if code := next.wait(within + 10*time.Second); code != 0 {
		t.Fatalf("next `coord lock k` exited %d after the holder was killed, want 0:\n%s", code, next.output())
	}
	took := next.end.Sub(killed)
	if took > within {
		t.Fatalf("next holder acquired and exited %s after the kill, want within %s", took, within)
	}
	t.Logf("next `coord lock` acquired and exited %s after the kill (bound %s)", took.Round(time.Microsecond), within)
	if code := holder.wait(5 * time.Second); code != -1 {
		t.Fatalf("killed holder exited %d, want -1 (killed by a signal)", code)
	}
}

// 4. A timed-out wait exits 75 in time and names the holder.
func TestTimeoutNamesHolder(t *testing.T) {
	eachBackend(t, testTimeoutNamesHolder)
}

func testTimeoutNamesHolder(t *testing.T, be *backend) {
	w := newWorld(t, be)
	holder := w.startCoord("lock", "t", "--", "sh", "-c", "echo $$ > held; exec sleep 30")
	childPID(t, w.path("held"))
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	code, out := w.runCoord("lock", "--timeout", "300ms", "t", "--", "true")
	took := time.Since(start)
	if code != 75 {
		t.Fatalf("`coord lock --timeout 300ms` on a held lock exited %d, want 75:\n%s", code, out)
	}
	if took > 300*time.Millisecond+loadSlack {
		t.Fatalf("`coord lock --timeout 300ms` took %s, want about 300ms, far from the 30s default", took)
	}
	pid := regexp.MustCompile(fmt.Sprintf(`\b%d\b`, holder.cmd.Process.Pid))
	if !pid.MatchString(out) || !strings.Contains(out, host) {
		t.Fatalf("timeout message does not name holder pid %d on host %q:\n%s", holder.cmd.Process.Pid, host, out)
	}
	t.Logf("timed out in %s: %s", took.Round(time.Millisecond), strings.TrimSpace(out))
}

// 7. Shared holders overlap; an exclusive one waits for all of them.
func TestSharedThenExclusive(t *testing.T) {
	eachBackend(t, testSharedThenExclusive)
}

func testSharedThenExclusive(t *testing.T, be *backend) {
	w := newWorld(t, be)
	// Each shared holder stays until the other has written its start (at
	// most 10 s), so that shared locks overlap whenever they can, however
	// slowly the second process starts on a loaded host. -s, not -e: the
	// shell makes the file before date has written the time.
	const shared = `date +%s%N > start.$1; n=0; until [ -s start.$2 ] || [ $n -ge 100 ]; do sleep 0.1; n=$((n+1)); done; date +%s%N > end.$1`
	a := w.startCoord("lock", "--shared", "s", "--", "sh", "-c", shared, "sh", "a", "b")
	b := w.startCoord("lock", "--shared", "s", "--", "sh", "-c", shared, "sh", "b", "a")
	waitFor(t, w.path("start.a"), 10*time.Second)
	waitFor(t, w.path("start.b"), 10*time.Second)
	x := w.startCoord("lock", "--timeout", "10s", "s", "--", "sh", "-c", "date +%s%N > start.x")
	for name, p := range map[string]*proc{"shared a": a, "shared b": b, "exclusive": x} {
		if code := p.wait(15 * time.Second); code != 0 {
			t.Fatalf("%s exited %d, want 0:\n%s", name, code, p.output())
		}
	}
	ns := func(f string) int64 { return mustInt(t, w.path(f)) }
	startA, endA, startB, endB, startX := ns("start.a"), ns("end.a"), ns("start.b"), ns("end.b"), ns("start.x")
	if startB >= endA || startA >= endB {
		t.Fatalf("shared holders did not overlap: a ran [%d, %d], b ran [%d, %d]", startA, endA, startB, endB)
	}
	if last := max(endA, endB); startX < last {
		t.Fatalf("exclusive holder started at %d, %s before the last shared holder ended (%d)", startX, time.Duration(last-startX), last)
	}
	t.Logf("shared holders overlapped %s; exclusive started %s after the last one ended",
		time.Duration(min(endA, endB)-max(startA, startB)).Round(time.Millisecond), time.Duration(startX-max(endA, endB)).Round(time.Microsecond))
}

// 8. Fencing tokens strictly increase in acquisition order, through the
// library and through the CLI.
func TestFencingTokens(t *testing.T) {
	eachBackend(t, func(t *testing.T, be *backend) {
		w := newWorld(t, be)
		w.runWorkers(4, 50)
		checkIncreasing(t, w.path("tokens"), 4*50, "library, 4 processes × 50")

		w = newWorld(t, be)
		w.runCLILoops(2, 10, "tk", `echo $COORD_FENCING_TOKEN >> tokens`)
		checkIncreasing(t, w.path("tokens"), 2*10, "CLI, 2 processes × 10")
	})
}

// checkIncreasing checks that path holds want strictly increasing integers.
func checkIncreasing(t *testing.T, path string, want int, what string) {
	t.Helper()
	ls := lines(t, path)
	if len(ls) != want {
		t.Fatalf("%s: %d tokens, want %d", what, len(ls), want)
	}
	var prev int64
	for i, l := range ls {
		v, err := strconv.ParseInt(l, 10, 64)
		if err != nil {
			t.Fatalf("%s: token %d: %v", what, i, err)
		}
		if v <= prev {
			t.Fatalf("%s: token %d is %d after %d; want %d strictly increasing tokens", what, i, v, prev, want)
		}
		prev = v
	}
}

// 9. SIGTERM to coord reaches the command; coord exits with its status and
// the lock is free.
func TestSIGTERMForwarded(t *testing.T) {
	eachBackend(t, testSIGTERMForwarded)
}

func testSIGTERMForwarded(t *testing.T, be *backend) {
	w := newWorld(t, be)
	p := w.startCoord("lock", "sig", "--", "sh", "-c", `trap "echo term > got; exit 3" TERM; echo $$ > ready; sleep 30 & wait`)
	childPID(t, w.path("ready"))
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(5 * time.Second); code != 3 {
		t.Fatalf("coord exited %d after SIGTERM, want 3 (the command's status):\n%s", code, p.output())
	}
	if got, _ := os.ReadFile(w.path("got")); string(got) != "term\n" {
		t.Fatalf("the command recorded %q, want %q: SIGTERM did not reach it", got, "term\n")
	}
	if code, out := w.runCoord("lock", "--timeout", "0", "sig", "--", "true"); code != 0 {
		t.Fatalf("`coord lock --timeout 0 sig` right after exited %d, want 0 (lock free):\n%s", code, out)
	}
}

// 10. Hostile names map inside the lock directory (file) or the key prefix
// (etcd), or are refused; nothing outside is written. The planted symlink
// is file-only: etcd keys are not files and cannot be links.
func TestHostileNames(t *testing.T) {
	eachBackend(t, testHostileNames)
}

func testHostileNames(t *testing.T, be *backend) {
	w := newWorld(t, be)
	dir, root := w.dir, w.root
	victim := w.path("victim")
	const precious = "precious\n"
	if err := os.WriteFile(victim, []byte(precious), 0o644); err != nil {
		t.Fatal(err)
	}
	var planted string
	if !be.etcd() {
		// Plant a symlink where the lock file of "planted" lives.
		if code, out := w.runCoord("lock", "planted", "--", "true"); code != 0 {
			t.Fatalf("`coord lock planted` exited %d, want 0:\n%s", code, out)
		}
		names := dirNames(t, dir)
		if len(names) != 1 {
			t.Fatalf("lock dir holds %q after one lock, want 1 file", names)
		}
		planted = names[0]
		if err := os.Remove(filepath.Join(dir, planted)); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(victim, filepath.Join(dir, planted)); err != nil {
			t.Fatal(err)
		}
	}
	outside := snapshot(t, root, dir)
	var fromRev int64
	if be.etcd() {
		fromRev = etcdRevision(t, be)
	}

	const refused, notZero = 64, -1
	for _, tc := range []struct {
		name string
		want int
	}{
		{"../x", 0}, {"/abs", 0}, {"", refused}, {".", 0}, {"..", 0}, {"a/../../b", 0},
		{"\x01\x1b[31m", 0}, {strings.Repeat("n", 5000), refused}, {strings.Repeat("n", 300), 0},
		{"\xff\xfe", 0}, {"a%2Fb", 0}, {"planted", notZero},
	} {
		if tc.want == notZero && be.etcd() {
			continue
		}
		code, out := w.runCoord("lock", tc.name, "--", "true")
		label := fmt.Sprintf("name %.40q (%d bytes)", tc.name, len(tc.name))
		switch {
		case tc.want == notZero && (code == 0 || code < 0):
			t.Errorf("%s over a planted symlink: exit %d, want a non-zero status:\n%s", label, code, out)
		case tc.want != notZero && code != tc.want:
			t.Errorf("%s: exit %d, want %d:\n%s", label, code, tc.want, out)
		}
		if strings.Contains(out, "panic") {
			t.Errorf("%s: output mentions a panic:\n%s", label, out)
		}
		if !be.etcd() {
			for _, e := range dirEntries(t, dir) {
				if !e.Type().IsRegular() && !(e.Name() == planted && e.Type() == fs.ModeSymlink) {
					t.Errorf("%s: lock dir entry %q is %v, want a regular file", label, e.Name(), e.Type())
				}
			}
		}
		if now := snapshot(t, root, dir); !slices.Equal(now, outside) {
			t.Errorf("%s: files outside the lock dir changed from %q to %q", label, outside, now)
		}
		if b, _ := os.ReadFile(victim); string(b) != precious {
			t.Errorf("%s: victim file now holds %q, want %q", label, b, precious)
		}
	}
	if be.etcd() {
		if _, err := os.Lstat(dir); !os.IsNotExist(err) {
			t.Errorf("on etcd the lock dir %s was touched (%v), want it never created", dir, err)
		}
		// Every key written since the first name lies under the world's
		// lock prefix (tests do not run in parallel: nothing else writes).
		puts := etcdPutsSince(t, be, fromRev)
		for _, k := range puts {
			if !strings.HasPrefix(k, w.prefix+"/locks/") {
				t.Errorf("key %q written outside %s/locks/", k, w.prefix)
			}
		}
		t.Logf("%d keys written, all under %s/locks/", len(puts), w.prefix)
		return
	}
	t.Logf("lock dir after all names: %d files, all regular but the planted link", len(dirNames(t, dir)))
}

// snapshot lists every path under root, with its size, except inside skip.
func snapshot(t *testing.T, root, skip string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == skip {
			return fs.SkipDir
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %v %d", path, fi.Mode(), fi.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// 3b. Lock.File keeps the lock held in a child after its holder died
// without unlocking; the CLI's guard relies on it. File-only.
func TestLockFileOutlivesHolder(t *testing.T) {
	eachBackend(t, testLockFileOutlivesHolder)
}

func testLockFileOutlivesHolder(t *testing.T, be *backend) {
	if be.etcd() {
		t.Skip("file-only: Lock.File hands a child the flock descriptor; an etcd lock lives with its lease, which no child can inherit (File returns ErrUnsupported)")
	}
	w := newWorld(t, be)
	dir := w.dir
	wk := start(t, w.root, w.env(envWorker+"=inherit", envWorkerDir+"="+dir), os.Args[0])
	if code := wk.wait(procTimeout); code != 0 {
		t.Fatalf("worker exited %d:\n%s", code, wk.output())
	}
	sleeper := childPID(t, w.path("sleeper"))
	t.Cleanup(func() { syscall.Kill(sleeper, syscall.SIGKILL) })
	if code, out := w.runCoord("lock", "--timeout", "0", "inherit", "--", "true"); code != 75 {
		t.Fatalf("holder dead, its child alive: `coord lock --timeout 0` exited %d, want 75:\n%s", code, out)
	}
	syscall.Kill(sleeper, syscall.SIGKILL)
	waitGone(t, sleeper, loadSlack)
	if code, out := w.runCoord("lock", "--timeout", "1s", "inherit", "--", "true"); code != 0 {
		t.Fatalf("after the child died, `coord lock` exited %d, want 0:\n%s", code, out)
	}
}

// At a terminal the command stays in coord's process group, so that it can
// read the terminal; elsewhere it gets a group of its own (led by the
// guard on Linux) that signals and clean-up reach as a whole.
func TestProcessGroups(t *testing.T) {
	script, err := exec.LookPath("script")
	if err != nil || runtime.GOOS != "linux" {
		t.Skip("needs util-linux script(1) and /proc")
	}
	eachBackend(t, func(t *testing.T, be *backend) { testProcessGroups(t, be, script) })
}

func testProcessGroups(t *testing.T, be *backend, script string) {
	w := newWorld(t, be)
	report := `read v; echo "got=$v pg=$(cut -d" " -f5 /proc/$$/stat) coord=$(cut -d" " -f5 /proc/$COORD_PID/stat)"`
	groups := regexp.MustCompile(`got=(\S*) pg=(\d+) coord=(\d+)`)

	// Under script(1), coord's stdin is a terminal.
	cmd := exec.Command(script, "-qec", coordBin+" lock tty -- sh -c '"+report+"'", "/dev/null")
	cmd.Dir, cmd.Env, cmd.Stdin = w.root, w.env(), strings.NewReader("hello\n")
	out, err := cmd.CombinedOutput()
	m := groups.FindStringSubmatch(string(out))
	if err != nil || m == nil || m[1] != "hello" || m[2] != m[3] {
		t.Fatalf("at a terminal: %v, output %q; want the command to read \"hello\" in coord's group", err, out)
	}

	// With a terminal but stdin elsewhere, the command still stays in
	// coord's group: in a background group of its own, it would be stopped
	// the moment it touched the terminal, and the lock held forever.
	cmd = exec.Command(script, "-qec", coordBin+" lock tty2 -- sh -c '"+strings.ReplaceAll(report, "read v", "read v </dev/tty")+"' </dev/null", "/dev/null")
	cmd.Dir, cmd.Env, cmd.Stdin = w.root, w.env(), strings.NewReader("hello\n")
	done := make(chan struct{})
	go func() {
		defer close(done)
		out, err = cmd.CombinedOutput()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("with a terminal and stdin from /dev/null, the command hung (stopped in the background?): %q", out)
	}
	m = groups.FindStringSubmatch(string(out))
	if err != nil || m == nil || m[1] != "hello" || m[2] != m[3] {
		t.Fatalf("terminal, stdin /dev/null: %v, output %q; want the command to read \"hello\" from /dev/tty in coord's group", err, out)
	}

	// Without a terminal: a group of its own.
	code, outs := w.runCoord("lock", "notty", "--", "sh", "-c", "echo hello | { "+report+"; }")
	m = groups.FindStringSubmatch(outs)
	if code != 0 || m == nil || m[2] == m[3] {
		t.Fatalf("without a terminal: exit %d, output %q; want the command in a group of its own", code, outs)
	}
}

// `coord status --json` names the holder, its token and the waiters on every
// backend, and the etcd password shows nowhere: not in status, not to CMD.
func TestStatus(t *testing.T) {
	eachBackend(t, func(t *testing.T, be *backend) {
		w := newWorld(t, be)
		const secret = "hunter2-not-shown"
		env := w.env("COORD_ETCD_PASSWORD=" + secret)
		holder := start(t, w.root, env, coordBin, "lock", "st", "--", "sh", "-c", `env > child.env; echo $$ > held; exec sleep 30`)
		childPID(t, w.path("held"))
		waiter := start(t, w.root, env, coordBin, "lock", "--timeout", "20s", "st", "--", "true")
		w.waitWaiters("st", 1, 10*time.Second)
		p := start(t, w.root, env, coordBin, "status", "--json")
		if code := p.wait(10 * time.Second); code != 0 {
			t.Fatalf("status exited %d:\n%s", code, p.output())
		}
		out := p.output()
		var locks []struct {
			Name   string `json:"name"`
			State  string `json:"state"`
			Token  int64  `json:"token"`
			Holder *struct {
				Host string `json:"host"`
				PID  int    `json:"pid"`
			} `json:"holder"`
			Waiters *int `json:"waiters"`
		}
		if err := json.Unmarshal([]byte(out), &locks); err != nil {
			t.Fatalf("status --json: %v:\n%s", err, out)
		}
		host, _ := os.Hostname()
		if len(locks) != 1 || locks[0].Name != "st" || locks[0].State != "exclusive" || locks[0].Token <= 0 ||
			locks[0].Holder == nil || locks[0].Holder.PID != holder.cmd.Process.Pid || locks[0].Holder.Host != host ||
			locks[0].Waiters == nil || *locks[0].Waiters != 1 {
			t.Fatalf("status --json = %s; want st held exclusively by pid %d on %s with 1 waiter", out, holder.cmd.Process.Pid, host)
		}
		if strings.Contains(out, secret) {
			t.Fatal("status shows the etcd password")
		}
		if b, _ := os.ReadFile(w.path("child.env")); strings.Contains(string(b), secret) {
			t.Fatal("the command sees the etcd password")
		}
		holder.cmd.Process.Signal(syscall.SIGTERM)
		if code := waiter.wait(20 * time.Second); code != 0 {
			t.Fatalf("waiter exited %d:\n%s", code, waiter.output())
		}
	})
}
