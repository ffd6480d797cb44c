//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package guard

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// The gate: coord starts the guard while it still waits for the lock, with
// one end of a Unix socket pair as the guard's fd 3, so that the guard's
// start-up is off the path from the grant to CMD. When the lock is granted,
// coord sends on the gate, in one message, "go" and the environment CMD
// needs on top of the guard's own (the fencing token, ...), with the
// lock's descriptor attached (SCM_RIGHTS; none on etcd); the guard keeps
// that descriptor until it dies, and runs CMD. When coord gives up (a
// timeout, a signal, a download that someone else did), it closes its end
// without sending: the guard reads end of file and exits without running
// anything; so it does if coord dies, whose end the kernel closes.
//
// When CMD exits, the guard writes "exit N" (N as it will exit with) on the
// gate before it exits itself: coord need not wait for the guard's own
// exit to kill what CMD left in the group and release the lock.

// GateFD is the guard's descriptor of its end of the gate.
const GateFD = 3

// goWord starts the message that lets CMD run.
const goWord = "go"

// msgEnd ends the go message: no environment entry is empty or holds a
// NUL.
const msgEnd = "\x00\x00"

// maxGate bounds what the guard reads from the gate.
const maxGate = 1 << 20

// Open returns a new gate: the guard's end, for its fd 3, and coord's.
// Both are close-on-exec; exec.Cmd.ExtraFiles passes the guard's on.
func Open() (guardEnd, coordEnd *os.File, err error) {
	// Under ForkLock: no process started meanwhile inherits them.
	syscall.ForkLock.RLock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, nil, fmt.Errorf("guard gate: %w", err)
	}
	// Non-blocking: coord's end is Go's poller's, so that closing it ends
	// a read in progress (see ReadExit).
	if err := syscall.SetNonblock(fds[1], true); err != nil {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
		return nil, nil, fmt.Errorf("guard gate: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "guard-gate"), os.NewFile(uintptr(fds[1]), "coord-gate"), nil
}

// Send lets the guard at the other end of coordEnd run CMD with env added
// to its environment, holding lock (nil: no descriptor to hold).
func Send(coordEnd *os.File, lock *os.File, env []string) error {
	msg := []byte(goWord + "\x00" + strings.Join(env, "\x00") + msgEnd)
	var rights []byte
	if lock != nil {
		rights = syscall.UnixRights(int(lock.Fd()))
	}
	conn, err := coordEnd.SyscallConn()
	if err != nil {
		return fmt.Errorf("guard gate: %w", err)
	}
	var serr error
	err = conn.Write(func(fd uintptr) bool {
		// All in one write: the message is far smaller than the
		// socket's buffer, and the descriptor goes with its first byte.
		serr = syscall.Sendmsg(int(fd), msg, rights, nil, 0)
		return serr != syscall.EAGAIN
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("guard gate: %w", err)
	}
	return nil
}

// receive waits for coord's message on the gate: ok is false when coord
// closed its end without one (or died). The descriptor that came with it,
// if any, stays open and close-on-exec until the guard dies.
func receive() (env []string, ok bool, err error) {
	var msg []byte
	buf := make([]byte, 64<<10)
	oob := make([]byte, syscall.CmsgSpace(4))
	for {
		n, oobn, _, _, err := syscall.Recvmsg(GateFD, buf, oob, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if oobn > 0 {
			if err := keepRights(oob[:oobn]); err != nil {
				return nil, false, err
			}
		}
		if msg = append(msg, buf[:n]...); len(msg) > maxGate {
			return nil, false, errors.New("message too long")
		}
		if n == 0 || bytes.HasSuffix(msg, []byte(msgEnd)) {
			break
		}
	}
	if len(msg) == 0 {
		return nil, false, nil
	}
	body, ok := bytes.CutSuffix(msg, []byte(msgEnd))
	words := strings.Split(string(body), "\x00")
	if !ok || words[0] != goWord {
		return nil, false, fmt.Errorf("unexpected message %q", msg[:min(len(msg), 16)])
	}
	env = words[1:]
	if len(env) == 1 && env[0] == "" {
		env = nil
	}
	return env, true, nil
}

// keepRights makes the descriptors that came with a message close-on-exec
// (CMD must not inherit the lock) and leaves them open.
func keepRights(oob []byte) error {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		fds, err := syscall.ParseUnixRights(&m)
		if err != nil {
			return err
		}
		for _, fd := range fds {
			syscall.CloseOnExec(fd)
		}
	}
	return nil
}

// exitWord starts the guard's last message: "exit N".
const exitWord = "exit "

// sendExit tells coord that CMD is done and the guard exits with code.
func sendExit(code int) {
	syscall.Write(GateFD, []byte(exitWord+strconv.Itoa(code)+"\n"))
}

// ReadExit waits for the guard's "exit N" on coordEnd, after Send: ok is
// false when the gate closed without it (the guard died), or coordEnd was
// closed.
func ReadExit(coordEnd *os.File) (code int, ok bool) {
	var msg []byte
	buf := make([]byte, 32)
	for len(msg) < 64 && !bytes.HasSuffix(msg, []byte("\n")) {
		n, err := coordEnd.Read(buf)
		msg = append(msg, buf[:n]...)
		if err != nil {
			break
		}
	}
	s, found := strings.CutPrefix(strings.TrimSuffix(string(msg), "\n"), exitWord)
	if !found {
		return 0, false
	}
	code, err := strconv.Atoi(s)
	return code, err == nil
}
