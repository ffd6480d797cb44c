package coordcli

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/exitcode"
)

const lockUsage = "coord lock [--timeout D] [--shared] [--conflict-exit-code N] [--on-lost kill|warn] NAME -- CMD [ARG...]"

func lockCommand() *cli.Command {
	return &cli.Command{
		Name:      "lock",
		Usage:     "run a command while holding a lock",
		UsageText: lockUsage,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: flagTimeout, Value: coord.DefaultLockTimeout, Usage: "how long to wait for the lock; 0 tries once"},
			&cli.BoolFlag{Name: flagShared, Usage: "take a shared lock"},
			&cli.IntFlag{Name: flagConflict, Value: exitcode.Timeout, Usage: "exit status when the lock is not granted in time"},
			onLostFlag(),
		},
		Action: runLock,
	}
}

func onLostFlag() cli.Flag {
	return &cli.StringFlag{Name: flagOnLost, Value: "kill", Usage: "when the lock is lost: kill the command, or warn"}
}

// lockFlags checks the flags that lock and download share.
func lockFlags(c *cli.Context) (onLost string, err error) {
	onLost = c.String(flagOnLost)
	if onLost != "kill" && onLost != "warn" {
		return "", usagef("--%s %q: want kill or warn", flagOnLost, onLost)
	}
	return onLost, nil
}

func runLock(c *cli.Context) error {
	head, argv, err := splitCommand(c.Args().Slice(), 1, lockUsage)
	if err != nil {
		return err
	}
	path, err := lookCommand(argv[0])
	if err != nil {
		return err
	}
	name := head[0]
	timeout, err := timeoutFlag(c)
	if err != nil {
		return err
	}
	onLost, err := lockFlags(c)
	if err != nil {
		return err
	}
	conflict := c.Int(flagConflict)
	if conflict < 1 || conflict > 255 {
		return usagef("--%s %d: want 1 to 255", flagConflict, conflict)
	}
	m, _, err := newManager(c, argv)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := refuseNested(c, m, name); err != nil {
		return err
	}

	var mode []coord.LockOption
	if c.Bool(flagShared) {
		mode = append(mode, coord.Shared())
	}
	// On the file backend a try is one flock call: a lock free at once is
	// taken before the guard starts, which then does not compete with
	// coord for the CPU (on etcd, connecting gives the guard that time).
	var l *coord.Lock
	if m.Backend() == coord.BackendFile && timeout > 0 {
		l, err = m.Lock(c.Context, name, append(mode, coord.WithTimeout(0))...)
		if err != nil && !errors.Is(err, coord.ErrTimeout) {
			return err
		}
	}
	ch, err := newChild(c, m, path, argv, name, onLost)
	if err != nil {
		if l != nil {
			l.Unlock()
		}
		return err
	}
	defer ch.close()

	if l == nil {
		stop := waitNotice(c.Context, m, name, fmt.Sprintf("lock %q", name), timeout, c.App.ErrWriter)
		l, err = m.Lock(c.Context, name, append(mode, coord.WithTimeout(timeout))...)
		stop()
		if errors.Is(err, coord.ErrTimeout) {
			return &exitCodeError{conflict, err}
		}
		if err != nil {
			return err
		}
	}
	defer l.Unlock()
	lost, err := ch.run(c.Context, l)
	if lost {
		return fmt.Errorf("%w while the command ran (it exited %d)", coord.ErrLockLost, exitCode(err))
	}
	return err
}
