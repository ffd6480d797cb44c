//go:build unix && !linux

package coordcli

import "syscall"

// sysProcAttr: only Linux has a parent-death signal. Without a terminal, the
// group's guard learns of coord's death through kqueue on macOS and the
// BSDs (guard.go), and nothing does elsewhere. With a terminal, CMD
// outlives a coord that is killed with SIGKILL; SIGINT, SIGTERM and SIGHUP
// are still passed on.
func sysProcAttr(interactive bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: !interactive}
}
