package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Mode is how a lock is held.
type Mode int

const (
	// Exclusive: the oldest key under the lock's prefix holds it.
	Exclusive Mode = iota
	// Shared: held while no older key is exclusive.
	Shared
)

func (m Mode) String() string {
	if m == Shared {
		return "shared"
	}
	return "exclusive"
}

const sharedSuffix = ".s"

func isShared(key []byte) bool { return strings.HasSuffix(string(key), sharedSuffix) }

func (l *Locker) lockPrefix(name string) string {
	return l.prefix + "/locks/" + EscapeName(name) + "/"
}

// Lock acquires the lock name in mode. It queues and watches only the key
// it waits for. value is stored as the key's value (the holder record).
//
// If ctx ends, the session is lost (ErrSessionLost) or the Locker closes
// while it waits, Lock deletes its waiter key, waiting at most about two
// seconds for etcd (a key it cannot delete is deleted by the keep-alive
// loop as soon as etcd answers again), and returns the reason. On any
// error it holds nothing.
func (l *Locker) Lock(ctx context.Context, name string, mode Mode, value []byte) (*Lock, error) {
	return l.lock(ctx, name, mode, value, true)
}

// TryLock is Lock without waiting: it queues, and if the lock is held in a
// conflicting mode it takes its key back and returns ErrBusy.
func (l *Locker) TryLock(ctx context.Context, name string, mode Mode, value []byte) (*Lock, error) {
	return l.lock(ctx, name, mode, value, false)
}

func (l *Locker) lock(ctx context.Context, name string, mode Mode, value []byte, wait bool) (*Lock, error) {
	shared := mode == Shared
	select {
	case <-l.s.closed:
		return nil, ErrClosed
	case <-l.s.lost:
		return nil, ErrSessionLost
	default:
	}
	ctx, cancel := l.s.bind(ctx)
	defer cancel()
	pfx := l.lockPrefix(name)
	key := l.s.newKey(pfx, shared)
	rev, ahead, err := l.tryAcquire(ctx, pfx, key, value, shared)
	if err == nil && l.s.gone() {
		err = ErrSessionLost
	}
	if err == nil && ctx.Err() != nil {
		l.s.release(key, rev)
		return nil, ctxErr(ctx)
	}
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		l.s.markLost()
	}
	if err != nil {
		l.s.release(key, -1) // the put may yet happen: watched for all session long
		switch {
		case l.s.gone():
			return nil, ErrSessionLost
		case ctx.Err() != nil:
			return nil, ctxErr(ctx)
		}
		return nil, l.unavailable(fmt.Sprintf("queue for %q", name), err)
	}
	if blocked(ahead, rev, shared) {
		if !wait {
			l.s.release(key, rev)
			return nil, ErrBusy
		}
		if err := l.await(ctx, pfx, key, rev, shared); err != nil {
			return nil, err
		}
	}
	// A session whose renewals are not confirmed (etcd slow) may have
	// lost its lease: grant only once one is.
	if err := l.s.confirmed(ctx); err != nil {
		l.s.release(key, rev)
		return nil, err
	}
	if l.s.gone() {
		l.s.release(key, rev)
		return nil, ErrSessionLost
	}
	return l.start(key, rev), nil
}

// tryAcquire queues key under pfx with one request that also shows who is
// ahead: the uncontended path costs this and the delete in Unlock. It
// returns key's create revision and the keys ahead under pfx, oldest
// first (only the oldest for an exclusive lock).
//
// The request is tried until it succeeds, the caller's ctx ends, the
// session is lost, or etcd is out of reach for the dial timeout: a slow
// etcd is waited for. A try under way when ctx ends may finish within the
// cleanup bound: a put cancelled in flight may still be applied, and then
// we must know its revision to take it back. On error the put may still
// happen, or have happened.
func (l *Locker) tryAcquire(ctx context.Context, pfx, key string, value []byte, shared bool) (rev int64, ahead []*mvccpb.KeyValue, err error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)}
	if !shared {
		opts = append(opts, clientv3.WithLimit(1))
	}
	// The tries are bound to the session, not to ctx: once ctx ends, the
	// one under way has the cleanup bound (grace) to finish.
	qctx, qcancel := context.WithCancel(l.s.ctx)
	grace := time.AfterFunc(time.Duration(math.MaxInt64), qcancel)
	stop := context.AfterFunc(ctx, func() { grace.Reset(l.s.op) })
	// The write may repeat: a try that timed out may have put the key,
	// and the next one then finds it (Else).
	var resp *clientv3.TxnResponse
	before := l.s.revs.highest()
	err = retryWrite(qctx, l.cli.ActiveConnection(), l.s.reach, l.s.pace, func(tctx context.Context) (err error) {
		if ctx.Err() != nil {
			return errStopped // no new try once the caller gave up
		}
		resp, err = l.cli.Txn(tctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(value), clientv3.WithLease(l.s.lease)), clientv3.OpGet(pfx, opts...)).
			Else(clientv3.OpGet(key), clientv3.OpGet(pfx, opts...)).Commit()
		return err
	})
	stop()
	grace.Stop()
	qcancel()
	switch {
	case err != nil:
		return 0, nil, err
	case resp.Succeeded:
		rev = resp.Header.Revision
		if rev <= before {
			// Our put made a revision we saw before: the store was
			// rewound, and our token is someone else's.
			l.s.revs.rewind()
		}
	default: // an earlier try put it, if it is ours
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) != 1 || clientv3.LeaseID(kvs[0].Lease) != l.s.lease {
			return 0, nil, fmt.Errorf("key %s exists already", key)
		}
		rev = kvs[0].CreateRevision
	}
	return rev, resp.Responses[1].GetResponseRange().Kvs, nil
}

// errStopped ends the tries of a write whose caller gave up.
var errStopped = errors.New("caller gave up")

// blocked reports whether any of kvs, created before rev, keeps us from
// the lock: any key for an exclusive lock, an exclusive one for a shared.
func blocked(kvs []*mvccpb.KeyValue, rev int64, shared bool) bool {
	for _, kv := range kvs {
		if kv.CreateRevision < rev && (!shared || !isShared(kv.Key)) {
			return true
		}
	}
	return false
}

// await waits for the turn of key, created at rev, and makes sure the key
// survived the wait: the lease may have expired meanwhile, and someone
// else been granted the lock; the store may have been rewound. On error it
// has released key.
func (l *Locker) await(ctx context.Context, pfx, key string, rev int64, shared bool) error {
	err := l.waitTurn(ctx, pfx, key, rev, shared)
	if err == nil && l.s.gone() {
		err = ErrSessionLost
	}
	if err != nil {
		l.s.release(key, rev)
	}
	return err
}

// waitTurn waits until no older key blocks key, created at rev, and
// checks in the same request that key is still there.
func (l *Locker) waitTurn(ctx context.Context, pfx, key string, rev int64, shared bool) error {
	for {
		blocker, brev, err := l.blocker(ctx, pfx, key, rev, shared)
		if err == nil && blocker == "" {
			return nil
		}
		if err == nil {
			err = l.waitDelete(ctx, blocker, brev)
		}
		if errors.Is(err, errRetry) {
			err = l.pause(ctx)
		}
		if err != nil {
			return err
		}
	}
}

// errRetry marks a failed etcd request during a wait: the wait goes on,
// until its ctx ends or the session is lost.
var errRetry = errors.New("retry")

// pause waits a little before a retry, unless the wait must end.
func (l *Locker) pause(ctx context.Context) error {
	t := time.NewTimer(200 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctxErr(ctx)
	case <-l.s.closed:
		return ErrClosed
	case <-t.C:
		return nil
	}
}

// blocker returns the newest key created before rev that keeps us from the
// lock (any key for an exclusive lock, an exclusive key for a shared one),
// and its create revision; ErrSessionLost if key, ours, created at rev, is
// gone or made anew. One request looks at both.
func (l *Locker) blocker(ctx context.Context, pfx, key string, rev int64, shared bool) (string, int64, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithMaxCreateRev(rev - 1), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend)}
	if !shared {
		opts = append(opts, clientv3.WithLimit(1))
	}
	resp, err := l.cli.Txn(ctx).Then(clientv3.OpGet(pfx, opts...), clientv3.OpGet(key, clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return "", 0, l.waitErr(ctx, err)
	}
	if mine := resp.Responses[1].GetResponseRange().Kvs; len(mine) == 0 || mine[0].CreateRevision != rev {
		return "", 0, ErrSessionLost
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		if !shared || !isShared(kv.Key) {
			return string(kv.Key), kv.CreateRevision, nil
		}
	}
	return "", 0, nil
}

// waitDelete returns once the key created at rev is gone. Its watch starts
// at the current revision, so the server serves it as a synced watcher (a
// watch from a past revision can be woken up to ~100 ms late); the key is
// looked up again once the watch exists, so that a delete in between is
// not missed, and a new key of the same name (its owner locked again)
// is not taken for the old one.
func (l *Locker) waitDelete(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := l.cli.Watch(wctx, key, clientv3.WithCreatedNotify(), clientv3.WithFilterPut())
	created := false
	for {
		select {
		case <-ctx.Done():
			return ctxErr(ctx)
		case <-l.s.closed:
			return ErrClosed
		case wr, ok := <-wch:
			if !ok {
				return l.waitErr(ctx, errors.New("watch closed"))
			}
			if err := wr.Err(); err != nil {
				return l.waitErr(ctx, err)
			}
			if wr.Created && !created {
				created = true
				g, err := l.cli.Get(ctx, key, clientv3.WithKeysOnly())
				if err != nil {
					return l.waitErr(ctx, err)
				}
				if len(g.Kvs) == 0 || g.Kvs[0].CreateRevision != rev {
					return nil
				}
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					return nil
				}
			}
		}
	}
}

// waitErr turns a failed request during a wait into the reason to stop
// waiting, or errRetry.
func (l *Locker) waitErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctxErr(ctx)
	}
	select {
	case <-l.s.closed:
		return ErrClosed
	default:
	}
	l.s.log.Debug("etcd request failed while waiting; retrying", zap.Error(err))
	return errRetry
}

// Lock is a held etcd lock.
type Lock struct {
	l   *Locker
	key string
	rev int64

	lost      chan struct{} // closed when the lock may be lost, or is unlocked
	loseOnce  sync.Once
	watchOnce sync.Once
	ctx       context.Context // bound to the session; cancelled by Unlock
	stop      context.CancelFunc

	mu       sync.Mutex
	released bool
}

// start registers a granted lock. Lost closes with the session; its key is
// watched from the first call of Lost on.
func (l *Locker) start(key string, rev int64) *Lock {
	k := &Lock{l: l, key: key, rev: rev, lost: make(chan struct{})}
	k.ctx, k.stop = l.s.bind(context.Background())
	l.s.hold(k)
	return k
}

// watchKey watches the lock's key from the revision after its creation, so
// that no delete is missed however late it starts: deleted by anyone but
// Unlock, the lock is lost. Only holders that ask for Lost pay for a watch.
func (k *Lock) watchKey() {
	if k.ctx.Err() != nil || !k.l.s.spawn(k.follow) {
		k.lose()
	}
}

// follow watches the key until the lock is lost or released, and then
// closes Lost.
func (k *Lock) follow() {
	from := k.rev + 1
	for k.watch(from) {
		// The watch broke (compaction, a restart): look at the key,
		// and watch again from there.
		var ok bool
		if from, ok = k.recheck(); !ok {
			break
		}
	}
	k.lose()
}

func (k *Lock) lose() { k.loseOnce.Do(func() { close(k.lost) }) }

// watch reports false once the lock is lost or released, true if the
// watch broke first.
func (k *Lock) watch(from int64) bool {
	wctx, cancel := context.WithCancel(k.ctx)
	defer cancel()
	wch := k.l.cli.Watch(wctx, k.key, clientv3.WithRev(from), clientv3.WithFilterPut())
	for {
		select {
		case <-k.ctx.Done():
			return false
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				return k.ctx.Err() == nil
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					return false
				}
			}
		}
	}
}

// recheck waits until etcd says whether our key is still there; it returns
// the revision to watch from, or false if the lock is gone.
func (k *Lock) recheck() (int64, bool) {
	for {
		select {
		case <-k.ctx.Done():
			return 0, false
		case <-time.After(200 * time.Millisecond):
		}
		rctx, cancel := context.WithTimeout(k.ctx, k.l.s.op)
		g, err := k.l.cli.Get(rctx, k.key, clientv3.WithKeysOnly())
		cancel()
		if err != nil {
			continue
		}
		if len(g.Kvs) == 0 || g.Kvs[0].CreateRevision != k.rev {
			return 0, false
		}
		return g.Header.Revision + 1, true
	}
}

// Token returns the fencing token: the create revision of the lock's key.
// An exclusive holder's is greater than that of every earlier holder of
// the lock, exclusive or shared; a shared holder's is its own key's.
func (k *Lock) Token() int64 { return k.rev }

// Key returns the lock's key.
func (k *Lock) Key() string { return k.key }

// Lost returns a channel closed when the lock may be lost: its key was
// deleted by someone else, or the session's lease may have expired. It is
// also closed by Unlock. The first call starts watching the key.
func (k *Lock) Lost() <-chan struct{} {
	k.watchOnce.Do(k.watchKey)
	return k.lost
}

// Update replaces the key's value, if the key is still ours.
func (k *Lock) Update(value []byte) error {
	ctx, cancel := context.WithTimeout(k.ctx, k.l.s.op)
	defer cancel()
	return k.putIfHeld(ctx, k.key, value, true)
}

// putIfHeld puts key (bound to our lease if leased) only while the lock's
// key is still the one we created.
func (k *Lock) putIfHeld(ctx context.Context, key string, value []byte, leased bool) error {
	var opts []clientv3.OpOption
	if leased {
		opts = append(opts, clientv3.WithLease(k.l.s.lease))
	}
	resp, err := k.l.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k.key), "=", k.rev)).
		Then(clientv3.OpPut(key, string(value), opts...)).Commit()
	switch {
	case err != nil && ctx.Err() != nil:
		return ctxErr(ctx)
	case err != nil:
		return k.l.unavailable("", err)
	case !resp.Succeeded:
		return ErrNotHeld
	}
	return nil
}

// Held reports, by asking etcd, whether the lock is still ours.
func (k *Lock) Held(ctx context.Context) error {
	ctx, cancel := k.l.s.bind(ctx)
	defer cancel()
	resp, err := k.l.cli.Get(ctx, k.key, clientv3.WithKeysOnly())
	switch {
	case err != nil && ctx.Err() != nil:
		return ctxErr(ctx)
	case err != nil:
		return k.l.unavailable("", err)
	case len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != k.rev:
		return ErrNotHeld
	}
	return nil
}

// Unlock deletes the lock's key, only if it is still the one we created.
// When etcd does not answer within about two seconds it returns the error
// and keeps trying in the background while the session lives.
func (k *Lock) Unlock() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.released {
		return nil
	}
	k.released = true
	k.stop()
	k.lose()
	k.l.s.drop(k)
	return k.l.s.release(k.key, k.rev)
}
