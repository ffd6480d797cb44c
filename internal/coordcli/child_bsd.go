//go:build unix && !linux

package coordcli

import "syscall"

// sysProcAttr: only Linux has a parent-death signal. Elsewhere a child
// outlives a coord that is killed with SIGKILL; SIGINT, SIGTERM and SIGHUP
// are still passed on.
func sysProcAttr(interactive bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: !interactive}
}
