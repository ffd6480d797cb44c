//go:build !linux

package filelock

// newDirEvents: without inotify the watcher polls.
func newDirEvents() dirEvents { return newSleeper() }
