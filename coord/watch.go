package coord

import (
	"context"
	"time"

	"github.com/toolchainkit/coord/etcdlock"
)

// Change is one thing Watch saw: locks that changed, a download recorded
// as completed, or the backend going quiet.
type Change struct {
	// Reset: Locks is every lock held or awaited, read at once (see
	// Manager.Active), and replaces what earlier Changes said.
	Reset bool
	// Locks are the locks that changed, as they stand after the change;
	// a lock nobody holds or awaits any more has Held false and no
	// Waiters. On etcd, without Reset, one lock per event in etcd's order.
	Locks []Status
	// Done is the id of a download recorded as completed (etcd only: the
	// file backend keeps no download records); "" if none.
	Done string
	// Err is non-nil while the backend does not answer (an
	// ErrBackendUnavailable); Watch goes on and sends a Reset once it
	// reads again.
	Err error
}

// DefaultWatchInterval is how often Watch reads a lock directory, and
// how often it checks that etcd still answers.
const DefaultWatchInterval = time.Second

// Watch calls f with what changes among the locks until ctx ends, and then
// returns ctx's error; f runs on Watch's goroutine, one call at a time.
// It writes nothing and takes no lock.
//
// A Manager made with ReportOnly on etcd reads the prefix once and follows
// one watch on it, and reads one key every interval to notice an etcd gone
// quiet: its requests do not grow with the locks or their traffic. Other
// Managers read the locks held or awaited every interval (Active; a Reset
// each time): on the file backend that is a read of the lock directory and
// of /proc/locks and one stat per idle lock file, which sees a lock taken
// and released within one interval not at all.
// interval 0 means DefaultWatchInterval.
func (m *Manager) Watch(ctx context.Context, interval time.Duration, f func(Change)) error {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	if r, ok := m.b.(etcdReport); ok {
		return r.in.Watch(ctx, interval, func(c etcdlock.Change) {
			out := Change{Reset: c.Reset, Done: c.Done, Err: etcdError(c.Err)}
			for _, info := range c.Locks {
				out.Locks = append(out.Locks, etcdStatus(info))
			}
			f(out)
		})
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		locks, err := m.Active(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			f(Change{Err: err})
		} else {
			f(Change{Reset: true, Locks: locks})
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Requests returns how many requests a Manager made with ReportOnly on
// etcd has sent to etcd (unary RPCs and streams such as a watch); 0 for
// other Managers, which do not count theirs.
func (m *Manager) Requests() int64 {
	if r, ok := m.b.(etcdReport); ok {
		return r.in.Requests()
	}
	return 0
}
