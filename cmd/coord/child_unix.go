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

// tieToParent does nothing: sysProcAttr ties the child to coord where the
// OS can.
func tieToParent(*exec.Cmd) (release func()) { return func() {} }
