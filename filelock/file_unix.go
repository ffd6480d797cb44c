//go:build unix

package filelock

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// dirRef is the open lock directory; lock files are opened relative to it,
// so a renamed or replaced path cannot redirect them.
type dirRef struct {
	path     string
	fd       int
	dev, ino uint64
}

// file is an open lock file.
type file struct {
	fd       int
	dev, ino uint64
}

func openDir(path string) (*dirRef, error) {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	if err := unix.Access(path, unix.W_OK); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "access", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return &dirRef{path: path, fd: fd, dev: uint64(st.Dev), ino: uint64(st.Ino)}, nil
}

// stillNamed reports whether d's path still leads to d: a directory that
// was removed, or moved (itself or a parent), is not where other processes
// look for lock files.
func (d *dirRef) stillNamed() bool {
	var st unix.Stat_t
	if err := unix.Stat(d.path, &st); err != nil {
		return false
	}
	return uint64(st.Dev) == d.dev && uint64(st.Ino) == d.ino
}

func (d *dirRef) close() error { return unix.Close(d.fd) }

// open opens name inside d, creating it when create is set. It never follows
// a symbolic link and refuses anything but a regular file with one link, so
// that a planted link cannot make us write outside the lock directory.
func (d *dirRef) open(name string, create bool) (*file, error) {
	flags := unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_NOCTTY
	if create {
		flags |= unix.O_RDWR | unix.O_CREAT
	} else {
		flags |= unix.O_RDONLY
	}
	var fd int
	var st unix.Stat_t
	for attempt := 0; ; attempt++ {
		var err error
		fd, err = unix.Openat(d.fd, name, flags, 0o644)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if err == unix.ELOOP || err == unix.EMLINK {
				err = errSymlink
			}
			return nil, &os.PathError{Op: "open", Path: d.path + "/" + name, Err: err}
		}
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, &os.PathError{Op: "stat", Path: d.path + "/" + name, Err: err}
		}
		if st.Nlink != 0 {
			break
		}
		// Pruned between our open and our stat: open the file now there.
		unix.Close(fd)
		if !create || attempt >= 10 {
			return nil, &os.PathError{Op: "open", Path: d.path + "/" + name, Err: unix.ENOENT}
		}
	}
	if err := checkRegular(st.Mode&unix.S_IFMT == unix.S_IFREG, uint64(st.Nlink)); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: d.path + "/" + name, Err: err}
	}
	return &file{fd: fd, dev: uint64(st.Dev), ino: uint64(st.Ino)}, nil
}

// stillAt reports whether f is still the file named name in d: a lock taken
// on a file that was since unlinked or replaced excludes nobody.
func (d *dirRef) stillAt(name string, f *file) bool {
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false
	}
	return uint64(st.Dev) == f.dev && uint64(st.Ino) == f.ino
}

// remove unlinks name in d, which must not be a directory.
func (d *dirRef) remove(name string) error {
	if err := unix.Unlinkat(d.fd, name, 0); err != nil {
		return &os.PathError{Op: "remove", Path: d.path + "/" + name, Err: err}
	}
	return nil
}

// modTime is when f was last written: an exclusive holder's record write
// moves it.
func (f *file) modTime() (time.Time, error) {
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return time.Time{}, err
	}
	return time.Unix(st.Mtim.Unix()), nil
}

// lock takes the lock in mode, blocking while it is held in a conflicting
// mode.
func (f *file) lock(mode Mode) error {
	_, err := f.flock(mode, 0)
	return err
}

// tryLock takes the lock in mode, or returns false at once if it is held in
// a conflicting mode.
func (f *file) tryLock(mode Mode) (bool, error) { return f.flock(mode, unix.LOCK_NB) }

func (f *file) flock(mode Mode, flags int) (bool, error) {
	how := unix.LOCK_EX
	if mode == Shared {
		how = unix.LOCK_SH
	}
	for {
		err := unix.Flock(f.fd, how|flags)
		switch {
		case err == nil:
			return true, nil
		case err == unix.EINTR:
			continue
		case err == unix.EWOULDBLOCK:
			return false, nil
		default:
			return false, fmt.Errorf("flock: %w", err)
		}
	}
}

func (f *file) unlock() error { return unix.Flock(f.fd, unix.LOCK_UN) }

func (f *file) readAt(b []byte, off int64) (int, error) {
	for {
		n, err := unix.Pread(f.fd, b, off)
		if err != unix.EINTR {
			return n, err
		}
	}
}

func (f *file) writeAt(b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(f.fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func (f *file) close() error { return unix.Close(f.fd) }

// inheritable returns a new descriptor of f's open file description, which
// shares its flock lock.
func (f *file) inheritable(name string) (*os.File, error) {
	fd, err := unix.FcntlInt(uintptr(f.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

var errSymlink = fmt.Errorf("%w: a symbolic link", ErrUnsafeFile)
