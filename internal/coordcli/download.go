package coordcli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/exitcode"
)

const downloadUsage = "coord download [--timeout D] [--stall-timeout D] [--allow-empty] [--on-lost kill|warn] ID DEST -- CMD [ARG...]"

const (
	flagStall      = "stall-timeout"
	flagAllowEmpty = "allow-empty"
	envTotalFile   = "COORD_TOTAL_FILE"
)

const downloadDescription = `Of all the processes that ask for ID at DEST, one runs CMD; the others
wait for it and return when it has committed. CMD writes the download
into the empty directory $COORD_DEST (a sibling of DEST); when CMD exits 0,
coord moves it to DEST in one rename, so nobody ever sees a half-written
DEST. CMD must not write into DEST itself. A CMD that leaves $COORD_DEST
empty commits nothing (exit 65) unless --allow-empty.

  coord download llvm-18 /opt/llvm-18 -- sh -c 'curl -fsSL "$URL" | tar -xJ -C "$COORD_DEST"'

Waiters show the downloader's progress: the bytes in $COORD_DEST, and the
percent and time left if CMD writes the total size in bytes to
$COORD_TOTAL_FILE (e.g. from Content-Length). They wait as long as the
download moves: --stall-timeout ends a wait whose download made no
progress for that long; --timeout, if given, bounds the whole wait.

CMD's environment: COORD_DEST, COORD_TOTAL_FILE, COORD_TOOLCHAIN_ID,
COORD_LOCK_NAME, COORD_FENCING_TOKEN, COORD_PID.`

func downloadCommand() *cli.Command {
	return &cli.Command{
		Name:        "download",
		Usage:       "make exactly one process fill DEST by running CMD; the others wait for it",
		UsageText:   downloadUsage,
		Description: downloadDescription,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: flagTimeout, DefaultText: "none", Usage: "the longest wait for another download, however it moves; 0 tries once"},
			&cli.DurationFlag{Name: flagStall, Value: coord.DefaultStallTimeout, Usage: "give up on a download that made no progress for this long; 0 waits for a stalled one"},
			&cli.BoolFlag{Name: flagAllowEmpty, Usage: "commit even if CMD left $COORD_DEST empty"},
			onLostFlag(),
		},
		Action: runDownload,
	}
}

func runDownload(c *cli.Context) error {
	head, argv, err := splitCommand(c.Args().Slice(), 2, downloadUsage)
	if err != nil {
		return err
	}
	id, dest := head[0], head[1]
	if fi, err := os.Lstat(dest); err == nil && fi.IsDir() && coord.IsComplete(dest) {
		return nil // done: no command, no backend needed
	}
	path, err := lookCommand(argv[0])
	if err != nil {
		return err
	}
	opts, timeout, err := downloadOptions(c)
	if err != nil {
		return err
	}
	onLost, err := lockFlags(c)
	if err != nil {
		return err
	}
	m, log, err := newManager(c, argv)
	if err != nil {
		return err
	}
	defer m.Close()
	name := coord.ToolchainLockName(id)
	if err := refuseNested(c, m, name); err != nil {
		return err
	}

	ch, err := newChild(c, m, path, argv, name, onLost)
	if err != nil {
		return err
	}
	defer ch.close()

	stop := waitNotice(c.Context, m, name, fmt.Sprintf("download of %q", id), timeout, c.App.ErrWriter)
	d, err := coord.NewDownloadCoordinator(m).Coordinate(c.Context, id, dest, opts...)
	stop()
	var te *coord.TimeoutError
	if errors.As(err, &te) && te.Stalled > 0 {
		return fmt.Errorf("%w (--%s sets how long a download may make no progress)", err, flagStall)
	}
	if err != nil {
		return err
	}
	defer d.Close()
	if !d.ShouldDownload() {
		log.Info("destination is complete", zap.String("id", id), zap.String("dest", d.Dest()))
		return nil
	}
	ctx, cancel := context.WithCancel(c.Context)
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		d.ReportProgress(ctx)
	}()
	lost, err := ch.run(c.Context, d, envDest+"="+d.StagingDir(), envTotalFile+"="+d.TotalFile(), envToolchainID+"="+id)
	cancel()
	<-reported
	if lost {
		return fmt.Errorf("%w while the download ran; nothing committed", coord.ErrLockLost)
	}
	if err != nil {
		return err // the command failed: Close discards the staging directory
	}
	// The command succeeded: a signal from now on does not stop the commit,
	// which ends within its bounds (see Download.Commit).
	err = d.Commit(context.WithoutCancel(c.Context))
	var empty *coord.EmptyDownloadError
	if errors.As(err, &empty) {
		return &exitCodeError{exitcode.Empty, emptyMessage(empty)}
	}
	return err
}

// downloadOptions reads --timeout, --stall-timeout and --allow-empty.
// Without --timeout the wait has no bound of its own; timeout is then 0.
func downloadOptions(c *cli.Context) (opts []coord.LockOption, timeout time.Duration, err error) {
	if c.IsSet(flagTimeout) {
		if timeout, err = timeoutFlag(c); err != nil {
			return nil, 0, err
		}
		opts = append(opts, coord.WithTimeout(timeout))
	}
	stall := c.Duration(flagStall)
	if stall < 0 {
		return nil, 0, usagef("--%s %s: must not be negative (0 waits for a stalled download)", flagStall, stall)
	}
	opts = append(opts, coord.WithStallTimeout(stall))
	if c.Bool(flagAllowEmpty) {
		opts = append(opts, coord.AllowEmpty())
	}
	return opts, timeout, nil
}

// emptyMessage says, in the CLI's words, why nothing was committed.
func emptyMessage(e *coord.EmptyDownloadError) error {
	if e.DestFiles {
		return fmt.Errorf("the command exited 0 but wrote into %s instead of $%s: nothing committed, %s is not marked complete; have it write into \"$%s\", which coord moves to DEST when it succeeds",
			e.Dest, envDest, e.Dest, envDest)
	}
	return fmt.Errorf("the command exited 0 but left $%s empty: nothing committed, %s is not marked complete (--%s commits an empty download)",
		envDest, e.Dest, flagAllowEmpty)
}
