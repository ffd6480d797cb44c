//go:build unix

package integration_test

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toolchainkit/coord/internal/exitcode"
)

// 16. coord hold across processes: hold in one, run --held and release in
// others; a second hold of the name times out; kill -9 of the keeper frees
// the lock, at once on the file backend, within the lease's TTL on etcd,
// and the handle then reports lost. The figures are logged.
func TestHoldAcrossProcesses(t *testing.T) {
	eachBackend(t, testHoldAcrossProcesses)
}

var (
	handleRE    = regexp.MustCompile(`(?m)^hold-[0-9]+-[0-9a-f]{32}@\S+$`)
	keeperPIDRE = regexp.MustCompile(`keeper pid ([0-9]+)`)
)

func testHoldAcrossProcesses(t *testing.T, be *backend) {
	w := newWorld(t, be)
	env := w.env("HOME=" + w.path("home"))
	coord := func(args ...string) (int, string) {
		t.Helper()
		p := start(t, w.root, env, coordBin, args...)
		return p.wait(procTimeout), p.output()
	}
	hold := func(name string) (handle string, keeper int, took time.Duration) {
		t.Helper()
		began := time.Now()
		code, out := coord("hold", name)
		took = time.Since(began)
		handle = handleRE.FindString(out)
		m := keeperPIDRE.FindStringSubmatch(out)
		if code != 0 || handle == "" || m == nil {
			t.Fatalf("coord hold %s: exit %d, want 0, a handle and the keeper's pid:\n%s", name, code, out)
		}
		keeper, _ = strconv.Atoi(m[1])
		t.Cleanup(func() { syscall.Kill(keeper, syscall.SIGKILL) })
		return handle, keeper, took
	}

	h, _, took := hold("held")
	t.Logf("coord hold returned after %s", took.Round(time.Millisecond))
	if code, out := coord("hold", "--timeout", "0", "held"); code != exitcode.Timeout {
		t.Fatalf("a second hold of held: exit %d, want %d:\n%s", code, exitcode.Timeout, out)
	}
	code, out := coord("run", "--held", h, "--", "sh", "-c", `echo "token=$COORD_FENCING_TOKEN"`)
	if code != 0 || !regexp.MustCompile(`(?m)^token=[0-9]+$`).MatchString(out) {
		t.Fatalf("run --held: exit %d, want 0 and the token:\n%s", code, out)
	}
	// A coord hold killed while it waits: its keeper, granted the lock
	// later, finds nobody to give the handle to and lets go at once.
	orphan := start(t, w.root, env, coordBin, "hold", "--timeout", procTimeout.String(), "held")
	w.waitWaiters("held", 1, loadSlack)
	if err := orphan.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	orphan.wait(loadSlack)
	if code, out := coord("release", h); code != 0 {
		t.Fatalf("release: exit %d, want 0:\n%s", code, out)
	}
	// The orphaned keeper takes the lock and lets go: a waiter gets it.
	if code, out := coord("lock", "--timeout", (loadSlack + etcdTTL).String(), "held", "--", "true"); code != 0 {
		t.Fatalf("lock after release: exit %d, want 0:\n%s", code, out)
	}
	if code, _ := coord("hold", "--status", h); code != exitcode.NoHold {
		t.Fatalf("status of a released hold: exit %d, want %d", code, exitcode.NoHold)
	}

	// kill -9 of the keeper: a waiter gets the lock, within the bound of
	// testKilledHolderReleases.
	within := loadSlack
	if be.etcd() {
		within = etcdTTL + loadSlack
	}
	h, keeper, _ := hold("killed")
	granted := w.path("granted")
	waiter := start(t, w.root, env, coordBin, "lock", "--timeout", (within + 5*time.Second).String(), "killed", "--",
		"sh", "-c", `date +%s%N > "$0.tmp" && mv "$0.tmp" "$0"`, granted)
	w.waitWaiters("killed", 1, loadSlack)
	killed := time.Now()
	if err := syscall.Kill(keeper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := waiter.wait(within + 10*time.Second); code != 0 {
		t.Fatalf("waiter: exit %d, want 0:\n%s", code, waiter.output())
	}
	after := nanos(t, granted).Sub(killed)
	if after > within {
		t.Fatalf("the waiter's command ran %s after the keeper's kill -9, want within %s", after, within)
	}
	t.Logf("kill -9 of the keeper -> the waiter's command ran %s later (bound %s)", after.Round(time.Millisecond), within)
	code, out = coord("hold", "--status", h)
	if want := fmt.Sprintf("its keeper, pid %d, died", keeper); code != exitcode.Lost || !strings.Contains(out, want) {
		t.Fatalf("status after kill -9: exit %d, want %d and %q:\n%s", code, exitcode.Lost, want, out)
	}
	if code, out := coord("run", "--held", h, "--", "touch", w.path("ran")); code != exitcode.Lost {
		t.Fatalf("run --held after kill -9: exit %d, want %d:\n%s", code, exitcode.Lost, out)
	}
	if _, err := os.Stat(w.path("ran")); err == nil {
		t.Fatalf("run --held ran its command on a lost hold")
	}
}
