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
	env    []string // coord's environment, the lock's name and coord's pid
	stdout io.Writer
	stderr io.Writer
	onLost string // "kill" or "warn"
	// grace is how long the child has to exit after SIGTERM once the lock
	// is lost, before SIGKILL: half the time before another process could
	// be granted the lock.
	grace time.Duration
	// interactive: coord has a controlling terminal, and the child stays
	// in coord's process group (see run).
	interactive bool

	// cmd is the process coord started: the guard, or the command itself;
	// done gets its cmd.Wait, once (waited: run took it).
	cmd    *exec.Cmd
	done   chan error
	waited bool
	// gate is coord's end of the gate of a guard started before the lock
	// was granted, which waits there for its go (package guard); nil
	// when there is no guard.
	gate *os.File
	// parked, closed by close, ends the goroutine that started cmd,
	// locked to its OS thread until then (see start).
	parked chan struct{}
}

// heldLock is what a command runs under: a *coord.Lock or *coord.Download.
type heldLock interface {
	Token() int64
	Lost() <-chan struct{}
	File() (*os.File, error)
}

// newChild prepares the command argv (found at path) to run under the
// lock called name, before it is granted: where the command runs under a
// guard, it starts the guard now, so that the guard's start-up is not
// between the grant and the command. close must be called once done,
// whether the command ran or not.
func newChild(c *cli.Context, m *coord.Manager, path string, argv []string, name string, onLost string) (*child, error) {
	ch := &child{grace: max(m.LostMargin()/2, 100*time.Millisecond), argv: append([]string{path}, argv[1:]...), onLost: onLost}
	return prepareChild(c, ch, name, os.Getpid())
}

// prepareChild is newChild for ch, whose argv, grace and onLost are set,
// under the lock called name held by the process holder (COORD_PID).
func prepareChild(c *cli.Context, ch *child, name string, holder int) (*child, error) {
	ch.env = append(childEnv(), envLockName+"="+name, envPID+"="+strconv.Itoa(holder))
	ch.stdout, ch.stderr = c.App.Writer, c.App.ErrWriter
	ch.interactive, _ = terminal()
	if !ch.interactive {
		if err := ch.startGuard(); err != nil {
			ch.close()
			return nil, err
		}
	}
	return ch, nil
}

// command returns a process of argv with the child's environment, stdio
// and process attributes.
func (ch *child) command(argv []string) *exec.Cmd {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = ch.env
	cmd.Stdout, cmd.Stderr = ch.stdout, ch.stderr
	if _, err := os.Stdin.Stat(); err == nil {
		cmd.Stdin = os.Stdin // else coord's stdin is closed: /dev/null
	}
	cmd.SysProcAttr = sysProcAttr(ch.interactive)
	return cmd
}

// start starts cmd from a goroutine locked to its OS thread, which stays
// parked there until close: the parent-death signal (Linux) comes when
// the thread that forked the child ends, and Go ends a thread only when a
// goroutine locked to it returns. coord itself runs on any thread, so that
// its wake-ups on the path from one holder to the next need not wait for
// that one.
func (ch *child) start(cmd *exec.Cmd) error {
	started, parked := make(chan error), make(chan struct{})
	ch.parked = parked
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		started <- cmd.Start()
		<-parked
	}()
	if err := <-started; err != nil {
		return err
	}
	ch.cmd, ch.done = cmd, make(chan error, 1)
	go func() { ch.done <- cmd.Wait() }()
	return nil
}

// close lets a guard that had no go exit without running the command, and
// waits for the process coord started.
func (ch *child) close() {
	if ch.gate != nil {
		ch.gate.Close()
	}
	if ch.done != nil && !ch.waited {
		<-ch.done
		ch.waited = true
	}
	if ch.parked != nil {
		close(ch.parked)
		ch.parked = nil
	}
}

// run runs the command under held, with env added to its environment, and
// waits for it. SIGINT, SIGTERM and SIGHUP sent to coord are passed on; if
// the lock is lost, the child is stopped (onLost "kill") or warned about
// ("warn"). It reports whether the lock was lost, and the child's status
// as a *childExit (nil for 0). If ctx already ended (coord was signalled
// before it listened), the command is not started.
//
// Without a controlling terminal the child leads its own process group:
// signals go to the whole group, and when the child exits whatever it left
// in the group is killed. On Linux, macOS and the BSDs a guard (see
// guardCommand) kills the group if coord dies, even by SIGKILL; on Windows
// a job object does. The guard, or the command itself where there is
// none, holds a descriptor of the lock file: if coord dies the lock is
// released only when the child is gone too. With a terminal the child
// stays in coord's group so that it can use the terminal, and the
// terminal's own ^C reaches it; there only the child itself is killed if
// coord dies (Linux). On Windows the child always leads a process group of
// its own, a signal reaches it as ^Break, and it is killed if still there
// signalGrace later.
func (ch *child) run(ctx context.Context, held heldLock, env ...string) (lockLost bool, err error) {
	env = append([]string{envToken + "=" + strconv.FormatInt(held.Token(), 10)}, env...)
	lockFile, err := held.File()
	if err == nil {
		defer lockFile.Close()
	} else {
		lockFile = nil // etcd: nothing to hand on
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := ctx.Err(); err != nil {
		// A signal came before we listened for it: do not start.
		return false, err
	}

	var exited <-chan int // the guard's word that the command exited
	if ch.gate != nil {
		if exited, err = ch.letGuardGo(lockFile, env); err != nil {
			return false, err
		}
	} else {
		cmd := ch.command(ch.argv)
		cmd.Env = append(cmd.Env, env...)
		if lockFile != nil {
			cmd.ExtraFiles = []*os.File{lockFile}
		}
		if err := ch.start(cmd); err != nil {
			return false, execError(ch.argv[0], err)
		}
	}
	cmd, interactive := ch.cmd, ch.interactive
	defer tieToParent(cmd, interactive)()

	lost := held.Lost()
	var kill <-chan time.Time
	for {
		select {
		case err := <-ch.done:
			ch.waited = true
			return lockLost, waitStatus(cmd, err)
		case code := <-exited:
			// The guard is about to exit: kill what the command left
			// (tieToParent) and release the lock now.
			if code != 0 {
				return lockLost, &childExit{code}
			}
			return lockLost, nil
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
