package etcdlock

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// reconnect is how soon gRPC dials again after a connection to etcd broke:
// within about 100 ms (its default backs off to 2 s and more), so that a
// holder meets an etcd that is back (restarted, perhaps restored from a
// snapshot) as soon as a newcomer does.
func reconnect() grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.2, Jitter: 0.2, MaxDelay: 100 * time.Millisecond},
		MinConnectTimeout: 5 * time.Second,
	}
}

// retryWrite runs write until it succeeds, fails for a reason another
// try cannot cure (see retryable), or ctx ends, or etcd has been out of
// reach for the span reach: no try was answered, and conn was not
// connected when a try ran out. A try that runs out on a connected
// conn is etcd being slow, not gone, and only makes the next try longer
// (writeTry doubling up to maxWriteTry), so that a slow etcd is not
// buried under retries. Each try requires a leader: a member without one
// answers at once, and counts as out of reach. Only for writes that may
// be repeated.
func retryWrite(ctx context.Context, conn *grpc.ClientConn, reach time.Duration, p *pace, write func(context.Context) error) error {
	try, since := p.first(), time.Now()
	for {
		tctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), try)
		sent := time.Now()
		err := write(tctx)
		cancel()
		if err == nil {
			p.took(time.Since(sent))
		}
		if err == nil || ctx.Err() != nil || !retryable(err) {
			return err
		}
		if slow(err, conn) {
			since, try = time.Now(), min(2*try, maxWriteTry)
		} else if time.Since(since) >= reach {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pace remembers how long the last write took, so that on a slow etcd
// the first try of the next is given twice that, not writeTry.
type pace struct{ last atomic.Int64 }

func (p *pace) first() time.Duration {
	return min(max(writeTry, 2*time.Duration(p.last.Load())), maxWriteTry)
}

func (p *pace) took(d time.Duration) { p.last.Store(int64(d)) }

// slow reports whether a failed try is etcd being slow: it ran out of
// time on a connection that is up, or etcd itself said that applying it
// took too long.
func slow(err error, conn *grpc.ClientConn) bool {
	if errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, rpctypes.ErrTimeoutWaitAppliedIndex) {
		return true
	}
	timedOut := status.Code(err) == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded)
	return timedOut && conn != nil && conn.GetState() == connectivity.Ready
}

// writeTry bounds the first try of a write that may be repeated: a member
// whose leader just died holds a write until the server's own request
// timeout (seconds), while another member may already have a new leader.
// maxWriteTry bounds the later tries, on an etcd that is slow.
const (
	writeTry    = 500 * time.Millisecond
	maxWriteTry = 4 * time.Second
)

// retryable reports whether a write that may be repeated (the lease
// grant, or a write that touches only our own key and checks what is
// there) should be tried again: the member it went to died under it, has
// no leader, or did not answer within its try. The client itself retries
// no writes.
func retryable(err error) bool {
	code := status.Code(err)
	var ee rpctypes.EtcdError // the client turns etcd's own errors into these
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	return code == codes.Unavailable || code == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded)
}
