package guard_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toolchainkit/coord/internal/exitcode"
	"github.com/toolchainkit/coord/internal/guard"
)

// envRole makes the test binary play a part: "guard" runs guard.Main on
// its arguments; "coord" starts the guard as coord does (own process
// group, parent-death signal SIGUSR2) on its arguments and exits with the
// guard's status.
const envRole = "COORD_TEST_GUARD_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "guard":
		os.Exit(guard.Main(os.Args[1:], os.Stderr))
	case "coord":
		os.Exit(playCoord(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func playCoord(argv []string) int {
	runtime.LockOSThread() // the parent-death signal follows the forking thread
	cmd := exec.Command(os.Args[0], append([]string{strconv.Itoa(os.Getpid()), "--"}, argv...)...)
	cmd.Env = append(os.Environ(), envRole+"=guard")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGUSR2}
	guardEnd, coordEnd, err := guard.Open()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 99
	}
	cmd.ExtraFiles = []*os.File{guardEnd}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 99
	}
	guardEnd.Close()
	if err := guard.Send(coordEnd, nil, []string{"COORD_TEST_FROM_GATE=yes"}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 99
	}
	cmd.Wait()
	return cmd.ProcessState.ExitCode()
}

func coordCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envRole+"=coord")
	return cmd
}

func TestGuardReturnsCommandStatus(t *testing.T) {
	for script, want := range map[string]int{"exit 0": 0, "exit 3": 3, "kill -KILL $$": 128 + 9, `test "$COORD_TEST_FROM_GATE" = yes || exit 7`: 0} {
		cmd := coordCmd("sh", "-c", script)
		cmd.Run()
		if got := cmd.ProcessState.ExitCode(); got != want {
			t.Errorf("%q under the guard: exit %d; want %d", script, got, want)
		}
	}
}

// TestGuardHostileArgs: what the guard is given is refused with a usage
// error, and CMD is not run.
func TestGuardHostileArgs(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	run := []string{"--", "touch", marker}
	for _, tc := range []struct {
		args []string
		want int
		msg  string
	}{
		{nil, exitcode.Usage, "usage"},
		{[]string{"1", "--"}, exitcode.Usage, "usage"},
		{[]string{"1", "-x", "true"}, exitcode.Usage, "usage"},
		{append([]string{"x"}, run...), exitcode.Usage, "bad pid"},
		{append([]string{""}, run...), exitcode.Usage, "bad pid"},
		{append([]string{"0"}, run...), exitcode.Usage, "bad pid"},
		{append([]string{"-1"}, run...), exitcode.Usage, "bad pid"},
		{append([]string{"1"}, run...), exitcode.Usage, "bad pid"},
		{append([]string{"99999999999999999999"}, run...), exitcode.Usage, "bad pid"},
	} {
		var stderr bytes.Buffer
		if got := guard.Main(tc.args, &stderr); got != tc.want || !strings.Contains(stderr.String(), tc.msg) {
			t.Errorf("Main(%q) = %d, %q; want %d and %q", tc.args, got, stderr.String(), tc.want, tc.msg)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("a refused guard ran CMD")
	}
}

// TestGuardCoordGoneBeforeStart: a guard whose parent is not the coord it
// was told of (coord died before the guard began to watch it) does not run
// CMD, and exits as coord would on a signal.
func TestGuardCoordGoneBeforeStart(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	g := exec.Command(os.Args[0], strconv.Itoa(dead.Process.Pid), "--", "touch", marker)
	g.Env = append(os.Environ(), envRole+"=guard")
	g.Run()
	if got := g.ProcessState.ExitCode(); got != exitcode.Interrupted {
		t.Errorf("guard of a dead coord: exit %d; want %d", got, exitcode.Interrupted)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("the guard of a dead coord ran CMD")
	}
}

// TestGuardKillsGroupWhenCoordDies SIGKILLs the process that started the
// guard: the guard kills CMD and the process CMD started.
func TestGuardKillsGroupWhenCoordDies(t *testing.T) {
	dir := t.TempDir()
	coord := coordCmd("sh", "-c", `sleep 60 & echo $! > "$0/grandchild.tmp"; mv "$0/grandchild.tmp" "$0/grandchild"; echo $$ > "$0/child.tmp"; mv "$0/child.tmp" "$0/child"; wait`, dir)
	coord.Stderr = os.Stderr
	if err := coord.Start(); err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{}
	for _, name := range []string{"child", "grandchild"} {
		waitUntil(t, 10*time.Second, func() error {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return err
			}
			pids[name], err = strconv.Atoi(strings.TrimSpace(string(b)))
			return err
		})
	}
	coord.Process.Kill()
	coord.Wait()
	for name, pid := range pids {
		waitUntil(t, 10*time.Second, func() error {
			if alive(pid) {
				return fmt.Errorf("%s %d still alive after coord's SIGKILL", name, pid)
			}
			return nil
		})
	}
}

// alive reports whether pid runs: not gone and not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the state follows the command name
	return err == nil && i >= 0 && !strings.HasPrefix(s[i:], ") Z")
}

func waitUntil(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// startGuard starts the test binary as a guard of argv, with this process
// as its coord, and returns it with coord's end of its gate.
func startGuard(t *testing.T, argv ...string) (*exec.Cmd, *os.File) {
	t.Helper()
	guardEnd, coordEnd, err := guard.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer guardEnd.Close()
	g := exec.Command(os.Args[0], append([]string{strconv.Itoa(os.Getpid()), "--"}, argv...)...)
	g.Env = append(os.Environ(), envRole+"=guard")
	g.Stderr = os.Stderr
	g.ExtraFiles = []*os.File{guardEnd}
	g.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		coordEnd.Close()
		if g.ProcessState == nil {
			syscall.Kill(-g.Process.Pid, syscall.SIGKILL)
			g.Wait()
		}
	})
	return g, coordEnd
}

// TestGuardGateClosed: a guard whose coord gives up waiting (closes the
// gate without a go) exits 0 without running CMD.
func TestGuardGateClosed(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	g, gate := startGuard(t, "touch", marker)
	gate.Close()
	g.Wait()
	if got := g.ProcessState.ExitCode(); got != 0 {
		t.Errorf("guard told nothing: exit %d; want 0", got)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("a guard told nothing ran CMD")
	}
}

// TestGuardGateHandsOverLock: the guard, started before the lock is taken,
// gets the lock's descriptor and the environment through the gate; it
// holds the lock after coord lets go of its own descriptor, CMD does not
// inherit it, and the lock is free once CMD and the guard are gone.
func TestGuardGateHandsOverLock(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "l.lock")
	script := `echo "$COORD_FENCING_TOKEN" > "$0/token"; ls -l /proc/$$/fd > "$0/fds"; : > "$0/running"; read -r _ < "$0/go"`
	if err := syscall.Mkfifo(filepath.Join(dir, "go"), 0o600); err != nil {
		t.Fatal(err)
	}
	g, gate := startGuard(t, "sh", "-c", script, dir)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if err := guard.Send(gate, f, []string{"COORD_FENCING_TOKEN=42"}); err != nil {
		t.Fatal(err)
	}
	f.Close() // the guard's descriptor keeps the lock
	waitUntil(t, 10*time.Second, func() error { _, err := os.Stat(filepath.Join(dir, "running")); return err })
	if held := tryFlock(t, path); !held {
		t.Fatal("the lock was free while the guard ran CMD")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "token")); strings.TrimSpace(string(b)) != "42" {
		t.Errorf("CMD's COORD_FENCING_TOKEN = %q; want 42", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "fds")); strings.Contains(string(b), path) {
		t.Errorf("CMD inherited the lock:\n%s", b)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), []byte("end\n"), 0); err != nil {
		t.Fatal(err)
	}
	g.Wait()
	if got := g.ProcessState.ExitCode(); got != 0 {
		t.Errorf("guard: exit %d; want 0", got)
	}
	if held := tryFlock(t, path); held {
		t.Error("the lock is still held after the guard exited")
	}
}

// tryFlock reports whether the file at path is locked by someone else.
func tryFlock(t *testing.T, path string) (held bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == syscall.EWOULDBLOCK {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return false
}
