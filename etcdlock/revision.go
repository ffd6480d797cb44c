package etcdlock

import (
	"context"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// revisions is the highest store revision a Locker has seen in the header
// of a response. etcd's revision only rises: a store that answers below
// it was rewound (restored from a snapshot), and every key and token we
// hold or saw may be gone, or handed out again.
//
// A write or a linearizable read is applied on the member that answers,
// after everything we saw before we sent it: its header below the highest
// is certain proof (rewound closes). A watch or keep-alive header comes
// from whichever member serves the stream, which may lag behind the one
// we saw last: it only raises suspicion, which a linearizable read
// settles (suspect).
type revisions struct {
	mu      sync.Mutex
	max     int64
	rewound chan struct{} // closed once the store was rewound
	once    sync.Once
	suspect chan struct{} // a stream answered below max: ask again
}

func newRevisions() *revisions {
	return &revisions{rewound: make(chan struct{}), suspect: make(chan struct{}, 1)}
}

// seen notes the revision of a response header to a request sent when
// floor was the highest revision seen; certain says the request was a
// write or a linearizable read. Requests in flight together may be
// answered in any order: only floor, not the highest revision at the
// answer, bounds the answer from below.
func (r *revisions) seen(h *pb.ResponseHeader, floor int64, certain bool) {
	if h == nil || h.Revision == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.max = max(r.max, h.Revision)
	switch {
	case h.Revision >= floor:
	case certain:
		r.rewind()
	default:
		select {
		case r.suspect <- struct{}{}:
		default:
		}
	}
}

// rewind records that the store went back.
func (r *revisions) rewind() { r.once.Do(func() { close(r.rewound) }) }

// highest returns the highest revision seen.
func (r *revisions) highest() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.max
}

func (r *revisions) isRewound() bool {
	select {
	case <-r.rewound:
		return true
	default:
		return false
	}
}

// dialOptions returns the gRPC interceptors that show r every response
// header: of every request, retry and stream the client makes.
func (r *revisions) dialOptions() []grpc.DialOption {
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		floor := r.highest()
		err := invoker(ctx, method, req, reply, cc, opts...)
		if h, ok := reply.(headed); ok && err == nil {
			r.seen(h.GetHeader(), floor, linearizable(req))
		}
		return err
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		floor := r.highest()
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return headedStream{s, r, floor}, nil
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream)}
}

// linearizable reports whether req is answered only once the member
// applied everything committed before it was sent.
func linearizable(req any) bool {
	switch q := req.(type) {
	case *pb.RangeRequest:
		return !q.Serializable
	case *pb.TxnRequest, *pb.PutRequest, *pb.DeleteRangeRequest, *pb.LeaseGrantRequest:
		return true
	}
	return false
}

type headed interface{ GetHeader() *pb.ResponseHeader }

// headedStream shows r the header of every message a stream receives;
// floor is the highest revision seen when the stream opened.
type headedStream struct {
	grpc.ClientStream
	r     *revisions
	floor int64
}

func (s headedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if h, ok := m.(headed); ok && err == nil {
		s.r.seen(h.GetHeader(), s.floor, false)
	}
	return err
}

// settle asks etcd for a linearizable read after a stream answered below
// the highest revision seen: if that answer is below it too, the store was
// rewound (see revisions.seen), and the keep-alive loop ends the session.
func (s *session) settle(ctx context.Context, bound time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	s.cli.Get(ctx, s.prefix+"/", clientv3.WithCountOnly()) // a key etcd's auth lets us read
}
