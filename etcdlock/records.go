package etcdlock

import (
	"context"
	"errors"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// doneKey is the key of the record of download id: under
// <prefix>/downloads/, escaped as lock names are. It is bound to no lease,
// so that the record outlives the session that wrote it.
func (l *Locker) doneKey(id string) string { return l.prefix + "/downloads/" + EscapeName(id) }

// MarkDone records that the download id completed, under k: only while k
// is still held (ErrNotHeld otherwise). The record outlives the session.
func (l *Locker) MarkDone(ctx context.Context, k *Lock, id string, value []byte) error {
	return k.putIfHeld(ctx, l.doneKey(id), value, false)
}

// WaitDone returns when the download id is recorded as done after the call
// began, or when ctx ends.
func (l *Locker) WaitDone(ctx context.Context, id string) error {
	key := l.doneKey(id)
	ctx, unbind := l.s.bind(ctx)
	defer unbind()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := l.cli.Watch(wctx, key, clientv3.WithCreatedNotify(), clientv3.WithFilterDelete())
	for {
		select {
		case <-ctx.Done():
			return ctxErr(ctx)
		case wr, ok := <-wch:
			if !ok {
				return l.waitErr(ctx, errors.New("watch closed"))
			}
			if err := wr.Err(); err != nil {
				return l.waitErr(ctx, err)
			}
			if len(wr.Events) > 0 {
				return nil
			}
		}
	}
}

// Done is a download record, as MarkDone stored it.
type Done struct {
	ID       string // the download id; a key not written by MarkDone shows as its raw segment
	Key      string
	Value    []byte
	Revision int64 // the record's version: DeleteDone removes this one only
}

// Downloads lists the download records under the prefix, sorted by key.
func (l *Locker) Downloads(ctx context.Context) ([]Done, error) {
	ctx, cancel := l.s.bind(ctx)
	defer cancel()
	root := l.prefix + "/downloads/"
	resp, err := l.cli.Get(ctx, root, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, l.unavailable("list download records", err)
	}
	out := make([]Done, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		seg := strings.TrimPrefix(string(kv.Key), root)
		id, ok := unescapeName(seg)
		if !ok {
			id = seg
		}
		out = append(out, Done{ID: id, Key: string(kv.Key), Value: kv.Value, Revision: kv.ModRevision})
	}
	return out, nil
}

// DeleteDone removes the download record d if it is still the version
// Downloads read: a download that committed again since keeps its new
// record. It reports whether it removed it.
func (l *Locker) DeleteDone(ctx context.Context, d Done) (bool, error) {
	ctx, cancel := l.s.bind(ctx)
	defer cancel()
	resp, err := l.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(d.Key), "=", d.Revision)).
		Then(clientv3.OpDelete(d.Key)).Commit()
	switch {
	case err != nil && ctx.Err() != nil:
		return false, ctxErr(ctx)
	case err != nil:
		return false, l.unavailable("delete download record", err)
	}
	return resp.Succeeded, nil
}
