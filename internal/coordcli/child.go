package coordcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/exitcode"
)

// child is the command coord runs under a lock.
type child struct {
	argv   []string // argv[0] is a path, found by splitCommand
	env    []string
	stdout io.Writer
	stderr io.Writer
	lost   <-chan struct{} // closed if the lock is lost
	onLost string          // "kill" or "warn"
	// grace is how long the child has to exit after SIGTERM once the lock
	// is lost, before SIGKILL: half the time before another process could
	// be granted the lock.
	grace time.Duration
	// lockFile, if not nil, holds the lock while open; the child inherits
	// it (fd 3), so that if coord dies the lock is released only when the
	// child is gone too.
	lockFile *os.File
	// holderPID is the COORD_PID the child sees: the process that status
	// shows as the holder; 0 means coord itself.
	holderPID int
}

// heldLock is what a command runs under: a *coord.Lock or *coord.Download.
type heldLock interface {
	Token() int64
	Lost() <-chan struct{}
	File() (*os.File, error)
}

// newChild prepares the command argv (found at path) to run under held,
// the lock called name, with env added to coord's environment.
func newChild(c *cli.Context, m *coord.Manager, path string, argv []string, name string, held heldLock, onLost string, env ...string) *child {
	ch := &child{
		grace:  max(m.LostMargin()/2, 100*time.Millisecond),
		argv:   append([]string{path}, argv[1:]...),
		env:    append(append(childEnv(), envLockName+"="+name, envToken+"="+strconv.FormatInt(held.Token(), 10)), env...),
		stdout: c.App.Writer,
		stderr: c.App.ErrWriter,
		lost:   held.Lost(),
		onLost: onLost,
	}
	if f, err := held.File(); err == nil {
		ch.lockFile = f
	}
	return ch
}

// run starts the child and waits for it. SIGINT, SIGTERM and SIGHUP sent to
// coord are passed on; if the lock is lost, the child is stopped (onLost
// "kill") or warned about ("warn"). It reports whether the lock was lost,
// and the child's status as a *childExit (nil for 0). If ctx already ended
// (coord was signalled before it listened), the child is not started.
//
// Without a controlling terminal the child leads its own process group:
// signals go to the whole group, and when the child exits whatever it left
// in the group is killed. On Linux, macOS and the BSDs a guard (see
// guardCommand) kills the group if coord dies, even by SIGKILL; on Windows
// a job object does. With
// a terminal the child stays in coord's group so that it can use the
// terminal, and the terminal's own ^C reaches it; there only the child
// itself is killed if coord dies (Linux). On Windows the child always
// leads a process group of its own, a signal reaches it as ^Break, and it
// is killed if still there signalGrace later.
func (ch *child) run(ctx context.Context) (lockLost bool, err error) {
	if ch.lockFile != nil {
		defer ch.lockFile.Close()
	}
	interactive, _ := terminal()
	argv := guardedArgv(ch.argv, interactive)
	cmd := exec.Command(argv[0], argv[1:]...)
	holder := ch.holderPID
	if holder == 0 {
		holder = os.Getpid()
	}
	cmd.Env = append(ch.env, envPID+"="+strconv.Itoa(holder))
	cmd.Stdout, cmd.Stderr = ch.stdout, ch.stderr
	if _, err := os.Stdin.Stat(); err == nil {
		cmd.Stdin = os.Stdin // else coord's stdin is closed: /dev/null
	}
	cmd.SysProcAttr = sysProcAttr(interactive)
	if ch.lockFile != nil {
		cmd.ExtraFiles = []*os.File{ch.lockFile}
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := ctx.Err(); err != nil {
		// A signal came before we listened for it: do not start.
		return false, err
	}

	// The parent-death signal follows the thread that forked the child:
	// keep this goroutine on it until the child is gone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return false, execError(ch.argv[0], err)
	}
	defer tieToParent(cmd, interactive)()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	lost := ch.lost
	var kill <-chan time.Time
	for {
		select {
		case err := <-done:
			return lockLost, waitStatus(cmd, err)
		case s := <-sigs:
			if _, fg := terminal(); fg && s == os.Interrupt {
				continue // from the terminal, which sent it to the child too
			}
			signalChild(cmd, s.(syscall.Signal), interactive)
			if signalGrace > 0 && kill == nil {
				kill = time.After(signalGrace)
			}
		case <-lost:
			lost, lockLost = nil, true
			if ch.onLost == "warn" {
				fmt.Fprintln(ch.stderr, "coord: warning: lock lost; the command goes on running without it")
				continue
			}
			fmt.Fprintf(ch.stderr, "coord: lock lost; stopping the command (SIGKILL in %s)\n", ch.grace)
			signalChild(cmd, syscall.SIGTERM, interactive)
			kill = time.After(ch.grace)
		case <-kill:
			signalChild(cmd, syscall.SIGKILL, interactive)
		}
	}
}

// waitStatus turns cmd.Wait's result into a *childExit; a child killed by
// a signal exits 128+signal, as in the shell.
func waitStatus(cmd *exec.Cmd, err error) error {
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return fmt.Errorf("wait for command: %w", err)
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return &childExit{exitcode.Signaled + int(ws.Signal())}
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		return &childExit{code}
	}
	return nil
}

// childEnv is coord's environment without the etcd password (also when
// given as COORD_ETCD_USER=user:password): commands under a lock are often
// build scripts that print their environment.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		secret := strings.HasPrefix(kv, envPassword+"=") ||
			strings.HasPrefix(kv, envUser+"=") && strings.Contains(kv[len(envUser)+1:], ":")
		if !secret {
			env = append(env, kv)
		}
	}
	return env
}
