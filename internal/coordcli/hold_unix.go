//go:build unix

package coordcli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// holdSupported: a keeper needs a session of its own and flock(2).
func holdSupported() error { return nil }

// checkOwner refuses a directory that another user owns, or that others
// may enter.
func checkOwner(dir string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no owner", dir)
	}
	if int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%s belongs to user id %d, not to you (%d): refused", dir, st.Uid, os.Getuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o: refused, others may enter it (chmod 700 it)", dir, fi.Mode().Perm())
	}
	return nil
}

// openNoFollow opens path, refusing a symbolic link.
func openNoFollow(path string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
}

// lockAlive takes the hold's alive lock for the keeper, for as long as
// the returned file stays open: the kernel lets it go when the keeper
// dies, however it dies.
func lockAlive(dir string) (*os.File, error) {
	f, err := openNoFollow(filepath.Join(dir, holdAlive), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", holdAlive, err)
	}
	return f, nil
}

// keeperAlive reports whether a keeper holds the alive lock in dir.
func keeperAlive(dir string) bool {
	f, err := openNoFollow(filepath.Join(dir, holdAlive), os.O_RDONLY, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	return errors.Is(err, unix.EWOULDBLOCK)
}

// processAlive reports whether pid is a process (of any user).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// stopKeeper asks the keeper to let go (SIGTERM).
func stopKeeper(pid int) error { return syscall.Kill(pid, syscall.SIGTERM) }

// keeperSysProcAttr: the keeper leads a session of its own, so that the
// terminal's hang-up and ^C, and a CI step's process group being killed,
// do not reach it.
func keeperSysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }
