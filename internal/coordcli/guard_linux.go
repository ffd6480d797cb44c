package coordcli

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
)

// guardCommand is the hidden first argument that runs coord as the guard
// of a command: `coord __guard COORD_PID -- CMD [ARG...]`.
//
// The parent-death signal reaches only coord's direct child, so a command
// that starts processes of its own (make, a shell script) would leave them
// running, without the lock, when coord is killed with SIGKILL. Under
// coord, in its own process group, the guard runs CMD and waits; the
// kernel sends it SIGUSR2 when coord dies, and it kills the whole group.
// The guard inherits the lock's descriptor, so the lock is released only
// when the guard dies, which it does last, with its group.
const guardCommand = "__guard"

// guardedArgv wraps argv in a guard when the child gets its own group.
func guardedArgv(argv []string, interactive bool) []string {
	if interactive {
		return argv
	}
	self, err := os.Executable()
	if err != nil {
		return argv
	}
	return append([]string{self, guardCommand, strconv.Itoa(os.Getpid()), "--"}, argv...)
}

func sysProcAttr(interactive bool) *syscall.SysProcAttr {
	if interactive {
		return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGUSR2}
}

// guard is the guard's main: args are COORD_PID -- CMD [ARG...]. It exits
// with CMD's status, 128+N if CMD died of signal N.
func guard(args []string, stderr io.Writer) int {
	if len(args) < 3 || args[1] != "--" {
		fmt.Fprintln(stderr, "coord: usage: coord __guard PID -- CMD [ARG...] (internal)")
		return exitUsage
	}
	// fd 3 is coord's lock: we hold it until we die, CMD does not inherit it.
	syscall.CloseOnExec(3)
	parent, err := strconv.Atoi(args[0])
	if err != nil {
		fmt.Fprintln(stderr, "coord: guard: bad pid")
		return exitUsage
	}
	// INT, TERM and HUP come to the whole group from coord, CMD included:
	// the guard ignores them and waits for CMD.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGUSR2, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	orphaned := func() bool { return os.Getppid() != parent }
	if orphaned() {
		return exitInterrupted
	}
	cmd := exec.Command(args[2], args[3:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		err = execError(args[2], err)
		fmt.Fprintf(stderr, "coord: %s\n", oneLine(err))
		return exitCode(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case <-done:
			ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return cmd.ProcessState.ExitCode()
		case s := <-sigs:
			if s == syscall.SIGUSR2 && orphaned() {
				syscall.Kill(0, syscall.SIGKILL) // our group: CMD, its children, us
			}
		}
	}
}
