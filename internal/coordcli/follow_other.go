//go:build !linux

package coordcli

// processStat: only Linux tells a process's state and start without a
// privileged call; elsewhere a followed pid is watched by kill(pid, 0)
// alone.
func processStat(int) (state, start string) { return "", "" }
