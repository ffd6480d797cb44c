package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// session is a Locker's lease and its loss, as concurrency.Session is a
// Mutex's: it grants the lease, keeps it alive, and decides when the locks
// bound to it count as lost. A lock held is lost (its Lost closes):
//
//   - when etcd says the lease is gone, to a renewal (keepAlive) or to
//     Lock's put: the session ends;
//   - when etcd's store was rewound (see revisions; keepAlive and gone
//     act on it): the session ends;
//   - when no renewal was confirmed for so long that the lease could
//     expire within margin (keepAlive): with etcd out of reach the
//     session ends; with etcd reachable but slow only the locks held are
//     lost (distrust), and waiters are granted once a renewal is
//     confirmed again (confirmed);
//   - when a renewal finds its key gone or created anew, though no delete
//     was seen (checkHeld);
//   - when the Locker closes (close);
//   - and, for a holder that asked for Lost, when anyone but Unlock
//     deletes its key (Lock.watchKey, with the lock).
//
// The session also owns the keys on its lease (keys.go): their names,
// never reused while such a key may exist, and the deletes that failed
// (orphans), retried after each renewal.
type session struct {
	cli    *clientv3.Client
	lease  clientv3.LeaseID
	prefix string // where coord's keys live: etcd's auth lets us read there
	ttl    time.Duration
	margin time.Duration // Lost fires this long before the lease could expire
	op     time.Duration // bound on one cleanup RPC
	reach  time.Duration // how long etcd may be out of reach before a write gives up
	pace   *pace         // how long writes take
	revs   *revisions    // the highest revision seen; whether the store was rewound
	log    *zap.Logger

	// ctx is the session: every request and watch of a Lock is bound to
	// it, and it is cancelled (cause ErrSessionLost) when the session is
	// lost or closed, so that nothing waits on an etcd we gave up on.
	ctx           context.Context
	cancel        context.CancelCauseFunc
	stopKeepAlive context.CancelFunc
	wg            sync.WaitGroup // the keep-alive loop and the locks' watchers
	lost          chan struct{}  // closed once the lease may have expired
	trusted       chan struct{}  // closed while renewals are confirmed (under mu)
	closed        chan struct{}  // closed by close
	once          sync.Once      // close

	mu      sync.Mutex
	inUse   map[string]struct{} // our keys: never reused while they may exist
	seq     int64               // numbers our extra keys under one prefix
	orphans map[string]int64    // keys whose delete failed → create revision (-1: unknown)
	held    map[*Lock]struct{}  // locks granted and not unlocked
}

// newSession grants the lease (see grant) and keeps it alive from then
// on. It takes cli over: close closes it, and so does newSession if it
// fails.
func newSession(ctx context.Context, cfg Config, cli *clientv3.Client, revs *revisions) (*session, error) {
	p := &pace{}
	g, sent, err := grant(ctx, cfg, cli, p)
	if err != nil {
		cli.Close()
		return nil, err
	}
	ttl := time.Duration(g.TTL) * time.Second
	s := &session{
		cli:     cli,
		lease:   g.ID,
		prefix:  cfg.Prefix,
		ttl:     ttl,
		margin:  max(time.Second, ttl/4),
		op:      min(cfg.DialTimeout, 2*time.Second),
		reach:   cfg.DialTimeout,
		pace:    p,
		revs:    revs,
		log:     cfg.Logger,
		lost:    make(chan struct{}),
		trusted: make(chan struct{}),
		closed:  make(chan struct{}),
		inUse:   map[string]struct{}{},
		orphans: map[string]int64{},
		held:    map[*Lock]struct{}{},
	}
	close(s.trusted)
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	kctx, kcancel := context.WithCancel(context.Background())
	s.stopKeepAlive = kcancel
	s.wg.Add(1)
	go s.keepAlive(kctx, sent.Add(ttl))
	return s, nil
}

// grant asks etcd for the lease. It gives up once etcd was out of reach
// for the dial timeout; while etcd answers, however slowly, it waits until
// ctx ends (see retryWrite). A try that timed out may still have granted
// a lease: it has no keys, and expires. sent is when the try that was
// granted was sent: the lease's expiry counts from then.
func grant(ctx context.Context, cfg Config, cli *clientv3.Client, p *pace) (g *clientv3.LeaseGrantResponse, sent time.Time, err error) {
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// gRPC only says that time ran out: if etcd is slow to answer, find out
	// why in the meantime, within the dial timeout. A refusal (see
	// ErrClientCertRequired) is certain: no need to wait out the rest of
	// the timeout, the probe cuts the grant short.
	pr := startProbe(ctx, cfg, cancel)
	defer pr.release()
	// Nothing listening on any endpoint is certain too, after a grace.
	rw := watchRefused(ctx, cfg, cancel)
	err = retryWrite(gctx, cli.ActiveConnection(), cfg.DialTimeout, p, func(ctx context.Context) (err error) {
		sent = time.Now()
		g, err = cli.Grant(ctx, int64(cfg.TTL/time.Second))
		return err
	})
	if rerr := rw.stop(); rerr != nil && err != nil && ctx.Err() == nil {
		pr.stop()
		return nil, sent, rerr
	}
	eps := strings.Join(cfg.Endpoints, ",")
	if r := refused(err, user(cfg), cfg.Prefix); r != nil { // certain: no need to diagnose
		pr.wait()
		return nil, sent, fmt.Errorf("%w: %s", r, eps)
	}
	if v, ran := pr.stop(); ran && err != nil && ctx.Err() == nil {
		if v.refusal != nil {
			return nil, sent, fmt.Errorf("%w: %w", ErrUnavailable, v.refusal)
		}
		return nil, sent, fmt.Errorf("%w: %s: %v%s", ErrUnavailable, eps, err, v.why)
	}
	if err != nil {
		if ctx.Err() != nil { // the caller gave up, not etcd
			return nil, sent, fmt.Errorf("connect to etcd: %w", ctx.Err())
		}
		return nil, sent, fmt.Errorf("%w: %s: %v", ErrUnavailable, eps, err)
	}
	return g, sent, nil
}

// close stops the keep-alives and revokes the lease (see Locker.Close),
// ends the session, waits for its goroutines and closes the client.
func (s *session) close() error {
	var err error
	s.once.Do(func() {
		close(s.closed)
		s.stopKeepAlive()
		if !s.isLost() && s.isTrusted() {
			ctx, cancel := context.WithTimeout(context.Background(), s.op)
			_, err = s.cli.Revoke(ctx, s.lease)
			cancel()
		}
		s.markLost()
		s.wg.Wait()
		err = errors.Join(err, s.cli.Close())
	})
	return err
}

// markLost ends the session: Lost closes, for the Locker and every lock it
// holds, and every request and watch bound to the session is cancelled.
func (s *session) markLost() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.lost:
		return
	default:
	}
	close(s.lost)
	s.cancel(ErrSessionLost)
	for k := range s.held {
		k.lose()
	}
}

// gone reports whether the session is lost, ending it first if the store
// was rewound.
func (s *session) gone() bool {
	if s.revs.isRewound() {
		s.markLost()
	}
	return s.isLost()
}

func (s *session) isLost() bool {
	select {
	case <-s.lost:
		return true
	default:
		return false
	}
}

// bind returns ctx, also cancelled (cause ErrSessionLost) with the session.
func (s *session) bind(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(s.ctx, func() { cancel(ErrSessionLost) })
	return ctx, func() { stop(); cancel(nil) }
}

// ctxErr is why a bound ctx ended: ErrSessionLost, or the caller's reason.
func ctxErr(ctx context.Context) error {
	if errors.Is(context.Cause(ctx), ErrSessionLost) {
		return ErrSessionLost
	}
	return ctx.Err()
}

// hold registers a granted lock, lost with the session from now on: at
// once if the session is over, or distrusted since Lock checked.
func (s *session) hold(k *Lock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.trusted:
	default:
		k.lose() // distrusted since Lock checked
	}
	if s.isLost() {
		k.lose()
	} else {
		s.held[k] = struct{}{}
	}
}

// drop unregisters a lock that is being unlocked.
func (s *session) drop(k *Lock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.held, k)
}

// spawn runs f in a goroutine that close waits for, unless the session is
// over; it reports whether it did. The goroutine is counted under mu, so
// before markLost ends the session, and so before close waits.
func (s *session) spawn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isLost() {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// keepAlive renews the lease every (TTL − margin)/3, the span the lease is
// trusted for divided by three, and after a failure retries on the same
// cadence counted from when the failed request was sent (at most every
// 500 ms), so that a renewal that fails or times out is retried before the
// lease is given up; renewals under way may overlap (see renewals). The
// lease's expiry is counted from when the last successful request was
// sent, not from when its answer came: the server renewed it in between.
// Only this goroutine knows it.
//
// Once no renewal was confirmed for so long that the lease could expire
// within the margin, every lock held is lost (see distrust). If etcd
// cannot be reached then (the connection is down), or says the lease is
// gone, or its store was rewound, the session is lost. If it is reachable
// but slow, the session lives on for waiters: renewals go on, and the
// first one confirmed makes the session trusted again; a waiter is granted
// only while it is.
func (s *session) keepAlive(ctx context.Context, expiry time.Time) {
	defer s.wg.Done()
	every := (s.ttl - s.margin) / 3
	conn := s.cli.ActiveConnection()
	ls := newLeaseStream(ctx, s.cli, s.lease)
	defer ls.close()
	rs := s.renewals(ctx, ls)
	defer rs.stop()
	// A connection that comes back (etcd restarted, perhaps restored from
	// a snapshot) is met with a renewal at once, not at the next turn.
	up := make(chan struct{}, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		watchConn(ctx, conn, up)
	}()
	next := time.Now().Add(every) // when to send the next renewal
	for {
		lostAt := expiry.Add(-s.margin)
		late := time.Until(lostAt) <= 0
		if late && conn.GetState() != connectivity.Ready {
			s.log.Warn("etcd lease may have expired and etcd cannot be reached: locks are lost", zap.Int64("lease", int64(s.lease)))
			s.markLost()
			return
		}
		if late {
			s.distrust()
		}
		if !rs.full() && !time.Now().Before(next) {
			rs.send(max(every, time.Until(expiry)))
			next = time.Now().Add(every)
		}
		wake := next
		if rs.full() {
			wake = time.Now().Add(every)
		}
		if !late {
			wake = minTime(wake, lostAt)
		} else {
			// While late, look at the connection now and then.
			wake = minTime(wake, time.Now().Add(500*time.Millisecond))
		}
		t := time.NewTimer(time.Until(wake))
		var r renewal
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.revs.rewound:
			t.Stop()
			s.log.Warn("etcd answered with a revision below one it gave before: its store was rewound (restored from a snapshot?); locks are lost",
				zap.Int64("seen", s.revs.highest()))
			s.markLost()
			return
		case <-s.revs.suspect:
			t.Stop()
			s.settle(ctx, every)
			continue
		case <-t.C:
			continue
		case <-up:
			t.Stop()
			next = time.Now()
			continue
		case r = <-rs.done:
			t.Stop()
			rs.n--
		}
		switch {
		case r.err == nil && r.resp.TTL > 0:
			expiry = maxTime(expiry, r.sent.Add(time.Duration(r.resp.TTL)*time.Second))
			// Bounded so that a slow etcd cannot delay Lost.
			s.renewed(ctx, expiry.Add(-s.margin-every))
		case errors.Is(r.err, rpctypes.ErrLeaseNotFound) || r.err == nil:
			s.log.Warn("etcd lease is gone: locks are lost", zap.Int64("lease", int64(s.lease)))
			s.markLost()
			return
		case ctx.Err() != nil:
			return
		default:
			// Failed, not just slow: try again soon.
			s.log.Info("etcd keep-alive failed; retrying", zap.Error(r.err))
			next = minTime(next, r.sent.Add(min(every, 500*time.Millisecond)))
		}
	}
}

// renewals are the keep-alives under way. Each runs in a goroutine of its
// own and is not cut short while the lease may live: on a slow etcd a
// renewal sent again and again, each given up after a while, would never
// land. The next one is sent on time even while earlier ones are under
// way (at most maxRenewals at once), so that the lease is confirmed as
// long as one round trip takes less than the span the lease is trusted
// for.
type renewals struct {
	s      *session
	ls     *leaseStream
	ctx    context.Context
	cancel context.CancelFunc
	done   chan renewal // the outcomes; whoever receives one counts it off n
	n      int          // under way
}

// A renewal is the outcome of one keep-alive request, sent at sent.
type renewal struct {
	sent time.Time
	resp *clientv3.LeaseKeepAliveResponse
	err  error
}

const maxRenewals = 3

// renewals returns the keep-alives of the loop that ends with ctx.
func (s *session) renewals(ctx context.Context, ls *leaseStream) *renewals {
	ctx, cancel := context.WithCancel(ctx)
	return &renewals{s: s, ls: ls, ctx: ctx, cancel: cancel, done: make(chan renewal, maxRenewals)}
}

func (rs *renewals) full() bool { return rs.n == maxRenewals }

// send sends a renewal, given up after bound.
func (rs *renewals) send(bound time.Duration) {
	s := rs.s
	tctx, cancel := context.WithTimeout(rs.ctx, bound)
	rs.n++
	sent := time.Now()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		resp, err := rs.ls.renew(tctx)
		rs.done <- renewal{sent, resp, err}
	}()
}

// stop cancels the renewals under way and waits for them.
func (rs *renewals) stop() {
	rs.cancel()
	for ; rs.n > 0; rs.n-- {
		<-rs.done
	}
}

// renewed marks the session confirmed again after a renewal, and does
// what waits for one, until the deadline by: it looks up the keys held
// (checkHeld) and retries the deletes that failed (deleteOrphans).
func (s *session) renewed(ctx context.Context, by time.Time) {
	s.confide()
	ctx, cancel := context.WithDeadline(ctx, by)
	defer cancel()
	s.checkHeld(ctx)
	s.deleteOrphans(ctx)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// watchConn sends on up each time conn becomes ready after it was not,
// until ctx ends.
func watchConn(ctx context.Context, conn *grpc.ClientConn, up chan<- struct{}) {
	state := conn.GetState()
	for conn.WaitForStateChange(ctx, state) {
		now := conn.GetState()
		if now == connectivity.Ready && state != connectivity.Ready {
			select {
			case up <- struct{}{}:
			default:
			}
		}
		state = now
	}
}

// distrust marks the session unconfirmed, on a reachable etcd too slow to
// confirm a renewal in time: every lock held is lost (its Lost closes),
// and no waiter is granted until a renewal is confirmed.
func (s *session) distrust() {
	s.mu.Lock()
	select {
	case <-s.trusted:
	default:
		s.mu.Unlock()
		return // since an earlier call
	}
	s.trusted = make(chan struct{})
	n := len(s.held)
	for k := range s.held {
		k.lose()
		delete(s.held, k)
	}
	s.mu.Unlock()
	if n > 0 {
		s.log.Warn("etcd lease may have expired (etcd is slow): held locks are lost; waiters wait for a renewal", zap.Int64("lease", int64(s.lease)), zap.Int("lost", n))
	} else {
		s.log.Info("etcd lease may have expired (etcd is slow): waiters wait for a renewal", zap.Int64("lease", int64(s.lease)))
	}
}

// confide marks the session confirmed again.
func (s *session) confide() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.trusted:
	default:
		close(s.trusted)
	}
}

func (s *session) isTrusted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.trusted:
		return true
	default:
		return false
	}
}

// confirmed waits until the session is confirmed (see distrust), and
// returns nil, or why it ended first.
func (s *session) confirmed(ctx context.Context) error {
	s.mu.Lock()
	trusted := s.trusted
	s.mu.Unlock()
	select {
	case <-trusted:
		return nil
	case <-ctx.Done():
		return ctxErr(ctx)
	case <-s.closed:
		return ErrClosed
	}
}

// checkHeld looks up the key of every lock held: a key gone, or created
// anew, means the lock is lost, though no delete was seen (the store was
// restored from a snapshot older than the key, with revisions that went on
// rising, so that no header betrayed it). Lost is closed for those locks.
func (s *session) checkHeld(ctx context.Context) {
	s.mu.Lock()
	held := make([]*Lock, 0, len(s.held))
	for k := range s.held {
		held = append(held, k)
	}
	s.mu.Unlock()
	// etcd takes at most 128 operations in a transaction by default.
	for len(held) > 0 && ctx.Err() == nil {
		n := min(len(held), 128)
		ops := make([]clientv3.Op, n)
		for i, k := range held[:n] {
			ops[i] = clientv3.OpGet(k.key, clientv3.WithKeysOnly())
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return
		}
		for i, k := range held[:n] {
			kvs := resp.Responses[i].GetResponseRange().Kvs
			if len(kvs) == 0 || kvs[0].CreateRevision != k.rev {
				s.log.Warn("lock's key is gone though no delete was seen: the lock is lost", zap.String("key", k.key), zap.Int64("token", k.rev))
				k.lose()
			}
		}
		held = held[n:]
	}
}
