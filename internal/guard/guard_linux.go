// Package guard is the guard of a command that coord runs in a process
// group of its own (Linux): `coord-guard COORD_PID -- CMD [ARG...]`, or
// `coord __guard COORD_PID -- CMD [ARG...]` where coord-guard is missing.
//
// The parent-death signal reaches only coord's direct child, so a command
// that starts processes of its own (make, a shell script) would leave them
// running, without the lock, when coord is killed with SIGKILL. Under
// coord, leading the command's process group, the guard runs CMD and
// waits; the kernel sends it SIGUSR2 when coord dies, and it kills the
// whole group. The guard inherits the lock's descriptor (fd 3), so the
// lock is released only when the guard dies, which it does last, with its
// group.
//
// It is a package of its own, importing little, so that coord-guard starts
// in about a millisecond: it runs once for every `coord lock`.
package guard

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/toolchainkit/coord/internal/exitcode"
)

// Main runs the guard: args are COORD_PID -- CMD [ARG...]. It returns CMD's
// exit status, 128+N if CMD died of signal N; before CMD runs, one of
// coord's own (package exitcode).
func Main(args []string, stderr io.Writer) int {
	if len(args) < 3 || args[1] != "--" {
		fmt.Fprintln(stderr, "coord: usage: coord-guard PID -- CMD [ARG...] (internal)")
		return exitcode.Usage
	}
	// fd 3 is coord's lock: we hold it until we die, CMD does not inherit it.
	syscall.CloseOnExec(3)
	parent, err := strconv.Atoi(args[0])
	if err != nil {
		fmt.Fprintln(stderr, "coord: guard: bad pid")
		return exitcode.Usage
	}
	// INT, TERM and HUP come to the whole group from coord, CMD included:
	// the guard ignores them and waits for CMD.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGUSR2, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	orphaned := func() bool { return os.Getppid() != parent }
	if orphaned() {
		return exitcode.Interrupted
	}
	cmd := exec.Command(args[2], args[3:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		// coord found CMD a moment ago: this is a rare race.
		fmt.Fprintf(stderr, "coord: run %q: %q\n", args[2], err.Error()) // quoted: no control character reaches the terminal
		if errors.Is(err, os.ErrPermission) {
			return exitcode.NotExec
		}
		return exitcode.NotFound
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case <-done:
			ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if ws.Signaled() {
				return exitcode.Signaled + int(ws.Signal())
			}
			return cmd.ProcessState.ExitCode()
		case s := <-sigs:
			if s == syscall.SIGUSR2 && orphaned() {
				syscall.Kill(0, syscall.SIGKILL) // our group: CMD, its children, us
			}
		}
	}
}
