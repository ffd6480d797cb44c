//go:build windows

package filelock

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/windows"
)

// dirRef is the lock directory.
type dirRef struct {
	path string
}

// file is an open lock file. Windows locks are mandatory, so only byte 0 is
// locked; the header and record after it stay readable by others.
type file struct {
	f  *os.File
	fi os.FileInfo
}

func openDir(path string) (*dirRef, error) {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, &os.PathError{Op: "open", Path: path, Err: errors.New("not a directory")}
	}
	return &dirRef{path: path}, nil
}

func (d *dirRef) close() error { return nil }

func (d *dirRef) open(name string, create bool) (*file, error) {
	p := filepath.Join(d.path, name)
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&(os.ModeSymlink|os.ModeIrregular) != 0 {
		return nil, &os.PathError{Op: "open", Path: p, Err: errSymlink}
	}
	flag := os.O_RDONLY
	if create {
		flag = os.O_RDWR | os.O_CREATE
	}
	f, err := os.OpenFile(p, flag, 0o644)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := checkRegular(fi.Mode().IsRegular(), 1); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return &file{f: f, fi: fi}, nil
}

// stillNamed: stillAt goes by path, so it sees a directory removed, moved
// or replaced too.
func (d *dirRef) stillNamed() bool { return true }

// stillAt reports whether the file at name in d is still f.
func (d *dirRef) stillAt(name string, f *file) bool {
	fi, err := os.Lstat(filepath.Join(d.path, name))
	return err == nil && os.SameFile(fi, f.fi)
}

// remove: Windows does not delete a file that others hold open, and a
// lock file is held open by every process that uses it.
func (d *dirRef) remove(string) error { return errors.ErrUnsupported }

func (f *file) modTime() (time.Time, error) {
	fi, err := f.f.Stat()
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}

// lock takes the lock in mode, blocking while it is held in a conflicting
// mode.
func (f *file) lock(mode Mode) error {
	_, err := f.lockEx(mode, 0)
	return err
}

// tryLock takes the lock in mode, or returns false at once if it is held in
// a conflicting mode.
func (f *file) tryLock(mode Mode) (bool, error) {
	return f.lockEx(mode, windows.LOCKFILE_FAIL_IMMEDIATELY)
}

func (f *file) lockEx(mode Mode, flags uint32) (bool, error) {
	if mode == Exclusive {
		flags |= windows.LOCKFILE_EXCLUSIVE_LOCK
	}
	err := windows.LockFileEx(windows.Handle(f.f.Fd()), flags, 0, 1, 0, &windows.Overlapped{})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, windows.ERROR_LOCK_VIOLATION), errors.Is(err, windows.ERROR_IO_PENDING):
		return false, nil
	default:
		return false, fmt.Errorf("LockFileEx: %w", err)
	}
}

func (f *file) unlock() error {
	return windows.UnlockFileEx(windows.Handle(f.f.Fd()), 0, 1, 0, &windows.Overlapped{})
}

func (f *file) readAt(b []byte, off int64) (int, error) {
	n, err := f.f.ReadAt(b, off)
	if err == io.EOF {
		err = nil
	}
	return n, err
}

func (f *file) writeAt(b []byte, off int64) error {
	_, err := f.f.WriteAt(b, off)
	return err
}

func (f *file) close() error { return f.f.Close() }

// inheritable: a LockFileEx lock belongs to one handle in one process.
func (f *file) inheritable(string) (*os.File, error) { return nil, errors.ErrUnsupported }

var errSymlink = fmt.Errorf("%w: a symbolic link or reparse point", ErrUnsafeFile)
