//go:build unix && !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package coordcli

const guardCommand = "__guard"

// guardedArgv: a guard needs the parent-death signal (Linux) or kqueue
// (macOS, the BSDs) to learn that coord died.
func guardedArgv(argv []string, _ bool) []string { return argv }
