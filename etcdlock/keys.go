package etcdlock

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The keys a session puts on its lease (waiters' and holders'): their
// names, and their deletes, retried after each renewal when they fail.

// newKey names the key of a new acquisition under pfx: the lease in hex,
// as concurrency.Mutex and etcdctl write it (".s" added for a shared
// lock), or, when the session has that key already, the lease and a
// sequence number.
func (s *session) newKey(pfx string, shared bool) string {
	suffix := ""
	if shared {
		suffix = sharedSuffix
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := fmt.Sprintf("%s%x%s", pfx, int64(s.lease), suffix)
	if _, taken := s.inUse[key]; taken {
		s.seq++
		key = fmt.Sprintf("%s%x-%d%s", pfx, int64(s.lease), s.seq, suffix)
	}
	s.inUse[key] = struct{}{}
	return key
}

// release deletes key, or leaves it to the keep-alive loop if etcd does
// not answer within the cleanup bound; the key name is free for reuse once
// it is deleted.
func (s *session) release(key string, rev int64) error {
	if s.isLost() {
		return nil // the key goes with the lease
	}
	if !s.isTrusted() {
		// Renewals are not getting through: the keep-alive loop deletes
		// it once one does, or it goes with the lease.
		s.mu.Lock()
		s.orphans[key] = rev
		s.mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.op)
	defer cancel()
	err := s.deleteKey(ctx, key, rev)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || rev < 0 {
		s.orphans[key] = rev
	}
	if err != nil {
		return fmt.Errorf("%w: delete %s: %v", ErrUnavailable, key, err)
	}
	if rev >= 0 {
		delete(s.inUse, key)
	}
	return nil
}

// deleteOrphans retries deletes of waiter and holder keys that failed, so
// that a key we gave up on never blocks the others while our lease lives.
// A key whose put had an unknown outcome (-1) may still be created by a
// late put: it is deleted whenever found, for the rest of the session, and
// its name is never reused.
func (s *session) deleteOrphans(ctx context.Context) {
	s.mu.Lock()
	keys := make(map[string]int64, len(s.orphans))
	for k, rev := range s.orphans {
		keys[k] = rev
	}
	s.mu.Unlock()
	for k, rev := range keys {
		if ctx.Err() != nil {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, s.op)
		err := s.deleteKey(rctx, k, rev)
		cancel()
		if err == nil && rev >= 0 {
			s.mu.Lock()
			delete(s.orphans, k)
			delete(s.inUse, k)
			s.mu.Unlock()
		}
	}
}

// deleteKey deletes key only if it is still the one created at rev, so
// that a late retry cannot delete a newer key. rev -1 (a put whose outcome
// is unknown) deletes whatever is there: the name stays reserved for us,
// so nothing newer of ours can be there.
func (s *session) deleteKey(ctx context.Context, key string, rev int64) error {
	return retryWrite(ctx, s.cli.ActiveConnection(), s.reach, s.pace, func(ctx context.Context) error {
		if rev < 0 {
			_, err := s.cli.Delete(ctx, key)
			return err
		}
		_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", rev)).
			Then(clientv3.OpDelete(key)).Commit()
		return err
	})
}
