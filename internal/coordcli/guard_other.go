//go:build unix && !linux

package coordcli

const guardCommand = "__guard"

// guardedArgv: only Linux has the parent-death signal a guard needs.
func guardedArgv(argv []string, _ bool) []string { return argv }
