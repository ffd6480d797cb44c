package etcdlock

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// A probe runs diagnose while a request to etcd is under way: from half
// the dial timeout on, for at most the dial timeout since it started, so
// that a request that fails can say why.
type probe struct {
	timer   *time.Timer
	cancel  context.CancelFunc
	verdict chan verdict
}

// verdict is what diagnose found.
type verdict struct {
	why     string
	refusal error
}

// startProbe starts a probe. It calls refused if it finds a refusal,
// which is certain: the request need not be waited for.
func startProbe(ctx context.Context, cfg Config, refused func()) *probe {
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	p := &probe{cancel: cancel, verdict: make(chan verdict, 1)}
	p.timer = time.AfterFunc(cfg.DialTimeout/2, func() {
		why, refusal := diagnose(pctx, cfg)
		if refusal != nil {
			refused()
		}
		p.verdict <- verdict{why, refusal}
	})
	return p
}

// stop ends the probe: it never starts, or it is cut short and its
// verdict returned (ran).
func (p *probe) stop() (v verdict, ran bool) {
	if p.timer.Stop() {
		return verdict{}, false
	}
	p.cancel()
	return <-p.verdict, true
}

// wait waits for the probe to finish if it started, and stops it if not.
func (p *probe) wait() {
	if !p.timer.Stop() {
		<-p.verdict
	}
}

// release frees the probe's context, once it is stopped or waited for.
func (p *probe) release() { p.cancel() }

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
			whys[i], refusals[i] = diagnoseOne(ctx, e, cfg.TLS)
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

// diagnoseOne dials endpoint e and, with tc, runs the TLS handshake: why
// is what failed ("" if nothing did), refusal as for diagnose.
func diagnoseOne(ctx context.Context, e string, tc *tls.Config) (why string, refusal error) {
	host := e
	if u, err := url.Parse(e); err == nil && u.Host != "" {
		host = u.Host
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", host)
	if err == nil && tc != nil {
		refusal, err = handshake(ctx, c, host, tc)
	} else if err == nil {
		c.Close()
	}
	if err != nil {
		why = fmt.Sprintf("%s: %v", e, err)
	}
	return why, refusal
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
