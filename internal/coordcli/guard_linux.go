package coordcli

import "syscall"

// sysProcAttr: the kernel signals the guard (SIGUSR2) or, with a terminal,
// CMD itself (SIGKILL) when coord dies.
func sysProcAttr(interactive bool) *syscall.SysProcAttr {
	if interactive {
		return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGUSR2}
}
