package coord

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/toolchainkit/coord/filelock"
)

// backend is what a Manager needs from a lock service. Both the file and
// the etcd backends satisfy it through a thin adapter that maps their
// errors onto ours.
type backend interface {
	// lock acquires name in mode, blocking until granted or ctx ends.
	// record is stored with an exclusive lock for others to read.
	lock(ctx context.Context, name string, mode mode, record []byte) (held, error)
	// tryLock is lock without waiting: errBusy if name is held.
	tryLock(ctx context.Context, name string, mode mode, record []byte) (held, error)
	// inspect reports on one lock without taking it.
	inspect(ctx context.Context, name string) (Status, error)
	// list reports on every lock the backend knows of.
	list(ctx context.Context) ([]Status, error)
	// check reports a state in which the backend answers but grants no
	// new lock (see Manager.Check); nil if there is none.
	check(ctx context.Context) error
	// lostMargin is how long before another process could be granted a
	// lock its Lost fires (see Manager.LostMargin).
	lostMargin() time.Duration
	close() error
	kind() string
}

// activeLister is a backend that finds the locks held or awaited without
// reading the idle ones (file).
type activeLister interface {
	active(ctx context.Context) ([]Status, error)
}

// held is a granted lock.
type held interface {
	Token() int64
	Lost() <-chan struct{}
	Update(record []byte) error
	Unlock() error
}

// Optional behaviours of a held lock, asked for once, when it is granted
// (see Manager.grant).
type (
	// fileHeld hands out a descriptor that keeps the lock held (file).
	fileHeld interface {
		File() (*os.File, error)
	}
	// recordHeld is held on a backend that records downloads (etcd):
	// Commit asks it whether it is still held, and records under it.
	recordHeld interface {
		// checkHeld asks the backend whether the lock is still held.
		checkHeld(ctx context.Context) error
		// markDone records that id completed, only while the lock is held.
		markDone(ctx context.Context, id string, record []byte) error
	}
)

// doneRecords is what a backend that records downloads itself offers on
// top of its locks (etcd: <prefix>/downloads/<id>). The marker in dest
// stays the truth; these records only wake waiters sooner, make a commit
// check that the lock is still held (recordHeld) and lead GC to
// leftovers. New asks for it once (Manager.records).
type doneRecords interface {
	// waitDone returns when id is recorded as completed after the call.
	waitDone(ctx context.Context, id string) error
	// records lists the download records.
	records(ctx context.Context) ([]doneRecord, error)
	// deleteRecord removes exactly r's version of its record: false if it
	// changed since.
	deleteRecord(ctx context.Context, r doneRecord) (bool, error)
}

// doneRecord is one download record and what deleteRecord needs to remove
// exactly that version of it.
type doneRecord struct {
	id, key string
	value   []byte
	rev     int64
}

var (
	_ doneRecords = etcdBackend{}
	_ recordHeld  = (*etcdHeld)(nil)
	_ fileHeld    = (*filelock.Lock)(nil)
	_ lockFiles   = fileBackend{}
)

// mode is how a lock is held.
type mode int

const (
	exclusive mode = iota
	shared         // any number of shared holders, no exclusive one
)

// errBusy is a backend's answer to a single try on a held lock.
var errBusy = errors.New("busy")

var (
	_ backend = fileBackend{}
	_ held    = (*filelock.Lock)(nil)
)

// fileBackend adapts a filelock.Locker.
type fileBackend struct {
	l    *filelock.Locker
	host string // this host: every holder and waiter runs here
}

func (b fileBackend) kind() string { return "file" }

func (b fileBackend) check(context.Context) error { return nil }

// lostMargin is 0: a file lock is lost only when someone deletes its file
// or directory, which lets another process in at once.
func (b fileBackend) lostMargin() time.Duration { return 0 }

func (b fileBackend) lock(ctx context.Context, name string, m mode, record []byte) (held, error) {
	return fileLock(b.l.Lock, ctx, name, m, record)
}

func (b fileBackend) tryLock(ctx context.Context, name string, m mode, record []byte) (held, error) {
	return fileLock(b.l.TryLock, ctx, name, m, record)
}

func fileLock(take func(context.Context, string, filelock.Mode, []byte) (*filelock.Lock, error),
	ctx context.Context, name string, m mode, record []byte) (held, error) {
	fm := filelock.Exclusive
	if m == shared {
		fm = filelock.Shared
	}
	k, err := take(ctx, name, fm, record)
	if err != nil {
		return nil, fileError(err)
	}
	return k, nil
}

func (b fileBackend) inspect(_ context.Context, name string) (Status, error) {
	info, err := b.l.Inspect(name)
	if err != nil {
		return Status{}, fileError(err)
	}
	return b.status(info), nil
}

func (b fileBackend) list(context.Context) ([]Status, error) { return b.statuses(b.l.List()) }

func (b fileBackend) active(context.Context) ([]Status, error) { return b.statuses(b.l.Active()) }

func (b fileBackend) statuses(infos []filelock.Info, err error) ([]Status, error) {
	if err != nil {
		return nil, fileError(err)
	}
	out := make([]Status, len(infos))
	for i, info := range infos {
		out[i] = b.status(info)
	}
	return out, nil
}

func (b fileBackend) close() error { return b.l.Close() }

func (b fileBackend) prune(ctx context.Context, o filelock.PruneOptions) ([]filelock.Pruned, error) {
	return b.l.Prune(ctx, o)
}

func (b fileBackend) status(info filelock.Info) Status {
	s := Status{
		Name:    info.Name,
		Backend: BackendFile,
		File:    info.File,
		Held:    info.Held,
		Shared:  info.Shared,
		Token:   info.Token,
		Holders: b.processes(info.Holders),
		Waiters: b.processes(info.Waiters),
		Known:   info.Known,
	}
	if h := parseRecord(info.Record); h != nil {
		h.Since, h.Token, h.Backend = info.Since, info.Token, BackendFile
		s.Holder = h
	}
	return s
}

func (b fileBackend) processes(pids []int) []Process {
	var out []Process
	for _, pid := range pids {
		out = append(out, Process{Host: b.host, PID: pid})
	}
	return out
}

func fileError(err error) error {
	switch {
	case errors.Is(err, filelock.ErrBusy):
		return errBusy
	case errors.Is(err, filelock.ErrInvalidName):
		return fmt.Errorf("%w: %w", ErrInvalidName, err)
	case errors.Is(err, filelock.ErrClosed):
		return ErrClosed
	case errors.Is(err, filelock.ErrUnsafeFile), errors.As(err, new(*os.PathError)):
		// A lock file that cannot be opened or written (a read-only or
		// full file system): the lock directory is unusable, as when New
		// cannot open it.
		return fmt.Errorf("%w: file: %w", ErrBackendUnavailable, err)
	}
	return err
}
