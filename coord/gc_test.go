package coord_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/wintest"
)

// gcItems runs GC and returns its items by kind and name.
func gcItems(t *testing.T, m *coord.Manager, o coord.GCOptions) map[string]coord.GCItem {
	t.Helper()
	r, err := m.GC(context.Background(), o)
	if err != nil {
		t.Fatalf("GC(%+v): %v", o, err)
	}
	out := map[string]coord.GCItem{}
	for _, it := range r.Items {
		out[it.Kind+" "+it.Name] = it
	}
	return out
}

func wantItem(t *testing.T, items map[string]coord.GCItem, key string, removed bool, kept string) coord.GCItem {
	t.Helper()
	it, ok := items[key]
	if !ok {
		t.Fatalf("no item %q in %v", key, items)
	}
	if it.Removed != removed || it.Kept != kept {
		t.Fatalf("%s: Removed=%v Kept=%q; want Removed=%v Kept=%q", key, it.Removed, it.Kept, removed, kept)
	}
	return it
}

func present(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// A download that moved an incomplete dest aside, and a dead downloader's
// staging directory: GC lists both, removes each only when asked, and keeps
// the toolchain lock file (its record is how GC finds them) until they are
// gone.
func TestGCDownloadLeftovers(t *testing.T) {
	wintest.SkipUnderWine(t, "os.RemoveAll fails on a closed file (\"Invalid function\": no FileDispositionInformationEx), and GC keeps what it should remove")
	locks, parent := wintest.TempDir(t), wintest.TempDir(t)
	m := newManager(t, locks)
	dest := filepath.Join(parent, "sdk")
	os.MkdirAll(dest, 0o755)
	os.WriteFile(filepath.Join(dest, "partial"), []byte("p"), 0o644)
	d, err := coord.NewDownloadCoordinator(m).Coordinate(context.Background(), "sdk", dest)
	if err != nil || !d.ShouldDownload() {
		t.Fatalf("Coordinate: %v", err)
	}
	dead := filepath.Join(parent, ".sdk.coord-staging-"+idHash("sdk")+"-dead")
	os.MkdirAll(filepath.Join(dead, "deep"), 0o755)
	os.WriteFile(filepath.Join(d.StagingDir(), "full"), []byte("f"), 0o644)
	if err := d.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.Close()
	aside, _ := filepath.Glob(dest + ".coord-replaced-*")
	if len(aside) != 1 {
		t.Fatalf("moved-aside dirs %v; want one", aside)
	}
	// Not ours although named like it: a symlink, and a name clearDest
	// never writes.
	outside := wintest.TempDir(t)
	os.Symlink(outside, dest+".coord-replaced-20200101T000000.000000000")
	os.Mkdir(dest+".coord-replaced-yesterday", 0o755)

	items := gcItems(t, m, coord.GCOptions{})
	wantItem(t, items, "staging sdk", false, coord.KeptNotAsked)
	wantItem(t, items, "replaced sdk", false, coord.KeptNotAsked)
	wantItem(t, items, "lock-file toolchain/sdk", false, coord.KeptLeftovers)
	for _, p := range []string{dead, aside[0]} {
		if !present(p) {
			t.Fatalf("%s removed without being asked", p)
		}
	}

	items = gcItems(t, m, coord.GCOptions{DryRun: true, Staging: true, Replaced: true})
	wantItem(t, items, "staging sdk", true, "")
	wantItem(t, items, "lock-file toolchain/sdk", true, "")
	if !present(dead) || !present(aside[0]) || !present(items["lock-file toolchain/sdk"].Path) {
		t.Fatal("dry run removed something")
	}

	// Moved aside just now: kept with --older-than, even when asked. The
	// lock file is made old so that GC looks at it at all.
	lockFile := items["lock-file toolchain/sdk"].Path
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(lockFile, old, old)
	items = gcItems(t, m, coord.GCOptions{Replaced: true, OlderThan: time.Hour})
	wantItem(t, items, "replaced sdk", false, coord.KeptRecent)

	items = gcItems(t, m, coord.GCOptions{Staging: true, Replaced: true})
	wantItem(t, items, "staging sdk", true, "")
	it := wantItem(t, items, "replaced sdk", true, "")
	if it.Dest != dest || time.Since(it.Time) > time.Minute {
		t.Errorf("replaced item: %+v", it)
	}
	wantItem(t, items, "lock-file toolchain/sdk", true, "")
	if present(dead) || present(aside[0]) || present(lockFile) {
		t.Fatal("asked to remove, GC left something")
	}
	if !coord.IsComplete(dest) || !present(outside) || !present(dest+".coord-replaced-yesterday") {
		t.Fatal("GC touched dest, a symlink's target or a directory coord did not name")
	}
}

// A download in progress: its lock file, staging directory and dest are
// left alone whatever GC is asked.
func TestGCLeavesDownloadInProgress(t *testing.T) {
	locks, parent := wintest.TempDir(t), wintest.TempDir(t)
	m := newManager(t, locks)
	dest := filepath.Join(parent, "jdk")
	d, err := coord.NewDownloadCoordinator(m).Coordinate(context.Background(), "jdk", dest)
	if err != nil || !d.ShouldDownload() {
		t.Fatalf("Coordinate: %v", err)
	}
	defer d.Close()
	items := gcItems(t, newManager(t, locks), coord.GCOptions{Staging: true, Replaced: true})
	wantItem(t, items, "lock-file toolchain/jdk", false, coord.KeptHeld)
	if _, ok := items["staging jdk"]; ok {
		t.Fatal("GC looked at the staging directory of a download in progress")
	}
	os.WriteFile(filepath.Join(d.StagingDir(), "f"), nil, 0o644)
	if err := d.Commit(context.Background()); err != nil {
		t.Fatalf("Commit after GC: %v", err)
	}
}

func TestGCBadOptions(t *testing.T) {
	m := newManager(t, wintest.TempDir(t))
	for _, o := range []coord.GCOptions{{OlderThan: -time.Second}, {EtcdRecords: true}} {
		if _, err := m.GC(context.Background(), o); !errors.Is(err, coord.ErrInvalidArgument) {
			t.Errorf("GC(%+v) = %v; want ErrInvalidArgument", o, err)
		}
	}
}

// etcd download records: one whose dest lost its marker is removed only
// with EtcdRecords; a complete one, and one of another host, stay.
func TestEtcdGCRecords(t *testing.T) {
	cfg := sharedConfig(t)
	m := etcdManager(t, cfg)
	dc := coord.NewDownloadCoordinator(m)
	parent := wintest.TempDir(t)
	fetch := func(_ context.Context, dir string) error { return os.WriteFile(filepath.Join(dir, "f"), nil, 0o644) }
	for _, id := range []string{"kept", "gone"} {
		if _, err := dc.Do(context.Background(), id, filepath.Join(parent, id), fetch); err != nil {
			t.Fatal(err)
		}
	}
	os.RemoveAll(filepath.Join(parent, "gone"))
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	pfx := cfg.Prefix + "/downloads/"
	if _, err := cli.Put(ctx, pfx+"elsewhere", `{"id":"elsewhere","dest":"/nonexistent/x","host":"other-host"}`); err != nil {
		t.Fatal(err)
	}
	keys := func() map[string]bool {
		resp, err := cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, kv := range resp.Kvs {
			out[string(kv.Key)[len(pfx):]] = true
		}
		return out
	}

	items := gcItems(t, m, coord.GCOptions{})
	wantItem(t, items, "record gone", false, coord.KeptNotAsked)
	wantItem(t, items, "record elsewhere", false, coord.KeptOtherHost)
	if _, ok := items["record kept"]; ok {
		t.Error("a record whose dest is complete was reported")
	}
	items = gcItems(t, m, coord.GCOptions{EtcdRecords: true, DryRun: true})
	wantItem(t, items, "record gone", true, "")
	if k := keys(); !k["gone"] || !k["kept"] || !k["elsewhere"] {
		t.Fatalf("after a dry run: records %v", k)
	}
	items = gcItems(t, m, coord.GCOptions{EtcdRecords: true})
	wantItem(t, items, "record gone", true, "")
	if k := keys(); k["gone"] || !k["kept"] || !k["elsewhere"] || len(k) != 2 {
		t.Fatalf("after GC: records %v; want kept and elsewhere", k)
	}
}
