package etcdlock

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

var (
	// ErrBusy is returned by TryLock when the lock is held.
	ErrBusy = errors.New("lock is held by another holder")
	// ErrSessionLost means the Locker's lease may have expired on the
	// server: every lock it held may have been granted to someone else.
	ErrSessionLost = errors.New("etcd session lost: the lease may have expired")
	// ErrNotHeld is returned when an operation finds that the lock's key
	// is gone.
	ErrNotHeld = errors.New("lock is no longer held")
	// ErrUnavailable means etcd could not be reached or refused us.
	ErrUnavailable = errors.New("etcd unavailable")
	// ErrClosed is returned by a Locker after Close.
	ErrClosed = errors.New("locker is closed")

	// ErrRefused means etcd answered and said no: retrying does not help,
	// and what to fix differs (see the refusals below). Every refusal
	// matches both ErrRefused and ErrUnavailable.
	ErrRefused = errors.New("etcd refused the request")

	// ErrClientCertRequired means etcd asks for a client certificate and
	// Config.TLS has none.
	ErrClientCertRequired error = refusal("etcd requires a client certificate")
	// ErrClientCertRejected means etcd refuses the client certificate we
	// sent: not signed by a CA it trusts, expired, or not for clients.
	ErrClientCertRejected error = refusal("etcd rejects our client certificate")
	// ErrUntrustedServer means etcd's certificate is not signed by a CA
	// that Config.TLS trusts; the error also wraps the x509 error.
	ErrUntrustedServer error = refusal("etcd's certificate is not signed by a trusted CA")
	// ErrAuthFailed means etcd's auth refused our user name and password
	// (or asks for them and we have none).
	ErrAuthFailed error = refusal("etcd refused the user name or password")
	// ErrPermissionDenied means etcd's auth refused the user a key under
	// the prefix.
	ErrPermissionDenied error = refusal("permission denied")
	// ErrNoSpace means etcd's database reached its quota
	// (--quota-backend-bytes) and etcd raised the NOSPACE alarm: it
	// refuses every write that adds data, until an operator compacts,
	// defragments and disarms it. Deletes and lease keep-alives still
	// work: held locks are kept and released as usual.
	ErrNoSpace error = refusal("etcd is out of space (NOSPACE alarm)")
)

// Defaults and bounds.
const (
	DefaultPrefix      = "/toolchainkit"
	DefaultTTL         = 10 * time.Second
	MinTTL             = 2 * time.Second
	DefaultDialTimeout = 5 * time.Second
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

// Config says how to reach etcd and where coord's keys live.
type Config struct {
	Endpoints   []string
	Prefix      string        // key prefix; default DefaultPrefix
	TTL         time.Duration // lease TTL, whole seconds, at least MinTTL; default DefaultTTL
	DialTimeout time.Duration // bound on connecting; default DefaultDialTimeout
	TLS         *tls.Config
	Username    string
	Password    string
	Logger      *zap.Logger // default zap.NewNop()
}

// Locker holds one etcd session (a lease kept alive while the process
// lives) and hands out locks bound to it. It is safe for concurrent use.
type Locker struct {
	cli    *clientv3.Client
	lease  clientv3.LeaseID
	prefix string
	user   string // whom etcd's auth sees: Config.Username, or the client certificate's CN
	ttl    time.Duration
	margin time.Duration // Lost fires this long before the lease could expire
	op     time.Duration // bound on one cleanup RPC
	reach  time.Duration // how long etcd may be out of reach before a write gives up
	pace   *pace         // how long writes take
	revs   *revisions    // the highest revision seen; whether the store was rewound
	log    *zap.Logger

	// sctx is the session: every request and watch of a Lock is bound to
	// it, and it is cancelled (cause ErrSessionLost) when the session is
	// lost or closed, so that nothing waits on an etcd we gave up on.
	sctx    context.Context
	scancel context.CancelCauseFunc
	cancel  context.CancelFunc // stops the keep-alive loop
	wg      sync.WaitGroup     // the keep-alive loop and the locks' watchers
	lost    chan struct{}      // closed once the lease may have expired
	trusted chan struct{}      // closed while renewals are confirmed (under mu)
	closed  chan struct{}      // closed by Close
	once    sync.Once          // Close

	mu      sync.Mutex
	inUse   map[string]struct{} // our keys: never reused while they may exist
	seq     int64               // numbers our extra keys under one prefix
	orphans map[string]int64    // keys whose delete failed → create revision (-1: unknown)
	held    map[*Lock]struct{}  // locks granted and not unlocked
}

// New connects to etcd and starts a session. It fails with ErrUnavailable
// within about cfg.DialTimeout if etcd cannot be reached, refuses the
// credentials or the TLS handshake; an etcd that answers, however slowly,
// is waited for until ctx ends.
func New(ctx context.Context, cfg Config) (*Locker, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	revs := newRevisions()
	cli, err := cfg.client(ctx, append(revs.dialOptions(), grpc.WithConnectParams(reconnect()))...)
	if r := refused(err, user(cfg), cfg.Prefix); r != nil {
		return nil, fmt.Errorf("%w: %s", r, strings.Join(cfg.Endpoints, ","))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, strings.Join(cfg.Endpoints, ","), err)
	}
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// gRPC only says that time ran out: if etcd is slow to answer, find out
	// why in the meantime, within the dial timeout.
	// A refusal (see ErrClientCertRequired) is certain: no need to wait
	// out the rest of the timeout.
	type verdict struct {
		why     string
		refusal error
	}
	why := make(chan verdict, 1)
	pctx, pcancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer pcancel()
	probe := time.AfterFunc(cfg.DialTimeout/2, func() {
		w, refusal := diagnose(pctx, cfg)
		if refusal != nil {
			cancel()
		}
		why <- verdict{w, refusal}
	})
	// The grant gives up once etcd was out of reach for the dial timeout;
	// while etcd answers, however slowly, it waits (see retryWrite). A try
	// that timed out may still have granted a lease: it has no keys, and
	// expires.
	var g *clientv3.LeaseGrantResponse
	var sent time.Time
	p := &pace{}
	err = retryWrite(gctx, cli.ActiveConnection(), cfg.DialTimeout, p, func(ctx context.Context) (err error) {
		sent = time.Now()
		g, err = cli.Grant(ctx, int64(cfg.TTL/time.Second))
		return err
	})
	if r := refused(err, user(cfg), cfg.Prefix); r != nil { // certain: no need to diagnose
		if !probe.Stop() {
			<-why
		}
		cli.Close()
		return nil, fmt.Errorf("%w: %s", r, strings.Join(cfg.Endpoints, ","))
	}
	if !probe.Stop() {
		pcancel()
		w := <-why
		if err != nil && ctx.Err() == nil {
			cli.Close()
			if w.refusal != nil {
				return nil, fmt.Errorf("%w: %w", ErrUnavailable, w.refusal)
			}
			return nil, fmt.Errorf("%w: %s: %v%s", ErrUnavailable, strings.Join(cfg.Endpoints, ","), err, w.why)
		}
	}
	if err != nil {
		cli.Close()
		if ctx.Err() != nil { // the caller gave up, not etcd
			return nil, fmt.Errorf("connect to etcd: %w", ctx.Err())
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, strings.Join(cfg.Endpoints, ","), err)
	}
	ttl := time.Duration(g.TTL) * time.Second
	l := &Locker{
		cli:     cli,
		lease:   g.ID,
		prefix:  cfg.Prefix,
		user:    user(cfg),
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
	close(l.trusted)
	l.sctx, l.scancel = context.WithCancelCause(context.Background())
	kctx, kcancel := context.WithCancel(context.Background())
	l.cancel = kcancel
	l.wg.Add(1)
	go l.keepAlive(kctx, sent.Add(ttl))
	return l, nil
}

// client is the etcd client c describes, with opts added to its gRPC
// dial options.
func (c *Config) client(ctx context.Context, opts ...grpc.DialOption) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: c.DialTimeout,
		TLS:         c.TLS,
		Username:    c.Username,
		Password:    c.Password,
		Logger:      clientLogger(c.Logger),
		Context:     ctx,
		DialOptions: opts,
	})
}

func (c *Config) fill() error {
	if len(c.Endpoints) == 0 {
		return fmt.Errorf("%w: no endpoints", ErrUnavailable)
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if !strings.HasPrefix(c.Prefix, "/") || strings.HasSuffix(c.Prefix, "/") {
		return fmt.Errorf("prefix %q: must start with '/' and not end with one", c.Prefix)
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < MinTTL || c.TTL%time.Second != 0 {
		return fmt.Errorf("TTL %s: want whole seconds, at least %s", c.TTL, MinTTL)
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.DialTimeout < 0 {
		return fmt.Errorf("dial timeout %s: must be positive", c.DialTimeout)
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// LostMargin returns how long before the lease could expire Lost fires.
func (l *Locker) LostMargin() time.Duration { return l.margin }

// Lost returns a channel closed once the session is over: the server says
// the lease is gone, its store was rewound (see revisions), or no
// keep-alive has been confirmed for so long that the lease could expire
// within LostMargin while etcd cannot be reached. On a reachable but slow
// etcd that last case loses the locks held (their Lost closes, before
// other processes could be granted them) but not the session: waiters
// wait on. Closed by Close too.
func (l *Locker) Lost() <-chan struct{} { return l.lost }

// Close stops the keep-alives and revokes the lease, which deletes every
// key bound to it: locks still held are released (and their Lost closed),
// keys whose delete failed earlier go too. With etcd down it gives up on
// the revoke after the cleanup bound (about two seconds), and skips it if
// renewals are not getting through; the lease then expires on its own.
func (l *Locker) Close() error {
	var err error
	l.once.Do(func() {
		close(l.closed)
		l.cancel()
		if !l.isLost() && l.isTrusted() {
			ctx, cancel := context.WithTimeout(context.Background(), l.op)
			_, err = l.cli.Revoke(ctx, l.lease)
			cancel()
		}
		l.markLost()
		l.wg.Wait()
		err = errors.Join(err, l.cli.Close())
	})
	return err
}

// markLost ends the session: Lost closes, for the Locker and every lock it
// holds, and every request and watch bound to the session is cancelled.
func (l *Locker) markLost() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.lost:
		return
	default:
	}
	close(l.lost)
	l.scancel(ErrSessionLost)
	for k := range l.held {
		k.lose()
	}
}

// gone reports whether the session is lost, ending it first if the store
// was rewound.
func (l *Locker) gone() bool {
	if l.revs.isRewound() {
		l.markLost()
	}
	return l.isLost()
}

func (l *Locker) isLost() bool {
	select {
	case <-l.lost:
		return true
	default:
		return false
	}
}

// bind returns ctx, also cancelled (cause ErrSessionLost) with the session.
func (l *Locker) bind(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(l.sctx, func() { cancel(ErrSessionLost) })
	return ctx, func() { stop(); cancel(nil) }
}

// ctxErr is why a bound ctx ended: ErrSessionLost, or the caller's reason.
func ctxErr(ctx context.Context) error {
	if errors.Is(context.Cause(ctx), ErrSessionLost) {
		return ErrSessionLost
	}
	return ctx.Err()
}

// keepAlive renews the lease every (TTL − margin)/3, the span the lease is
// trusted for divided by three, and after a failure retries on the same
// cadence counted from when the failed request was sent (at most every
// 500 ms), so that a renewal that fails or times out is retried before the
// lease is given up. The lease's expiry is counted from when the last
// successful request was sent, not from when its answer came: the server
// renewed it in between. Only this goroutine knows it.
//
// Once no renewal was confirmed for so long that the lease could expire
// within the margin, every lock held is lost (see distrust). If etcd
// cannot be reached then (the connection is down), or says the lease is
// gone, or its store was rewound, the session is lost. If it is reachable
// but slow, the session lives on for waiters: renewals go on, and the
// first one confirmed makes the session trusted again; a waiter is granted
// only while it is.
func (l *Locker) keepAlive(ctx context.Context, expiry time.Time) {
	defer l.wg.Done()
	every := (l.ttl - l.margin) / 3
	conn := l.cli.ActiveConnection()
	// Each renewal runs in a goroutine of its own and is not cut short
	// while the lease may live: on a slow etcd a renewal sent again and
	// again, each given up after a while, would never land. The next one
	// is sent on time even while earlier ones are under way (at most
	// maxRenewals at once), so that the lease is confirmed as long as one
	// round trip takes less than the span the lease is trusted for.
	type renewal struct {
		sent time.Time
		resp *clientv3.LeaseKeepAliveResponse
		err  error
	}
	const maxRenewals = 3
	done := make(chan renewal, maxRenewals)
	inflight := 0
	rctx, rcancel := context.WithCancel(ctx)
	defer func() {
		rcancel()
		for ; inflight > 0; inflight-- {
			<-done
		}
	}()
	renew := func() {
		tctx, cancel := context.WithTimeout(rctx, max(every, time.Until(expiry)))
		inflight++
		sent := time.Now()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer cancel()
			resp, err := l.cli.KeepAliveOnce(tctx, l.lease)
			done <- renewal{sent, resp, err}
		}()
	}
	// A connection that comes back (etcd restarted, perhaps restored from
	// a snapshot) is met with a renewal at once, not at the next turn.
	up := make(chan struct{}, 1)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		watchConn(ctx, conn, up)
	}()
	next := time.Now().Add(every) // when to send the next renewal
	for {
		lostAt := expiry.Add(-l.margin)
		late := time.Until(lostAt) <= 0
		if late && conn.GetState() != connectivity.Ready {
			l.log.Warn("etcd lease may have expired and etcd cannot be reached: locks are lost", zap.Int64("lease", int64(l.lease)))
			l.markLost()
			return
		}
		if late {
			if was, n := l.distrust(); was && n > 0 {
				l.log.Warn("etcd lease may have expired (etcd is slow): held locks are lost; waiters wait for a renewal", zap.Int64("lease", int64(l.lease)), zap.Int("lost", n))
			} else if was {
				l.log.Info("etcd lease may have expired (etcd is slow): waiters wait for a renewal", zap.Int64("lease", int64(l.lease)))
			}
		}
		if inflight < maxRenewals && !time.Now().Before(next) {
			renew()
			next = time.Now().Add(every)
		}
		wake := next
		if inflight == maxRenewals {
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
		case <-l.revs.rewound:
			t.Stop()
			l.log.Warn("etcd answered with a revision below one it gave before: its store was rewound (restored from a snapshot?); locks are lost",
				zap.Int64("seen", l.revs.highest()))
			l.markLost()
			return
		case <-l.revs.suspect:
			t.Stop()
			l.settle(ctx, every)
			continue
		case <-t.C:
			continue
		case <-up:
			t.Stop()
			next = time.Now()
			continue
		case r = <-done:
			t.Stop()
			inflight--
		}
		switch {
		case r.err == nil && r.resp.TTL > 0:
			expiry = maxTime(expiry, r.sent.Add(time.Duration(r.resp.TTL)*time.Second))
			l.confide()
			// Bounded so that a slow etcd cannot delay Lost.
			octx, ocancel := context.WithDeadline(ctx, expiry.Add(-l.margin-every))
			l.checkHeld(octx)
			l.deleteOrphans(octx)
			ocancel()
		case errors.Is(r.err, rpctypes.ErrLeaseNotFound) || r.err == nil:
			l.log.Warn("etcd lease is gone: locks are lost", zap.Int64("lease", int64(l.lease)))
			l.markLost()
			return
		case ctx.Err() != nil:
			return
		default:
			// Failed, not just slow: try again soon.
			l.log.Info("etcd keep-alive failed; retrying", zap.Error(r.err))
			next = minTime(next, r.sent.Add(min(every, 500*time.Millisecond)))
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
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

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// distrust marks the session unconfirmed: every lock held is lost (its
// Lost closes), and no waiter is granted until a renewal is confirmed.
// It reports whether the session was trusted until now, and how many
// locks it lost.
func (l *Locker) distrust() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.trusted:
	default:
		return false, 0
	}
	l.trusted = make(chan struct{})
	n := len(l.held)
	for k := range l.held {
		k.lose()
		delete(l.held, k)
	}
	return true, n
}

// confide marks the session confirmed again.
func (l *Locker) confide() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.trusted:
	default:
		close(l.trusted)
	}
}

func (l *Locker) isTrusted() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.trusted:
		return true
	default:
		return false
	}
}

// confirmed waits until the session is confirmed (see distrust), and
// returns nil, or why it ended first.
func (l *Locker) confirmed(ctx context.Context) error {
	l.mu.Lock()
	trusted := l.trusted
	l.mu.Unlock()
	select {
	case <-trusted:
		return nil
	case <-ctx.Done():
		return ctxErr(ctx)
	case <-l.closed:
		return ErrClosed
	}
}

// deleteOrphans retries deletes of waiter and holder keys that failed, so
// that a key we gave up on never blocks the others while our lease lives.
// A key whose put had an unknown outcome (-1) may still be created by a
// late put: it is deleted whenever found, for the rest of the session, and
// its name is never reused.
func (l *Locker) deleteOrphans(ctx context.Context) {
	l.mu.Lock()
	keys := make(map[string]int64, len(l.orphans))
	for k, rev := range l.orphans {
		keys[k] = rev
	}
	l.mu.Unlock()
	for k, rev := range keys {
		if ctx.Err() != nil {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, l.op)
		err := l.deleteKey(rctx, k, rev)
		cancel()
		if err == nil && rev >= 0 {
			l.mu.Lock()
			delete(l.orphans, k)
			delete(l.inUse, k)
			l.mu.Unlock()
		}
	}
}

// deleteKey deletes key only if it is still the one created at rev, so
// that a late retry cannot delete a newer key. rev -1 (a put whose outcome
// is unknown) deletes whatever is there: the name stays reserved for us,
// so nothing newer of ours can be there.
func (l *Locker) deleteKey(ctx context.Context, key string, rev int64) error {
	return retryWrite(ctx, l.cli.ActiveConnection(), l.reach, l.pace, func(ctx context.Context) error {
		if rev < 0 {
			_, err := l.cli.Delete(ctx, key)
			return err
		}
		_, err := l.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", rev)).
			Then(clientv3.OpDelete(key)).Commit()
		return err
	})
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

// release deletes key, or leaves it to the keep-alive loop if etcd does
// not answer within the cleanup bound; the key name is free for reuse once
// it is deleted.
func (l *Locker) release(key string, rev int64) error {
	if l.isLost() {
		return nil // the key goes with the lease
	}
	if !l.isTrusted() {
		// Renewals are not getting through: the keep-alive loop deletes
		// it once one does, or it goes with the lease.
		l.mu.Lock()
		l.orphans[key] = rev
		l.mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.op)
	defer cancel()
	err := l.deleteKey(ctx, key, rev)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil || rev < 0 {
		l.orphans[key] = rev
	}
	if err != nil {
		return fmt.Errorf("%w: delete %s: %v", ErrUnavailable, key, err)
	}
	if rev >= 0 {
		delete(l.inUse, key)
	}
	return nil
}

func (l *Locker) lockPrefix(name string) string {
	return l.prefix + "/locks/" + EscapeName(name) + "/"
}

// myKey picks this Locker's key for a new acquisition under pfx: the lease
// in hex, as concurrency.Mutex and etcdctl write it (".s" added for a
// shared lock), or, when this Locker has that key already, the lease and a
// sequence number.
func (l *Locker) myKey(pfx string, shared bool) string {
	suffix := ""
	if shared {
		suffix = sharedSuffix
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	key := fmt.Sprintf("%s%x%s", pfx, int64(l.lease), suffix)
	if _, taken := l.inUse[key]; taken {
		l.seq++
		key = fmt.Sprintf("%s%x-%d%s", pfx, int64(l.lease), l.seq, suffix)
	}
	l.inUse[key] = struct{}{}
	return key
}

const sharedSuffix = ".s"

func isShared(key []byte) bool { return strings.HasSuffix(string(key), sharedSuffix) }

// Mode is how a lock is held.
type Mode int

const (
	// Exclusive: the oldest key under the lock's prefix holds it.
	Exclusive Mode = iota
	// Shared: held while no older key is exclusive.
	Shared
)

func (m Mode) String() string {
	if m == Shared {
		return "shared"
	}
	return "exclusive"
}

// Lock acquires the lock name in mode. It queues and watches only the key
// it waits for. value is stored as the key's value (the holder record).
//
// If ctx ends, the session is lost (ErrSessionLost) or the Locker closes
// while it waits, Lock deletes its waiter key, waiting at most about two
// seconds for etcd (a key it cannot delete is deleted by the keep-alive
// loop as soon as etcd answers again), and returns the reason. On any
// error it holds nothing.
func (l *Locker) Lock(ctx context.Context, name string, mode Mode, value []byte) (*Lock, error) {
	return l.lock(ctx, name, mode, value, true)
}

// TryLock is Lock without waiting: it queues, and if the lock is held in a
// conflicting mode it takes its key back and returns ErrBusy.
func (l *Locker) TryLock(ctx context.Context, name string, mode Mode, value []byte) (*Lock, error) {
	return l.lock(ctx, name, mode, value, false)
}

func (l *Locker) lock(ctx context.Context, name string, mode Mode, value []byte, wait bool) (*Lock, error) {
	shared := mode == Shared
	select {
	case <-l.closed:
		return nil, ErrClosed
	case <-l.lost:
		return nil, ErrSessionLost
	default:
	}
	ctx, cancel := l.bind(ctx)
	defer cancel()
	pfx := l.lockPrefix(name)
	key := l.myKey(pfx, shared)
	// One request queues us and shows who is ahead: the uncontended path
	// costs this and the delete in Unlock. It is tried until it succeeds,
	// the caller's ctx ends, the session is lost, or etcd is out of reach
	// for the dial timeout: a slow etcd is waited for. A try under way
	// when ctx ends may finish within the cleanup bound: a put cancelled
	// in flight may still be applied, and then we must know its revision
	// to take it back.
	ahead := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)}
	if !shared {
		ahead = append(ahead, clientv3.WithLimit(1))
	}
	qctx, qcancel := context.WithCancel(l.sctx)
	grace := time.AfterFunc(time.Duration(math.MaxInt64), qcancel)
	stop := context.AfterFunc(ctx, func() { grace.Reset(l.op) })
	// The write may repeat: a try that timed out may have put the key,
	// and the next one then finds it (Else).
	var resp *clientv3.TxnResponse
	before := l.revs.highest()
	err := retryWrite(qctx, l.cli.ActiveConnection(), l.reach, l.pace, func(tctx context.Context) (err error) {
		if ctx.Err() != nil {
			return errStopped // no new try once the caller gave up
		}
		resp, err = l.cli.Txn(tctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(value), clientv3.WithLease(l.lease)), clientv3.OpGet(pfx, ahead...)).
			Else(clientv3.OpGet(key), clientv3.OpGet(pfx, ahead...)).Commit()
		return err
	})
	stop()
	grace.Stop()
	qcancel()
	var rev int64
	switch {
	case err != nil:
	case resp.Succeeded:
		rev = resp.Header.Revision
		if rev <= before {
			// Our put made a revision we saw before: the store was
			// rewound, and our token is someone else's.
			l.revs.rewind()
		}
	default: // an earlier try put it, if it is ours
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 && clientv3.LeaseID(kvs[0].Lease) == l.lease {
			rev = kvs[0].CreateRevision
		} else {
			err = fmt.Errorf("key %s exists already", key)
		}
	}
	if err == nil && l.gone() {
		err = ErrSessionLost
	}
	if err == nil && ctx.Err() != nil {
		l.release(key, rev)
		return nil, ctxErr(ctx)
	}
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		l.markLost()
	}
	if err != nil {
		l.release(key, -1) // the put may yet happen: watched for all session long
		switch {
		case l.gone():
			return nil, ErrSessionLost
		case ctx.Err() != nil:
			return nil, ctxErr(ctx)
		}
		return nil, l.unavailable(fmt.Sprintf("queue for %q", name), err)
	}
	if blocked(resp.Responses[1].GetResponseRange().Kvs, rev, shared) {
		if !wait {
			l.release(key, rev)
			return nil, ErrBusy
		}
		if err := l.waitTurn(ctx, pfx, rev, shared); err != nil {
			l.release(key, rev)
			return nil, err
		}
		// Granted: check that our key survived the wait (the lease may
		// have expired meanwhile, and someone else been granted the lock;
		// the store may have been rewound).
		g, err := l.cli.Get(ctx, key, clientv3.WithKeysOnly())
		if err != nil || len(g.Kvs) == 0 || g.Kvs[0].CreateRevision != rev || l.gone() {
			l.release(key, rev)
			switch {
			case ctx.Err() != nil:
				return nil, ctxErr(ctx)
			case err != nil:
				return nil, l.unavailable("", err)
			}
			return nil, ErrSessionLost
		}
	}
	// A session whose renewals are not confirmed (etcd slow) may have
	// lost its lease: grant only once one is.
	if err := l.confirmed(ctx); err != nil {
		l.release(key, rev)
		return nil, err
	}
	if l.gone() {
		l.release(key, rev)
		return nil, ErrSessionLost
	}
	return l.start(key, rev), nil
}

// waitTurn waits until no older key blocks the key created at rev.
func (l *Locker) waitTurn(ctx context.Context, pfx string, rev int64, shared bool) error {
	for {
		blocker, brev, err := l.blocker(ctx, pfx, rev, shared)
		if err == nil && blocker == "" {
			return nil
		}
		if err == nil {
			err = l.waitDelete(ctx, blocker, brev)
		}
		if errors.Is(err, errRetry) {
			err = l.pause(ctx)
		}
		if err != nil {
			return err
		}
	}
}

// blocked reports whether any of kvs, created before rev, keeps us from
// the lock: any key for an exclusive lock, an exclusive one for a shared.
func blocked(kvs []*mvccpb.KeyValue, rev int64, shared bool) bool {
	for _, kv := range kvs {
		if kv.CreateRevision < rev && (!shared || !isShared(kv.Key)) {
			return true
		}
	}
	return false
}

// errStopped ends the tries of a write whose caller gave up.
var errStopped = errors.New("caller gave up")

// errRetry marks a failed etcd request during a wait: the wait goes on,
// until its ctx ends or the session is lost.
var errRetry = errors.New("retry")

// pause waits a little before a retry, unless the wait must end.
func (l *Locker) pause(ctx context.Context) error {
	t := time.NewTimer(200 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctxErr(ctx)
	case <-l.closed:
		return ErrClosed
	case <-t.C:
		return nil
	}
}

// blocker returns the newest key created before rev that keeps us from the
// lock (any key for an exclusive lock, an exclusive key for a shared one),
// and its create revision.
func (l *Locker) blocker(ctx context.Context, pfx string, rev int64, shared bool) (string, int64, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithMaxCreateRev(rev - 1), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend)}
	if !shared {
		opts = append(opts, clientv3.WithLimit(1))
	}
	resp, err := l.cli.Get(ctx, pfx, opts...)
	if err != nil {
		return "", 0, l.waitErr(ctx, err)
	}
	for _, kv := range resp.Kvs {
		if !shared || !isShared(kv.Key) {
			return string(kv.Key), kv.CreateRevision, nil
		}
	}
	return "", 0, nil
}

// waitDelete returns once the key created at rev is gone. Its watch starts
// at the current revision, so the server serves it as a synced watcher (a
// watch from a past revision can be woken up to ~100 ms late); the key is
// looked up again once the watch exists, so that a delete in between is
// not missed, and a new key of the same name (its owner locked again)
// is not taken for the old one.
func (l *Locker) waitDelete(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := l.cli.Watch(wctx, key, clientv3.WithCreatedNotify(), clientv3.WithFilterPut())
	created := false
	for {
		select {
		case <-ctx.Done():
			return ctxErr(ctx)
		case <-l.closed:
			return ErrClosed
		case wr, ok := <-wch:
			if !ok {
				return l.waitErr(ctx, errors.New("watch closed"))
			}
			if err := wr.Err(); err != nil {
				return l.waitErr(ctx, err)
			}
			if wr.Created && !created {
				created = true
				g, err := l.cli.Get(ctx, key, clientv3.WithKeysOnly())
				if err != nil {
					return l.waitErr(ctx, err)
				}
				if len(g.Kvs) == 0 || g.Kvs[0].CreateRevision != rev {
					return nil
				}
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					return nil
				}
			}
		}
	}
}

// waitErr turns a failed request during a wait into the reason to stop
// waiting, or errRetry.
func (l *Locker) waitErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctxErr(ctx)
	}
	select {
	case <-l.closed:
		return ErrClosed
	default:
	}
	l.log.Debug("etcd request failed while waiting; retrying", zap.Error(err))
	return errRetry
}

// Lock is a held etcd lock.
type Lock struct {
	l   *Locker
	key string
	rev int64

	lost      chan struct{} // closed when the lock may be lost, or is unlocked
	loseOnce  sync.Once
	watchOnce sync.Once
	ctx       context.Context // bound to the session; cancelled by Unlock
	stop      context.CancelFunc

	mu       sync.Mutex
	released bool
}

// start registers a granted lock. Lost closes with the session; its key is
// watched from the first call of Lost on.
func (l *Locker) start(key string, rev int64) *Lock {
	k := &Lock{l: l, key: key, rev: rev, lost: make(chan struct{})}
	k.ctx, k.stop = l.bind(context.Background())
	l.mu.Lock()
	select {
	case <-l.trusted:
	default:
		k.lose() // distrusted since Lock checked
	}
	if l.isLost() {
		k.lose()
	} else {
		l.held[k] = struct{}{}
	}
	l.mu.Unlock()
	return k
}

// watchKey watches the lock's key from the revision after its creation, so
// that no delete is missed however late it starts: deleted by anyone but
// Unlock, the lock is lost. Only holders that ask for Lost pay for a watch.
func (k *Lock) watchKey() {
	l := k.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.isLost() || k.ctx.Err() != nil {
		k.lose()
		return
	}
	l.wg.Add(1) // before markLost, and so before Close waits
	go func() {
		defer l.wg.Done()
		from := k.rev + 1
		for k.watch(from) {
			// The watch broke (compaction, a restart): look at the key,
			// and watch again from there.
			var ok bool
			if from, ok = k.recheck(); !ok {
				break
			}
		}
		k.lose()
	}()
}

func (k *Lock) lose() { k.loseOnce.Do(func() { close(k.lost) }) }

// watch reports false once the lock is lost or released, true if the
// watch broke first.
func (k *Lock) watch(from int64) bool {
	wctx, cancel := context.WithCancel(k.ctx)
	defer cancel()
	wch := k.l.cli.Watch(wctx, k.key, clientv3.WithRev(from), clientv3.WithFilterPut())
	for {
		select {
		case <-k.ctx.Done():
			return false
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				return k.ctx.Err() == nil
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					return false
				}
			}
		}
	}
}

// recheck waits until etcd says whether our key is still there; it returns
// the revision to watch from, or false if the lock is gone.
func (k *Lock) recheck() (int64, bool) {
	for {
		select {
		case <-k.ctx.Done():
			return 0, false
		case <-time.After(200 * time.Millisecond):
		}
		rctx, cancel := context.WithTimeout(k.ctx, k.l.op)
		g, err := k.l.cli.Get(rctx, k.key, clientv3.WithKeysOnly())
		cancel()
		if err != nil {
			continue
		}
		if len(g.Kvs) == 0 || g.Kvs[0].CreateRevision != k.rev {
			return 0, false
		}
		return g.Header.Revision + 1, true
	}
}

// Token returns the fencing token: the create revision of the lock's key.
// An exclusive holder's is greater than that of every earlier holder of
// the lock, exclusive or shared; a shared holder's is its own key's.
func (k *Lock) Token() int64 { return k.rev }

// Key returns the lock's key.
func (k *Lock) Key() string { return k.key }

// Lost returns a channel closed when the lock may be lost: its key was
// deleted by someone else, or the session's lease may have expired. It is
// also closed by Unlock. The first call starts watching the key.
func (k *Lock) Lost() <-chan struct{} {
	k.watchOnce.Do(k.watchKey)
	return k.lost
}

// Update replaces the key's value, if the key is still ours.
func (k *Lock) Update(value []byte) error {
	ctx, cancel := context.WithTimeout(k.ctx, k.l.op)
	defer cancel()
	return k.putIfHeld(ctx, k.key, value, true)
}

// putIfHeld puts key (bound to our lease if leased) only while the lock's
// key is still the one we created.
func (k *Lock) putIfHeld(ctx context.Context, key string, value []byte, leased bool) error {
	var opts []clientv3.OpOption
	if leased {
		opts = append(opts, clientv3.WithLease(k.l.lease))
	}
	resp, err := k.l.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k.key), "=", k.rev)).
		Then(clientv3.OpPut(key, string(value), opts...)).Commit()
	switch {
	case err != nil && ctx.Err() != nil:
		return ctxErr(ctx)
	case err != nil:
		return k.l.unavailable("", err)
	case !resp.Succeeded:
		return ErrNotHeld
	}
	return nil
}

// Held reports, by asking etcd, whether the lock is still ours.
func (k *Lock) Held(ctx context.Context) error {
	ctx, cancel := k.l.bind(ctx)
	defer cancel()
	resp, err := k.l.cli.Get(ctx, k.key, clientv3.WithKeysOnly())
	switch {
	case err != nil && ctx.Err() != nil:
		return ctxErr(ctx)
	case err != nil:
		return k.l.unavailable("", err)
	case len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != k.rev:
		return ErrNotHeld
	}
	return nil
}

// Unlock deletes the lock's key, only if it is still the one we created.
// When etcd does not answer within about two seconds it returns the error
// and keeps trying in the background while the session lives.
func (k *Lock) Unlock() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.released {
		return nil
	}
	k.released = true
	k.stop()
	k.lose()
	k.l.mu.Lock()
	delete(k.l.held, k)
	k.l.mu.Unlock()
	return k.l.release(k.key, k.rev)
}

// Inspect reports on the lock called name.
func (l *Locker) Inspect(ctx context.Context, name string) (Info, error) {
	ctx, cancel := l.bind(ctx)
	defer cancel()
	return l.inspector().Inspect(ctx, name)
}

// List reports on every lock under the prefix, sorted by name.
func (l *Locker) List(ctx context.Context) ([]Info, error) {
	ctx, cancel := l.bind(ctx)
	defer cancel()
	return l.inspector().List(ctx)
}

// CheckSpace is Inspector.CheckSpace.
func (l *Locker) CheckSpace(ctx context.Context) error {
	ctx, cancel := l.bind(ctx)
	defer cancel()
	return l.inspector().CheckSpace(ctx)
}

func (l *Locker) inspector() *Inspector {
	return &Inspector{cli: l.cli, prefix: l.prefix, user: l.user}
}

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
	ctx, unbind := l.bind(ctx)
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
	ctx, cancel := l.bind(ctx)
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
	ctx, cancel := l.bind(ctx)
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

// diagnose says why the endpoints do not answer: nothing listening, or the
// TLS handshake failing. It probes them all at once, until ctx ends.
// refusal is set when every endpoint refuses us for a reason retrying
// cannot cure: it asks for a client certificate we do not have
// (ErrClientCertRequired), rejects the one we sent
// (ErrClientCertRejected), or its certificate is not signed by a CA we
// trust (ErrUntrustedServer, wrapping the x509 error).
func diagnose(ctx context.Context, cfg Config) (why string, refusal error) {
	whys := make([]string, len(cfg.Endpoints))
	refusals := make([]error, len(cfg.Endpoints))
	var wg sync.WaitGroup
	for i, e := range cfg.Endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			host := e
			if u, err := url.Parse(e); err == nil && u.Host != "" {
				host = u.Host
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", host)
			if err == nil && cfg.TLS != nil {
				refusals[i], err = handshake(ctx, c, host, cfg.TLS)
			} else if err == nil {
				c.Close()
			}
			if err != nil {
				whys[i] = fmt.Sprintf("%s: %v", e, err)
			}
		}()
	}
	wg.Wait()
	// A refusal is certain only when every endpoint refuses: one stray
	// endpoint must not hide what the others say, nor end the wait.
	if len(refusals) > 0 {
		refusal = refusals[0]
	}
	var ws []string
	for i, w := range whys {
		if refusals[i] == nil {
			refusal = nil
		}
		if w != "" {
			ws = append(ws, w)
		}
	}
	if len(ws) == 0 {
		return "", refusal
	}
	return " (" + strings.Join(ws, "; ") + ")", refusal
}

// handshake runs a TLS handshake on c as a client configured with tc
// would, and closes c. Without a client certificate of our own it notes
// whether the server asks for one and, if so, whether the server then
// refuses us: in the handshake (TLS 1.2), or in an alert after it (TLS
// 1.3), which it reads once, for at most a second.
func handshake(ctx context.Context, c net.Conn, host string, tc *tls.Config) (refusal, err error) {
	defer c.Close()
	tc = tc.Clone()
	if tc.ServerName == "" {
		tc.ServerName, _, _ = net.SplitHostPort(host)
	}
	// Learn whether the server asks for a client certificate, and answer
	// with ours, if any.
	asked, ours := false, tc.GetClientCertificate
	tc.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		asked = true
		switch {
		case ours != nil:
			return ours(cri)
		case len(tc.Certificates) > 0:
			return &tc.Certificates[0], nil
		}
		return &tls.Certificate{}, nil
	}
	sent := ours != nil || len(tc.Certificates) > 0
	tlsc := tls.Client(c, tc)
	err = tlsc.HandshakeContext(ctx)
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		return fmt.Errorf("%w: %w", ErrUntrustedServer, unknown), err
	}
	if err == nil && asked {
		// TLS 1.3: the server's verdict on our certificate comes after
		// the handshake, as an alert.
		stop := context.AfterFunc(ctx, func() { tlsc.SetReadDeadline(time.Now()) })
		defer stop()
		tlsc.SetReadDeadline(time.Now().Add(time.Second))
		_, err = tlsc.Read(make([]byte, 1))
	}
	// crypto/tls reports an alert from the peer as a "remote error".
	var alert *net.OpError
	switch {
	case asked && errors.As(err, &alert) && alert.Op == "remote error" && sent:
		return ErrClientCertRejected, err
	case asked && errors.As(err, &alert) && alert.Op == "remote error":
		return ErrClientCertRequired, err
	case asked && errors.Is(err, os.ErrDeadlineExceeded):
		return nil, nil // it took us as we are
	}
	return nil, err
}

// unavailable wraps the error of a request in ErrUnavailable, after what
// was being done; a request etcd refused is that refusal (see refused):
// ErrPermissionDenied says who may not use the prefix.
func (l *Locker) unavailable(what string, err error) error {
	if r := refused(err, l.user, l.prefix); r != nil {
		return r
	}
	if what != "" {
		return fmt.Errorf("%w: %s: %v", ErrUnavailable, what, err)
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// user is whom etcd's auth takes us for: the user we log in as, or else
// the CN of our client certificate (etcd maps one to the user of that
// name); "" if neither.
func user(cfg Config) string {
	if cfg.Username != "" {
		return cfg.Username
	}
	if cfg.TLS == nil || len(cfg.TLS.Certificates) == 0 {
		return ""
	}
	c := cfg.TLS.Certificates[0]
	if c.Leaf != nil {
		return c.Leaf.Subject.CommonName
	}
	if len(c.Certificate) == 0 {
		return ""
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return ""
	}
	return leaf.Subject.CommonName
}
