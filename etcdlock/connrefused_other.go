//go:build !windows

package etcdlock

import (
	"errors"
	"syscall"
)

// isConnRefused reports whether a dial failed because nothing listens.
func isConnRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
