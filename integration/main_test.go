//go:build unix

// Package integration_test runs coord as a user would: many real OS
// processes — the coord CLI, and this test binary re-executed as a library
// worker — contending for locks in a fresh lock directory per test.
package integration_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toolchainkit/coord/coord"
)

// coordBin is the CLI, built once by TestMain.
var coordBin string

// Environment of a library worker (this binary re-executed).
const (
	envWorker     = "COORD_TEST_WORKER" // the worker's role; set means "be a worker"
	envWorkerDir  = "COORD_TEST_DIR"    // lock dir; the shared files live beside it
	envWorkerIter = "COORD_TEST_ITER"   // how many times to take the lock
)

// procTimeout bounds every process a test starts.
const procTimeout = 60 * time.Second

func TestMain(m *testing.M) {
	if role := os.Getenv(envWorker); role != "" {
		if err := worker(role); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "coord-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "building coord needs go on PATH:", err)
		return 1
	}
	coordBin = filepath.Join(tmp, "coord")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goTool, "build", "-o", coordBin, "github.com/toolchainkit/coord/cmd/coord").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building coord: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// worker takes the lock "counter" COORD_TEST_ITER times through the
// library. Inside the critical section it logs its entry and exit to
// <dir>/../inout ("+ pid unixnano" / "- pid unixnano"), increments <dir>/../counter
// and appends its fencing token to <dir>/../tokens, all with O_APPEND.
func worker(role string) error {
	switch role {
	case "counter":
	case "inherit":
		return inheritWorker(os.Getenv(envWorkerDir))
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	dir := os.Getenv(envWorkerDir)
	n, err := strconv.Atoi(os.Getenv(envWorkerIter))
	if err != nil {
		return err
	}
	ctx := context.Background()
	m, err := coord.New(ctx, coord.Config{Backend: coord.BackendFile, LockDir: dir})
	if err != nil {
		return err
	}
	defer m.Close()
	root := filepath.Dir(dir)
	counter := filepath.Join(root, "counter")
	for range n {
		l, err := m.Lock(ctx, "counter", coord.WithTimeout(30*time.Second))
		if err != nil {
			return err
		}
		if err := appendLine(filepath.Join(root, "inout"), fmt.Sprintf("+ %d %d", os.Getpid(), time.Now().UnixNano())); err != nil {
			return err
		}
		v, err := readInt(counter)
		if err != nil {
			return err
		}
		runtime.Gosched() // widen the window a broken lock would open
		if err := os.WriteFile(counter, []byte(strconv.FormatInt(v+1, 10)+"\n"), 0o644); err != nil {
			return err
		}
		if err := appendLine(filepath.Join(root, "tokens"), strconv.FormatInt(l.Token(), 10)); err != nil {
			return err
		}
		if err := appendLine(filepath.Join(root, "inout"), fmt.Sprintf("- %d %d", os.Getpid(), time.Now().UnixNano())); err != nil {
			return err
		}
		if err := l.Unlock(); err != nil {
			return err
		}
	}
	return nil
}

// inheritWorker takes the lock "inherit", starts `sleep 60` with the lock's
// File, writes the sleeper's pid to <dir>/../sleeper and exits without
// unlocking.
func inheritWorker(dir string) error {
	m, err := coord.New(context.Background(), coord.Config{Backend: coord.BackendFile, LockDir: dir})
	if err != nil {
		return err
	}
	l, err := m.Lock(context.Background(), "inherit", coord.WithTimeout(0))
	if err != nil {
		return err
	}
	f, err := l.File()
	if err != nil {
		return err
	}
	sleeper := exec.Command("sleep", "60")
	sleeper.ExtraFiles = []*os.File{f}
	if err := sleeper.Start(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(filepath.Dir(dir), "sleeper"), []byte(strconv.Itoa(sleeper.Process.Pid)), 0o644)
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line + "\n")
	return errors.Join(err, f.Close())
}

// readInt reads a file holding one decimal integer.
func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// proc is a process started by a test; it is killed when the test ends.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  string        // file with its stdout and stderr
	done chan struct{} // closed once it exited and was reaped
	code int           // exit status; -1 if killed by a signal
	end  time.Time     // when it was reaped
}

// env is the environment of every process: ours without COORD_* (so that a
// developer's etcd settings cannot leak in), on the file backend in dir.
func env(dir string, extra ...string) []string {
	var e []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COORD_") {
			e = append(e, kv)
		}
	}
	return append(append(e, "COORD_BACKEND=file", "COORD_LOCK_DIR="+dir, "COORD="+coordBin), extra...)
}

// start runs path with args and environment env in directory wd.
func start(t *testing.T, wd string, env []string, path string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = wd, env, out, out
	// Its own process group, so that the end of the test kills whatever
	// it left behind, children included.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, out: out.Name(), done: make(chan struct{})}
	go func() {
		cmd.Wait()
		p.end = time.Now()
		p.code = cmd.ProcessState.ExitCode()
		out.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cancel()
		<-p.done
	})
	return p
}

// startCoord runs the CLI with lock directory dir, in dir's parent.
func startCoord(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	return start(t, filepath.Dir(dir), env(dir), coordBin, args...)
}

// runCoord runs the CLI to completion and returns its status and output.
func runCoord(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	p := startCoord(t, dir, args...)
	return p.wait(procTimeout), p.output()
}

// wait waits up to d for p to exit and returns its status.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		p.t.Fatalf("%v still running after %s", p.cmd.Args, d)
		return 0
	}
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.out)
	return string(b)
}

// lockDir makes a test's directory: the lock dir <root>/locks, with root as
// the place for the test's other files.
func lockDir(t *testing.T) (dir, root string) {
	root = t.TempDir()
	return filepath.Join(root, "locks"), root
}

// waitFor polls until path exists and is not empty; it fails the test
// after d.
func waitFor(t *testing.T, path string, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(2 * time.Millisecond) {
		if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within %s", path, d)
		}
	}
}

// childPID waits for path to hold the pid of a command coord runs (its
// `$$`: coord makes it lead its own process group) and returns it. The end
// of the test kills that group, in case coord failed to.
func childPID(t *testing.T, path string) int {
	t.Helper()
	waitFor(t, path, 10*time.Second)
	pid := int(mustInt(t, path))
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	return pid
}

// mustInt reads a file holding one integer, failing the test otherwise.
func mustInt(t *testing.T, path string) int64 {
	t.Helper()
	v, err := readInt(path)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// lines returns the lines of a file; none if it does not exist.
func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) || len(b) == 0 {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// runWorkers sets the counter beside dir to 0, starts n library workers,
// each taking the lock "counter" iters times, and waits for all of them to
// exit 0.
func runWorkers(t *testing.T, dir string, n, iters int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(filepath.Dir(dir), "counter"), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ps := make([]*proc, n)
	for i := range ps {
		ps[i] = start(t, filepath.Dir(dir), env(dir, envWorker+"=counter", envWorkerDir+"="+dir, envWorkerIter+"="+strconv.Itoa(iters)), os.Args[0])
	}
	for i, p := range ps {
		if code := p.wait(procTimeout); code != 0 {
			t.Fatalf("worker %d exited %d, want 0:\n%s", i, code, p.output())
		}
	}
}

// runCLILoops starts n shells that each run `coord lock NAME -- sh -c
// SCRIPT` iters times, one after another, in dir's parent, and waits for
// all of them to exit 0.
func runCLILoops(t *testing.T, dir string, n, iters int, name, script string) {
	t.Helper()
	const loop = `i=0; while [ $i -lt "$ITERS" ]; do "$COORD" lock "$NAME" -- sh -c "$SCRIPT" || exit $?; i=$((i+1)); done`
	ps := make([]*proc, n)
	for i := range ps {
		ps[i] = start(t, filepath.Dir(dir), env(dir, "ITERS="+strconv.Itoa(iters), "NAME="+name, "SCRIPT="+script), "/bin/sh", "-c", loop)
	}
	for i, p := range ps {
		if code := p.wait(procTimeout); code != 0 {
			t.Fatalf("shell %d exited %d, want 0:\n%s", i, code, p.output())
		}
	}
}

// waitGone polls until pid has exited (no such process, or a zombie
// nobody reaped yet) and returns when it first saw it gone; it fails the
// test after d. Linux only: it reads /proc.
func waitGone(t *testing.T, pid int, d time.Duration) time.Time {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(time.Millisecond) {
		now := time.Now()
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		s := string(b)
		// The state follows the command name, which is in parentheses.
		if i := strings.LastIndexByte(s, ')'); err != nil || (i >= 0 && strings.HasPrefix(s[i:], ") Z")) {
			return now
		}
		if now.After(deadline) {
			t.Fatalf("process %d still alive %s later: %s", pid, d, s)
		}
	}
}

// dirNames lists the names in a directory, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents := dirEntries(t, dir)
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names
}

func dirEntries(t *testing.T, dir string) []fs.DirEntry {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ents
}
