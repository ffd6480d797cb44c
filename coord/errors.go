package coord

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrTimeout means the lock was not granted in time; the error is a
	// *TimeoutError that says who held it.
	ErrTimeout = errors.New("timed out waiting for lock")
	// ErrInvalidName means a lock name or toolchain id was refused.
	ErrInvalidName = errors.New("invalid lock name")
	// ErrInvalidArgument means another argument (a timeout, a path, a
	// configuration value) was refused.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrBackendUnavailable means the configured backend cannot be used.
	ErrBackendUnavailable = errors.New("backend unavailable")
	// ErrLockLost means a lock stopped being held before Unlock.
	ErrLockLost = errors.New("lock lost")
	// ErrClosed means the Manager, Lock or Download was already closed.
	ErrClosed = errors.New("closed")
)

// TimeoutError is returned when a lock was not granted in time. It matches
// ErrTimeout with errors.Is.
type TimeoutError struct {
	Name   string        // the lock waited for
	Waited time.Duration // how long we waited; 0 for a single try
	Holder *Holder       // who held it when we gave up; nil if unknown
	Stray  *Stray        // a key no lock holder wrote that blocks it; nil if none
}

func (e *TimeoutError) Error() string {
	msg := fmt.Sprintf("lock %q: timed out after %s", e.Name, e.Waited.Round(time.Millisecond))
	if e.Waited == 0 {
		msg = fmt.Sprintf("lock %q: held by another process", e.Name)
	}
	if e.Holder != nil {
		msg += "; held by " + e.Holder.String()
	}
	if e.Stray != nil {
		msg += "; blocked by " + e.Stray.String()
	}
	return msg
}

// Is reports whether target is ErrTimeout.
func (e *TimeoutError) Is(target error) bool { return target == ErrTimeout }

// ConfigError is a backend that cannot be used where a Config field bears
// on it: Field names the field ("Endpoints", "Cert", "CACert"), or, for an
// etcd that cannot be reached, the one that would have let coord go on
// without it ("Fallback" with Backend auto, "Backend" when it is etcd). A
// program can then say how its user sets that field. Its message is Err's,
// and it matches what Err matches (ErrBackendUnavailable).
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }
