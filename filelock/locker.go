package filelock

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// ErrBusy is returned by TryLock when the lock is held.
	ErrBusy = errors.New("lock is held by another holder")
	// ErrInvalidName is returned for names no lock file can stand for.
	ErrInvalidName = errors.New("invalid lock name")
	// ErrClosed is returned by a Locker after Close.
	ErrClosed = errors.New("locker is closed")
	// ErrUnsafeFile is returned when a lock file's path holds a symbolic
	// link, a hard link or anything but a regular file: it is never
	// opened for writing.
	ErrUnsafeFile = errors.New("unsafe lock file")
)

// Mode is how a lock is held.
type Mode int

const (
	// Exclusive: one holder, who gets a fencing token and writes a record.
	Exclusive Mode = iota
	// Shared: any number of shared holders, and no exclusive one.
	Shared
)

func (m Mode) String() string {
	if m == Shared {
		return "shared"
	}
	return "exclusive"
}

// maxIdle bounds the lock files a Locker keeps open between acquisitions.
const maxIdle = 64

// Locker hands out file locks in one directory. It is safe for concurrent
// use; locks taken through one Locker exclude each other as they exclude
// other processes'.
type Locker struct {
	path string        // the lock directory, absolute
	done chan struct{} // closed by Close: waits give up

	// dir is nil once closed. Opening files through it holds the read
	// lock, so that Close cannot close the descriptor (and the OS reuse
	// its number for another directory) under an open.
	dirMu sync.RWMutex
	dir   *dirRef

	mu      sync.Mutex
	closed  bool
	idle    map[string][]*file // open lock files not holding a lock, by file name
	nidle   int
	pending map[waitKey]*waiter // cancelled waits still queued in the kernel

	// The watcher (watch.go) runs while held is not empty.
	held     []*Lock // Lock.idx is the index
	watching bool
	ev       dirEvents // made by the first watcher, closed by Close
	wg       sync.WaitGroup
	// Owned by the running watcher.
	watched *dirRef       // the directory ev watches
	every   time.Duration // how often it checks besides
	// moved is set by the watcher when the directory is no longer at its
	// path; the next Lock opens it anew.
	moved atomic.Bool
}

// New returns a Locker for the lock directory dir, creating it (mode 0755)
// if it is missing. The directory itself may be a symbolic link; the files
// inside it never are. If the directory is later removed or moved away, the
// next Lock opens (creates) it anew at its path, as a new process would.
func New(dir string) (*Locker, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	d, err := openDir(abs)
	if err != nil {
		return nil, fmt.Errorf("lock directory: %w", err)
	}
	return &Locker{
		path:    abs,
		dir:     d,
		done:    make(chan struct{}),
		idle:    map[string][]*file{},
		pending: map[waitKey]*waiter{},
	}, nil
}

// Dir returns the absolute path of the lock directory.
func (l *Locker) Dir() string { return l.path }

// NetworkFS names the lock directory's file system ("nfs", "smb", "fuse",
// …) when it is one where a file lock may exclude only this host, or be
// lost with the client's lease, without any error; "" otherwise or where
// the OS cannot tell (Linux only).
func (l *Locker) NetworkFS() string { return networkFS(l.path) }

// Close closes the files the Locker keeps open; Lock calls still waiting
// return ErrClosed. Locks still held stay held until their Unlock, but are
// no longer watched: their Lost channels stay as they are. A wait that gave
// up may still be queued in the kernel; it lets go of the lock the moment
// it is granted.
func (l *Locker) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	for _, fs := range l.idle {
		for _, f := range fs {
			f.close()
		}
	}
	l.idle, l.nidle, l.pending = nil, 0, nil
	if l.ev != nil {
		l.ev.setDeadline(time.Unix(1, 0))
	}
	l.mu.Unlock()
	l.wg.Wait()
	if l.ev != nil {
		l.ev.close()
	}

	l.dirMu.Lock()
	defer l.dirMu.Unlock()
	d := l.dir
	l.dir = nil
	return d.close()
}

// open opens a lock file in the directory, unless the Locker is closed.
func (l *Locker) open(fname string, create bool) (*file, error) {
	l.dirMu.RLock()
	defer l.dirMu.RUnlock()
	if l.dir == nil {
		return nil, ErrClosed
	}
	return l.dir.open(fname, create)
}

// reopen opens the lock directory at its path again, as a new process
// would, if the one held is no longer there (removed, or moved with a
// parent), and drops the files kept open in the old one. It reports
// whether it did.
func (l *Locker) reopen() bool {
	l.dirMu.Lock()
	if l.dir == nil || l.dir.stillNamed() {
		l.moved.Store(false)
		l.dirMu.Unlock()
		return false
	}
	d, err := openDir(l.path)
	if err != nil {
		l.dirMu.Unlock()
		return false
	}
	old := l.dir
	l.dir = d
	l.moved.Store(false)
	l.dirMu.Unlock()
	old.close()

	l.mu.Lock()
	var idle map[string][]*file
	if !l.closed {
		idle, l.idle, l.nidle = l.idle, map[string][]*file{}, 0
	}
	if l.ev != nil {
		l.ev.setDeadline(time.Now()) // the watcher follows to d
	}
	l.mu.Unlock()
	for _, files := range idle {
		for _, f := range files {
			f.close()
		}
	}
	return true
}

// stillAt reports whether f is still the file called fname.
func (l *Locker) stillAt(fname string, f *file) bool {
	l.dirMu.RLock()
	defer l.dirMu.RUnlock()
	return l.dir != nil && l.dir.stillAt(fname, f)
}

// Lock acquires the lock name in mode, blocking until the lock is granted
// or ctx ends; the kernel wakes it when the holder lets go, there is no
// polling.
//
// If ctx ends first, Lock returns ctx.Err() and holds nothing. Its request
// may stay queued in the kernel until the lock is next released: it is then
// dropped within microseconds, takes no token and writes no record, and a
// later Lock of the same name and mode in this process takes it over rather
// than queue another.
//
// An exclusive holder gets the next fencing token and writes record (at most
// MaxRecordLen bytes) where Inspect can read it. A shared holder gets the
// last token handed out and writes nothing.
func (l *Locker) Lock(ctx context.Context, name string, mode Mode, record []byte) (*Lock, error) {
	return l.lock(ctx, name, mode, record, true)
}

// TryLock is Lock without waiting: it tries once and returns ErrBusy if the
// lock is held in a conflicting mode.
func (l *Locker) TryLock(ctx context.Context, name string, mode Mode, record []byte) (*Lock, error) {
	return l.lock(ctx, name, mode, record, false)
}

func (l *Locker) lock(ctx context.Context, name string, mode Mode, record []byte, wait bool) (*Lock, error) {
	fname, err := FileName(name)
	if err != nil {
		return nil, err
	}
	if len(record) > MaxRecordLen {
		return nil, fmt.Errorf("holder record of %d bytes exceeds %d", len(record), MaxRecordLen)
	}
	for attempt := 0; ; attempt++ {
		if l.moved.Load() {
			l.reopen()
		}
		f, err := l.get(fname)
		if errors.Is(err, fs.ErrNotExist) && attempt < 10 && l.reopen() {
			continue // the directory was removed
		}
		if err != nil {
			return nil, err
		}
		ok, err := f.tryLock(mode)
		if err != nil {
			f.close()
			return nil, err
		}
		if !ok {
			if !wait {
				l.put(fname, f)
				return nil, ErrBusy
			}
			if f, err = l.wait(ctx, waitKey{fname, mode}, f); err != nil {
				return nil, err
			}
		}
		// Watched before the check, so that a deletion after the check
		// reaches the watcher with this lock among those it looks at.
		k := &Lock{l: l, f: f, fname: fname, mode: mode, idx: -1}
		l.hold(k)
		if !l.stillAt(fname, f) {
			// The file was removed or replaced behind our back (Prune, rm):
			// the lock we hold excludes nobody. Start over on the file now
			// there, without the other descriptors we keep of the old one.
			l.release(k)
			f.unlock()
			f.close()
			l.dropIdle(fname)
			if l.isClosed() {
				return nil, ErrClosed
			}
			if attempt >= 10 {
				return nil, fmt.Errorf("lock file %s keeps being replaced", filepath.Join(l.path, fname))
			}
			continue
		}
		if err := k.acquired(name, record); err != nil {
			l.release(k)
			f.unlock()
			f.close()
			return nil, err
		}
		return k, nil
	}
}

// acquired hands out the token and writes the record of a granted lock.
//
// A token is never below the wall clock in microseconds: a lock file made
// anew (after someone deleted it or its directory) would otherwise count
// again from 1. No file of a name can have handed out more tokens than
// microseconds went by since it was made, one grant taking more than a
// microsecond, so tokens keep rising across files as long as the clock
// does not step back. The same covers increments a machine crash took
// from the file before they reached the disk.
func (k *Lock) acquired(name string, record []byte) error {
	var b [8]byte
	n, err := k.f.readAt(b[:], hdrOff)
	if err != nil {
		return fmt.Errorf("read token of %q: %w", name, err)
	}
	h, _ := decodeHeader(b[:n])
	k.since = time.Now()
	clock := uint64(max(k.since.UnixMicro(), 1))
	if k.mode == Shared {
		// At least the last token handed out, below the next one.
		k.token = max(h.token, clock-1)
		return nil
	}
	k.token = max(h.token+1, clock)
	return k.write(record)
}

func (l *Locker) get(fname string) (*file, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	if fs := l.idle[fname]; len(fs) > 0 {
		f := fs[len(fs)-1]
		l.idle[fname] = fs[:len(fs)-1]
		if len(fs) == 1 {
			delete(l.idle, fname)
		}
		l.nidle--
		l.mu.Unlock()
		return f, nil
	}
	l.mu.Unlock()
	return l.open(fname, true)
}

func (l *Locker) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// put keeps f, which holds no lock, for the next Lock of fname.
func (l *Locker) put(fname string, f *file) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.nidle >= maxIdle {
		f.close()
		return
	}
	l.idle[fname] = append(l.idle[fname], f)
	l.nidle++
}

type waitKey struct {
	fname string
	mode  Mode
}

// waiter is one blocking flock call in its own goroutine.
type waiter struct {
	f    *file
	done chan struct{} // closed when the call returned and err is set
	err  error
	// abandoned is set, under Locker.mu, once nobody waits for the result:
	// the goroutine then releases the lock itself.
	abandoned bool
}

// wait blocks on f (or on a queued request it takes over) until the lock is
// granted or ctx ends.
func (l *Locker) wait(ctx context.Context, key waitKey, f *file) (_ *file, err error) {
	l.mu.Lock()
	w := l.pending[key]
	if w != nil {
		delete(l.pending, key)
		w.abandoned = false
	}
	l.mu.Unlock()
	if w != nil {
		l.put(key.fname, f)
	} else {
		w = &waiter{f: f, done: make(chan struct{})}
		go l.block(key, w)
	}
	select {
	case <-w.done:
		if w.err != nil {
			w.f.close()
			return nil, w.err
		}
		return w.f, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-l.done:
		err = ErrClosed
	}
	l.mu.Lock()
	select {
	case <-w.done:
		l.mu.Unlock()
		if w.err == nil {
			w.f.unlock()
			l.put(key.fname, w.f)
		} else {
			w.f.close()
		}
		return nil, err
	default:
	}
	w.abandoned = true
	if !l.closed && l.pending[key] == nil {
		l.pending[key] = w
	}
	l.mu.Unlock()
	return nil, err
}

func (l *Locker) block(key waitKey, w *waiter) {
	err := w.f.lock(key.mode)
	l.mu.Lock()
	if !w.abandoned {
		w.err = err
		close(w.done)
		l.mu.Unlock()
		return
	}
	if l.pending[key] == w {
		delete(l.pending, key)
	}
	l.mu.Unlock()
	if err != nil {
		w.f.close()
		return
	}
	w.f.unlock()
	l.put(key.fname, w.f)
}

// Lock is a held file lock.
type Lock struct {
	l     *Locker
	f     *file
	fname string
	mode  Mode
	token uint64
	since time.Time
	idx   int // in Locker.held, -1 if not there

	mu       sync.Mutex
	released bool
	exported bool // File was called: others may share the descriptor
	buf      []byte
	lost     chan struct{} // made by the first Lost call
	isLost   bool
}

// Token returns the fencing token. An exclusive holder's is greater than
// every token handed out before for this name on this host, in any process,
// also when the lock file or its directory was deleted meanwhile: it is one
// more than the last, or the wall clock in microseconds if that is more (so
// it holds as long as the clock does not step back). A shared holder's is
// at least the last token handed out and below the next.
func (k *Lock) Token() int64 { return int64(k.token) }

// Lost returns a channel that is closed if the lock stops excluding others
// while held: its lock file was unlinked or replaced, or the lock
// directory removed or moved, so that the next process locks a new file.
// On Linux inotify reports that within milliseconds, elsewhere a check
// every 100 ms does (and every second on Linux, for a parent directory
// moved). The lock is still released only by Unlock. Locks held after
// Locker.Close are no longer watched.
func (k *Lock) Lost() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.lost == nil {
		k.lost = make(chan struct{})
		if k.isLost {
			close(k.lost)
		}
	}
	return k.lost
}

func (k *Lock) markLost() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.isLost || k.released {
		return
	}
	k.isLost = true
	if k.lost != nil {
		close(k.lost)
	}
}

// Update replaces the holder record, for instance to publish progress.
// Readers see either the old or the new record, never a mix. A shared lock
// has no record and ignores Update.
func (k *Lock) Update(record []byte) error {
	if len(record) > MaxRecordLen {
		return fmt.Errorf("holder record of %d bytes exceeds %d", len(record), MaxRecordLen)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.released {
		return ErrClosed
	}
	if k.mode == Shared {
		return nil
	}
	return k.write(record)
}

func (k *Lock) write(record []byte) error {
	k.buf = encodeHeader(k.buf[:0], k.token, k.since, record)
	if err := k.f.writeAt(k.buf, hdrOff); err != nil {
		return &os.PathError{Op: "write holder record", Path: filepath.Join(k.l.path, k.fname), Err: err}
	}
	return nil
}

// File returns a new descriptor that holds this lock for as long as it is
// open in any process, even after this one exits, unless Unlock is called:
// give it to a child (exec.Cmd.ExtraFiles) so that the lock outlives this
// process until the child is gone, as flock(1) does. The caller closes it.
// On Windows it returns errors.ErrUnsupported.
func (k *Lock) File() (*os.File, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.released {
		return nil, ErrClosed
	}
	k.exported = true
	return k.f.inheritable(filepath.Join(k.l.path, k.fname))
}

// Unlock releases the lock, in every process that holds a descriptor from
// File too. Calling it again does nothing.
func (k *Lock) Unlock() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.released {
		return nil
	}
	k.released = true
	k.l.release(k)
	// The record stays behind: readers trust a record only while the
	// lock is held exclusively, which they ask the kernel.
	if err := k.f.unlock(); err != nil {
		k.f.close()
		return fmt.Errorf("unlock: %w", err)
	}
	if k.exported {
		// A child may still hold the descriptor: never lock through it again.
		return k.f.close()
	}
	k.l.put(k.fname, k.f)
	return nil
}

// Info is what Inspect found out about a lock.
type Info struct {
	Name   string // the lock name; a shortened name ends in "…"
	File   string // path of the lock file
	Held   bool   // someone holds the lock
	Shared bool   // it is held in shared mode
	// Holders and Waiters are process IDs, where the OS tells (Linux);
	// Known reports whether it did.
	Holders []int
	Waiters []int
	Known   bool
	Token   int64     // the last token handed out
	Since   time.Time // when the exclusive holder acquired; zero if unknown
	Record  []byte    // the exclusive holder's record; nil if none or unreadable
}

// Inspect reports the state of lock name without taking it and without
// creating its file.
func (l *Locker) Inspect(name string) (Info, error) {
	fname, err := FileName(name)
	if err != nil {
		return Info{}, err
	}
	info, err := l.inspect(fname, readLockTable())
	info.Name = name
	if errors.Is(err, os.ErrNotExist) {
		return info, nil
	}
	return info, err
}

// List inspects every lock file in the directory, sorted by name.
func (l *Locker) List() ([]Info, error) { return l.list(false) }

// Active is List of the locks held or awaited only. On Linux it opens just
// their files, found by inode in /proc/locks: one stat per lock file
// instead of an open, a probe and a read, so that it stays fast in a
// directory of thousands of idle locks. Where the kernel does not list
// locks (other systems; file systems whose device numbers in /proc/locks
// differ from stat's) it inspects every file, as List does.
func (l *Locker) Active() ([]Info, error) { return l.list(true) }

func (l *Locker) list(active bool) ([]Info, error) {
	ents, err := os.ReadDir(l.path)
	if err != nil {
		return nil, err
	}
	table := readLockTable()
	var busy map[string]bool
	if active {
		table, busy = l.busyFiles(ents)
	}
	var out []Info
	for _, e := range ents {
		if busy != nil && !busy[e.Name()] {
			continue
		}
		name, ok := nameFromFile(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		info, err := l.inspect(e.Name(), table)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrUnsafeFile) {
			continue // gone meanwhile, or planted: not a lock of ours
		}
		if err != nil {
			return nil, err
		}
		if active && !info.Held && len(info.Waiters) == 0 {
			continue
		}
		info.Name = name
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (l *Locker) inspect(fname string, table lockTable) (Info, error) {
	info := Info{File: filepath.Join(l.path, fname)}
	f, err := l.open(fname, false)
	if err != nil {
		return info, err
	}
	defer f.close()
	if entries, ok := table.lookup(f); ok {
		info.Known = true
		for _, e := range entries {
			if e.waiting {
				info.Waiters = append(info.Waiters, e.pid)
				continue
			}
			info.Held, info.Shared = true, e.shared
			info.Holders = append(info.Holders, e.pid)
		}
	} else if info.Held, info.Shared, err = probe(f); err != nil {
		// Only where the kernel cannot tell: a probe takes the lock for a
		// moment, which can make someone's single try fail.
		return info, err
	}
	h, err := readHeader(f)
	if err != nil {
		return info, err
	}
	info.Token = int64(h.token)
	if info.Held && !info.Shared && h.record != nil {
		info.Since, info.Record = h.since, h.record
	}
	return info, nil
}

// probe finds out whether f is held by trying it, shared then exclusive,
// without waiting. It holds what it gets for a few microseconds.
func probe(f *file) (held, shared bool, err error) {
	ok, err := f.tryLock(Shared)
	if err != nil || !ok {
		return !ok, false, err
	}
	f.unlock()
	ok, err = f.tryLock(Exclusive)
	if err != nil {
		return false, false, err
	}
	if ok {
		f.unlock()
		return false, false, nil
	}
	return true, true, nil
}

// readHeader reads the header and record, reading again a few times if it
// caught a write in progress. A record that stays unreadable is reported as
// absent: readers tolerate corrupt records.
func readHeader(f *file) (header, error) {
	buf := make([]byte, hdrLen+MaxRecordLen)
	var h header
	for range 5 {
		n, err := f.readAt(buf, hdrOff)
		if err != nil {
			return header{}, err
		}
		if h, err = decodeHeader(buf[:n]); err == nil {
			return h, nil
		}
		time.Sleep(50 * time.Microsecond)
	}
	h.record = nil
	return h, nil
}

func checkRegular(regular bool, nlink uint64) error {
	switch {
	case !regular:
		return fmt.Errorf("%w: not a regular file", ErrUnsafeFile)
	case nlink != 1:
		return fmt.Errorf("%w: %d hard links", ErrUnsafeFile, nlink)
	}
	return nil
}
