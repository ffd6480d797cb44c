package etcdlock

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// Inspector reads the state of coord's locks without a session: it takes
// no lease and writes nothing, so it works where a Locker cannot start,
// such as an etcd out of space (ErrNoSpace) or a user who may only read.
// It is safe for concurrent use.
type Inspector struct {
	cli    *clientv3.Client
	prefix string
	user   string
	// requests counts the RPCs (unary calls and streams) sent on cli; nil
	// for the Inspector a Locker reads through.
	requests *atomic.Int64
}

// NewInspector connects to etcd and reads once, so that it fails like New
// does, within about cfg.DialTimeout (and half again to find out why),
// if etcd cannot be reached or refuses us.
func NewInspector(ctx context.Context, cfg Config) (*Inspector, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	eps := strings.Join(cfg.Endpoints, ",")
	requests := new(atomic.Int64)
	cli, err := cfg.client(ctx,
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			requests.Add(1)
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			requests.Add(1)
			return streamer(ctx, desc, cc, method, opts...)
		}))
	if r := refused(err, user(cfg), cfg.Prefix); r != nil {
		return nil, fmt.Errorf("%w: %s", r, eps)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, eps, err)
	}
	in := &Inspector{cli: cli, prefix: cfg.Prefix, user: user(cfg), requests: requests}
	gctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	rw := watchRefused(ctx, cfg, cancel)
	_, err = cli.Get(gctx, cfg.Prefix+"/", clientv3.WithCountOnly())
	cancel()
	rerr := rw.stop()
	switch r := refused(err, in.user, in.prefix); {
	case err == nil:
		return in, nil
	case rerr != nil && ctx.Err() == nil:
		cli.Close()
		return nil, rerr
	case r != nil:
		cli.Close()
		return nil, fmt.Errorf("%w: %s", r, eps)
	case ctx.Err() != nil:
		cli.Close()
		return nil, fmt.Errorf("connect to etcd: %w", ctx.Err())
	}
	cli.Close()
	dctx, cancel := context.WithTimeout(ctx, max(cfg.DialTimeout/2, time.Second))
	defer cancel()
	why, refusal := diagnose(dctx, cfg)
	if refusal != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, refusal)
	}
	return nil, fmt.Errorf("%w: %s: %v%s", ErrUnavailable, eps, err, why)
}

// Requests returns how many requests (unary RPCs and streams, such as a
// watch) the Inspector has sent to etcd since NewInspector, its own
// connection checks included.
func (in *Inspector) Requests() int64 {
	if in.requests == nil {
		return 0
	}
	return in.requests.Load()
}

// Close closes the connection.
func (in *Inspector) Close() error { return in.cli.Close() }

// Info is what Inspect found out about a lock.
type Info struct {
	Name   string
	Key    string // the lock's key prefix
	Held   bool
	Shared bool
	Token  int64  // the holder's create revision (the first shared holder's)
	Record []byte // the (first) holder's value
	// Holders and Waiters are the keys under the prefix, in queue order:
	// those that hold the lock, then those that wait for it.
	Holders []Entry
	Waiters []Entry
	// Stray is the oldest key under the lock's prefix that no lock holder
	// wrote (see holderKey): another client's put, which blocks the lock
	// as a holder would; "" if none. StrayLease is its lease: 0 if it has
	// none, and then it never expires: only deleting it frees the lock.
	Stray      string
	StrayLease int64
}

// Entry is one key under a lock's prefix. A key a Locker wrote has the
// holder record it was given as its value, waiting or not.
type Entry struct {
	Key      string
	Value    []byte
	Revision int64 // the key's create revision: with Key, one hold or wait
}

// Inspect reports on the lock called name.
func (in *Inspector) Inspect(ctx context.Context, name string) (Info, error) {
	pfx := in.prefix + "/locks/" + EscapeName(name) + "/"
	resp, err := in.cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return Info{}, in.unavailable(err)
	}
	return info(name, pfx, resp.Kvs), nil
}

func info(name, pfx string, kvs []*mvccpb.KeyValue) Info {
	in := Info{Name: name, Key: pfx}
	for i, kv := range kvs {
		if in.Stray == "" && !holderKey(pfx, kv) {
			in.Stray, in.StrayLease = string(kv.Key), kv.Lease
		}
		e := Entry{Key: string(kv.Key), Value: kv.Value, Revision: kv.CreateRevision}
		switch {
		case i == 0:
			in.Held, in.Shared, in.Token, in.Record = true, isShared(kv.Key), kv.CreateRevision, kv.Value
			in.Holders = append(in.Holders, e)
		case in.Shared && isShared(kv.Key) && len(in.Waiters) == 0:
			in.Holders = append(in.Holders, e)
		default:
			in.Waiters = append(in.Waiters, e)
		}
	}
	return in
}

// List reports on every lock under the prefix, sorted by name.
func (in *Inspector) List(ctx context.Context) ([]Info, error) {
	root := in.prefix + "/locks/"
	resp, err := in.cli.Get(ctx, root, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, in.unavailable(err)
	}
	byName := map[string][]*mvccpb.KeyValue{}
	for _, kv := range resp.Kvs {
		seg, _, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), root), "/")
		if ok {
			byName[seg] = append(byName[seg], kv)
		}
	}
	out := make([]Info, 0, len(byName))
	for seg, kvs := range byName {
		name, ok := unescapeName(seg)
		if !ok {
			name = seg // not a coord name: shown as it is in etcd
		}
		out = append(out, info(name, root+seg+"/", kvs))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// CheckSpace asks etcd whether it has raised the NOSPACE alarm, under
// which it refuses new locks: ErrNoSpace if so, naming the members that
// raised it, nil if not. etcd's auth refuses the question to users other
// than root (ErrPermissionDenied): the answer is then unknown.
func (in *Inspector) CheckSpace(ctx context.Context) error {
	resp, err := in.cli.AlarmList(ctx)
	if err != nil {
		return in.unavailable(err)
	}
	var members []string
	for _, a := range resp.Alarms {
		if a.Alarm == etcdserverpb.AlarmType_NOSPACE {
			members = append(members, fmt.Sprintf("%x", a.MemberID))
		}
	}
	if len(members) == 0 {
		return nil
	}
	return fmt.Errorf("%w: raised by member %s: it refuses writes", ErrNoSpace, strings.Join(members, ", "))
}

// unavailable is the error of a failed request: a refusal (see refused)
// or ErrUnavailable.
func (in *Inspector) unavailable(err error) error {
	if r := refused(err, in.user, in.prefix); r != nil {
		return r
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}
