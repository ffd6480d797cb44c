package coord

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/toolchainkit/coord/etcdlock"
)

var _ backend = etcdBackend{}

// etcdBackend adapts an etcdlock.Locker.
type etcdBackend struct {
	l   *etcdlock.Locker
	log *zap.Logger
}

// etcdHeld is a held etcd lock; its records carry the time it was granted,
// which etcd does not keep.
type etcdHeld struct {
	*etcdlock.Lock
	l     *etcdlock.Locker
	since time.Time
}

func (h *etcdHeld) Update(record []byte) error {
	return etcdError(h.Lock.Update(withSince(record, h.since)))
}

// checkHeld and markDone make etcdHeld a recordHeld.

func (h *etcdHeld) checkHeld(ctx context.Context) error { return etcdError(h.Held(ctx)) }

func (h *etcdHeld) markDone(ctx context.Context, id string, record []byte) error {
	return etcdError(h.l.MarkDone(ctx, h.Lock, id, record))
}

// newEtcdBackend connects to etcd; an unreachable etcd is a ConfigError
// on the field named unreachable (see New). A backend that only reports
// takes no lease (see ReportOnly).
func newEtcdBackend(ctx context.Context, cfg Config, log *zap.Logger, unreachable string, reportOnly bool) (backend, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, &ConfigError{"Endpoints", fmt.Errorf("%w: etcd: no endpoints configured", ErrBackendUnavailable)}
	}
	for _, e := range cfg.Endpoints {
		if err := checkEndpoint(e); err != nil {
			return nil, err
		}
	}
	tc, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	ecfg := etcdlock.Config{
		Endpoints:   cfg.Endpoints,
		Prefix:      cfg.Prefix,
		TTL:         cfg.TTL,
		DialTimeout: cfg.DialTimeout,
		TLS:         tc,
		Username:    cfg.Username,
		Password:    cfg.Password,
		Logger:      log,
	}
	var b backend
	if reportOnly {
		var in *etcdlock.Inspector
		if in, err = etcdlock.NewInspector(ctx, ecfg); err == nil {
			b = etcdReport{in}
		}
	} else {
		var l *etcdlock.Locker
		if l, err = etcdlock.New(ctx, ecfg); err == nil {
			b = etcdBackend{l: l, log: log}
		}
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, err
	case errors.Is(err, etcdlock.ErrClientCertRequired):
		return nil, refusal{&ConfigError{"Cert", fmt.Errorf("%w: etcd requires a client certificate, and none is configured: %s",
			ErrBackendUnavailable, strings.Join(cfg.Endpoints, ","))}}
	case errors.Is(err, etcdlock.ErrClientCertRejected):
		return nil, refusal{&ConfigError{"Cert", fmt.Errorf("%w: etcd rejects the client certificate %s: not signed by a CA it trusts, expired, or not for client use: %s",
			ErrBackendUnavailable, cfg.Cert, strings.Join(cfg.Endpoints, ","))}}
	case errors.Is(err, etcdlock.ErrUntrustedServer):
		var x509err x509.UnknownAuthorityError
		errors.As(err, &x509err)
		ca := "the CA in " + cfg.CACert
		if cfg.CACert == "" {
			ca = "a CA this host trusts"
		}
		return nil, refusal{&ConfigError{"CACert", fmt.Errorf("%w: etcd's certificate is not signed by %s: %v: %s",
			ErrBackendUnavailable, ca, x509err, strings.Join(cfg.Endpoints, ","))}}
	case errors.Is(err, etcdlock.ErrRefused):
		return nil, refusal{etcdError(err)}
	case errors.Is(err, etcdlock.ErrUnavailable):
		return nil, &ConfigError{unreachable, fmt.Errorf("%w: %v", ErrBackendUnavailable, err)}
	case err != nil:
		return nil, fmt.Errorf("%w: etcd: %v", ErrInvalidArgument, err)
	}
	return b, nil
}

// checkEndpoint accepts host:port and http(s)://host:port.
func checkEndpoint(e string) error {
	u, err := url.Parse(e)
	if !strings.Contains(e, "://") {
		u, err = url.Parse("http://" + e) // host:port, IP:port
	}
	switch {
	case err != nil:
		return fmt.Errorf("%w: etcd endpoint %q: %v", ErrInvalidArgument, e, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%w: etcd endpoint %q: want http://, https:// or host:port", ErrInvalidArgument, e)
	case u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil:
		return fmt.Errorf("%w: etcd endpoint %q: want scheme://host:port", ErrInvalidArgument, e)
	}
	return nil
}

// tlsConfig builds the client's TLS settings from PEM files; nil when none
// are given and no endpoint is https.
func tlsConfig(cfg Config) (*tls.Config, error) {
	https := false
	for _, e := range cfg.Endpoints {
		https = https || strings.HasPrefix(e, "https://")
	}
	if cfg.CACert == "" && cfg.Cert == "" && cfg.Key == "" && !https {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CACert != "" {
		pem, err := os.ReadFile(cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("%w: etcd CA certificate: %v", ErrInvalidArgument, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: etcd CA certificate %s: no PEM certificate in it", ErrInvalidArgument, cfg.CACert)
		}
	}
	if (cfg.Cert == "") != (cfg.Key == "") {
		return nil, fmt.Errorf("%w: etcd client certificate and key go together", ErrInvalidArgument)
	}
	if cfg.Cert != "" {
		c, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
		if err != nil {
			return nil, fmt.Errorf("%w: etcd client certificate: %v", ErrInvalidArgument, err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}

func (b etcdBackend) kind() string { return BackendEtcd }

func (b etcdBackend) lock(ctx context.Context, name string, m mode, record []byte) (held, error) {
	return b.take(b.l.Lock, ctx, name, m, record)
}

func (b etcdBackend) tryLock(ctx context.Context, name string, m mode, record []byte) (held, error) {
	return b.take(b.l.TryLock, ctx, name, m, record)
}

func (b etcdBackend) take(take func(context.Context, string, etcdlock.Mode, []byte) (*etcdlock.Lock, error),
	ctx context.Context, name string, m mode, record []byte) (held, error) {
	em := etcdlock.Exclusive
	if m == shared {
		em = etcdlock.Shared
	}
	start := time.Now()
	k, err := take(ctx, name, em, withSince(record, start))
	if errors.Is(err, etcdlock.ErrSessionLost) {
		// Lost before the lock was granted: etcd is gone, nothing ran.
		return nil, fmt.Errorf("%w: etcd: %w", ErrBackendUnavailable, err)
	}
	if err != nil {
		return nil, etcdError(err)
	}
	h := &etcdHeld{Lock: k, l: b.l, since: start}
	if time.Since(start) > 50*time.Millisecond {
		// We queued at start but hold only now.
		h.since = time.Now()
		if err := h.Update(record); err != nil {
			// The lock is ours all the same; its record only keeps the
			// time we queued. Were the lock lost, Lost says so.
			b.log.Warn("holder record not updated", zap.String("name", name), zap.Error(err))
		}
	}
	return h, nil
}

func (b etcdBackend) inspect(ctx context.Context, name string) (Status, error) {
	return etcdInspect(ctx, b.l, name)
}

func (b etcdBackend) list(ctx context.Context) ([]Status, error) { return etcdList(ctx, b.l) }

// etcdInspector reads locks: an etcdlock.Locker or, for a Manager that
// only reports, an etcdlock.Inspector.
type etcdInspector interface {
	Inspect(ctx context.Context, name string) (etcdlock.Info, error)
	List(ctx context.Context) ([]etcdlock.Info, error)
}

func etcdInspect(ctx context.Context, in etcdInspector, name string) (Status, error) {
	info, err := in.Inspect(ctx, name)
	if err != nil {
		return Status{}, etcdError(err)
	}
	return etcdStatus(info), nil
}

func etcdList(ctx context.Context, in etcdInspector) ([]Status, error) {
	infos, err := in.List(ctx)
	if err != nil {
		return nil, etcdError(err)
	}
	out := make([]Status, len(infos))
	for i, info := range infos {
		out[i] = etcdStatus(info)
	}
	return out, nil
}

func (b etcdBackend) close() error { return b.l.Close() }

func (b etcdBackend) lostMargin() time.Duration { return b.l.LostMargin() }

func (b etcdBackend) check(ctx context.Context) error { return spaceError(b.l.CheckSpace(ctx)) }

// spaceError is the error of a check for etcd's NOSPACE alarm. A user that
// etcd does not let list alarms (only root may) learns of it at its next
// write.
func spaceError(err error) error {
	if errors.Is(err, etcdlock.ErrPermissionDenied) {
		return nil
	}
	return etcdError(err)
}

func etcdStatus(info etcdlock.Info) Status {
	s := Status{Name: info.Name, Backend: BackendEtcd, Key: info.Key, Held: info.Held, Shared: info.Shared,
		Token: info.Token, Holders: etcdProcesses(info.Holders), Waiters: etcdProcesses(info.Waiters), Known: true}
	if h := parseRecord(info.Record); h != nil {
		h.Token, h.Backend, h.Shared = info.Token, BackendEtcd, info.Shared
		s.Holder = h
	}
	if info.Stray != "" {
		s.Stray = &Stray{Key: info.Stray, Lease: info.StrayLease}
	}
	return s
}

// etcdProcesses reads who holds or waits from the keys' values: each is
// its process's holder record.
func etcdProcesses(es []etcdlock.Entry) []Process {
	var out []Process
	for _, e := range es {
		p := Process{Key: e.Key, Revision: e.Revision}
		if h := parseRecord(e.Value); h != nil {
			p.Host, p.PID, p.Since = h.Host, h.PID, h.Since
		}
		out = append(out, p)
	}
	return out
}

// The download records of the etcd backend (see doneRecords).

func (b etcdBackend) waitDone(ctx context.Context, id string) error {
	return etcdError(b.l.WaitDone(ctx, id))
}

func (b etcdBackend) records(ctx context.Context) ([]doneRecord, error) {
	ds, err := b.l.Downloads(ctx)
	if err != nil {
		return nil, etcdError(err)
	}
	out := make([]doneRecord, len(ds))
	for i, d := range ds {
		out[i] = doneRecord{id: d.ID, key: d.Key, value: d.Value, rev: d.Revision}
	}
	return out, nil
}

func (b etcdBackend) deleteRecord(ctx context.Context, r doneRecord) (bool, error) {
	ok, err := b.l.DeleteDone(ctx, etcdlock.Done{ID: r.id, Key: r.key, Value: r.value, Revision: r.rev})
	return ok, etcdError(err)
}

func etcdError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, etcdlock.ErrBusy):
		return errBusy
	case errors.Is(err, etcdlock.ErrSessionLost), errors.Is(err, etcdlock.ErrNotHeld):
		return fmt.Errorf("%w: %w", ErrLockLost, err)
	case errors.Is(err, etcdlock.ErrClosed):
		return ErrClosed
	case errors.Is(err, etcdlock.ErrNoSpace):
		return fmt.Errorf("%w: %v; %s", ErrBackendUnavailable, err, noSpaceFix)
	case errors.Is(err, etcdlock.ErrUnavailable):
		return fmt.Errorf("%w: %w", ErrBackendUnavailable, err)
	}
	return err
}

// noSpaceFix says what an operator does about etcd's NOSPACE alarm.
const noSpaceFix = "coord can take no new locks until an operator frees space: " +
	"etcdctl compact REV (the current revision, see etcdctl endpoint status -w json), etcdctl defrag, etcdctl alarm disarm"

// refusal is an etcd that answered and said no: to this client's TLS
// set-up, its user and password, its prefix, or any write while it is out
// of space. Something to fix, never a reason to fall back to host-local
// locks.
type refusal struct{ error }

func (r refusal) Unwrap() error { return r.error }

// withSince adds "since" to a JSON object record.
func withSince(record []byte, t time.Time) []byte {
	if len(record) < 2 || record[0] != '{' {
		return record
	}
	out := fmt.Appendf(nil, `{"since":%q`, t.UTC().Format(time.RFC3339Nano))
	if len(record) > 2 {
		out = append(out, ',')
	}
	return append(out, record[1:]...)
}
