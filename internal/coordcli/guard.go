//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package coordcli

import (
	"os"
	"strconv"
)

// guardCommand is the hidden first argument that runs coord as the guard
// of a command (package guard) where coord-guard, which starts faster, is
// not installed beside coord.
const guardCommand = "__guard"

// guardBinary is the guard's own small program.
const guardBinary = "coord-guard"

// guardedArgv wraps argv in a guard when the child gets its own group.
func guardedArgv(argv []string, interactive bool) []string {
	if interactive {
		return argv
	}
	pid := strconv.Itoa(os.Getpid())
	if g, ok := besideSelf(guardBinary); ok {
		return append([]string{g, pid, "--"}, argv...)
	}
	self, err := os.Executable()
	if err != nil {
		return argv
	}
	return append([]string{self, guardCommand, pid, "--"}, argv...)
}
