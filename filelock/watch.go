package filelock

import (
	"sync"
	"time"
)

// A lock file that is unlinked or replaced, or whose directory is removed
// or moved, excludes nobody any more: the next process creates a new file
// and locks that. The Locker's watcher finds such locks and closes their
// Lost channel. It runs only while the Locker holds a lock.
const (
	// pollEvery is the check interval where there are no directory
	// events (not Linux, or inotify unavailable).
	pollEvery = 100 * time.Millisecond
	// backstop is the check interval beside inotify, for what it does not
	// report: a parent directory renamed, a mount over the directory.
	backstop = time.Second
	// linger is how long the watcher stays after the last Unlock, so that
	// a loop of Lock and Unlock does not start one each time.
	linger = 10 * time.Millisecond
)

// dirEvents wakes the watcher when the lock directory changes.
type dirEvents interface {
	// watch makes d the directory watched, in place of any before, and
	// returns how often the watcher must check besides.
	watch(d *dirRef) time.Duration
	// setDeadline makes wait return at t at the latest. It is called with
	// Locker.mu held, from any goroutine.
	setDeadline(t time.Time)
	// wait blocks until the directory may have changed or the deadline.
	wait()
	close() error
}

// hold registers k with the watcher, starting it if needed.
func (l *Locker) hold(k *Lock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k.idx = len(l.held)
	l.held = append(l.held, k)
	if !l.watching && !l.closed {
		l.watching = true
		l.wg.Add(1)
		go l.watch()
	}
}

// release unregisters k; the watcher leaves shortly after the last one.
func (l *Locker) release(k *Lock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := k.idx
	if i < 0 || i >= len(l.held) || l.held[i] != k {
		return
	}
	last := len(l.held) - 1
	l.held[i] = l.held[last]
	l.held[i].idx = i
	l.held[last] = nil
	l.held = l.held[:last]
	k.idx = -1
	if last == 0 && l.ev != nil {
		l.ev.setDeadline(time.Now().Add(linger))
	}
}

// watch checks every held lock when the directory changes, and at least
// every interval, until none is held or the Locker is closed.
func (l *Locker) watch() {
	defer l.wg.Done()
	l.mu.Lock()
	ev := l.ev
	l.mu.Unlock()
	if ev == nil {
		// Set up once per Locker and kept until Close: changes while no
		// lock is held queue up and cost one spare check.
		ev = newDirEvents()
		l.mu.Lock()
		l.ev = ev
		l.mu.Unlock()
	}
	var ks []*Lock
	for first := true; ; first = false {
		l.mu.Lock()
		if l.closed || len(l.held) == 0 {
			l.watching = false
			l.mu.Unlock()
			return
		}
		l.follow(ev)
		ev.setDeadline(time.Now().Add(l.every))
		l.mu.Unlock()
		if !first {
			// The first round checks at once: a change between Lock's own
			// check and the start of the events was not seen.
			ev.wait()
		}
		l.mu.Lock()
		ks = append(ks[:0], l.held...)
		l.mu.Unlock()
		l.check(ks)
		clear(ks)
	}
}

// follow points ev at the Locker's directory if that is not the one it
// watches (the first time, or after reopen). Called with l.mu held.
func (l *Locker) follow(ev dirEvents) {
	l.dirMu.RLock()
	defer l.dirMu.RUnlock()
	if l.dir != nil && l.dir != l.watched {
		l.watched, l.every = l.dir, ev.watch(l.dir)
	}
}

// check marks lost every lock in ks whose file is no longer at its path.
func (l *Locker) check(ks []*Lock) {
	l.dirMu.RLock()
	defer l.dirMu.RUnlock()
	if l.dir == nil {
		return
	}
	named := l.dir.stillNamed()
	if !named {
		l.moved.Store(true) // the next Lock opens the directory anew
	}
	for _, k := range ks {
		if !named || !l.dir.stillAt(k.fname, k.f) {
			k.markLost()
		}
	}
}

// sleeper is dirEvents without events: wait sleeps until the deadline.
type sleeper struct {
	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{}
}

func newSleeper() *sleeper { return &sleeper{wake: make(chan struct{}, 1)} }

func (s *sleeper) setDeadline(t time.Time) {
	s.mu.Lock()
	sooner := t.Before(s.deadline)
	s.deadline = t
	s.mu.Unlock()
	if sooner {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

func (s *sleeper) wait() {
	for {
		s.mu.Lock()
		d := time.Until(s.deadline)
		s.mu.Unlock()
		if d <= 0 {
			return
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.wake:
		}
		t.Stop()
	}
}

func (s *sleeper) watch(*dirRef) time.Duration { return pollEvery }

func (s *sleeper) close() error { return nil }
