//go:build windows

// On Windows the contract suite cannot run (its commands are sh scripts):
// this file is the Windows contract instead, on the file backend, with
// coord.exe processes whose commands are this test binary re-executed
// (envHelper). make test-windows runs it under Wine.
package integration_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/windows"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/wintest"
)

const (
	// envBin names the coord.exe to test; unset, TestMain builds one.
	envBin = "COORD_TEST_BIN"
	// envHelper makes this binary a command under coord: its role.
	envHelper = "COORD_TEST_HELPER"
	// envFile is the helper's file: where it says it runs (see helper).
	envFile = "COORD_TEST_FILE"
)

// coordBin is the coord.exe under test.
var coordBin string

// procTimeout bounds every process a test starts: under Wine beside two
// busy loops, 20 coord.exe locks in turn took 53 s.
const procTimeout = 3 * time.Minute

func TestMain(m *testing.M) {
	if role := os.Getenv(envHelper); role != "" {
		if err := helper(role, os.Getenv(envFile)); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	coordBin = os.Getenv(envBin)
	if coordBin == "" {
		tmp, err := os.MkdirTemp("", "coord-windows-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		out, err := exec.Command("go", "build", "-o", tmp, "github.com/toolchainkit/coord/cmd/coord").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building coord: %v\n%s", err, out)
			os.Exit(1)
		}
		coordBin = filepath.Join(tmp, "coord.exe")
		defer wintest.RemoveAll(tmp)
	}
	code := m.Run()
	if os.Getenv(envBin) == "" {
		wintest.RemoveAll(filepath.Dir(coordBin))
	}
	os.Exit(code)
}

// helper is this binary run by coord as CMD. Each role first writes
// "pid token coord-pid" to file (through a rename, so that it appears
// whole), then:
//
//	say        exits 0
//	hold       holds on until killed (at most procTimeout)
//	count      increments the number in file's directory's "counter",
//	           failing if another count runs at the same time
//	download   appends its pid to file's directory's "runs" and writes
//	           "payload" into COORD_DEST, slowly
//	hang       writes "partial" into COORD_DEST, then waits to be killed
//	interrupt  waits for ^C or ^Break, then writes file+".interrupted" and
//	           exits 3
//	ignore     ignores ^C and ^Break, and waits to be killed
func helper(role, file string) error {
	switch role {
	case "interrupt", "ignore":
		// Before saying it runs, so that no event comes before this.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt)
		defer signal.Stop(sig)
		if err := say(file); err != nil {
			return err
		}
		for range sig {
			if role == "interrupt" {
				os.WriteFile(file+".interrupted", nil, 0o644)
				os.Exit(3)
			}
		}
		return nil
	}
	if err := say(file); err != nil {
		return err
	}
	dir := filepath.Dir(file)
	switch role {
	case "say":
		return nil
	case "hold":
		time.Sleep(procTimeout)
		return nil
	case "count":
		inside := filepath.Join(dir, "inside")
		f, err := os.OpenFile(inside, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("another holder inside: %w", err)
		}
		f.Close()
		b, _ := os.ReadFile(filepath.Join(dir, "counter"))
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(10 * time.Millisecond) // widen the window a broken lock would open
		if err := os.WriteFile(filepath.Join(dir, "counter"), []byte(strconv.Itoa(n+1)), 0o644); err != nil {
			return err
		}
		if err := appendLine(filepath.Join(dir, "tokens"), os.Getenv("COORD_FENCING_TOKEN")); err != nil {
			return err
		}
		return os.Remove(inside)
	case "download":
		if err := appendLine(filepath.Join(dir, "runs"), strconv.Itoa(os.Getpid())); err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond) // let the other downloads queue
		return os.WriteFile(filepath.Join(os.Getenv("COORD_DEST"), "payload"), []byte("whole"), 0o644)
	case "hang":
		if err := os.WriteFile(filepath.Join(os.Getenv("COORD_DEST"), "payload"), []byte("part"), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(file+".partial", nil, 0o644); err != nil {
			return err
		}
		time.Sleep(procTimeout)
		return errors.New("not killed")
	}
	return fmt.Errorf("unknown role %q", role)
}

// say writes "pid token coord-pid" to file, whole.
func say(file string) error {
	line := fmt.Sprintf("%d %s %s", os.Getpid(), os.Getenv("COORD_FENCING_TOKEN"), os.Getenv("COORD_PID"))
	if err := os.WriteFile(file+".tmp", []byte(line), 0o644); err != nil {
		return err
	}
	return os.Rename(file+".tmp", file)
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(f, line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// waitFile waits until path exists, at most d.
func waitFile(path string, d time.Duration) error {
	for deadline := time.Now().Add(d); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not there after %s", path, d)
		}
	}
}

// said waits for a helper's file and returns its pid, token and coord's
// pid. A file just renamed into place can refuse to open for a moment
// (sharing violation): it is read again.
func said(t *testing.T, file string) (pid int, token int64, coordPID int) {
	t.Helper()
	for deadline := time.Now().Add(procTimeout); ; time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile(file)
		if err == nil {
			if _, err = fmt.Sscan(string(b), &pid, &token, &coordPID); err == nil {
				return pid, token, coordPID
			}
			err = fmt.Errorf("%q: %w", b, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", file, err)
		}
	}
}

// env is a coord process's environment: the file backend on locks.
type env struct {
	locks string
	work  string // where helpers' files go
}

func newEnv(t *testing.T) env {
	root := wintest.TempDir(t)
	e := env{locks: filepath.Join(root, "locks"), work: filepath.Join(root, "work")}
	if err := os.Mkdir(e.work, 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

// cli returns `coord.exe args...` on e's lock directory.
func (e env) cli(args ...string) *exec.Cmd {
	cmd := exec.Command(coordBin, args...)
	cmd.Env = append(os.Environ(), "COORD_BACKEND=file", "COORD_LOCK_DIR="+e.locks, "COORD_CONFIG=NUL")
	return cmd
}

// coord returns `coord.exe args... -- <this binary>` with role and file
// given to the helper.
func (e env) coord(role, file string, args ...string) *exec.Cmd {
	self, _ := os.Executable()
	cmd := e.cli(append(args, "--", self)...)
	cmd.Env = append(cmd.Env, envHelper+"="+role, envFile+"="+file)
	return cmd
}

// run runs cmd, bounded by procTimeout, and returns its exit status (-1
// if it could not be run) and stderr. Any goroutine may call it.
func run(t *testing.T, cmd *exec.Cmd) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Error(err)
		return -1, ""
	}
	timer := time.AfterFunc(procTimeout, func() { cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Error(err)
		return -1, stderr.String()
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// start starts cmd and kills it when t ends, if it still runs.
func start(t *testing.T, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return cmd
}

// alive reports whether process pid still runs.
func alive(pid int) bool {
	h, err := windows.OpenProcess(windows.SYNCHRONIZE, false, uint32(pid))
	if err != nil {
		return false
	}
	defer windows.CloseHandle(h)
	ev, _ := windows.WaitForSingleObject(h, 0)
	return ev == uint32(windows.WAIT_TIMEOUT)
}

// gone returns how long after since process pid was seen gone; it fails
// t after d.
func gone(t *testing.T, pid int, since time.Time, d time.Duration) time.Duration {
	t.Helper()
	for alive(pid) {
		if time.Since(since) > d {
			t.Fatalf("process %d still runs %s on", pid, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(since)
}

// Four coord.exe processes, five exclusive locks each: never two inside,
// the counter counts them all, and each holder's token is above the last.
func TestWindowsExclusion(t *testing.T) {
	e := newEnv(t)
	const procs, iters = 4, 5
	began := time.Now()
	var wg sync.WaitGroup
	for p := range procs {
		wg.Go(func() {
			for i := range iters {
				cmd := e.coord("count", filepath.Join(e.work, fmt.Sprintf("said-%d-%d", p, i)), "lock", "--timeout", "150s", "counter")
				if code, stderr := run(t, cmd); code != 0 {
					t.Errorf("coord lock counter: exit %d: %s", code, stderr)
				}
			}
		})
	}
	wg.Wait()
	b, _ := os.ReadFile(filepath.Join(e.work, "counter"))
	b = bytes.TrimSpace(b)
	if got := string(b); got != strconv.Itoa(procs*iters) {
		t.Errorf("counter = %s; want %d", got, procs*iters)
	}
	tb, _ := os.ReadFile(filepath.Join(e.work, "tokens"))
	var tokens []int64
	for _, f := range strings.Fields(string(tb)) {
		n, _ := strconv.ParseInt(f, 10, 64)
		tokens = append(tokens, n)
	}
	rising := len(tokens) == procs*iters && tokens[0] > 0
	for i := 1; i < len(tokens); i++ {
		rising = rising && tokens[i] > tokens[i-1]
	}
	if !rising {
		t.Errorf("tokens %v; want %d, each above the one before", tokens, procs*iters)
	}
	t.Logf("%d processes × %d locks in %s: counter %s, %d tokens rising", procs, iters, time.Since(began).Round(time.Millisecond), b, len(tokens))
}

// Two shared holders at once; an exclusive try meanwhile exits 75 and
// names a holder: coord's pid, this host.
func TestWindowsSharedAndHolderNamed(t *testing.T) {
	e := newEnv(t)
	a, b := filepath.Join(e.work, "a"), filepath.Join(e.work, "b")
	start(t, e.coord("hold", a, "lock", "--shared", "s"))
	start(t, e.coord("hold", b, "lock", "--shared", "--timeout", "0", "s"))
	_, _, coordA := said(t, a)
	_, _, coordB := said(t, b) // both inside at once
	host, _ := os.Hostname()
	// Shared holders write no record, and Windows does not list who
	// holds a lock: the message names nobody.
	code, stderr := run(t, e.coord("hold", filepath.Join(e.work, "c"), "lock", "--timeout", "0", "s"))
	if code != 75 {
		t.Errorf("exclusive try while shared (coord pids %d, %d): exit %d, %q; want 75", coordA, coordB, code, stderr)
	}

	e2 := newEnv(t)
	x := filepath.Join(e2.work, "x")
	start(t, e2.coord("hold", x, "lock", "x"))
	_, _, holder := said(t, x)
	code, stderr = run(t, e2.coord("hold", filepath.Join(e2.work, "y"), "lock", "--timeout", "0", "x"))
	want := fmt.Sprintf("held by pid %d on host %s", holder, host)
	if code != 75 || !strings.Contains(stderr, want) {
		t.Errorf("exclusive try while held: exit %d, %q; want 75 and %q", code, stderr, want)
	}
	t.Logf("exit %d: %s", code, strings.TrimSpace(stderr))
}

// A holder's coord.exe killed (TerminateProcess): its command dies with
// it (job object), and a waiter gets the lock.
func TestWindowsKilledHolder(t *testing.T) {
	e := newEnv(t)
	file := filepath.Join(e.work, "held")
	holder := start(t, e.coord("hold", file, "lock", "k"))
	child, token, _ := said(t, file)

	m, err := coord.New(context.Background(), coord.Config{Backend: coord.BackendFile, LockDir: e.locks})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// The waiter tries once (busy), then waits: it is waiting, or about
	// to, when the holder is killed. (Windows does not list waiters.)
	tried, granted := make(chan struct{}), make(chan time.Time, 1)
	go func() {
		if _, err := m.Lock(context.Background(), "k", coord.WithTimeout(0)); !errors.Is(err, coord.ErrTimeout) {
			t.Errorf("a try while held = %v; want ErrTimeout", err)
		}
		close(tried)
		l, err := m.Lock(context.Background(), "k", coord.WithTimeout(procTimeout))
		if err != nil {
			t.Error(err)
			granted <- time.Time{}
			return
		}
		granted <- time.Now()
		if l.Token() <= token {
			t.Errorf("token %d after the killed holder's %d", l.Token(), token)
		}
		l.Unlock()
	}()
	<-tried
	killed := time.Now()
	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	died := gone(t, child, killed, 10*time.Second)
	at := <-granted
	if at.IsZero() {
		return
	}
	t.Logf("kill → next grant %s, → the command gone %s", at.Sub(killed).Round(time.Millisecond), died.Round(time.Millisecond))
}

// Four racing downloads: one runs CMD, all exit 0, DEST is whole.
func TestWindowsDownloadOnce(t *testing.T) {
	e := newEnv(t)
	dest := filepath.Join(e.work, "sdk")
	began := time.Now()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			cmd := e.coord("download", filepath.Join(e.work, fmt.Sprint("said-", i)), "download", "sdk", dest)
			if code, stderr := run(t, cmd); code != 0 {
				t.Errorf("download %d: exit %d: %s", i, code, stderr)
			}
		})
	}
	wg.Wait()
	b, _ := os.ReadFile(filepath.Join(e.work, "runs"))
	n := len(strings.Fields(string(b)))
	if n != 1 {
		t.Errorf("CMD ran %d times; want once", n)
	}
	t.Logf("4 racing downloads done in %s: CMD ran %d time(s)", time.Since(began).Round(time.Millisecond), n)
	if b, err := os.ReadFile(filepath.Join(dest, "payload")); string(b) != "whole" {
		t.Errorf("DEST's payload = %q, %v", b, err)
	}
}

// coord.exe killed mid-download: no partial DEST, its command gone; the
// next download runs and completes DEST.
func TestWindowsCrashMidDownload(t *testing.T) {
	e := newEnv(t)
	dest := filepath.Join(e.work, "sdk")
	file := filepath.Join(e.work, "hang")
	dl := start(t, e.coord("hang", file, "download", "sdk", dest))
	child, _, _ := said(t, file)
	if err := waitFile(file+".partial", procTimeout); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	dl.Process.Kill()
	died := gone(t, child, killed, 10*time.Second)
	if _, err := os.Stat(dest); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after the crash DEST: %v; want none", err)
	}
	t.Logf("kill → the command gone %s; no DEST", died.Round(time.Millisecond))
	code, stderr := run(t, e.coord("download", filepath.Join(e.work, "again"), "download", "sdk", dest))
	if code != 0 && strings.Contains(stderr, "Invalid function") {
		wintest.SkipUnderWine(t, "the dead download's staging directory cannot be removed (os.RemoveAll: \"Invalid function\"): "+stderr)
	}
	if code != 0 {
		t.Fatalf("download after the crash: exit %d: %s", code, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dest, "payload")); string(b) != "whole" {
		t.Errorf("DEST's payload = %q, %v", b, err)
	}
}

// Names Windows treats specially each lock one file, inside the lock
// directory, and nothing beside it.
func TestWindowsHostileNames(t *testing.T) {
	e := newEnv(t)
	names := []string{"CON", "NUL", "COM1", "LPT1.txt", "aux.tar.gz", "a.", "b..", "c ", "d . ", "a:b", "x::$DATA",
		`C:\x`, `\\?\C:\y`, `\\server\share`, "../up", "*?<>|\"", strings.Repeat("long", 1024)}
	for _, n := range names {
		if code, stderr := run(t, e.coord("say", filepath.Join(e.work, "said"), "lock", "--timeout", "0", n)); code != 0 {
			t.Errorf("coord lock %q: exit %d: %s", n, code, stderr)
		}
	}
	ents, err := os.ReadDir(e.locks)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(names) {
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		t.Errorf("lock dir has %d entries %q; want %d", len(ents), got, len(names))
	}
	for _, ent := range ents {
		if !ent.Type().IsRegular() {
			t.Errorf("%q is not a regular file", ent.Name())
		}
	}
	t.Logf("%d hostile names: %d regular files in the lock directory", len(names), len(ents))
	if top, _ := os.ReadDir(filepath.Dir(e.locks)); len(top) != 2 {
		t.Errorf("%d entries beside the lock dir and work; want none", len(top)-2)
	}
	// Each name still locks its own file: held, it excludes a second try.
	file := filepath.Join(e.work, "held")
	start(t, e.coord("hold", file, "lock", "CON"))
	said(t, file)
	if code, _ := run(t, e.coord("hold", filepath.Join(e.work, "no"), "lock", "--timeout", "0", "CON")); code != 75 {
		t.Errorf("second lock on CON: exit %d; want 75", code)
	}
}

// coord gc removes no lock file on Windows, where a file that others hold
// open cannot be deleted: it says so and exits 0.
func TestWindowsGCKeepsLockFiles(t *testing.T) {
	e := newEnv(t)
	if code, stderr := run(t, e.coord("say", filepath.Join(e.work, "said"), "lock", "idle")); code != 0 {
		t.Fatalf("coord lock idle: exit %d: %s", code, stderr)
	}
	cmd := e.cli("gc", "--json")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	code, stderr := run(t, cmd)
	if code != 0 || !strings.Contains(stdout.String(), `"kept": "unsupported"`) {
		t.Errorf("coord gc --json: exit %d, %s%s; want 0 and the lock file kept, unsupported", code, stdout.String(), stderr)
	}
	if ents, _ := os.ReadDir(e.locks); len(ents) != 1 {
		t.Errorf("lock dir has %d entries after gc; want the one lock file", len(ents))
	}
}

// ^Break to coord (in a process group of its own, as a console's ^C
// reaches it) reaches its command as a console control event; a command
// that ignores it is killed after the grace period (10 s).
func TestWindowsInterrupt(t *testing.T) {
	for _, role := range []string{"interrupt", "ignore"} {
		t.Run(role, func(t *testing.T) {
			e := newEnv(t)
			file := filepath.Join(e.work, role)
			cmd := e.coord(role, file, "lock", "x")
			cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: windows.CREATE_NEW_PROCESS_GROUP}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			start(t, cmd)
			child, _, _ := said(t, file)
			sent := time.Now()
			if err := windows.GenerateConsoleCtrlEvent(windows.CTRL_BREAK_EVENT, uint32(cmd.Process.Pid)); err != nil {
				wintest.SkipUnderWine(t, "no console control event reaches a process group (GenerateConsoleCtrlEvent: "+err.Error()+
					`; "Invalid handle" with a console): coord kills the command instead`)
				t.Fatalf("GenerateConsoleCtrlEvent: %v", err)
			}
			took := gone(t, child, sent, 30*time.Second)
			_, interrupted := os.Stat(file + ".interrupted")
			t.Logf("^Break → the command gone %s (interrupted: %v)", took.Round(time.Millisecond), interrupted == nil)
			switch {
			case role == "interrupt" && interrupted != nil:
				t.Errorf("the command did not see the event; coord said %q", stderr.String())
			case role == "ignore" && took < 10*time.Second:
				t.Errorf("the command that ignores ^Break was gone after %s; want the 10s grace", took)
			}
		})
	}
}

// coord hold, hold --status, run --held and release are not supported on
// Windows yet: each says so, exits 69 and takes no lock.
func TestWindowsHoldUnsupported(t *testing.T) {
	e := newEnv(t)
	handle := "hold-0-0123456789abcdef0123456789abcdef@host"
	for _, args := range [][]string{
		{"hold", "x"},
		{"hold", "--status", handle},
		{"release", handle},
		{"run", "--held", handle, "--", "cmd", "/c", "exit 0"},
	} {
		code, stderr := run(t, e.cli(args...))
		if code != 69 || !strings.Contains(stderr, "not supported on Windows yet") {
			t.Errorf("coord %s: exit %d, %q; want 69 and \"not supported on Windows yet\"", strings.Join(args, " "), code, stderr)
		}
	}
	if code, stderr := run(t, e.cli("lock", "--timeout", "0", "x", "--", "cmd", "/c", "exit 0")); code != 0 {
		t.Errorf("coord lock x after the refused hold: exit %d: %s", code, stderr)
	}
}
