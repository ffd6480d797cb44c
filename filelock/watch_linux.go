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
	fd  int
	wd  int      // the watch of the directory, -1 if none
	f   *os.File // fd, non-blocking: reads wait in the runtime's poller
	buf []byte
}

// The events that can take a lock file away: an unlink, a rename from or
// over its name, the directory removed or moved. A creation cannot (the
// name was free), nor can a write or a change of mode.
const inotifyMask = unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// newDirEvents uses inotify, or polls if it is unavailable (out of
// instances).
func newDirEvents() dirEvents {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return newSleeper()
	}
	return &inotify{fd: fd, wd: -1, f: os.NewFile(uintptr(fd), "inotify"), buf: make([]byte, 4096)}
}

// watch watches the directory d holds open (through /proc/self/fd, not its
// path, which may since name another). Without a watch (out of watches, no
// /proc) the watcher polls.
func (n *inotify) watch(d *dirRef) time.Duration {
	if n.wd >= 0 {
		unix.InotifyRmWatch(n.fd, uint32(n.wd)) // gone already if the directory was
	}
	var err error
	n.wd, err = unix.InotifyAddWatch(n.fd, "/proc/self/fd/"+strconv.Itoa(d.fd), inotifyMask)
	if err != nil {
		n.wd = -1
		return pollEvery
	}
	return backstop
}

func (n *inotify) setDeadline(t time.Time) { n.f.SetReadDeadline(t) }

// wait reads, and so drops, the pending events: the watcher checks every
// held lock after any of them.
func (n *inotify) wait() { n.f.Read(n.buf) }

func (n *inotify) close() error { return n.f.Close() }
