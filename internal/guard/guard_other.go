//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package guard

import (
	"fmt"
	"io"

	"github.com/toolchainkit/coord/internal/exitcode"
)

// Main refuses: a guard needs the parent-death signal (Linux) or kqueue
// (macOS, the BSDs) to learn that coord died.
func Main(_ []string, stderr io.Writer) int {
	fmt.Fprintln(stderr, "coord: the guard runs on Linux, macOS and the BSDs only")
	return exitcode.Usage
}
