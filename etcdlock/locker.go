package etcdlock

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
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
	s      *session
	cli    *clientv3.Client // the session's
	prefix string
	user   string // whom etcd's auth sees: Config.Username, or the client certificate's CN
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
	s, err := newSession(ctx, cfg, cli, revs)
	if err != nil {
		return nil, err
	}
	return &Locker{s: s, cli: cli, prefix: cfg.Prefix, user: user(cfg)}, nil
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
func (l *Locker) LostMargin() time.Duration { return l.s.margin }

// Lost returns a channel closed once the session is over: the server says
// the lease is gone, its store was rewound (see revisions), or no
// keep-alive has been confirmed for so long that the lease could expire
// within LostMargin while etcd cannot be reached. On a reachable but slow
// etcd that last case loses the locks held (their Lost closes, before
// other processes could be granted them) but not the session: waiters
// wait on. Closed by Close too.
func (l *Locker) Lost() <-chan struct{} { return l.s.lost }

// Close stops the keep-alives and revokes the lease, which deletes every
// key bound to it: locks still held are released (and their Lost closed),
// keys whose delete failed earlier go too. With etcd down it gives up on
// the revoke after the cleanup bound (about two seconds), and skips it if
// renewals are not getting through; the lease then expires on its own.
func (l *Locker) Close() error { return l.s.close() }
