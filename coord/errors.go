package coord

import (
	"errors"
	"fmt"
	"strings"
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
	// ErrEmptyDownload means Commit found nothing to publish; the error is
	// an *EmptyDownloadError.
	ErrEmptyDownload = errors.New("nothing downloaded")
)

// TimeoutError is returned when a lock was not granted in time. It matches
// ErrTimeout with errors.Is.
type TimeoutError struct {
	Name   string        // the lock waited for
	Waited time.Duration // how long we waited; 0 for a single try
	Holder *Holder       // who held it when we gave up; nil if unknown
	Stray  *Stray        // a key no lock holder wrote that blocks it; nil if none
	// Stalled is the stall timeout (WithStallTimeout) when the wait ended
	// because the download waited for made no progress for that long; 0
	// otherwise.
	Stalled time.Duration
}

func (e *TimeoutError) Error() string {
	var parts []string
	switch {
	case e.Stalled > 0:
		parts = append(parts, fmt.Sprintf("the download stalled: no progress for %s (waited %s)", e.Stalled, e.Waited.Round(time.Second)))
	case e.Waited > 0:
		parts = append(parts, fmt.Sprintf("timed out after %s", e.Waited.Round(time.Millisecond)))
	}
	if h := e.Holder; h != nil {
		held := "held by " + h.String()
		if h.Dest != "" {
			held += ", into " + h.Dest
		}
		parts = append(parts, held)
	}
	if e.Stray != nil {
		parts = append(parts, "blocked by "+e.Stray.String())
	}
	if len(parts) == 0 {
		parts = append(parts, "held by another process")
	}
	return fmt.Sprintf("lock %q: %s", e.Name, strings.Join(parts, "; "))
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

// EmptyDownloadError is Commit's refusal of an empty staging directory
// (see AllowEmpty): nothing was published and dest is not marked
// complete. It matches ErrEmptyDownload.
type EmptyDownloadError struct {
	ID      string
	Staging string // the empty staging directory
	Dest    string
	// DestFiles reports that dest holds files without a completion
	// marker: the download most likely wrote them there instead of into
	// the staging directory.
	DestFiles bool
}

func (e *EmptyDownloadError) Error() string {
	msg := fmt.Sprintf("download %q: nothing downloaded: the staging directory %s is empty, so %s is not marked complete", e.ID, e.Staging, e.Dest)
	if e.DestFiles {
		msg += fmt.Sprintf("; %s holds files without a completion marker: the download wrote there instead of into the staging directory", e.Dest)
	}
	return msg
}

// Is reports whether target is ErrEmptyDownload.
func (e *EmptyDownloadError) Is(target error) bool { return target == ErrEmptyDownload }
