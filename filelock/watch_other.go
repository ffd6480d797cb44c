//go:build !linux

package filelock

import "time"

// newDirEvents: without inotify the watcher polls.
func (l *Locker) newDirEvents() (dirEvents, time.Duration) { return newSleeper(), pollEvery }
