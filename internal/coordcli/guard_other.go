//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package coordcli

import (
	"errors"
	"os"
)

const guardCommand = "__guard"

// startGuard: a guard needs the parent-death signal (Linux) or kqueue
// (macOS, the BSDs) to learn that coord died; elsewhere the command runs
// without one (on Windows a job object ties it to coord).
func (ch *child) startGuard() error { return nil }

func (ch *child) letGuardGo(*os.File, []string) (<-chan int, error) {
	return nil, errors.ErrUnsupported
}
