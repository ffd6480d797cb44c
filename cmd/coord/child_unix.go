//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

func signalChild(cmd *exec.Cmd, s syscall.Signal, interactive bool) {
	if !interactive {
		// The child leads its group: reach its children too.
		if syscall.Kill(-cmd.Process.Pid, s) == nil {
			return
		}
	}
	cmd.Process.Signal(s)
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
