package coord_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/wintest"
)

// stallBackends runs f on the file backend and on the shared embedded
// etcd, each with a Manager per caller, as processes would have.
func stallBackends(t *testing.T, f func(t *testing.T, newManager func() *coord.Manager)) {
	t.Run("file", func(t *testing.T) {
		locks := wintest.TempDir(t)
		f(t, func() *coord.Manager { return newManager(t, locks) })
	})
	t.Run("etcd", func(t *testing.T) {
		cfg := sharedConfig(t)
		f(t, func() *coord.Manager { return etcdManager(t, cfg) })
	})
}

// A downloader whose progress does not move: its waiter gives up after
// the stall timeout, long before its own timeout, with a *TimeoutError
// that says it stalled and names the downloader; the downloader is
// unaffected and commits.
func TestCoordinateGivesUpOnStalledDownload(t *testing.T) {
	stallBackends(t, func(t *testing.T, newManager func() *coord.Manager) {
		dest := filepath.Join(wintest.TempDir(t), "hung")
		first, err := coord.NewDownloadCoordinator(newManager()).Coordinate(context.Background(), "hung", dest)
		if err != nil || !first.ShouldDownload() {
			t.Fatalf("first Coordinate = %v, %v", first, err)
		}
		defer first.Close()
		if err := first.SetProgress(42, 0); err != nil {
			t.Fatal(err)
		}
		const stall = 300 * time.Millisecond
		_, err = coord.NewDownloadCoordinator(newManager()).Coordinate(context.Background(), "hung", dest,
			coord.WithTimeout(time.Hour), coord.WithStallTimeout(stall))
		var te *coord.TimeoutError
		if !errors.As(err, &te) || te.Stalled != stall || te.Waited < stall {
			t.Fatalf("Coordinate behind a hung download = %v; want a *TimeoutError, stalled for %s", err, stall)
		}
		if h := te.Holder; h == nil || h.PID != os.Getpid() || h.Progress == nil || h.Progress.Done != 42 || h.Dest != first.Dest() {
			t.Fatalf("TimeoutError.Holder = %+v; want this process at 42 bytes into %s", te.Holder, first.Dest())
		}
		for _, want := range []string{`lock "toolchain/hung": the download stalled: no progress for 300ms`, "downloaded 42 B", "into " + first.Dest()} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("message %q lacks %q", err, want)
			}
		}
		if err := os.WriteFile(filepath.Join(first.StagingDir(), "f"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := first.Commit(context.Background()); err != nil || !coord.IsComplete(dest) {
			t.Fatalf("the stalled downloader's Commit = %v, complete %v", err, coord.IsComplete(dest))
		}
	})
}

// A download that keeps moving for longer than the stall timeout: the
// waiter waits it out and returns done when it commits.
func TestCoordinateWaitsOutMovingDownload(t *testing.T) {
	stallBackends(t, func(t *testing.T, newManager func() *coord.Manager) {
		dest := filepath.Join(wintest.TempDir(t), "moving")
		first, err := coord.NewDownloadCoordinator(newManager()).Coordinate(context.Background(), "moving", dest)
		if err != nil || !first.ShouldDownload() {
			t.Fatalf("first Coordinate = %v, %v", first, err)
		}
		defer first.Close()
		// Progress every 20 ms for 3 stall timeouts of 500 ms: a waiter
		// that counted from its start, not from the last move, would end.
		const stall = 500 * time.Millisecond
		committed := make(chan error, 1)
		go func() {
			for i := int64(1); i <= 75; i++ {
				first.SetProgress(i, 75)
				time.Sleep(20 * time.Millisecond)
			}
			os.WriteFile(filepath.Join(first.StagingDir(), "f"), []byte("x"), 0o644)
			committed <- first.Commit(context.Background())
		}()
		start := time.Now()
		d, err := coord.NewDownloadCoordinator(newManager()).Coordinate(context.Background(), "moving", dest, coord.WithStallTimeout(stall))
		if err != nil || d.ShouldDownload() || !coord.IsComplete(dest) {
			t.Fatalf("Coordinate behind a moving download = %v, %v after %s; want done", d, err, time.Since(start))
		}
		if err := <-committed; err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited < 3*stall {
			t.Errorf("returned after %s, before the download could have committed", waited)
		}
	})
}

// Do reports the bytes in the staging directory and the total a fetch
// announces in TotalFileName; the total file is not published.
func TestDoReportsProgressAndTotal(t *testing.T) {
	stallBackends(t, func(t *testing.T, newManager func() *coord.Manager) {
		dest := filepath.Join(wintest.TempDir(t), "sdk")
		watcher := newManager()
		_, err := coord.NewDownloadCoordinator(newManager()).Do(context.Background(), "sdk", dest, func(_ context.Context, dir string) error {
			if err := os.WriteFile(filepath.Join(dir, coord.TotalFileName), []byte("100\n"), 0o644); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, "part"), make([]byte, 40), 0o644); err != nil {
				return err
			}
			waitUntil(t, 30*time.Second, func() error {
				s, err := watcher.Inspect(context.Background(), "toolchain/sdk")
				if err != nil {
					return err
				}
				if h := s.Holder; h == nil || h.Progress == nil || *h.Progress != (coord.Progress{Done: 40, Total: 100}) {
					return errors.New("progress not yet 40 of 100")
				}
				return nil
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dest, coord.TotalFileName)); !os.IsNotExist(err) {
			t.Errorf("dest holds %s: %v", coord.TotalFileName, err)
		}
		if _, err := os.Stat(filepath.Join(dest, "part")); err != nil {
			t.Error(err)
		}
	})
}

// An empty download is not committed unless AllowEmpty; one that wrote
// into dest instead of the staging directory is told so.
func TestCommitRefusesEmptyDownload(t *testing.T) {
	locks, parent := wintest.TempDir(t), wintest.TempDir(t)
	dc := coord.NewDownloadCoordinator(newManager(t, locks))
	nothing := func(context.Context, string) error { return nil }

	dest := filepath.Join(parent, "empty")
	downloaded, err := dc.Do(context.Background(), "empty", dest, nothing)
	var ee *coord.EmptyDownloadError
	if !errors.Is(err, coord.ErrEmptyDownload) || !errors.As(err, &ee) || ee.DestFiles || downloaded {
		t.Fatalf("Do of nothing = %v, %v; want an *EmptyDownloadError without DestFiles", downloaded, err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Fatalf("an empty download left %d entries beside dest", len(ents))
	}
	if downloaded, err := dc.Do(context.Background(), "empty", dest, nothing, coord.AllowEmpty()); err != nil || !downloaded || !coord.IsComplete(dest) {
		t.Fatalf("Do of nothing with AllowEmpty = %v, %v, complete %v", downloaded, err, coord.IsComplete(dest))
	}

	naive := filepath.Join(parent, "naive")
	_, err = dc.Do(context.Background(), "naive", naive, func(context.Context, string) error {
		os.Mkdir(naive, 0o755)
		return os.WriteFile(filepath.Join(naive, "f"), []byte("x"), 0o644)
	})
	if !errors.As(err, &ee) || !ee.DestFiles || ee.Dest != naive {
		t.Fatalf("Do that wrote into dest = %v; want an *EmptyDownloadError with DestFiles", err)
	}
	if !strings.Contains(err.Error(), "wrote there instead of into the staging directory") {
		t.Errorf("message %q does not say where the download went", err)
	}
	if _, err := os.Stat(filepath.Join(naive, "f")); err != nil || coord.IsComplete(naive) {
		t.Fatalf("dest's own files: %v, complete %v; want them kept, not marked", err, coord.IsComplete(naive))
	}
}

func TestProgressString(t *testing.T) {
	for _, tc := range []struct {
		p    coord.Progress
		want string
	}{
		{coord.Progress{}, "0 B"},
		{coord.Progress{Done: 1536}, "1.5 KiB"},
		{coord.Progress{Done: 1 << 30, Total: 2 << 30}, "1.0 GiB of 2.0 GiB (50%)"},
		{coord.Progress{Done: 1 << 30, Total: 2 << 30, Rate: 16 << 20}, "1.0 GiB of 2.0 GiB (50%), 16.0 MiB/s, 1m4s left"},
		{coord.Progress{Done: 3 << 20, Rate: 1 << 20}, "3.0 MiB, 1.0 MiB/s"},
		// Past its total (an archive unpacked beside itself): no percent.
		{coord.Progress{Done: 3 << 20, Total: 1 << 20, Rate: 1 << 20}, "3.0 MiB, 1.0 MiB/s"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("%+v.String() = %q; want %q", tc.p, got, tc.want)
		}
	}
}

func TestTimeoutErrorMessages(t *testing.T) {
	h := &coord.Holder{Host: "ci-7", PID: 42, Token: 9, Dest: "/opt/llvm", Progress: &coord.Progress{Done: 10}}
	for _, tc := range []struct {
		e    coord.TimeoutError
		want string
	}{
		{coord.TimeoutError{Name: "a"}, `lock "a": held by another process`},
		{coord.TimeoutError{Name: "a", Holder: &coord.Holder{Host: "ci-7", PID: 42, Token: 9}}, `lock "a": held by pid 42 on host ci-7 (token 9)`},
		{coord.TimeoutError{Name: "a", Waited: 1500 * time.Millisecond}, `lock "a": timed out after 1.5s`},
		{coord.TimeoutError{Name: "toolchain/llvm", Waited: 130 * time.Second, Stalled: 2 * time.Minute, Holder: h},
			`lock "toolchain/llvm": the download stalled: no progress for 2m0s (waited 2m10s); held by pid 42 on host ci-7 (token 9), downloaded 10 B, into /opt/llvm`},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q; want %q", got, tc.want)
		}
	}
}
