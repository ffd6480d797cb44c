package filelock

import (
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// inotify reports changes to the names in the lock directory, and to the
// directory itself, within microseconds.
type inotify struct {
	f   *os.File // non-blocking: reads wait in the runtime's poller
	buf []byte
}

// The events that can take a lock file away: an unlink, a rename from or
// over its name, the directory removed or moved. A creation cannot (the
// name was free), nor can a write or a change of mode.
const inotifyMask = unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// newDirEvents watches the directory the Locker holds open (through
// /proc/self/fd, not its path, which may since name another), or polls if
// inotify is unavailable (out of instances or watches, no /proc).
func (l *Locker) newDirEvents() (dirEvents, time.Duration) {
	l.dirMu.RLock()
	defer l.dirMu.RUnlock()
	if l.dir == nil {
		return newSleeper(), pollEvery
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return newSleeper(), pollEvery
	}
	if _, err := unix.InotifyAddWatch(fd, "/proc/self/fd/"+strconv.Itoa(l.dir.fd), inotifyMask); err != nil {
		unix.Close(fd)
		return newSleeper(), pollEvery
	}
	return &inotify{f: os.NewFile(uintptr(fd), "inotify"), buf: make([]byte, 4096)}, backstop
}

func (n *inotify) setDeadline(t time.Time) { n.f.SetReadDeadline(t) }

// wait reads, and so drops, the pending events: the watcher checks every
// held lock after any of them.
func (n *inotify) wait() { n.f.Read(n.buf) }

func (n *inotify) close() error { return n.f.Close() }
