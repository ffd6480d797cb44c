//go:build !windows

package coordcli

import "syscall"

// runInstead replaces this process with path; it returns only if it could
// not.
func runInstead(path string, argv, env []string) error { return syscall.Exec(path, argv, env) }
