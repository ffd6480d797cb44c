//go:build unix

// Package integration_test runs coord as a user would: many real OS
// processes — the coord CLI, and this test binary re-executed as a library
// worker — contending for locks.
//
// It is a contract suite: each behaviour is written once and runs as
// subtests over every backend in backends — "file" (a fresh lock directory
// per test), "etcd-embedded" (one embedded etcd, started by TestMain) and,
// when an etcd binary is installed (Debian's etcd-server 3.4),
// "etcd-system", an etcd that nobody here built, and, when
// COORD_TEST_CLUSTER_ENV names the coord.env that deploy/local-cluster.sh
// up wrote, "etcd-cluster": that 3-member cluster, reached with mutual TLS
// as its coord user, who may use keys under the cluster's prefix only. On
// etcd each test gets a key prefix of its own. Behaviours that exist only
// on one backend say so and skip on the others.
//
// COORD_TEST_BACKENDS (names, comma-separated) limits the per-backend
// subtests to those backends; make integration-cluster runs the suite on
// etcd-cluster alone.
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
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/etcdtest"
)

// coordBin is the CLI, built once by TestMain.
var coordBin string

// backend is one backend the contract suite runs against.
type backend struct {
	name     string // "file", "etcd-embedded", "etcd-system", "etcd-cluster"
	endpoint string // etcd client URLs, comma-separated; "" for the file backend

	// On etcd-cluster: the key prefix the coord user may use, and PEM
	// files: the CA, coord's client certificate and key, and an admin's
	// (the cluster's root) for test helpers that look outside the
	// prefix; all "" elsewhere.
	prefix              string
	caCert, cert, key   string
	adminCert, adminKey string
	dir                 string // local-cluster.sh's state: members' pid files
}

func (b *backend) etcd() bool { return b.endpoint != "" }

// tlsEnv is the TLS part of the environment of a process on b.
func (b *backend) tlsEnv() []string {
	if b.caCert == "" && b.cert == "" {
		return nil
	}
	return []string{"COORD_ETCD_CACERT=" + b.caCert, "COORD_ETCD_CERT=" + b.cert, "COORD_ETCD_KEY=" + b.key}
}

// etcdctlArgs are etcdctl's flags to reach b as the coord user.
func (b *backend) etcdctlArgs() []string {
	a := []string{"--endpoints", b.endpoint}
	if b.caCert != "" {
		a = append(a, "--cacert", b.caCert)
	}
	if b.cert != "" {
		a = append(a, "--cert", b.cert, "--key", b.key)
	}
	return a
}

// envBackends is COORD_TEST_BACKENDS: the backends whose subtests run;
// empty means all.
const envBackends = "COORD_TEST_BACKENDS"

// selected reports whether b's subtests run (see envBackends).
func (b *backend) selected() bool {
	only := os.Getenv(envBackends)
	return only == "" || slices.Contains(strings.Split(only, ","), b.name)
}

// backends are the backends of this run: TestMain adds the etcd servers.
var backends = []*backend{{name: "file"}}

// etcdTTL is the lease TTL of every coord process on etcd: short, so that a
// killed holder's locks go quickly, and long enough for keep-alives on a
// loaded 2-core machine. A holder counts its lock lost when no renewal is
// confirmed for TTL − max(1 s, TTL/4): with 3 s that was 2 s, which a
// -race process beside two busy loops and the parallel suite overran
// (exit 74, "etcd is slow"); 5 s gives 3.75 s.
const etcdTTL = 5 * time.Second

// eachBackend runs f as a subtest per backend.
func eachBackend(t *testing.T, f func(t *testing.T, be *backend)) {
	t.Helper()
	for _, be := range backends {
		if be.selected() {
			t.Run(be.name, func(t *testing.T) { f(t, be) })
		}
	}
}

// etcdBackends runs f as a subtest per etcd backend; it skips when there
// is none (there always is: TestMain starts an embedded etcd).
func etcdBackends(t *testing.T, f func(t *testing.T, be *backend)) {
	t.Helper()
	for _, be := range backends {
		if be.etcd() && be.selected() {
			t.Run(be.name, func(t *testing.T) { f(t, be) })
		}
	}
}

// Environment of a library worker (this binary re-executed).
const (
	envWorker     = "COORD_TEST_WORKER" // the worker's role; set means "be a worker"
	envWorkerDir  = "COORD_TEST_DIR"    // lock dir; the shared files live beside it
	envWorkerIter = "COORD_TEST_ITER"   // how many times to take the lock
	// "1": a Lock that fails with ErrBackendUnavailable (nothing ran) is
	// noted in <dir>/../retries ("unixnano error") and tried again.
	envWorkerRetry = "COORD_TEST_RETRY"
)

// procTimeout bounds every process a test starts.
const procTimeout = 60 * time.Second

// loadSlack is what a time bound adds to a configured timeout so that it
// holds on a loaded 2-core host (CI, a busy fleet machine): at least 10×
// the quiet figure. How fast things are is measured by make bench.
const loadSlack = 5 * time.Second

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

// buildAndRun builds the CLI, starts the etcd servers and runs the tests.
func buildAndRun(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "coord-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)

	// The embedded etcd: temp dir, free loopback ports, ReadyNotify (see
	// etcdtest.StartEmbedded); ~100 ms.
	if err := os.Mkdir(filepath.Join(tmp, "embedded"), 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if be := (&backend{name: "etcd-embedded"}); be.selected() {
		emb, err := etcdtest.StartEmbedded(filepath.Join(tmp, "embedded"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "embedded etcd:", err)
			return 1
		}
		defer emb.Stop()
		be.endpoint = emb.Endpoint
		backends = append(backends, be)
	}
	// An installed etcd must start: a present binary that fails is a
	// failure, not a reason to test less.
	if etcdtest.SystemBinary() != "" && (&backend{name: "etcd-system"}).selected() {
		if err := os.Mkdir(filepath.Join(tmp, "system"), 0o700); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		sys, err := etcdtest.StartSystem(filepath.Join(tmp, "system"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "system etcd:", err)
			return 1
		}
		defer sys.Stop()
		backends = append(backends, &backend{name: "etcd-system", endpoint: sys.Endpoint})
	}
	if path := os.Getenv(envClusterEnv); path != "" {
		be, err := clusterBackend(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s=%s: %v\n", envClusterEnv, path, err)
			return 1
		}
		backends = append(backends, be)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "building coord needs go on PATH:", err)
		return 1
	}
	// coord and, beside it, coord-server, which `coord server` runs, and
	// coord-guard, which guards its commands.
	coordBin = filepath.Join(tmp, "coord")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goTool, "build", "-o", tmp, "github.com/toolchainkit/coord/cmd/...").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building coord: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// envClusterEnv names the coord.env of a running deploy/local-cluster.sh
// cluster: its settings make the backend "etcd-cluster".
const envClusterEnv = "COORD_TEST_CLUSTER_ENV"

// clusterBackend is the backend of the cluster whose coord settings
// (KEY=VALUE lines, as local-cluster.sh writes them) are in path; the
// root.env beside it, if any, gives the admin's certificate.
func clusterBackend(path string) (*backend, error) {
	env, err := readEnvFile(path)
	if err != nil {
		return nil, err
	}
	be := &backend{name: "etcd-cluster", endpoint: env["COORD_ETCD_ENDPOINTS"], prefix: env["COORD_ETCD_PREFIX"],
		caCert: env["COORD_ETCD_CACERT"], cert: env["COORD_ETCD_CERT"], key: env["COORD_ETCD_KEY"], dir: filepath.Dir(path)}
	if be.endpoint == "" {
		return nil, errors.New("no COORD_ETCD_ENDPOINTS in it")
	}
	be.adminCert, be.adminKey = be.cert, be.key
	if root, err := readEnvFile(filepath.Join(be.dir, "root.env")); err == nil {
		be.adminCert, be.adminKey = root["ETCDCTL_CERT"], root["ETCDCTL_KEY"]
	}
	return be, nil
}

// readEnvFile reads KEY=VALUE lines; blank lines and # comments are
// skipped, values are taken as they are (no quotes, no expansion).
func readEnvFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want KEY=VALUE, got %q", path, i+1, l)
		}
		env[k] = v
	}
	return env, nil
}

// workerConfig is the library's view of the environment that env gives
// every process: the same backend, lock dir, endpoints, prefix and TTL as
// the CLI would use.
func workerConfig() (coord.Config, error) {
	cfg := coord.Config{
		Backend: os.Getenv("COORD_BACKEND"),
		LockDir: os.Getenv("COORD_LOCK_DIR"),
		Prefix:  os.Getenv("COORD_ETCD_PREFIX"),
		CACert:  os.Getenv("COORD_ETCD_CACERT"),
		Cert:    os.Getenv("COORD_ETCD_CERT"),
		Key:     os.Getenv("COORD_ETCD_KEY"),
	}
	if e := os.Getenv("COORD_ETCD_ENDPOINTS"); e != "" {
		cfg.Endpoints = strings.Split(e, ",")
	}
	for _, v := range []struct {
		name string
		d    *time.Duration
	}{{"COORD_ETCD_TTL", &cfg.TTL}, {"COORD_ETCD_DIAL_TIMEOUT", &cfg.DialTimeout}} {
		if s := os.Getenv(v.name); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				return cfg, fmt.Errorf("%s: %w", v.name, err)
			}
			*v.d = d
		}
	}
	return cfg, nil
}

// workerManager is a Manager on the backend that workerConfig describes.
func workerManager(ctx context.Context) (*coord.Manager, error) {
	cfg, err := workerConfig()
	if err != nil {
		return nil, err
	}
	return coord.New(ctx, cfg)
}

// worker takes the lock "counter" COORD_TEST_ITER times through the
// library, on the backend that workerConfig describes (see envWorkerRetry). Inside the critical section it logs its entry and exit to
// <dir>/../inout ("+ pid unixnano" / "- pid unixnano"), increments <dir>/../counter
// and appends its fencing token to <dir>/../tokens, all with O_APPEND.
func worker(role string) error {
	switch role {
	case "counter":
	case "inherit":
		return inheritWorker(os.Getenv(envWorkerDir))
	case "fenced":
		return fencedWorker(os.Getenv(envWorkerDir))
	case "partition":
		return partitionWorker(os.Getenv(envWorkerDir))
	case "pause":
		return pauseWorker(os.Getenv(envWorkerDir))
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	dir := os.Getenv(envWorkerDir)
	n, err := strconv.Atoi(os.Getenv(envWorkerIter))
	if err != nil {
		return err
	}
	ctx := context.Background()
	m, err := workerManager(ctx)
	if err != nil {
		return err
	}
	defer m.Close()
	root := filepath.Dir(dir)
	counter := filepath.Join(root, "counter")
	retry := os.Getenv(envWorkerRetry) == "1"
	for range n {
		l, err := m.Lock(ctx, "counter", coord.WithTimeout(15*time.Second))
		for retry && errors.Is(err, coord.ErrBackendUnavailable) {
			if err := appendLine(filepath.Join(root, "retries"), fmt.Sprintf("%d %v", time.Now().UnixNano(), err)); err != nil {
				return err
			}
			l, err = m.Lock(ctx, "counter", coord.WithTimeout(15*time.Second))
		}
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
// unlocking. File backend only.
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

// world is one test's own corner of one backend: a lock directory <root>/locks
// (the file backend's locks; on etcd it stays unused), root for the test's
// other files, and on etcd a key prefix nobody else uses (under the
// backend's prefix, if it has one).
type world struct {
	t      *testing.T
	be     *backend
	dir    string // the lock dir
	root   string // the test's files; processes run here
	prefix string // etcd key prefix; "" on the file backend
}

// prefixSeq numbers the worlds of a run, so that two worlds of one test
// have distinct prefixes.
var prefixSeq atomic.Int64

// newWorld makes a fresh world on be for t.
func newWorld(t *testing.T, be *backend) *world {
	root := t.TempDir()
	w := &world{t: t, be: be, dir: filepath.Join(root, "locks"), root: root}
	if be.etcd() {
		w.prefix = fmt.Sprintf("%s/t/%s/%d", be.prefix, t.Name(), prefixSeq.Add(1))
	}
	return w
}

// path returns the path of a file of the test, in root.
func (w *world) path(name string) string { return filepath.Join(w.root, name) }

// cleanEnv is our environment without COORD_* and ETCDCTL_*, and with no
// config file (COORD_CONFIG=/dev/null), so that a developer's or the
// host's settings cannot leak in.
func cleanEnv() []string {
	var e []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COORD_") && !strings.HasPrefix(kv, "ETCDCTL_") {
			e = append(e, kv)
		}
	}
	return append(e, "COORD_CONFIG=/dev/null")
}

// env is the environment of every process of the world: the backend, the
// lock dir and on etcd the endpoints, the world's prefix, a TTL of
// etcdTTL and the TLS files; COORD is the CLI. extra comes last and wins.
func (w *world) env(extra ...string) []string {
	e := append(cleanEnv(), "COORD_LOCK_DIR="+w.dir, "COORD="+coordBin)
	if w.be.etcd() {
		e = append(e, "COORD_BACKEND=etcd", "COORD_ETCD_ENDPOINTS="+w.be.endpoint,
			"COORD_ETCD_PREFIX="+w.prefix, "COORD_ETCD_TTL="+etcdTTL.String())
		e = append(e, w.be.tlsEnv()...)
	} else {
		e = append(e, "COORD_BACKEND=file")
	}
	return append(e, extra...)
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
	// Its own session, without a controlling terminal even when the tests
	// run at one (coord behaves differently with a terminal), and so its
	// own process group, which the end of the test kills, children
	// included.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
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

// startCoord runs the CLI in the world, in its root.
func (w *world) startCoord(args ...string) *proc {
	w.t.Helper()
	return start(w.t, w.root, w.env(), coordBin, args...)
}

// runCoord runs the CLI to completion and returns its status and output.
func (w *world) runCoord(args ...string) (int, string) {
	w.t.Helper()
	p := w.startCoord(args...)
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

// waitUntil returns once cond returns nil, and fails t with cond's last
// error if that takes longer than d. Between calls it pauses as long as
// the call took (at least 2 ms), so that a cond that runs a process or
// asks a server leaves the busy host some room.
func waitUntil(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		began := time.Now()
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(max(2*time.Millisecond, time.Since(began)))
	}
}

// nonEmpty reports nil if path exists and is not empty.
func nonEmpty(path string) error {
	fi, err := os.Stat(path)
	if err == nil && fi.Size() == 0 {
		return fmt.Errorf("%s is empty", path)
	}
	return err
}

// waitFor waits until path exists and is not empty; it fails the test
// after d.
func waitFor(t *testing.T, path string, d time.Duration) {
	t.Helper()
	waitUntil(t, d, func() error { return nonEmpty(path) })
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

// runWorkers sets the world's counter to 0, starts n library workers,
// each taking the lock "counter" iters times, and waits for all of them to
// exit 0.
func (w *world) runWorkers(n, iters int) {
	t := w.t
	t.Helper()
	if err := os.WriteFile(w.path("counter"), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ps := make([]*proc, n)
	for i := range ps {
		ps[i] = start(t, w.root, w.env(envWorker+"=counter", envWorkerDir+"="+w.dir, envWorkerIter+"="+strconv.Itoa(iters)), os.Args[0])
	}
	for i, p := range ps {
		if code := p.wait(procTimeout); code != 0 {
			t.Fatalf("worker %d exited %d, want 0:\n%s", i, code, p.output())
		}
	}
}

// runCLILoops starts n shells that each run `coord $GLOBAL lock NAME -- sh
// -c SCRIPT` iters times, one after another, in the world's root, and waits
// for all of them to exit 0. GLOBAL (global flags) comes from extra env, if
// any.
func (w *world) runCLILoops(n, iters int, name, script string, extra ...string) {
	t := w.t
	t.Helper()
	const loop = `i=0; while [ $i -lt "$ITERS" ]; do "$COORD" $GLOBAL lock "$NAME" -- sh -c "$SCRIPT" || exit $?; i=$((i+1)); done`
	ps := make([]*proc, n)
	for i := range ps {
		ps[i] = start(t, w.root, w.env(append([]string{"ITERS=" + strconv.Itoa(iters), "NAME=" + name, "SCRIPT=" + script}, extra...)...), "/bin/sh", "-c", loop)
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
	var gone time.Time
	waitUntil(t, d, func() error {
		now := time.Now()
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		s := string(b)
		// The state follows the command name, which is in parentheses.
		if i := strings.LastIndexByte(s, ')'); err != nil || (i >= 0 && strings.HasPrefix(s[i:], ") Z")) {
			gone = now
			return nil
		}
		return fmt.Errorf("process %d still alive: %s", pid, s)
	})
	return gone
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
