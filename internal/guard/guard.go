//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

// Package guard is the guard of a command that coord runs in a process
// group of its own (Linux, macOS, the BSDs): `coord-guard COORD_PID -- CMD
// [ARG...]`, or `coord __guard COORD_PID -- CMD [ARG...]` where coord-guard
// is missing.
//
// Nothing tells coord's direct child when coord dies by SIGKILL, except the
// kernel: so a command that starts processes of its own (make, a shell
// script) would leave them running, without the lock. Under coord, leading
// the command's process group, the guard runs CMD and waits, and when coord
// dies it kills the whole group. It learns of coord's death from the
// parent-death signal on Linux (SIGUSR2, which coord asks for when it
// starts the guard), and from kqueue (EVFILT_PROC, NOTE_EXIT on coord's
// pid) on macOS and the BSDs; a coord that died before the guard watched it
// is seen by getppid, which then no longer returns coord's pid. coord
// starts the guard while it waits for the lock and, once granted, hands it
// the lock's descriptor through the gate (gate.go), so the lock is
// released only when the guard dies, which it does last, with its group.
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

// Main runs the guard: args are COORD_PID -- CMD [ARG...], fd 3 its end of
// the gate (see Open). It waits for coord's go, then runs CMD. It returns
// CMD's exit status, 128+N if CMD died of signal N; 0 if coord closed the
// gate without a go; before CMD runs, one of coord's own (package
// exitcode).
func Main(args []string, stderr io.Writer) int {
	if len(args) < 3 || args[1] != "--" {
		fmt.Fprintln(stderr, "coord: usage: coord-guard PID -- CMD [ARG...] (internal)")
		return exitcode.Usage
	}
	syscall.CloseOnExec(GateFD) // CMD does not inherit the gate
	parent, err := strconv.Atoi(args[0])
	if err != nil || parent <= 1 {
		fmt.Fprintln(stderr, "coord: guard: bad pid")
		return exitcode.Usage
	}
	// INT, TERM and HUP come to the whole group from coord, CMD included:
	// the guard takes them (so as not to die of them) and waits for CMD.
	// Taken, not ignored: CMD would inherit an ignored signal.
	signal.Notify(make(chan os.Signal, 1), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	gone, stop, err := watchParent(parent)
	if err != nil {
		fmt.Fprintf(stderr, "coord: guard: watch coord: %q\n", err.Error())
		return exitcode.Internal
	}
	defer stop()
	select {
	case <-gone:
		return exitcode.Interrupted
	default:
	}
	// While coord waits for its lock: os/exec's first start of a process
	// probes what the kernel offers (pidfd, on Linux), which os.FindProcess
	// does too. Done now, it is not done between the grant and CMD.
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		p.Release()
	}
	env, ok, err := receive()
	if err != nil {
		fmt.Fprintf(stderr, "coord: guard: %q\n", err.Error())
		return exitcode.Internal
	}
	if !ok {
		return exitcode.OK // coord did not get the lock: nothing to run
	}
	select {
	case <-gone:
		return exitcode.Interrupted
	default:
	}
	cmd := exec.Command(args[2], args[3:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		// coord found CMD a moment ago: this is a rare race.
		fmt.Fprintf(stderr, "coord: run %q: %q\n", args[2], err.Error()) // quoted: no control character reaches the terminal
		if errors.Is(err, os.ErrPermission) {
			return exitcode.NotExec
		}
		return exitcode.NotFound
	}
	code := wait(cmd, gone, killGroup)
	sendExit(code)
	return code
}

// killGroup kills the guard's process group: CMD, its children, the guard.
func killGroup() { syscall.Kill(0, syscall.SIGKILL) }

// wait waits for the started cmd and returns its exit status, 128+N if it
// died of signal N. If gone closes first (coord died), it calls kill once
// and waits on: kill is to end cmd, as killGroup does.
func wait(cmd *exec.Cmd, gone <-chan struct{}, kill func()) int {
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	for {
		select {
		case <-done:
			ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if ws.Signaled() {
				return exitcode.Signaled + int(ws.Signal())
			}
			return cmd.ProcessState.ExitCode()
		case <-gone:
			gone = nil
			kill()
		}
	}
}
