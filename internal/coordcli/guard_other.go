//go:build unix && !linux

package coordcli

import (
	"fmt"
	"io"
)

const guardCommand = "__guard"

// guardedArgv: only Linux has the parent-death signal a guard needs.
func guardedArgv(argv []string, _ bool) []string { return argv }

func guard(_ []string, stderr io.Writer) int {
	fmt.Fprintln(stderr, "coord: __guard is Linux only")
	return exitUsage
}
