// Package etcdlock is coord's etcd backend: locks that exclude processes
// on every host that reaches one etcd cluster.
//
// A Locker holds one session: a lease (TTL 10s by default) that it renews
// every third of the span it trusts the lease for (TTL minus the Lost
// margin) while the process lives, and revokes on Close. Lock NAME is
// the key prefix <prefix>/locks/<NAME>/, NAME escaped so that no lock's
// prefix is a prefix of another's ('/' and '%' become %2F and %25; other
// names are unchanged). Each acquisition puts a key there bound to the
// lease, named by the lease in hex as concurrency.Mutex and `etcdctl lock`
// name theirs, so that `etcdctl lock <prefix>/locks/NAME` and a Locker
// exclude each other. The key with the lowest create revision holds an
// exclusive lock; a shared key (suffix ".s") holds while no older key is
// exclusive. The holder's create revision is its fencing token; the key's
// value is the holder record. A waiter watches only the newest key that
// blocks it: no polling, no herd.
//
// # What Lost promises, and what it cannot
//
// Lost closes when the server says the lease is gone, when the lock's key
// is deleted by anyone else, or when no keep-alive has been confirmed for
// so long that the lease could expire within LostMargin (max(1s, TTL/4)):
// the lease's deadline is counted from when the last successful keep-alive
// was sent (renewals go over one keep-alive stream kept open, each answer
// matched to its request), so Lost fires before any other process could be granted the
// lock, as long as the client's and the server's clocks run at the same
// rate. It cannot stop a holder that is paused (GC, SIGSTOP, a swapped-out
// VM) past that moment from acting on stale belief: fencing tokens, checked
// by the resource, are the defence. A leader change can extend a dead
// holder's lease beyond its TTL (etcd renews leases on election), which
// delays the next holder but never shortens anyone's lock.
//
// A key under a lock's prefix that is not named by its own lease was put
// by another client: Inspect reports it as Info.Stray, since it blocks the
// lock like a holder and, without a lease, never expires.
//
// Lost also closes when the store was rewound (restored from a snapshot):
// the Locker remembers the highest revision in any response header, and a
// write or linearizable read answered below it (a watch or renewal below
// it is checked with such a read) loses the whole session, so that the
// Locker never grants a token it has seen again; each renewal also looks
// up the keys held, and a key gone without a delete event loses its lock.
// gRPC reconnects within 100 ms, and a renewal goes out as soon as the
// connection is back. Other Lockers know nothing of what this one saw.
//
// # Slow, refused, down
//
// ErrUnavailable means etcd could not be reached for the dial timeout (no
// connection, or a member without a leader), or that every endpoint
// actively refused the TCP connection for RefusedGrace (see
// connrefused.go: probed only when the client has not connected within
// 250 ms). A slow etcd is waited for: a
// write tried again after a timeout on an open connection gets a longer
// try, renewals are not given up while the lease may live and overlap (up
// to three), and a waiter ends only with the lock, its ctx, or its session
// really gone. When no renewal is confirmed in time on a reachable etcd,
// the locks held are lost (Lost closes) but the session is not: waiters
// wait on and are granted once a renewal is confirmed again.
//
// Refusals (ErrRefused: a TLS set-up etcd rejects, ErrAuthFailed,
// ErrPermissionDenied, ErrNoSpace; they match ErrUnavailable too) mean
// that etcd answered no: retrying does not help, something must be
// fixed. Under ErrNoSpace deletes and keep-alives still work: held locks
// are kept and released, new ones fail until an operator frees space. An
// Inspector reads without a lease, so it works then too.
//
// Cleanup never waits long on a dead etcd: a cancelled wait or an Unlock
// deletes its key within about two seconds or leaves the delete to the
// keep-alive loop, which retries it right after each renewal, as soon as
// etcd answers again; deletes compare the key's create revision, so a late
// retry never deletes a newer holder's key.
package etcdlock
