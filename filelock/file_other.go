//go:build !unix && !windows

package filelock

import (
	"errors"
	"os"
	"time"
)

type dirRef struct{ path string }

type file struct{}

func openDir(path string) (*dirRef, error) {
	return nil, errors.ErrUnsupported
}

func (d *dirRef) close() error                       { return nil }
func (d *dirRef) open(string, bool) (*file, error)   { return nil, errors.ErrUnsupported }
func (d *dirRef) remove(string) error                { return errors.ErrUnsupported }
func (f *file) modTime() (time.Time, error)          { return time.Time{}, errors.ErrUnsupported }
func (d *dirRef) stillAt(string, *file) bool         { return false }
func (d *dirRef) stillNamed() bool                   { return false }
func (f *file) lock(Mode) error                      { return errors.ErrUnsupported }
func (f *file) tryLock(Mode) (bool, error)           { return false, errors.ErrUnsupported }
func (f *file) unlock() error                        { return errors.ErrUnsupported }
func (f *file) readAt([]byte, int64) (int, error)    { return 0, errors.ErrUnsupported }
func (f *file) writeAt([]byte, int64) error          { return errors.ErrUnsupported }
func (f *file) close() error                         { return nil }
func (f *file) inheritable(string) (*os.File, error) { return nil, errors.ErrUnsupported }
