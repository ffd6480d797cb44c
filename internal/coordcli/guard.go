//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package coordcli

import (
	"fmt"
	"os"
	"strconv"

	"github.com/toolchainkit/coord/internal/guard"
)

// guardCommand is the hidden first argument that runs coord as the guard
// of a command (package guard) where coord-guard, which starts faster, is
// not installed beside coord.
const guardCommand = "__guard"

// guardBinary is the guard's own small program.
const guardBinary = "coord-guard"

// startGuard starts the guard of the command, in a process group of its
// own, to wait at its gate for letGuardGo. Where neither coord-guard nor
// coord's own path can be found, the command will run without a guard.
func (ch *child) startGuard() error {
	pid := strconv.Itoa(os.Getpid())
	var argv []string
	if g, ok := besideSelf(guardBinary); ok {
		argv = append([]string{g, pid, "--"}, ch.argv...)
	} else if self, err := os.Executable(); err == nil {
		argv = append([]string{self, guardCommand, pid, "--"}, ch.argv...)
	} else {
		return nil
	}
	guardEnd, coordEnd, err := guard.Open()
	if err != nil {
		return err
	}
	defer guardEnd.Close()
	cmd := ch.command(argv)
	cmd.ExtraFiles = []*os.File{guardEnd} // its fd 3: guard.GateFD
	if err := ch.start(cmd); err != nil {
		coordEnd.Close()
		return fmt.Errorf("start the guard of the command: %w", err)
	}
	ch.gate = coordEnd
	return nil
}

// letGuardGo lets the started guard run the command with env added to its
// environment, holding lock (nil: none). exited gets the command's exit
// status, as the guard will exit with, when the guard says it.
func (ch *child) letGuardGo(lock *os.File, env []string) (exited <-chan int, err error) {
	if err := guard.Send(ch.gate, lock, env); err != nil {
		return nil, err
	}
	c := make(chan int, 1)
	go func(gate *os.File) {
		if code, ok := guard.ReadExit(gate); ok {
			c <- code
		}
	}(ch.gate)
	return c, nil
}
