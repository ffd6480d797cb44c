// Package coordcli is the coord command line: it parses arguments, the
// environment and config files into a coord.Config, runs one command on a
// coord.Manager and turns the outcome into an exit status and at most a
// line of message. The programs in cmd/ only call Main.
//
// # Commands
//
// One file per command (lock.go, hold.go, run.go, release.go,
// download.go, status.go, gc.go, doctor.go, version.go); doctor's checks
// of the lock directory, of etcd and its --pair test are in doctor_dir.go,
// doctor_etcd.go and doctor_pair.go, the OS's file system facts in
// doctor_fs_*.go; server_exec.go is plain coord's `server`, which runs the
// coord-server binary. coord-server injects the real server command
// (package internal/server) through Main, lending it NewLogger and
// Printable, so that the dependencies point from cmd to both and never from
// the server back to the CLI. newApp passes every command, injected or
// not, through command, which makes a flag that does not parse a usage
// error and marks what the action returns, so that exitCode can tell a
// mistake in the command line from a failure while running. A command
// that runs a child (lock, download) does so in child.go, behind a guard
// on Linux, macOS and the BSDs (guard.go, package internal/guard).
//
// hold.go, run.go and release.go hold one lock across several commands (CI
// steps): `coord hold` starts coord again as a detached keeper (`coord
// __hold-keeper ID ARGS...`, keeper.go: its own session, stdio closed),
// which takes the lock and tells the parent the handle or the error on fd
// 3, then holds the lock until released, its TTL passes without a renewal,
// a followed process exits or the lock is lost. holdstate.go keeps each
// hold's state in the user's ~/.toolchainkit/holds/ID: a flock that the
// keeper holds while alive, the renewal time, and the tombstone that says
// why it ended. Handles name the user and host, and are checked before any
// file is read.
//
// # Settings
//
// config.go reads each global setting from its flag, its env var or a
// config file, in that order, and remembers where it came from, so that a
// bad value is named by its flag or by its file and line. Flag and env var
// names are constants in app.go, and only this package uses them: package
// coord names its own Config fields (see coord.ConfigError and
// settingHint).
//
// # Exit statuses and messages
//
// exitCode decides every status, from the error a command returns: usage
// errors (usagef, and coord.ErrInvalidName or ErrInvalidArgument) 64, an
// unusable backend 69, a lost lock or hold 74, a hold handle that names no hold 66, a lock not granted in time 75 (or
// --conflict-exit-code), a signal before the command ran 130, a command
// that cannot be run 126 or 127, and the child's own status when one ran.
// The numbers are in package internal/exitcode, shared with the guard.
// Run prints an error once, as "coord: " and its message (see message):
// escaped by Printable, the one function through which coord passes any
// text that it did not write itself (lock names, paths, holder records,
// errors), and followed by the flag that sets the coord setting it is
// about, if any. A cancelled context, which only a signal causes, is said
// as "interrupted".
//
// # Slips and log lines
//
// suggest.go names the nearest command or flag to a mistyped one (optimal
// string alignment distance, within a third of its length: garbage gets no
// suggestion). env.go warns about COORD_ variables coord neither reads nor
// sets; the known ones are those of every command's flags, so that the
// list cannot drift, plus reservedEnv. console.go is the console log
// format: zap entries as "coord: warning: msg (key=value, ...)", in the
// voice of coord's messages; --log-format json is zap's own encoder.
package coordcli
