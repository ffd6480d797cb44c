package coordcli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/toolchainkit/coord/internal/exitcode"
)

const releaseUsage = "coord release [HANDLE]"

// releaseBound is how long release waits for the keeper to let go: on
// etcd its Unlock and Close take up to about two seconds each.
const releaseBound = 30 * time.Second

func releaseCommand() *cli.Command {
	return &cli.Command{
		Name:      "release",
		Usage:     "let go of a lock that coord hold holds",
		UsageText: releaseUsage,
		Description: "HANDLE is what coord hold printed (default $COORD_HOLD). Exit 0 once the lock is released\n" +
			"(also if it already was), 74 if the hold was lost before (ttl expired, followed pid exited,\n" +
			"keeper killed, lock lost), 66 if the handle names no hold on this host, 64 if it is not a\n" +
			"handle, or another user's or host's.",
		Action: runRelease,
	}
}

func runRelease(c *cli.Context) error {
	if err := holdSupported(); err != nil {
		return &exitCodeError{exitcode.Unavailable, err}
	}
	text, err := handleArg(c)
	if err != nil {
		return err
	}
	h, err := findHold(text)
	if err != nil {
		return holdError(err)
	}
	switch h.st.State {
	case stateReleased:
		fmt.Fprintf(c.App.ErrWriter, "coord: hold of %s was already released (%s)\n", h.describe(), Printable(h.st.Reason))
		return nil
	case stateLost:
		return h.usable()
	}
	// The marker tells the keeper that its SIGTERM is a release.
	f, err := openNoFollow(filepath.Join(h.dir, holdReleased), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	f.Close()
	if err := stopKeeper(h.st.PID); err != nil {
		return fmt.Errorf("release: signal keeper pid %d: %w", h.st.PID, err)
	}
	if err := waitKeeperGone(c.Context, h.dir, releaseBound); err != nil {
		return fmt.Errorf("release: keeper pid %d: %w", h.st.PID, err)
	}
	ended, err := findHold(text)
	if err != nil {
		return holdError(err)
	}
	if ended.st.State == stateLost {
		return ended.usable() // lost before the keeper saw the release
	}
	fmt.Fprintf(c.App.ErrWriter, "coord: released %s\n", ended.describe())
	return nil
}

// waitKeeperGone waits until the keeper in dir has exited, polling its
// alive lock.
func waitKeeperGone(ctx context.Context, dir string, bound time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for keeperAlive(dir) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("still there after %s: %w", bound, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}
