package etcdlock

import (
	"context"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseStream renews one lease over one LeaseKeepAlive stream, kept open
// from one renewal to the next: clientv3's KeepAliveOnce opens and closes
// a stream for each, which costs etcd a stream's set-up and tear-down (and
// a handler goroutine) every time, and a fleet of idle sessions renews
// all the time. Answers come in the order of the requests, so each goes
// to the renewal that sent it, and the session keeps knowing when each
// confirmed renewal was sent (see session.keepAlive). A stream that breaks
// fails the renewals under way; the next renewal opens a new one.
type leaseStream struct {
	cli    pb.LeaseClient
	lease  clientv3.LeaseID
	ctx    context.Context // ends the streams
	cancel context.CancelFunc
	wg     sync.WaitGroup // the receiving goroutines

	mu  sync.Mutex
	cur *keepAliveStream // nil: the next renewal opens one
}

// keepAliveStream is one stream and the renewals sent on it that wait for
// their answers, oldest first.
type keepAliveStream struct {
	s       pb.Lease_LeaseKeepAliveClient
	pending []chan<- keepAliveResult
}

type keepAliveResult struct {
	resp *pb.LeaseKeepAliveResponse
	err  error
}

// newLeaseStream returns the renewer of lease, whose streams live until
// ctx ends or close is called.
func newLeaseStream(ctx context.Context, cli *clientv3.Client, lease clientv3.LeaseID) *leaseStream {
	ctx, cancel := context.WithCancel(ctx)
	return &leaseStream{cli: pb.NewLeaseClient(cli.ActiveConnection()), lease: lease, ctx: ctx, cancel: cancel}
}

// close ends the stream and waits until its answers are handed out.
func (ls *leaseStream) close() {
	ls.cancel()
	ls.wg.Wait()
}

// renew sends one keep-alive and waits for its answer until ctx ends, as
// KeepAliveOnce does: a TTL of 0 or less says the lease is gone
// (rpctypes.ErrLeaseNotFound).
func (ls *leaseStream) renew(ctx context.Context) (*clientv3.LeaseKeepAliveResponse, error) {
	done := make(chan keepAliveResult, 1)
	if err := ls.send(done); err != nil {
		return nil, err
	}
	select {
	case r := <-done:
		if r.err != nil {
			return nil, r.err
		}
		resp := &clientv3.LeaseKeepAliveResponse{ResponseHeader: r.resp.GetHeader(), ID: clientv3.LeaseID(r.resp.ID), TTL: r.resp.TTL}
		if resp.TTL <= 0 {
			return resp, rpctypes.ErrLeaseNotFound
		}
		return resp, nil
	case <-ctx.Done():
		return nil, ctx.Err() // its answer, if it comes, goes to done
	}
}

// send writes a request on the current stream, opening one if there is
// none, and queues done for its answer.
func (ls *leaseStream) send(done chan<- keepAliveResult) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.cur == nil {
		s, err := ls.cli.LeaseKeepAlive(ls.ctx)
		if err != nil {
			return err
		}
		ls.cur = &keepAliveStream{s: s}
		ls.wg.Add(1)
		go ls.receive(ls.cur)
	}
	if err := ls.cur.s.Send(&pb.LeaseKeepAliveRequest{ID: int64(ls.lease)}); err != nil {
		ls.cur.s.CloseSend()
		ls.cur = nil // its receive fails what was queued on it
		return err
	}
	ls.cur.pending = append(ls.cur.pending, done)
	return nil
}

// receive hands each answer on st to the oldest renewal waiting, until the
// stream breaks: then it fails those still waiting.
func (ls *leaseStream) receive(st *keepAliveStream) {
	defer ls.wg.Done()
	for {
		resp, err := st.s.Recv()
		ls.mu.Lock()
		if err != nil {
			if ls.cur == st {
				ls.cur = nil
			}
			for _, done := range st.pending {
				done <- keepAliveResult{err: err}
			}
			st.pending = nil
			ls.mu.Unlock()
			return
		}
		if len(st.pending) > 0 {
			st.pending[0] <- keepAliveResult{resp: resp}
			st.pending = st.pending[1:]
		}
		ls.mu.Unlock()
	}
}
