package coord

import (
	"context"
	"errors"
	"fmt"
	"os"

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
	close() error
	kind() string
}

// held is a granted lock.
type held interface {
	Token() int64
	Lost() <-chan struct{}
	Update(record []byte) error
	Unlock() error
}

// downloads is what a backend that records downloads itself offers on top
// of its locks (etcd: <prefix>/downloads/<id>). The marker in dest stays
// the truth; these records only wake waiters sooner and make a commit check
// that the lock is still held.
type downloads interface {
	// checkHeld asks the backend whether h is still held.
	checkHeld(ctx context.Context, h held) error
	// markDone records that id completed, only while h is held.
	markDone(ctx context.Context, h held, id string, record []byte) error
	// waitDone returns when id is recorded as completed after the call.
	waitDone(ctx context.Context, id string) error
}

var (
	_ downloads   = etcdBackend{}
	_ doneRecords = etcdBackend{}
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
type fileBackend struct{ l *filelock.Locker }

func (b fileBackend) kind() string { return "file" }

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
	return fileStatus(info), nil
}

func (b fileBackend) list(context.Context) ([]Status, error) {
	infos, err := b.l.List()
	if err != nil {
		return nil, fileError(err)
	}
	out := make([]Status, len(infos))
	for i, info := range infos {
		out[i] = fileStatus(info)
	}
	return out, nil
}

func (b fileBackend) close() error { return b.l.Close() }

func (b fileBackend) prune(ctx context.Context, o filelock.PruneOptions) ([]filelock.Pruned, error) {
	return b.l.Prune(ctx, o)
}

func fileStatus(info filelock.Info) Status {
	s := Status{
		Name:     info.Name,
		Backend:  "file",
		Where:    info.File,
		Held:     info.Held,
		Shared:   info.Shared,
		Token:    info.Token,
		Holders:  info.Holders,
		Waiters:  len(info.Waiters),
		WaitPIDs: info.Waiters,
	}
	if !info.Known {
		s.Waiters = -1
	}
	if h := parseRecord(info.Record); h != nil {
		h.Since, h.Token, h.Backend = info.Since, info.Token, "file"
		s.Holder = h
	}
	return s
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
