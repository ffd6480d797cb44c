//go:build unix

package coordcli

import (
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// terminal reports whether coord has a controlling terminal, and whether
// it is in the terminal's foreground process group. With a terminal, the
// command must stay in coord's process group: in a group of its own it
// would be in the background, and stopped (SIGTTIN, SIGTTOU) the moment it
// touched the terminal, even with stdin redirected.
func terminal() (tty, foreground bool) {
	f, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return false, false
	}
	defer f.Close()
	pg, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPGRP)
	return true, err == nil && pg == unix.Getpgrp()
}

// signalGrace: a signal passed on is the child's to act on; run never
// kills the child for it.
const signalGrace time.Duration = 0

func signalChild(cmd *exec.Cmd, s syscall.Signal, interactive bool) {
	if !interactive {
		// The child leads its group: reach its children too, and wake
		// any that are stopped so that they see the signal.
		if syscall.Kill(-cmd.Process.Pid, s) == nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT)
			return
		}
	}
	cmd.Process.Signal(s)
	cmd.Process.Signal(syscall.SIGCONT)
}

// tieToParent returns a function that, once the child has exited, kills
// what it left running in its process group: nothing may go on working
// after the lock is released.
func tieToParent(cmd *exec.Cmd, interactive bool) (release func()) {
	return func() {
		if !interactive {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	}
}
