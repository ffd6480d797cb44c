package coord_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/wintest"
)

// Coordinate bounds its wait as Lock does: a single try, a ctx deadline
// when no WithTimeout is given, or WithTimeout; a wait that runs out is
// one *TimeoutError naming the downloader.
func TestCoordinateTimeouts(t *testing.T) {
	locks, dest := wintest.TempDir(t), filepath.Join(wintest.TempDir(t), "dl")
	first, err := coord.NewDownloadCoordinator(newManager(t, locks)).Coordinate(context.Background(), "dl", dest)
	if err != nil || !first.ShouldDownload() {
		t.Fatalf("first Coordinate = %v, %v", first, err)
	}
	defer first.Close()
	dc := coord.NewDownloadCoordinator(newManager(t, locks))
	for _, tc := range []struct {
		name     string
		deadline time.Duration // 0: none
		opts     []coord.LockOption
		waited   time.Duration // TimeoutError.Waited at least; 0: exactly 0
	}{
		{"try once", 0, []coord.LockOption{coord.WithTimeout(0)}, 0},
		{"try once under a deadline", time.Minute, []coord.LockOption{coord.WithTimeout(0)}, 0},
		{"ctx deadline", 200 * time.Millisecond, nil, 200 * time.Millisecond},
		{"WithTimeout over a longer deadline", time.Minute, []coord.LockOption{coord.WithTimeout(200 * time.Millisecond)}, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			_, err := dc.Coordinate(ctx, "dl", dest, tc.opts...)
			took := time.Since(start)
			var te *coord.TimeoutError
			switch {
			case !errors.As(err, &te):
				t.Fatalf("Coordinate = %v; want a *TimeoutError", err)
			case tc.waited == 0 && te.Waited != 0,
				tc.waited > 0 && (te.Waited <= 0 || te.Waited > took),
				len(tc.opts) > 0 && te.Waited < tc.waited: // the bound is the call's own
				t.Errorf("Waited = %s after %s; want %s", te.Waited, took, tc.waited)
			case took < tc.waited:
				t.Errorf("returned after %s; want at least %s", took, tc.waited)
			case took > tc.waited+slack:
				t.Errorf("returned after %s; want about %s", took, tc.waited)
			case te.Name != coord.ToolchainLockName("dl") || te.Holder == nil || te.Holder.PID != os.Getpid():
				t.Errorf("TimeoutError = %+v; want the toolchain lock held by this process", te)
			}
		})
	}
	if _, err := dc.Coordinate(context.Background(), "dl", dest, coord.WithTimeout(-time.Second)); !errors.Is(err, coord.ErrInvalidArgument) {
		t.Errorf("negative timeout = %v; want ErrInvalidArgument", err)
	}
}
