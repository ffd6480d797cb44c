package coordcli

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/toolchainkit/coord/coord"
)

const downloadUsage = "coord download [--timeout D] [--on-lost kill|warn] ID DEST -- CMD [ARG...]"

// defaultDownloadTimeout is long because waiters wait for a whole download.
const defaultDownloadTimeout = 30 * time.Minute

// progressEvery is how often the downloader's progress is published.
const progressEvery = time.Second

func downloadCommand() *cli.Command {
	return &cli.Command{
		Name:      "download",
		Usage:     "make exactly one process fill DEST by running CMD; the others wait for it",
		UsageText: downloadUsage,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: flagTimeout, Value: defaultDownloadTimeout, Usage: "how long to wait for another download; 0 tries once"},
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
	timeout, err := timeoutFlag(c)
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

	stop := waitNotice(c.Context, m, coord.ToolchainLockName(id), fmt.Sprintf("download of %q", id), timeout, c.App.ErrWriter)
	d, err := coord.NewDownloadCoordinator(m).Coordinate(c.Context, id, dest, coord.WithTimeout(timeout))
	stop()
	if err != nil {
		return err
	}
	defer d.Close()
	if !d.ShouldDownload() {
		log.Info("destination is complete", zap.String("id", id), zap.String("dest", d.Dest()))
		return nil
	}
	ch := newChild(c, m, path, argv, coord.ToolchainLockName(id), d, onLost, envDest+"="+d.StagingDir(), envToolchainID+"="+id)
	ctx, cancel := context.WithCancel(c.Context)
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		publishProgress(ctx, d)
	}()
	lost, err := ch.run(c.Context)
	cancel()
	<-progressDone
	if lost {
		return fmt.Errorf("%w while the download ran; nothing committed", coord.ErrLockLost)
	}
	if err != nil {
		return err // the command failed: Close discards the staging directory
	}
	// The command succeeded: a signal from now on does not stop the commit,
	// which ends within its bounds (see Download.Commit).
	return d.Commit(context.WithoutCancel(c.Context))
}

// publishProgress counts the bytes in the staging directory every
// progressEvery, so that waiters can see how far the download has come.
func publishProgress(ctx context.Context, d *coord.Download) {
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var n int64
		filepath.WalkDir(d.StagingDir(), func(_ string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				if fi, err := e.Info(); err == nil {
					n += fi.Size()
				}
			}
			return ctx.Err()
		})
		d.SetProgress(n, 0)
	}
}
