package exporter

import (
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/toolchainkit/coord/coord"
)

// state is what the exporter knows of the locks, kept from Watch's
// Changes; the counters are the transitions it saw between them.
type state struct {
	now func() time.Time

	mu      sync.Mutex
	backend string
	primed  bool // a first Reset arrived: holders seen after it are grants
	up      bool
	err     string
	locks   map[string]*lockState // held or awaited only
	// counters, read by the collector and the page.
	grants, releases, lost, commits uint64
	observe                         func(float64) // the wait-duration histogram
	version                         uint64
	changed                         chan struct{} // closed and replaced on every change
}

// lockState is one lock as last seen and, for each wait seen, when the
// exporter first saw it.
type lockState struct {
	s         coord.Status
	firstSeen map[string]time.Time // by entry id: holders and waiters
}

func newState(backend string, now func() time.Time, observe func(float64)) *state {
	return &state{backend: backend, now: now, observe: observe, locks: map[string]*lockState{}, changed: make(chan struct{})}
}

// hold is one holder's hold of a lock: id names it (on etcd the key and
// its create revision; on file the token of an exclusive hold, which
// changes with every exclusive grant, or the pid of a shared holder), and
// wait names the wait it may have come from ("" if unknown).
type hold struct{ id, wait string }

// holds are s's holders. A file lock held where the OS does not tell who
// holds it counts as one holder, named by its token.
func holds(s coord.Status) []hold {
	if !s.Held {
		return nil
	}
	if s.Key == "" && (!s.Shared || len(s.Holders) == 0) {
		h := hold{id: fmt.Sprintf("token %d", s.Token)}
		if len(s.Holders) > 0 {
			h.wait = waitID(s.Holders[0])
		}
		return []hold{h}
	}
	out := make([]hold, len(s.Holders))
	for i, p := range s.Holders {
		out[i] = hold{id: holdID(p), wait: waitID(p)}
	}
	return out
}

// holdID names an etcd hold, or a file lock's shared holder.
func holdID(p coord.Process) string {
	if p.Key != "" {
		return fmt.Sprintf("%s@%d", p.Key, p.Revision)
	}
	return fmt.Sprintf("pid %d", p.PID)
}

// waitID names a wait: on etcd the waiter's key and create revision, which
// it keeps when granted; on file its pid.
func waitID(p coord.Process) string { return "wait " + holdID(p) }

// apply takes in one Change.
func (st *state) apply(c coord.Change) {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	switch {
	case c.Err != nil:
		st.up, st.err = false, c.Err.Error()
	case c.Reset:
		st.up, st.err = true, ""
		seen := map[string]bool{}
		for _, s := range c.Locks {
			seen[s.Name] = true
			st.update(s, now)
		}
		for name, ls := range st.locks {
			if seen[name] {
				continue
			}
			// Gone from the listing: released, or on file its lock file
			// was removed; while held, that is a lost lock (see
			// coord.Lock.Lost).
			if ls.s.Held && ls.s.File != "" && st.primed && !exists(ls.s.File) {
				st.lost++
			} else if st.primed {
				st.releases += uint64(len(holds(ls.s)))
			}
			delete(st.locks, name)
		}
		st.primed = true
	default:
		st.up, st.err = true, ""
		for _, s := range c.Locks {
			st.update(s, now)
		}
	}
	if c.Done != "" {
		st.commits++
	}
	st.version++
	close(st.changed)
	st.changed = make(chan struct{})
}

// update takes in the new state of one lock.
func (st *state) update(s coord.Status, now time.Time) {
	ls := st.locks[s.Name]
	if ls == nil {
		ls = &lockState{firstSeen: map[string]time.Time{}}
	}
	oldHolders := map[string]bool{}
	for _, h := range holds(ls.s) {
		oldHolders[h.id] = true
	}
	live := map[string]bool{}
	for _, h := range holds(s) {
		live[h.id] = true
		if oldHolders[h.id] {
			continue
		}
		if st.primed {
			st.grants++
			wait := 0.0
			if t, ok := ls.firstSeen[h.wait]; ok && h.wait != "" {
				wait = now.Sub(t).Seconds()
			}
			st.observe(wait)
		}
		ls.firstSeen[h.id] = now
	}
	if st.primed {
		for id := range oldHolders {
			if !live[id] {
				st.releases++
			}
		}
	}
	for _, p := range s.Waiters {
		id := waitID(p)
		live[id] = true
		if _, ok := ls.firstSeen[id]; !ok {
			ls.firstSeen[id] = now
		}
	}
	for id := range ls.firstSeen {
		if !live[id] {
			delete(ls.firstSeen, id)
		}
	}
	ls.s = s
	if !s.Held && len(s.Waiters) == 0 {
		delete(st.locks, s.Name)
		return
	}
	st.locks[s.Name] = ls
}

// waitStart is when p began to wait: its record's time if it has one (etcd)
// and it is not in the future, else when the exporter first saw it.
func (ls *lockState) waitStart(p coord.Process, now time.Time) time.Time {
	t := ls.firstSeen[waitID(p)]
	if !p.Since.IsZero() && p.Since.Before(t) {
		t = p.Since
	}
	if t.IsZero() || t.After(now) {
		return now
	}
	return t
}

// ranked returns the locks, most interesting first: most waiters, then
// the oldest wait or hold, then by name.
func (st *state) ranked(now time.Time) []*lockState {
	out := make([]*lockState, 0, len(st.locks))
	for _, ls := range st.locks {
		out = append(out, ls)
	}
	age := func(ls *lockState) time.Duration {
		var oldest time.Time
		for _, p := range ls.s.Waiters {
			t := ls.waitStart(p, now)
			if oldest.IsZero() || t.Before(oldest) {
				oldest = t
			}
		}
		if oldest.IsZero() && ls.s.Holder != nil && !ls.s.Holder.Since.IsZero() {
			oldest = ls.s.Holder.Since
		}
		if oldest.IsZero() {
			return 0
		}
		return now.Sub(oldest)
	}
	ages := make(map[*lockState]time.Duration, len(out))
	for _, ls := range out {
		ages[ls] = age(ls)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if len(a.s.Waiters) != len(b.s.Waiters) {
			return len(a.s.Waiters) > len(b.s.Waiters)
		}
		if ages[a] != ages[b] {
			return ages[a] > ages[b]
		}
		return a.s.Name < b.s.Name
	})
	return out
}

// oldestWait is the age of the oldest wait for any lock; 0 if none.
func (st *state) oldestWait(now time.Time) time.Duration {
	var d time.Duration
	for _, ls := range st.locks {
		for _, p := range ls.s.Waiters {
			d = max(d, now.Sub(ls.waitStart(p, now)))
		}
	}
	return d
}

// isDownload reports whether a lock's holder is a download: its record
// names a destination or progress.
func isDownload(s coord.Status) bool {
	return s.Held && s.Holder != nil && (s.Holder.Dest != "" || s.Holder.Progress != nil)
}

// exists reports whether a file is at path.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
