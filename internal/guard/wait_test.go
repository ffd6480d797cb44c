//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package guard

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// TestWait drives the decision every OS shares: CMD's status comes back,
// 128+N for signal N, and kill is called once, only when coord is gone.
func TestWait(t *testing.T) {
	for _, tc := range []struct {
		script    string
		coordDies bool
		want      int
		kills     int
	}{
		{"exit 0", false, 0, 0},
		{"exit 3", false, 3, 0},
		{"kill -TERM $$", false, 128 + int(syscall.SIGTERM), 0},
		{"sleep 60", true, 128 + int(syscall.SIGKILL), 1},
	} {
		cmd := exec.Command("sh", "-c", tc.script)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		gone := make(chan struct{})
		if tc.coordDies {
			close(gone)
		}
		kills := 0
		got := wait(cmd, gone, func() { kills++; cmd.Process.Kill() })
		if got != tc.want || kills != tc.kills {
			t.Errorf("%q, coord dies %v: status %d, %d kills; want %d, %d kills", tc.script, tc.coordDies, got, kills, tc.want, tc.kills)
		}
	}
}

// TestWatchParent: a live parent is not reported gone, and the watch
// stops; a process that is not the guard's parent, alive or not, is
// reported gone at once (coord died before the guard watched it).
func TestWatchParent(t *testing.T) {
	gone, stop, err := watchParent(os.Getppid())
	if err != nil {
		t.Fatal(err)
	}
	stop()
	select {
	case <-gone:
		t.Fatal("live parent reported gone")
	default:
	}

	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{dead.Process.Pid, os.Getpid()} {
		gone, stop, err := watchParent(pid)
		if err != nil {
			t.Fatalf("watchParent(%d): %v", pid, err)
		}
		select {
		case <-gone:
		default:
			t.Errorf("watchParent(%d), not the parent: not reported gone", pid)
		}
		stop()
	}
}
