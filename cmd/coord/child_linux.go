package main

import "syscall"

func sysProcAttr(interactive bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: !interactive, Pdeathsig: syscall.SIGKILL}
}
