// Package exitcode holds the exit statuses of coord's programs (coord,
// coord-server, coord-guard), so that each is defined once: sysexits(3)
// for coord's own failures, the shell's for a command that cannot be run
// or that a signal killed. Which error gets which status is decided in one
// place, internal/coordcli's exitCode; the guard uses the few it can end
// with before its command runs.
package exitcode

const (
	OK          = 0
	Failed      = 1  // coord doctor: a check failed
	Usage       = 64 // EX_USAGE: a mistake in how coord was called
	Empty       = 65 // EX_DATAERR: a download's command succeeded but left nothing to commit
	NoHold      = 66 // EX_NOINPUT: a hold handle names no hold here (unknown, or released)
	Unavailable = 69 // EX_UNAVAILABLE: the backend cannot be used
	Internal    = 70 // EX_SOFTWARE: anything else
	Lost        = 74 // EX_IOERR: the lock was lost while held
	Timeout     = 75 // EX_TEMPFAIL: the lock was not granted in time
	NotExec     = 126
	NotFound    = 127
	// Signaled plus a signal's number is the status of a command that
	// the signal killed.
	Signaled = 128
	// Interrupted is coord stopped by SIGINT, SIGTERM or SIGHUP; 130 is
	// what a shell reports for SIGINT.
	Interrupted = 130
)
