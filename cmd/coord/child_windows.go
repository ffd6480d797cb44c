package main

import (
	"os/exec"
	"syscall"
)

// sysProcAttr: Windows has no parent-death signal; put the child in a job
// object to tie it to coord (not done yet). Signals cannot be passed on, so
// the child is killed instead.
func sysProcAttr(bool) *syscall.SysProcAttr { return nil }

func signalChild(cmd *exec.Cmd, _ syscall.Signal, _ bool) {
	cmd.Process.Kill()
}
