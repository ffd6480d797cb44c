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
