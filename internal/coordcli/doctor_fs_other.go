//go:build !linux && !darwin && !freebsd && !windows

package coordcli

import "errors"

// statFS: file systems are not told apart on this OS.
func statFS(string) (fsInfo, error) {
	return fsInfo{}, errors.ErrUnsupported
}

// mountOf: no mount table is read on this OS.
func mountOf(string) (mountInfo, error) { return mountInfo{}, errNoMountTable }
