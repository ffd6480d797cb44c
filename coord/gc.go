package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/toolchainkit/coord/filelock"
)

// GCOptions says what GC removes. The zero value removes idle lock files
// and lists download leftovers and stale records without removing them.
type GCOptions struct {
	// OlderThan keeps lock files used, and moved-aside destinations moved
	// aside, less than this long ago. Zero keeps nothing for its age.
	OlderThan time.Duration
	// DryRun reports what would be removed and removes nothing.
	DryRun bool
	// Staging removes the staging directories of downloads that died.
	Staging bool
	// Replaced removes the "<dest>.coord-replaced-<time>" directories that
	// a commit moved an incomplete destination aside to.
	Replaced bool
	// EtcdRecords removes etcd download records whose destination (on this
	// host) has no completion marker. Refused on the file backend.
	EtcdRecords bool
}

// Kinds of GCItem.
const (
	GCLockFile = "lock-file" // a file backend lock file
	GCStaging  = "staging"   // a staging directory of a download that died
	GCReplaced = "replaced"  // an incomplete destination a commit moved aside
	GCRecord   = "record"    // an etcd download record whose destination lost its marker
)

// Why GC kept an item (GCItem.Kept).
const (
	KeptHeld    = filelock.KeptHeld    // someone holds the lock
	KeptAwaited = filelock.KeptAwaited // someone waits for the lock
	KeptRecent  = filelock.KeptRecent  // used, or moved aside, within OlderThan
	KeptUnsafe  = filelock.KeptUnsafe  // a link, or not what coord makes there: left alone
	KeptChanged = filelock.KeptChanged // the lock file was replaced while GC looked
	// KeptUnsupported: Windows does not delete a lock file that others
	// may hold open.
	KeptUnsupported = filelock.KeptUnsupported
	KeptNotAsked    = "not asked"    // its removal needs an option (Staging, Replaced, EtcdRecords)
	KeptLeftovers   = "leftovers"    // a toolchain lock file whose record is how GC finds leftovers it kept
	KeptOtherHost   = "another host" // a record of a download on another host: its destination is not ours to check
	KeptRewritten   = "rewritten"    // the record changed since GC read it
	KeptForeign     = "foreign"      // a record coord did not write: no absolute destination in it
)

// GCItem is one thing GC found.
type GCItem struct {
	Kind    string    // GCLockFile, GCStaging, GCReplaced or GCRecord
	Name    string    // the lock name, or the download id
	Path    string    // the file or directory; the etcd key of a record
	Dest    string    // the download's destination, for download items
	Time    time.Time // last use: last exclusive acquisition, move aside, commit; zero if unknown
	Removed bool      // removed (with DryRun: would be)
	Kept    string    // why not, if not Removed
}

// GCReport is what GC found and did.
type GCReport struct {
	Backend string
	DryRun  bool
	Items   []GCItem
}

// lockFiles is a backend whose locks leave files behind (file).
type lockFiles interface {
	prune(ctx context.Context, o filelock.PruneOptions) ([]filelock.Pruned, error)
}

// GC cleans up what locks and downloads leave behind, and never touches a
// held lock or a download in progress:
//
//   - lock files (file backend) that nobody holds or waits for, each
//     removed only while GC holds it (see filelock.Locker.Prune);
//   - staging directories of downloads that died, and destinations that a
//     commit moved aside, found beside the destinations GC knows of: those
//     named by the record that the last downloader left in a toolchain lock
//     file, and by etcd's download records. GC looks at them only while it
//     holds that toolchain's lock (a single try), as the next downloader
//     would; a toolchain lock file is kept while leftovers it leads to stay,
//     and with OlderThan one taken within that age is not looked at;
//   - etcd download records whose destination on this host has lost its
//     completion marker (only with EtcdRecords).
//
// Without Staging, Replaced and EtcdRecords those are listed only. GC's
// single tries can make someone else's single try fail for the moment GC
// holds a lock. Cancelling ctx stops GC between items; what it removed
// stays removed.
func (m *Manager) GC(ctx context.Context, o GCOptions) (GCReport, error) {
	r := GCReport{Backend: m.b.kind(), DryRun: o.DryRun}
	if o.OlderThan < 0 {
		return r, fmt.Errorf("%w: gc: negative age %s", ErrInvalidArgument, o.OlderThan)
	}
	if o.EtcdRecords && m.records == nil {
		return r, fmt.Errorf("%w: gc: the %s backend keeps no download records", ErrInvalidArgument, m.b.kind())
	}
	if lf, ok := m.b.(lockFiles); ok {
		if err := m.gcLockFiles(ctx, lf, o, &r); err != nil {
			return r, err
		}
	}
	if m.records != nil {
		if err := m.gcRecords(ctx, m.records, o, &r); err != nil {
			return r, err
		}
	}
	return r, nil
}

func (m *Manager) gcLockFiles(ctx context.Context, lf lockFiles, o GCOptions, r *GCReport) error {
	visit := func(name string, record []byte) bool {
		id, ok := strings.CutPrefix(name, ToolchainLockName(""))
		h := parseRecord(record)
		if !ok || strings.HasSuffix(id, "…") || h == nil {
			return true // not a toolchain lock, a shortened id, or no record
		}
		items := m.leftovers(id, h.Dest, o)
		r.Items = append(r.Items, items...)
		for _, it := range items {
			if !it.Removed && it.Kept != KeptUnsafe {
				return false // a later GC may be asked to remove it
			}
		}
		return true
	}
	ps, err := lf.prune(ctx, filelock.PruneOptions{OlderThan: o.OlderThan, DryRun: o.DryRun, Visit: visit})
	for _, p := range ps {
		it := GCItem{Kind: GCLockFile, Name: p.Name, Path: p.File, Time: p.ModTime, Removed: p.Removed, Kept: p.Kept}
		if p.Kept == filelock.KeptByVisit {
			it.Kept = KeptLeftovers
		}
		r.Items = append(r.Items, it)
	}
	if err != nil {
		return fmt.Errorf("gc: %w", fileError(err))
	}
	return nil
}

func (m *Manager) gcRecords(ctx context.Context, b doneRecords, o GCOptions, r *GCReport) error {
	recs, err := b.records(ctx)
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	for _, rec := range recs {
		if err := ctx.Err(); err != nil {
			return err
		}
		var mk marker
		json.Unmarshal(rec.value, &mk) // unreadable: no dest, kept below
		it := GCItem{Kind: GCRecord, Name: rec.id, Path: rec.key, Dest: mk.Dest, Time: mk.Time}
		switch {
		case !filepath.IsAbs(mk.Dest):
			it.Kept = KeptForeign
			r.Items = append(r.Items, it)
			continue
		case mk.Host != m.self.Host:
			it.Kept = KeptOtherHost
			r.Items = append(r.Items, it)
			continue
		case IsComplete(mk.Dest):
			// A live record: nothing to remove, but leftovers may lie
			// beside its destination.
		case !o.EtcdRecords:
			it.Kept = KeptNotAsked
			r.Items = append(r.Items, it)
		case o.DryRun:
			it.Removed = true
			r.Items = append(r.Items, it)
		default:
			ok, err := b.deleteRecord(ctx, rec)
			if err != nil {
				return fmt.Errorf("gc: %w", err)
			}
			it.Removed = ok
			if !ok {
				it.Kept = KeptRewritten
			}
			r.Items = append(r.Items, it)
		}
		if mk.ID != rec.id {
			continue
		}
		// Leftovers only while we hold the toolchain lock: no download of
		// this id is in progress.
		l, err := m.grant(ctx, request{name: ToolchainLockName(rec.id), mode: exclusive, once: true})
		if errors.Is(err, errBusy) {
			continue
		}
		if err != nil {
			return fmt.Errorf("gc: %w", err)
		}
		r.Items = append(r.Items, m.leftovers(rec.id, mk.Dest, o)...)
		if err := l.Unlock(); err != nil {
			return fmt.Errorf("gc: %w", err)
		}
	}
	return nil
}

// leftovers lists, and removes as o asks, the staging directories of id and
// the moved-aside directories beside dest. The caller holds id's toolchain
// lock. dest comes from a record anyone who may lock may have written: only
// directories named as coord names them, beside an absolute dest, qualify.
func (m *Manager) leftovers(id, dest string, o GCOptions) []GCItem {
	if !filepath.IsAbs(dest) || filepath.Clean(dest) != dest || dest == filepath.Dir(dest) {
		return nil
	}
	parent := filepath.Dir(dest)
	ents, err := os.ReadDir(parent)
	if err != nil {
		return nil // gone, or not ours to read: nothing to clean
	}
	staging, replaced := stagingPrefix(id, dest), replacedPrefix(dest)
	var out []GCItem
	for _, e := range ents {
		n := e.Name()
		it := GCItem{Name: id, Path: filepath.Join(parent, n), Dest: dest}
		remove := false
		switch {
		case strings.HasPrefix(n, staging):
			it.Kind, remove = GCStaging, o.Staging
			if fi, err := e.Info(); err == nil {
				it.Time = fi.ModTime()
			}
		case strings.HasPrefix(n, replaced):
			t, err := time.Parse(replacedTime, strings.TrimPrefix(n, replaced))
			if err != nil {
				continue // not a name clearDest writes
			}
			it.Kind, it.Time, remove = GCReplaced, t, o.Replaced
			if remove && o.OlderThan > 0 && time.Since(t) < o.OlderThan {
				it.Kept = KeptRecent
			}
		default:
			continue
		}
		switch {
		case !e.IsDir(): // a symbolic link, or a file: coord made neither
			it.Kept = KeptUnsafe
		case it.Kept != "":
		case !remove:
			it.Kept = KeptNotAsked
		case o.DryRun:
			it.Removed = true
		default:
			if err := os.RemoveAll(it.Path); err != nil {
				it.Kept = "remove: " + err.Error()
				break
			}
			it.Removed = true
		}
		out = append(out, it)
	}
	return out
}
