// Command coord-guard is the guard that `coord lock` and `coord download`
// put between themselves and the command they run, on Linux, macOS and the
// BSDs (see package internal/guard). It is not meant to be run by hand.
package main

import (
	"os"

	"github.com/toolchainkit/coord/internal/guard"
)

func main() { os.Exit(guard.Main(os.Args[1:], os.Stderr)) }
