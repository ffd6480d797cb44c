//go:build unix

package coord_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/etcdlock"
)

// The crash tests kill a downloader — this test binary re-executed as a
// worker process — at every point of a download, and check that whoever
// comes next ends with a dest that is whole and holds one download's bytes:
// never a mix of two, never a partial file, nothing left beside it but a
// moved-aside dest where an incomplete one was found.

// crashPoints are the points of a download in the order a downloader
// passes them. The Manager's hook marks all but mid-write (the worker's
// payload write), during-record (a kill timed to land in the etcd record's
// request) and after-commit (Commit returned, the locks still held).
var crashPoints = []string{
	"before-staging", // lock held, nothing made
	"after-staging",  // staging dir made, empty
	"mid-write",      // half of the big payload file written
	"after-marker",   // payload and marker in staging, no rename yet
	"after-clear",    // an incomplete dest moved aside, no rename yet
	"after-rename",   // dest complete, not synced, not recorded
	"before-record",  // synced, etcd record not written
	"during-record",  // etcd only: killed while the record is being written
	"after-record",   // etcd record written, Commit about to return
	"after-commit",   // Commit returned, Close (unlock) not called
}

// committedAt reports whether a downloader that died at point had renamed
// its staging dir into dest.
func committedAt(point string) bool {
	return slices.Index(crashPoints, point) >= slices.Index(crashPoints, "after-rename")
}

// envCrashWorker holds a worker's crashSpec as JSON; set means "be a
// crash worker".
const envCrashWorker = "COORD_TEST_CRASH_WORKER"

// The workers' etcd leases: a killed downloader's locks go after at most
// crashTTL. The callers that survive it get more: at the minimum TTL of 2s
// a lease is given up as lost if its first keep-alive takes over 1/3 s,
// which happens on two loaded cores.
const crashTTL, callerTTL = 2 * time.Second, 3 * time.Second

// crashSpec is what a worker does.
type crashSpec struct {
	LockDir  string        // file backend's lock directory
	Endpoint string        // etcd client URL; "" for the file backend
	Prefix   string        // etcd key prefix
	TTL      time.Duration // etcd lease TTL
	ID, Dest string        // the download
	Label    string        // names this worker's bytes
	At       string        // the point to die at; "" runs to the end
	Pause    bool          // at At, wait for stdin to close before dying
	Delay    time.Duration // during-record: how long after before-record to die
	Slow     time.Duration // pause after each chunk of the big file
}

// payload is the content of download label: small files and one big file,
// every byte of them telling which download wrote it.
func payload(label string) map[string][]byte {
	line := fmt.Appendf(nil, "%-63s\n", "download "+label)
	return map[string][]byte{
		"VERSION":     []byte(label + "\n"),
		"bin/tool":    []byte("#!/bin/sh\necho " + label + "\n"),
		"lib/big.bin": bytes.Repeat(line, bigChunks*bigChunk/len(line)),
	}
}

const bigChunk, bigChunks = 64 << 10, 64 // a 4 MiB file, written in 64 KiB chunks

// TestDownloadCrashWorker is a crash worker when envCrashWorker is set: it
// runs one download as its spec says and prints "at <point> <unix ns>" as
// it passes each point and "result downloaded=<bool>" at the end.
func TestDownloadCrashWorker(t *testing.T) {
	js := os.Getenv(envCrashWorker)
	if js == "" {
		t.Skip("a worker process of the TestCrash tests")
	}
	var s crashSpec
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		t.Fatal(err)
	}
	die := func() {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	hook := func(point string) {
		fmt.Fprintf(os.Stdout, "at %s %d\n", point, time.Now().UnixNano())
		at := s.At
		if at == "during-record" {
			at = "before-record"
		}
		if point != at {
			return
		}
		if s.Pause {
			io.Copy(io.Discard, os.Stdin)
		}
		if s.At == "during-record" {
			time.AfterFunc(s.Delay, die)
			return
		}
		die()
	}
	cfg := coord.Config{Backend: coord.BackendFile, LockDir: s.LockDir}
	if s.Endpoint != "" {
		cfg = coord.Config{Backend: coord.BackendEtcd, Endpoints: []string{s.Endpoint}, Prefix: s.Prefix, TTL: s.TTL}
	}
	ctx := context.Background()
	m, err := coord.New(ctx, cfg, coord.WithCrashHook(hook))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	d, err := coord.NewDownloadCoordinator(m).Coordinate(ctx, s.ID, s.Dest, coord.WithTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.ShouldDownload() {
		if err := writePayload(d.StagingDir(), s.Label, s.Slow, hook); err != nil {
			t.Fatal(err)
		}
		if err := d.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		hook("after-commit")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(os.Stdout, "result downloaded=%t\n", d.ShouldDownload())
}

// writePayload writes payload(label) into dir, the big file last, chunk by
// chunk, passing mid-write half-way through it.
func writePayload(dir, label string, slow time.Duration, hook func(string)) error {
	p := payload(label)
	for _, name := range []string{"VERSION", "bin/tool"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), p[name], 0o644); err != nil {
			return err
		}
	}
	big := filepath.Join(dir, "lib/big.bin")
	if err := os.MkdirAll(filepath.Dir(big), 0o755); err != nil {
		return err
	}
	f, err := os.Create(big)
	if err != nil {
		return err
	}
	for i := range bigChunks {
		if i == bigChunks/2 {
			hook("mid-write")
		}
		if _, err := f.Write(p["lib/big.bin"][i*bigChunk : (i+1)*bigChunk]); err != nil {
			f.Close()
			return err
		}
		time.Sleep(slow)
	}
	return f.Close()
}

// checkDownload reports which download dest holds, or why it is not one
// whole download of id: it must be complete, hold the marker for id and
// dest, and exactly the files of one payload, byte for byte.
func checkDownload(dest, id string) (label string, err error) {
	if !coord.IsComplete(dest) {
		return "", fmt.Errorf("%s is not complete", dest)
	}
	files := map[string][]byte{}
	err = filepath.WalkDir(dest, func(p string, e fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case e.IsDir():
			return nil
		case !e.Type().IsRegular():
			return fmt.Errorf("%s is not a regular file", p)
		}
		rel, _ := filepath.Rel(dest, p)
		files[rel], err = os.ReadFile(p)
		return err
	})
	if err != nil {
		return "", err
	}
	var mk struct{ ID, Dest string }
	if err := json.Unmarshal(files[coord.MarkerName], &mk); err != nil || mk.ID != id || mk.Dest != dest {
		return "", fmt.Errorf("marker %q is not that of %q in %s (%v)", files[coord.MarkerName], id, dest, err)
	}
	delete(files, coord.MarkerName)
	label = strings.TrimSuffix(string(files["VERSION"]), "\n")
	want := payload(label)
	for name, b := range files {
		if w, ok := want[name]; !ok {
			return "", fmt.Errorf("%s: file %s is not in download %q", dest, name, label)
		} else if !bytes.Equal(b, w) {
			return "", fmt.Errorf("%s: file %s (%d bytes) is not download %q's (%d bytes): a mix or a partial file", dest, name, len(b), label, len(w))
		}
	}
	for name := range want {
		if _, ok := files[name]; !ok {
			return "", fmt.Errorf("%s: file %s of download %q is missing", dest, name, label)
		}
	}
	return label, nil
}

// The check of the crash tests catches what it is there to catch.
func TestCrashCheckCatchesMixes(t *testing.T) {
	a, b := payload("A"), payload("B")
	for _, tc := range []struct {
		name   string
		change func(dest string)
		bad    string // what the error says; "" for a good dest
	}{
		{"one whole download", func(string) {}, ""},
		{"a file of another download", func(dest string) { os.WriteFile(filepath.Join(dest, "bin/tool"), b["bin/tool"], 0o644) }, "not download \"A\"'s"},
		{"half of the big file", func(dest string) {
			os.WriteFile(filepath.Join(dest, "lib/big.bin"), a["lib/big.bin"][:len(a["lib/big.bin"])/2], 0o644)
		}, "a mix or a partial file"},
		{"the big file of another download", func(dest string) {
			os.WriteFile(filepath.Join(dest, "lib/big.bin"), b["lib/big.bin"], 0o644)
		}, "a mix or a partial file"},
		{"a file too many", func(dest string) { os.WriteFile(filepath.Join(dest, "partial"), []byte("old\n"), 0o644) }, "is not in download"},
		{"a file missing", func(dest string) { os.Remove(filepath.Join(dest, "bin/tool")) }, "is missing"},
		{"no marker", func(dest string) { os.Remove(filepath.Join(dest, coord.MarkerName)) }, "not complete"},
		{"the marker of another id", func(dest string) {
			os.WriteFile(filepath.Join(dest, coord.MarkerName), []byte(`{"id":"other"}`), 0o644)
		}, "is not that of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "sdk")
			if err := writePayload(dest, "A", 0, func(string) {}); err != nil {
				t.Fatal(err)
			}
			mk, _ := json.Marshal(map[string]string{"id": "sdk", "dest": dest})
			os.WriteFile(filepath.Join(dest, coord.MarkerName), mk, 0o644)
			tc.change(dest)
			label, err := checkDownload(dest, "sdk")
			switch {
			case tc.bad == "" && (err != nil || label != "A"):
				t.Fatalf("checkDownload = %q, %v; want download A", label, err)
			case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
				t.Fatalf("checkDownload = %q, %v; want an error saying %q", label, err, tc.bad)
			}
		})
	}
}

// crashBackend is where the workers of a crash test lock.
type crashBackend struct {
	name     string
	endpoint string // "" for the file backend
}

// crashCase kills a downloader at point, with an incomplete dest (no
// marker) there from the start or not.
type crashCase struct {
	point      string
	incomplete bool
}

// TestCrashDownload kills a downloader at every crash point while a second
// caller waits for it, starts a third after the kill, and checks the state
// at the point and after both have finished.
func TestCrashDownload(t *testing.T) {
	var cases []crashCase
	for _, p := range crashPoints {
		cases = append(cases, crashCase{p, p == "after-clear"})
		switch p {
		case "before-staging", "after-marker", "after-rename":
			cases = append(cases, crashCase{p, true})
		}
	}
	for _, be := range crashBackends(t) {
		t.Run(be.name, func(t *testing.T) {
			// Cases run five at a time (t.Run from goroutines is not bound
			// by -parallel): on etcd each waits ~2s for a dead lease, and
			// more at once starve the keep-alives on two cores.
			var wg sync.WaitGroup
			sem := make(chan struct{}, 5)
			for _, c := range cases {
				if c.point == "during-record" && be.endpoint == "" {
					continue // no record to write
				}
				name := c.point
				if c.incomplete {
					name += "/incomplete-dest"
				}
				wg.Go(func() {
					sem <- struct{}{}
					defer func() { <-sem }()
					t.Run(name, func(t *testing.T) { crashAtPoint(t, be, c) })
				})
			}
			wg.Wait()
		})
	}
}

// TestCrashDownloadRandom kills a downloader at a random moment of a slow
// payload write and its commit, while a second caller waits.
func TestCrashDownloadRandom(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("COORD_TEST_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (COORD_TEST_CRASH_SEED)", seed)
	rnd := rand.New(rand.NewPCG(seed, seed))
	for _, be := range crashBackends(t) {
		t.Run(be.name, func(t *testing.T) {
			var wg sync.WaitGroup
			for i := range 4 {
				after := time.Duration(rnd.Int64N(int64(400 * time.Millisecond)))
				incomplete := i%2 == 1
				name := fmt.Sprintf("kill-after-%s", after.Round(time.Millisecond))
				if incomplete {
					name += "/incomplete-dest"
				}
				wg.Go(func() { t.Run(name, func(t *testing.T) { crashRandomly(t, be, after, incomplete) }) })
			}
			wg.Wait()
		})
	}
}

// crashBackends are the file backend and the package's shared etcd (each
// run keeps to a prefix of its own: newCrashRun).
func crashBackends(t *testing.T) []crashBackend {
	return []crashBackend{{name: "file"}, {name: "etcd", endpoint: etcdEndpoint(t)}}
}

// crashRun is one download in a crash test: its locks, its dest.
type crashRun struct {
	be      crashBackend
	lockDir string
	prefix  string
	id      string
	parent  string
	dest    string
}

func newCrashRun(t *testing.T, be crashBackend, incomplete bool) *crashRun {
	r := &crashRun{be: be, lockDir: t.TempDir(), prefix: etcdPrefix(t), id: "sdk", parent: t.TempDir()}
	r.dest = filepath.Join(r.parent, "sdk")
	if incomplete {
		if err := os.MkdirAll(r.dest, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(r.dest, "partial"), []byte("old\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func (r *crashRun) spec(label string) crashSpec {
	ttl := callerTTL
	if label == "A" {
		ttl = crashTTL // the downloader, killed
	}
	return crashSpec{LockDir: r.lockDir, Endpoint: r.be.endpoint, Prefix: r.prefix, TTL: ttl, ID: r.id, Dest: r.dest, Label: label}
}

// manager is one in the test process, to look at the locks.
func (r *crashRun) manager(t *testing.T) *coord.Manager {
	cfg := coord.Config{Backend: coord.BackendFile, LockDir: r.lockDir}
	if r.be.endpoint != "" {
		cfg = coord.Config{Backend: coord.BackendEtcd, Endpoints: []string{r.be.endpoint}, Prefix: r.prefix}
	}
	m, err := coord.New(context.Background(), cfg, coord.WithLogger(zaptest.NewLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// crashAtPoint pauses downloader A at c.point, checks the state there,
// starts caller B (a waiter, unless dest is complete), lets A SIGKILL
// itself, starts caller C and checks what B and C leave.
func crashAtPoint(t *testing.T, be crashBackend, c crashCase) {
	r := newCrashRun(t, be, c.incomplete)
	spec := r.spec("A")
	spec.At, spec.Pause = c.point, true
	spec.Delay = time.Duration(rand.Int64N(int64(2 * time.Millisecond)))
	a := startWorker(t, spec)
	hookAt := c.point
	if hookAt == "during-record" {
		hookAt = "before-record"
	}
	if _, ok := a.waitFor("at " + hookAt + " "); !ok {
		t.Fatalf("the downloader did not reach %s: %v\n%s", hookAt, a.kill(), a.output())
	}
	r.checkAtPoint(t, c)

	// A caller that comes while the downloader holds the lock waits for
	// it; one that comes when dest is complete does not.
	b := startWorker(t, r.spec("B"))
	m := r.manager(t)
	if !coord.IsComplete(r.dest) {
		waitForWaiter(t, m, r.id, b)
	}
	// The downloader holds the lock up to its death (on etcd, unless
	// its keep-alives starved and it lost the lease while paused).
	held := time.Now()
	st, err := m.Inspect(context.Background(), coord.ToolchainLockName(r.id))
	switch {
	case err != nil:
		t.Fatal(err)
	case st.Held && !st.Shared && st.Holder != nil && st.Holder.PID == a.cmd.Process.Pid:
	case be.endpoint != "":
		t.Logf("the downloader lost its lease before the kill: %+v", st)
		held = time.Time{}
	default:
		t.Fatalf("before the kill the lock is %+v; want held by the downloader, pid %d", st, a.cmd.Process.Pid)
	}
	killed := time.Now()
	a.release()
	err = a.wait()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL:
	case c.point == "during-record" && err == nil:
		t.Logf("the downloader finished before the kill %s after before-record", spec.Delay)
	default:
		t.Fatalf("downloader: %v; want killed by SIGKILL\n%s", err, a.output())
	}
	if c.point == "during-record" {
		t.Logf("killed %s after before-record; passed %s", spec.Delay, a.lastPoint())
	} else if last := a.lastPoint(); last != c.point {
		t.Fatalf("the downloader passed %s last; want %s", last, c.point)
	}
	cw := startWorker(t, r.spec("C"))
	r.checkAfter(t, held, killed, committedAt(c.point), committedAt(c.point), c.incomplete, b, cw)
}

// crashRandomly starts a slow downloader A, then caller B, SIGKILLs A
// after a pause of after, starts caller C and checks what B and C leave.
func crashRandomly(t *testing.T, be crashBackend, after time.Duration, incomplete bool) {
	r := newCrashRun(t, be, incomplete)
	spec := r.spec("A")
	spec.Slow = 3 * time.Millisecond
	a := startWorker(t, spec)
	if _, ok := a.waitFor("at after-staging "); !ok {
		t.Fatalf("the downloader did not reach after-staging: %v\n%s", a.kill(), a.output())
	}
	b := startWorker(t, r.spec("B"))
	time.Sleep(after)
	killed := time.Now()
	a.cmd.Process.Kill()
	err := a.wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	last := a.lastPoint()
	t.Logf("downloader %v; passed %s last", err, last)
	// Killed between the rename and its hook, it committed unseen.
	must := err == nil || committedAt(last)
	may := must || last == "after-clear"
	cw := startWorker(t, r.spec("C"))
	r.checkAfter(t, time.Time{}, killed, must, may, incomplete, b, cw)
}

// checkAtPoint checks the state a downloader paused at c.point leaves:
// readers see no complete dest, or the whole new one.
func (r *crashRun) checkAtPoint(t *testing.T, c crashCase) {
	t.Helper()
	staging, _ := filepath.Glob(filepath.Join(r.parent, ".sdk.coord-staging-*"))
	aside, _ := filepath.Glob(r.dest + ".coord-replaced-*")
	i := slices.Index(crashPoints, c.point)
	switch {
	case committedAt(c.point):
		if label, err := checkDownload(r.dest, r.id); err != nil || label != "A" {
			t.Fatalf("at %s dest holds %q (%v); want download A whole", c.point, label, err)
		}
		if len(staging) != 0 {
			t.Fatalf("at %s staging dirs %v remain", c.point, staging)
		}
	case coord.IsComplete(r.dest):
		t.Fatalf("at %s dest is complete before the rename", c.point)
	case i >= slices.Index(crashPoints, "after-staging") && len(staging) != 1:
		t.Fatalf("at %s staging dirs %v; want one", c.point, staging)
	case c.point == "after-clear":
		if _, err := os.Lstat(r.dest); !errors.Is(err, fs.ErrNotExist) || len(aside) != 1 {
			t.Fatalf("at after-clear dest is there (%v) or moved-aside dirs are %v; want dest gone, moved aside once", err, aside)
		}
	case c.incomplete:
		if got := readTree(t, r.dest); got != "partial=old\n" {
			t.Fatalf("at %s the incomplete dest holds %q; want it untouched", c.point, got)
		}
	}
	if i >= slices.Index(crashPoints, "after-marker") && i < slices.Index(crashPoints, "after-rename") {
		if _, err := os.Stat(filepath.Join(staging[0], coord.MarkerName)); err != nil {
			t.Fatalf("at %s the staging dir has no marker: %v", c.point, err)
		}
	}
	if r.be.endpoint != "" && committedAt(c.point) && c.point != "during-record" {
		rec := r.record(t)
		want := c.point == "after-record" || c.point == "after-commit"
		if (rec != nil) != want {
			t.Fatalf("at %s the download record is %q; want one: %t", c.point, rec, want)
		}
	}
}

// checkAfter checks the state once the callers b and c that came after
// the downloader A died have finished: dest whole, from A if it committed
// (it must if mustCommit, it may only if mayCommit) and else from the one
// of b and c that downloaded; nothing beside it but the incomplete dest
// moved aside, if there was one; no new download before held, when A was
// seen holding the lock.
func (r *crashRun) checkAfter(t *testing.T, held, killed time.Time, mustCommit, mayCommit, incomplete bool, b, c *worker) {
	t.Helper()
	var downloaders []*worker
	for _, w := range []*worker{b, c} {
		if err := w.wait(); err != nil {
			t.Fatalf("caller %s: %v\n%s", w.spec.Label, err, w.output())
		}
		res, ok := w.line("result ")
		if !ok {
			t.Fatalf("caller %s printed no result\n%s", w.spec.Label, w.output())
		}
		if res == "result downloaded=true" {
			downloaders = append(downloaders, w)
		}
	}
	label, err := checkDownload(r.dest, r.id)
	if err != nil {
		t.Fatal(err)
	}
	committed := label == "A"
	switch {
	case committed && !mayCommit:
		t.Fatal("dest holds the download of the downloader killed before it could commit")
	case !committed && mustCommit:
		t.Fatalf("dest holds download %q; want A, committed before the kill", label)
	case committed && len(downloaders) != 0:
		t.Fatalf("dest holds download %q and %d callers downloaded after the downloader committed; want A and none", label, len(downloaders))
	case !committed && len(downloaders) != 1:
		t.Fatalf("%d callers downloaded after the downloader died uncommitted; want 1", len(downloaders))
	case !committed && label != downloaders[0].spec.Label:
		t.Fatalf("dest holds download %q; want %q, who downloaded", label, downloaders[0].spec.Label)
	}
	if !committed {
		granted, _ := downloaders[0].line("at before-staging ")
		ns, _ := strconv.ParseInt(granted[strings.LastIndexByte(granted, ' ')+1:], 10, 64)
		at := time.Unix(0, ns)
		if at.Before(held) {
			t.Fatalf("%s got the lock %s before the downloader was seen holding it", downloaders[0].spec.Label, held.Sub(at))
		}
		// On etcd: once the dead downloader's lease ran out, at most
		// TTL after the kill (less the time since its last keep-alive).
		t.Logf("%s got the lock %s after the kill", downloaders[0].spec.Label, at.Sub(killed).Round(time.Millisecond))
	}
	ents, err := os.ReadDir(r.parent)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	aside, _ := filepath.Glob(r.dest + ".coord-replaced-*")
	want := 1
	if incomplete {
		want = 2
		if len(aside) != 1 {
			t.Fatalf("beside dest: %v; want the incomplete dest moved aside once", names)
		}
		if got := readTree(t, aside[0]); got != "partial=old\n" {
			t.Fatalf("the moved-aside dest holds %q; want the incomplete dest as it was", got)
		}
	}
	if len(names) != want {
		t.Fatalf("beside dest: %v; want dest alone, or with the incomplete dest moved aside", names)
	}
}

// record returns the etcd download record of r's id, or nil.
func (r *crashRun) record(t *testing.T) []byte {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{r.be.endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, r.prefix+"/downloads/"+etcdlock.EscapeName(r.id))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	return resp.Kvs[0].Value
}

// waitForWaiter returns once the backend shows a process waiting for the
// toolchain lock of id, and fails if w ends first or none comes in 20s.
func waitForWaiter(t *testing.T, m *coord.Manager, id string, w *worker) {
	t.Helper()
	waitUntil(t, 20*time.Second, func() error {
		select {
		case <-w.done:
			t.Fatalf("caller %s ended without waiting: %v\n%s", w.spec.Label, w.kill(), w.output())
		default:
		}
		return queued(m, coord.ToolchainLockName(id))
	})
}

// readTree returns dir's files as "name=content" lines.
func readTree(t *testing.T, dir string) string {
	t.Helper()
	var sb strings.Builder
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			fmt.Fprintf(&sb, "%s=%s", rel, b)
		}
		return nil
	})
	return sb.String()
}

// worker is a running crash worker.
type worker struct {
	spec  crashSpec
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // closed when its stdout is read to the end

	mu     sync.Mutex
	lines  []string
	stderr bytes.Buffer
	more   chan struct{} // closed and replaced when a line comes

	waited sync.Once
	err    error
}

func startWorker(t *testing.T, s crashSpec) *worker {
	t.Helper()
	js, _ := json.Marshal(s)
	w := &worker{spec: s, done: make(chan struct{}), more: make(chan struct{})}
	w.cmd = exec.Command(os.Args[0], "-test.run=^TestDownloadCrashWorker$", "-test.count=1")
	w.cmd.Env = append(os.Environ(), envCrashWorker+"="+string(js))
	w.cmd.Stderr = &lockedWriter{&w.mu, &w.stderr}
	var err error
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.kill() })
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			w.mu.Lock()
			w.lines = append(w.lines, sc.Text())
			close(w.more)
			w.more = make(chan struct{})
			w.mu.Unlock()
		}
	}()
	return w
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// line returns the first line that starts with prefix.
func (w *worker) line(prefix string) (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.lines {
		if strings.HasPrefix(l, prefix) {
			return l, true
		}
	}
	return "", false
}

// waitFor waits up to 30s for a line that starts with prefix; false if
// the worker ends first.
func (w *worker) waitFor(prefix string) (string, bool) {
	timeout := time.After(30 * time.Second)
	for {
		w.mu.Lock()
		more := w.more
		w.mu.Unlock()
		if l, ok := w.line(prefix); ok {
			return l, true
		}
		select {
		case <-more:
		case <-w.done:
			return w.line(prefix)
		case <-timeout:
			return "", false
		}
	}
}

// lastPoint is the last point the worker said it passed.
func (w *worker) lastPoint() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range slices.Backward(w.lines) {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "at" {
			return f[1]
		}
	}
	return ""
}

// release lets a worker paused at its crash point die.
func (w *worker) release() { w.stdin.Close() }

// wait waits for the worker to end; it can be called again.
func (w *worker) wait() error {
	w.waited.Do(func() {
		<-w.done // Wait only after reading all of stdout
		w.err = w.cmd.Wait()
	})
	return w.err
}

// kill kills the worker and waits for it.
func (w *worker) kill() error {
	w.cmd.Process.Kill()
	return w.wait()
}

func (w *worker) output() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n") + "\n" + w.stderr.String()
}
