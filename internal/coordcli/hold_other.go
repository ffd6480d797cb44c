//go:build !unix

package coordcli

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// errHoldUnsupported: a keeper needs flock(2) and a session of its own.
var errHoldUnsupported = errors.New("hold, release and run --held are not supported on Windows yet")

func holdSupported() error { return errHoldUnsupported }

func checkOwner(string, fs.FileInfo) error { return errHoldUnsupported }

func openNoFollow(string, int, os.FileMode) (*os.File, error) { return nil, errHoldUnsupported }

func lockAlive(string) (*os.File, error) { return nil, errHoldUnsupported }

func keeperAlive(string) bool { return false }

func processAlive(int) bool { return false }

func stopKeeper(int) error { return errHoldUnsupported }

func keeperSysProcAttr() *syscall.SysProcAttr { return nil }
