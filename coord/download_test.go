package coord_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/wintest"
)

func TestDoRunsFetchOnce(t *testing.T) {
	locks := wintest.TempDir(t)
	checkDoOnce(t, func() *coord.Manager { return newManager(t, locks) })
}

// checkDoOnce runs 16 Do of one id at once, each with its own Manager (as
// 16 processes would): the fetch runs once, dest is whole and alone, and
// every caller returns soon after the fetch ends.
func checkDoOnce(t *testing.T, newManager func() *coord.Manager) {
	parent := wintest.TempDir(t)
	dest := filepath.Join(parent, "llvm")
	var runs atomic.Int32
	var fetched atomic.Int64
	returned := make([]time.Time, 16)
	var wg sync.WaitGroup
	for i := range returned {
		dc := coord.NewDownloadCoordinator(newManager())
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := dc.Do(context.Background(), "llvm-18", dest, func(_ context.Context, dir string) error {
				runs.Add(1)
				time.Sleep(200 * time.Millisecond)
				defer func() { fetched.Store(time.Now().UnixNano()) }()
				return os.WriteFile(filepath.Join(dir, "bin"), []byte("clang"), 0o644)
			})
			if err != nil {
				t.Error(err)
			}
			returned[i] = time.Now()
		}()
	}
	wg.Wait()
	if n := runs.Load(); n != 1 {
		t.Fatalf("fetch ran %d times; want 1", n)
	}
	if b, err := os.ReadFile(filepath.Join(dest, "bin")); err != nil || string(b) != "clang" {
		t.Fatalf("dest/bin = %q, %v", b, err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 1 {
		t.Fatalf("parent holds %d entries; want dest alone", len(ents))
	}
	var last time.Time
	for _, r := range returned {
		if r.After(last) {
			last = r
		}
	}
	spread := last.Sub(time.Unix(0, fetched.Load()))
	t.Logf("last of 16 callers returned %s after the fetch finished", spread)
	// Far below the stall timeout a waiter that was never woken would end
	// on; the wake-up itself is measured by make bench.
	if spread > slack {
		t.Errorf("last caller returned %s after the fetch finished", spread)
	}
}

func TestFailedDownloadPassesToNextCaller(t *testing.T) {
	wintest.SkipUnderWine(t, "os.RemoveAll fails on a closed file (\"Invalid function\": no FileDispositionInformationEx), and the staging directory stays")
	locks, parent := wintest.TempDir(t), wintest.TempDir(t)
	dest := filepath.Join(parent, "gcc")
	dc := coord.NewDownloadCoordinator(newManager(t, locks))
	boom := errors.New("network down")
	_, err := dc.Do(context.Background(), "gcc", dest, func(_ context.Context, dir string) error {
		os.WriteFile(filepath.Join(dir, "half"), []byte("x"), 0o644)
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Do = %v; want the fetch error", err)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Fatalf("dest exists after a failed download: %v", err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Fatalf("failed download left %d entries beside dest", len(ents))
	}
	downloaded, err := dc.Do(context.Background(), "gcc", dest, func(_ context.Context, dir string) error {
		return os.WriteFile(filepath.Join(dir, "whole"), []byte("y"), 0o644)
	})
	if err != nil || !downloaded {
		t.Fatalf("second Do = %v, %v; want a download", downloaded, err)
	}
	if _, err := os.Stat(filepath.Join(dest, "half")); !os.IsNotExist(err) {
		t.Fatal("dest holds the failed download's file")
	}
}

func TestCoordinateRemovesStaleStagingAndMovesIncompleteDestAside(t *testing.T) {
	wintest.SkipUnderWine(t, "os.RemoveAll fails on a closed file (\"Invalid function\": no FileDispositionInformationEx), and the staging directory stays")
	locks, parent := wintest.TempDir(t), wintest.TempDir(t)
	dest := filepath.Join(parent, "sdk")
	// A dead downloader's staging dir and an incomplete dest without marker.
	stale := filepath.Join(parent, ".sdk.coord-staging-"+idHash("sdk")+"-123")
	os.MkdirAll(filepath.Join(stale, "deep"), 0o755)
	os.MkdirAll(dest, 0o755)
	os.WriteFile(filepath.Join(dest, "partial"), []byte("p"), 0o644)

	dc := coord.NewDownloadCoordinator(newManager(t, locks))
	d, err := dc.Coordinate(context.Background(), "sdk", dest)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !d.ShouldDownload() || filepath.Dir(d.StagingDir()) != parent {
		t.Fatalf("ShouldDownload %v, StagingDir %q; want a sibling of dest", d.ShouldDownload(), d.StagingDir())
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale staging dir survived: %v", err)
	}
	os.WriteFile(filepath.Join(d.StagingDir(), "full"), []byte("f"), 0o644)
	if err := d.SetProgress(1, 1); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dest, "partial")); !os.IsNotExist(err) {
		t.Fatal("incomplete dest content is still in dest after the commit")
	}
	if _, err := os.Stat(filepath.Join(dest, coord.MarkerName)); err != nil {
		t.Fatalf("marker: %v", err)
	}
	// Nothing lost: the incomplete dest was moved aside, not deleted.
	aside, _ := filepath.Glob(dest + ".coord-replaced-*")
	if len(aside) != 1 {
		t.Fatalf("moved-aside dirs %v; want one", aside)
	}
	if b, _ := os.ReadFile(filepath.Join(aside[0], "partial")); string(b) != "p" {
		t.Fatalf("moved-aside dest lost its content: %q", b)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 2 {
		t.Fatalf("parent holds %d entries after commit; want dest and the moved-aside dir", len(ents))
	}
	// Now complete: the fast path takes no lock, even while it is held.
	m2 := newManager(t, locks)
	if _, err := m2.ToolchainLock(context.Background(), "sdk", coord.WithTimeout(0)); !errors.Is(err, coord.ErrTimeout) {
		t.Fatalf("toolchain lock while the downloader's Download is open = %v; want ErrTimeout", err)
	}
	d2, err := coord.NewDownloadCoordinator(m2).Coordinate(context.Background(), "sdk", dest, coord.WithTimeout(0))
	if err != nil || d2.ShouldDownload() {
		t.Fatalf("Coordinate on a complete dest = %v, %v; want done without waiting", d2, err)
	}
}

func TestCoordinateBadDest(t *testing.T) {
	dir := wintest.TempDir(t)
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o644)
	locks := filepath.Join(wintest.TempDir(t), "locks")
	dc := coord.NewDownloadCoordinator(newManager(t, locks))
	wd, _ := os.Getwd()
	dests := []string{"", file, "/", "a\x00b", ".", filepath.Dir(wd), locks, filepath.Dir(locks)}
	// Windows makes symbolic links only with a privilege; Wine 8 says it
	// made one and makes nothing.
	if link := filepath.Join(dir, "link"); os.Symlink(dir, link) == nil {
		if _, err := os.Lstat(link); err == nil {
			dests = append(dests, link)
		}
	}
	for _, dest := range dests {
		if _, err := dc.Coordinate(context.Background(), "x", dest); !errors.Is(err, coord.ErrInvalidArgument) {
			t.Errorf("Coordinate(dest %q) = %v; want ErrInvalidArgument", dest, err)
		}
	}
	if _, err := dc.Coordinate(context.Background(), "", filepath.Join(dir, "d")); !errors.Is(err, coord.ErrInvalidName) {
		t.Errorf("empty id = %v; want ErrInvalidName", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatalf("file changed to %q", b)
	}
}

// Two ids downloading into one dest (a misuse): the second Commit keeps the
// complete dest that others may already use, and drops its own staging.
func TestCommitKeepsCompleteDest(t *testing.T) {
	wintest.SkipUnderWine(t, "os.RemoveAll fails on a closed file (\"Invalid function\": no FileDispositionInformationEx), and the staging directory stays")
	locks, parent := wintest.TempDir(t), wintest.TempDir(t)
	dest := filepath.Join(parent, "shared")
	dc := coord.NewDownloadCoordinator(newManager(t, locks))
	a, err := dc.Coordinate(context.Background(), "a", dest)
	if err != nil {
		t.Fatal(err)
	}
	b, err := dc.Coordinate(context.Background(), "b", dest)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(a.StagingDir(), "from"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(b.StagingDir(), "from"), []byte("b"), 0o644)
	if err := b.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := a.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if got, _ := os.ReadFile(filepath.Join(dest, "from")); string(got) != "b" {
		t.Fatalf("dest/from = %q; want the first commit's %q", got, "b")
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 1 {
		t.Fatalf("parent holds %d entries; want dest alone", len(ents))
	}
}

// idHash is the part of a staging directory's name that names its id.
func idHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:4])
}

// An empty dest (made beforehand, say by mkdir -p) is simply replaced.
func TestCommitReplacesEmptyDest(t *testing.T) {
	parent := wintest.TempDir(t)
	dest := filepath.Join(parent, "empty")
	os.Mkdir(dest, 0o755)
	downloaded, err := coord.NewDownloadCoordinator(newManager(t, wintest.TempDir(t))).Do(context.Background(), "e", dest,
		func(_ context.Context, dir string) error { return os.WriteFile(filepath.Join(dir, "f"), nil, 0o644) })
	if err != nil || !downloaded {
		t.Fatalf("Do = %v, %v", downloaded, err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 1 {
		t.Fatalf("parent holds %d entries; want dest alone", len(ents))
	}
}
