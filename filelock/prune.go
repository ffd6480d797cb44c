package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// Why Prune kept a lock file.
const (
	KeptHeld    = "held"    // someone holds the lock
	KeptAwaited = "awaited" // someone waits for it
	KeptRecent  = "recent"  // acquired within PruneOptions.OlderThan
	KeptUnsafe  = "unsafe"  // not a regular file with one link: never opened for writing, never removed
	KeptByVisit = "visit"   // PruneOptions.Visit said to keep it
	KeptChanged = "changed" // the path named another file by the time Prune held it
	// KeptUnsupported: Windows does not delete a file that others hold
	// open, and every process that uses a lock keeps its file open.
	KeptUnsupported = "unsupported"
)

// PruneOptions says which idle lock files Prune removes.
type PruneOptions struct {
	// OlderThan keeps files whose lock was acquired exclusively less than
	// this long ago (by the file's modification time, which every
	// exclusive acquisition moves; shared acquisitions write nothing and
	// do not count). Zero removes every idle file.
	OlderThan time.Duration
	// DryRun reports what would be removed and removes nothing.
	DryRun bool
	// Visit, if set, is called for each file Prune holds and would remove,
	// with the lock name and the record of its last exclusive holder (nil
	// if none). It runs while Prune holds the lock exclusively, so it may
	// do what only a holder may; returning false keeps the file.
	Visit func(name string, record []byte) (remove bool)
}

// Pruned is what Prune did with one lock file.
type Pruned struct {
	Name    string    // the lock name; a shortened name ends in "…"
	File    string    // path of the lock file
	ModTime time.Time // last exclusive acquisition; zero for an unsafe file
	Removed bool      // removed (with DryRun: would be)
	Kept    string    // why not, one of the Kept… constants; "" if Removed
}

// Prune removes idle lock files: those nobody holds or waits for. It takes
// each lock exclusively with a single try, never waiting, and removes the
// file only while it holds it, after checking that the path still names
// the file it holds. That is what keeps removal safe: every Lock checks
// after it is granted that the path still names the file it locked, and
// starts over on the file now there if not, so a process that opened or
// waited on a removed file never holds it as a lock. Symbolic links,
// directories and files with other hard links are reported (KeptUnsafe)
// and left alone; files whose names no lock name maps to are ignored.
//
// The cost of a removal: Lock calls that had opened the old file wake and
// start over, and the lock's fencing tokens start again from the new
// file's. Prune's single try can make someone else's single try
// (a Lock without wait) fail with ErrBusy for the microseconds it holds a
// file. Cancelling ctx stops Prune between files; what it removed stays
// removed. On Windows, where a file that others hold open cannot be
// deleted, nothing is removed: each idle file is reported KeptUnsupported.
func (l *Locker) Prune(ctx context.Context, o PruneOptions) ([]Pruned, error) {
	if o.OlderThan < 0 {
		return nil, fmt.Errorf("prune: negative age %s", o.OlderThan)
	}
	ents, err := os.ReadDir(l.path)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var out []Pruned
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		name, ok := nameFromFile(e.Name())
		if !ok {
			continue
		}
		p := Pruned{Name: name, File: filepath.Join(l.path, e.Name())}
		if !e.Type().IsRegular() {
			// Not even opened: a device or FIFO may act on open.
			p.Kept = KeptUnsafe
			out = append(out, p)
			continue
		}
		err := l.pruneFile(e.Name(), now, o, &p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue // removed meanwhile
		case errors.Is(err, ErrUnsafeFile):
			p.Kept = KeptUnsafe
		case err != nil:
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}

// pruneFile decides on one lock file and removes it if it may.
func (l *Locker) pruneFile(fname string, now time.Time, o PruneOptions, p *Pruned) error {
	f, err := l.open(fname, false)
	if err != nil {
		return err
	}
	defer f.close()
	recent := func() (bool, error) {
		mt, err := f.modTime()
		p.ModTime = mt
		return err == nil && o.OlderThan > 0 && now.Sub(mt) < o.OlderThan, err
	}
	if r, err := recent(); err != nil || r {
		p.Kept = KeptRecent
		return err
	}
	ok, err := f.tryLock(Exclusive)
	if err != nil {
		return err
	}
	if !ok {
		p.Kept = KeptHeld
		return nil
	}
	defer f.unlock()
	if !l.stillAt(fname, f) {
		p.Kept = KeptChanged
		return nil
	}
	if entries, _ := readLockTable().lookup(f); len(entries) > 0 {
		// Only waiters can be listed besides us: they queued behind our
		// single try. Removing would make them start over.
		for _, e := range entries {
			if e.waiting {
				p.Kept = KeptAwaited
				return nil
			}
		}
	}
	// Acquired between the first look and our try?
	if r, err := recent(); err != nil || r {
		p.Kept = KeptRecent
		return err
	}
	if o.Visit != nil {
		h, err := readHeader(f)
		if err != nil {
			return err
		}
		name := p.Name
		if !o.Visit(name, h.record) {
			p.Kept = KeptByVisit
			return nil
		}
	}
	if runtime.GOOS == "windows" {
		p.Kept = KeptUnsupported
		return nil
	}
	if o.DryRun {
		p.Removed = true
		return nil
	}
	l.dirMu.RLock()
	if l.dir == nil {
		l.dirMu.RUnlock()
		return ErrClosed
	}
	err = l.dir.remove(fname)
	l.dirMu.RUnlock()
	if err != nil {
		return err
	}
	l.dropIdle(fname)
	p.Removed = true
	return nil
}

// dropIdle closes the descriptors this Locker keeps for fname: they name a
// file that is no longer there.
func (l *Locker) dropIdle(fname string) {
	l.mu.Lock()
	fs := l.idle[fname]
	delete(l.idle, fname)
	l.nidle -= len(fs)
	l.mu.Unlock()
	for _, f := range fs {
		f.close()
	}
}
