package coordcli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/exitcode"
)

const (
	runUsage = "coord run [--held HANDLE] [--on-lost kill|warn] -- CMD [ARG...]"
	flagHeld = "held"
	// holdPoll is how often run --held checks that the keeper still
	// holds the lock.
	holdPoll = 100 * time.Millisecond
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run a command under a lock that coord hold holds",
		UsageText: runUsage,
		Description: "CMD runs with COORD_LOCK_NAME and COORD_FENCING_TOKEN set. It is refused (74) if the hold\n" +
			"was lost; if the hold is lost while CMD runs, CMD is stopped (--on-lost kill) or warned\n" +
			"about, and coord exits 74. While CMD runs the hold is renewed, however long it takes.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagHeld, Usage: "the `HANDLE` coord hold printed (default $COORD_HOLD)"},
			onLostFlag(),
		},
		Action: runHeld,
	}
}

func runHeld(c *cli.Context) error {
	if err := holdSupported(); err != nil {
		return &exitCodeError{exitcode.Unavailable, err}
	}
	_, argv, err := splitCommand(c.Args().Slice(), 0, runUsage)
	if err != nil {
		return err
	}
	handle := c.String(flagHeld)
	if !c.IsSet(flagHeld) {
		handle = os.Getenv(envHold)
	}
	if handle == "" && !c.IsSet(flagHeld) {
		return usagef("missing --%s HANDLE (or %s); usage: %s", flagHeld, envHold, runUsage)
	}
	onLost, err := lockFlags(c)
	if err != nil {
		return err
	}
	h, err := findHold(handle)
	if err != nil {
		return holdError(err)
	}
	if err := h.usable(); err != nil {
		return holdError(err)
	}
	path, err := lookCommand(argv[0])
	if err != nil {
		return err
	}
	if err := h.renew(); err != nil {
		return fmt.Errorf("renew hold: %w", err)
	}
	ctx, cancel := context.WithCancel(c.Context)
	lost := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		watchHold(ctx, h, lost)
	}()
	// COORD_PID is the keeper's, which holds the lock: a nested coord on
	// it is refused (see refuseNested).
	ch, err := prepareChild(c, &child{grace: h.st.Grace, argv: append([]string{path}, argv[1:]...), onLost: onLost}, h.st.Name, h.st.PID)
	if err != nil {
		cancel()
		wg.Wait()
		return err
	}
	defer ch.close()
	wasLost, err := ch.run(c.Context, heldHold{token: h.st.Token, lost: lost})
	cancel()
	wg.Wait()
	if wasLost {
		reason := "its keeper is gone"
		if ended, ferr := findHold(handle); ferr == nil && ended.st.Reason != "" {
			reason = ended.st.Reason
		}
		return fmt.Errorf("%w while the command ran (it exited %d): %s", coord.ErrLockLost, exitCode(err), reason)
	}
	return err
}

// heldHold is a hold as the lock a command runs under: its keeper holds
// the lock's descriptor.
type heldHold struct {
	token int64
	lost  <-chan struct{}
}

func (h heldHold) Token() int64            { return h.token }
func (h heldHold) Lost() <-chan struct{}   { return h.lost }
func (h heldHold) File() (*os.File, error) { return nil, errors.ErrUnsupported }

// watchHold closes lost when the hold's keeper is gone, and renews the
// hold a few times a TTL, until ctx ends.
func watchHold(ctx context.Context, h *hold, lost chan<- struct{}) {
	t := time.NewTicker(holdPoll)
	defer t.Stop()
	every := max(h.st.TTL/4, holdPoll)
	renewed := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !keeperAlive(h.dir) {
			close(lost)
			return
		}
		if time.Since(renewed) >= every {
			h.renew()
			renewed = time.Now()
		}
	}
}
