package etcdlock

import (
	"errors"

	"golang.org/x/sys/windows"
)

// isConnRefused reports whether a dial failed because nothing listens
// (Windows retries a refused connection for about 2 s before it says so).
func isConnRefused(err error) bool { return errors.Is(err, windows.WSAECONNREFUSED) }
