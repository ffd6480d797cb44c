//go:build !linux

package guard

import (
	"fmt"
	"io"

	"github.com/toolchainkit/coord/internal/exitcode"
)

// Main refuses: only Linux has the parent-death signal a guard needs.
func Main(_ []string, stderr io.Writer) int {
	fmt.Fprintln(stderr, "coord: the guard is Linux only")
	return exitcode.Usage
}
