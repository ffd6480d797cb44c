package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Change is one thing Watch saw happen under the prefix.
type Change struct {
	// Reset: Locks is every lock under the prefix, read at once; what
	// earlier Changes said is replaced. Watch sends one first and after
	// each time it had to read everything again (etcd came back, the
	// watch was compacted or cancelled).
	Reset bool
	// Locks are the locks whose keys changed, each as it stood after the
	// change; a lock with no key left has no Holders and no Waiters.
	// Without Reset, it is one lock per event, in etcd's order, so that no
	// holder or waiter between two events goes unseen.
	Locks []Info
	// Done is a download id recorded as completed (see MarkDone); "" if
	// none.
	Done string
	// Err is non-nil when etcd stopped answering (ErrUnavailable or a
	// refusal): Watch goes on trying and sends a Reset once it reads
	// again.
	Err error
}

// Watch calls f for every change under the prefix until ctx ends, and then
// returns ctx's error. It reads the whole prefix once, then follows one
// watch on it: its requests to etcd do not grow with the number of locks
// or their traffic. Every check interval it reads one key, so that an etcd
// gone quiet (a cut connection, a member without a leader) is noticed
// (within the interval and 3 s):
// Change.Err is set, the watch is dropped, and the prefix is read again,
// once a second, until etcd answers. f runs on Watch's goroutine.
func (in *Inspector) Watch(ctx context.Context, check time.Duration, f func(Change)) error {
	if check <= 0 {
		check = 2 * time.Second
	}
	var down error
	fail := func(err error) {
		err = in.unavailable(err)
		if down == nil || down.Error() != err.Error() {
			f(Change{Err: err})
		}
		down = err
	}
	for ctx.Err() == nil {
		w := &watch{in: in, root: in.prefix + "/locks/", done: in.prefix + "/downloads/", kvs: map[string]map[string]*mvccpb.KeyValue{}}
		rev, err := w.read(ctx, f)
		if err != nil {
			if ctx.Err() == nil {
				fail(err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		down = nil
		// A compacted watch is read again at once; it is no outage.
		if err := w.follow(ctx, rev, check, f); err != nil && ctx.Err() == nil && !errors.Is(err, errCompacted) {
			fail(err)
		}
	}
	return ctx.Err()
}

// checkTimeout is the least time a check read is given before etcd is
// said not to answer.
const checkTimeout = 3 * time.Second

// errCompacted ends a watch whose next revision etcd compacted away.
var errCompacted = errors.New("watch compacted")

// watch is one read of the prefix and the watch that follows it.
type watch struct {
	in         *Inspector
	root, done string
	kvs        map[string]map[string]*mvccpb.KeyValue // by lock segment, then key
}

// read reads every lock key and sends them as a Reset.
func (w *watch) read(ctx context.Context, f func(Change)) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := w.in.cli.Get(rctx, w.root, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	for _, kv := range resp.Kvs {
		w.put(kv)
	}
	segs := make([]string, 0, len(w.kvs))
	for seg := range w.kvs {
		segs = append(segs, seg)
	}
	c := Change{Reset: true, Locks: make([]Info, 0, len(segs))}
	for _, seg := range segs {
		c.Locks = append(c.Locks, w.info(seg))
	}
	sort.Slice(c.Locks, func(i, j int) bool { return c.Locks[i].Name < c.Locks[j].Name })
	f(c)
	return resp.Header.Revision, nil
}

// follow watches the prefix from after rev until the watch fails, a check
// gets no answer, or ctx ends.
func (w *watch) follow(ctx context.Context, rev int64, check time.Duration, f func(Change)) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.in.cli.Watch(wctx, w.in.prefix+"/", clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	tick := time.NewTicker(check)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			// A slow answer is no outage: the bound is not the interval.
			cctx, ccancel := context.WithTimeout(ctx, max(check, checkTimeout))
			_, err := w.in.cli.Get(cctx, w.in.prefix+"/", clientv3.WithCountOnly())
			ccancel()
			if err != nil {
				return err
			}
		case wr, ok := <-wch:
			if !ok {
				return errors.New("watch closed")
			}
			if wr.CompactRevision != 0 {
				return errCompacted
			}
			if err := wr.Err(); err != nil {
				return err
			}
			if wr.Canceled {
				return fmt.Errorf("watch cancelled: %s", wr.CancelReason)
			}
			for _, ev := range wr.Events {
				w.event(ev, f)
			}
		}
	}
}

// event applies one event and reports the lock or download it touched.
func (w *watch) event(ev *clientv3.Event, f func(Change)) {
	key := string(ev.Kv.Key)
	if id, ok := strings.CutPrefix(key, w.done); ok {
		if ev.Type == mvccpb.PUT {
			if name, ok := unescapeName(id); ok {
				id = name
			}
			f(Change{Done: id})
		}
		return
	}
	seg, _, ok := strings.Cut(strings.TrimPrefix(key, w.root), "/")
	if !ok || !strings.HasPrefix(key, w.root) {
		return
	}
	if ev.Type == mvccpb.DELETE {
		delete(w.kvs[seg], key)
	} else {
		w.put(ev.Kv)
	}
	info := w.info(seg)
	if len(w.kvs[seg]) == 0 {
		delete(w.kvs, seg)
	}
	f(Change{Locks: []Info{info}})
}

func (w *watch) put(kv *mvccpb.KeyValue) {
	seg, _, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), w.root), "/")
	if !ok {
		return
	}
	m := w.kvs[seg]
	if m == nil {
		m = map[string]*mvccpb.KeyValue{}
		w.kvs[seg] = m
	}
	m[string(kv.Key)] = kv
}

// info is the lock seg as its keys stand, as Inspect would report it.
func (w *watch) info(seg string) Info {
	kvs := make([]*mvccpb.KeyValue, 0, len(w.kvs[seg]))
	for _, kv := range w.kvs[seg] {
		kvs = append(kvs, kv)
	}
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].CreateRevision < kvs[j].CreateRevision })
	name, ok := unescapeName(seg)
	if !ok {
		name = seg
	}
	return info(name, w.root+seg+"/", kvs)
}
