//go:build unix

package integration_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Whole processes, as a shell script pays for them: coord against
// util-linux flock(1) and etcdctl, and the bare cost of starting `true`.

// benchLookPath returns the path of name, or skips b if it is not installed.
func benchLookPath(b *testing.B, name string) string {
	path, err := exec.LookPath(name)
	if err != nil {
		b.Skipf("%s not installed", name)
	}
	return path
}

// benchEndpoint returns the client URL of TestMain's embedded etcd.
func benchEndpoint(b *testing.B) string {
	for _, be := range backends {
		if be.name == "etcd-embedded" {
			return be.endpoint
		}
	}
	b.Fatal("no embedded etcd")
	return ""
}

// benchEtcdEnv is the environment of a coord process on the etcd at endpoint.
func benchEtcdEnv(endpoint string) []string {
	return []string{"COORD_BACKEND=etcd", "COORD_ETCD_ENDPOINTS=" + endpoint, "COORD_ETCD_PREFIX=/bench"}
}

func benchProcess(b *testing.B, env []string, name string, args ...string) {
	path := benchLookPath(b, name)
	env = append(append(os.Environ(), "COORD_LOCK_DIR="+b.TempDir()), env...)
	for b.Loop() {
		cmd := exec.Command(path, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", cmd.Args, err, out)
		}
	}
}

func BenchmarkProcess_Coord(b *testing.B) {
	benchProcess(b, nil, coordBin, "lock", "bench", "--", "true")
}

func BenchmarkProcess_Flock1(b *testing.B) {
	benchProcess(b, nil, "flock", filepath.Join(b.TempDir(), "bench.lock"), "true")
}

func BenchmarkProcess_True(b *testing.B) {
	benchProcess(b, nil, "true")
}

// On etcd, coord and etcdctl take the same lock: coord's "bench" under
// prefix /bench is etcdctl's /bench/locks/bench.

func BenchmarkProcessEtcd_Coord(b *testing.B) {
	benchProcess(b, benchEtcdEnv(benchEndpoint(b)), coordBin, "lock", "bench", "--", "true")
}

func BenchmarkProcessEtcd_Etcdctl(b *testing.B) {
	benchProcess(b, nil, "etcdctl", "--endpoints="+benchEndpoint(b), "lock", "/bench/locks/bench", "--", "true")
}

// benchProc is a started process in a group of its own, so that it goes with
// its children.
type benchProc struct {
	cmd *exec.Cmd
	out *bufio.Scanner
}

func benchStart(b *testing.B, env []string, name string, args ...string) *benchProc {
	cmd := exec.Command(benchLookPath(b, name), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &benchProc{cmd: cmd, out: bufio.NewScanner(stdout)}
	b.Cleanup(p.kill)
	return p
}

// kill ends the process's group and waits for the process.
func (p *benchProc) kill() {
	if p.cmd.ProcessState == nil {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		p.cmd.Wait()
	}
}

// rss returns the process's resident set in bytes.
func (p *benchProc) rss(b *testing.B) int64 {
	s, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(s)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// benchHoldCmd prints "held" once it runs, that is, holds the lock it runs
// under, and keeps it.
var benchHoldCmd = []string{"--", "sh", "-c", "echo held; exec sleep 600"}

// benchWaitingRSS starts the holder (a command line that ends in benchHoldCmd), then
// per iteration a waiter for the same lock, and reports as B/process the
// median resident set of the waiters 500 ms into their wait.
func benchWaitingRSS(b *testing.B, env []string, holder, waiter []string) {
	lockDir := "COORD_LOCK_DIR=" + filepath.Join(b.TempDir(), "locks")
	env = append(env, lockDir)
	h := benchStart(b, env, holder[0], holder[1:]...)
	if !h.out.Scan() || h.out.Text() != "held" {
		b.Fatalf("holder %v: %q %v", holder, h.out.Text(), h.out.Err())
	}
	var rss []int64
	for b.Loop() {
		w := benchStart(b, env, waiter[0], waiter[1:]...)
		time.Sleep(500 * time.Millisecond)
		if w.cmd.ProcessState != nil {
			b.Fatalf("waiter %v did not wait", waiter)
		}
		rss = append(rss, w.rss(b))
		w.kill()
	}
	slices.Sort(rss)
	b.ReportMetric(float64(rss[len(rss)/2]), "B/process")
}

func BenchmarkWaitingRSSFile_Coord(b *testing.B) {
	benchWaitingRSS(b, nil,
		append([]string{coordBin, "lock", "rss"}, benchHoldCmd...),
		[]string{coordBin, "lock", "rss", "--", "true"})
}

func BenchmarkWaitingRSSFile_Flock1(b *testing.B) {
	path := filepath.Join(b.TempDir(), "rss.lock")
	benchWaitingRSS(b, nil,
		append([]string{"flock", path}, benchHoldCmd[1:]...),
		[]string{"flock", path, "true"})
}

func BenchmarkWaitingRSSEtcd_Coord(b *testing.B) {
	e := benchEndpoint(b)
	benchWaitingRSS(b, benchEtcdEnv(e),
		append([]string{"etcdctl", "--endpoints=" + e, "lock", "/bench/locks/rss"}, benchHoldCmd...),
		[]string{coordBin, "lock", "rss", "--", "true"})
}

func BenchmarkWaitingRSSEtcd_Etcdctl(b *testing.B) {
	e := benchEndpoint(b)
	benchWaitingRSS(b, nil,
		append([]string{"etcdctl", "--endpoints=" + e, "lock", "/bench/locks/rss"}, benchHoldCmd...),
		[]string{"etcdctl", "--endpoints=" + e, "lock", "/bench/locks/rss", "--", "true"})
}
