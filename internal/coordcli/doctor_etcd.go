package coordcli

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/toolchainkit/coord/coord"
)

// Certificate expiry: a warning this long before, a failure after.
const certWarnBefore = 30 * 24 * time.Hour

// rttSamples round trips are timed after the first (which also connects);
// the median is reported.
const rttSamples = 3

// etcdChecks checks the certificates, each endpoint on its own, and then,
// through the endpoints that answered, the user's rights on the prefix and
// a lease.
func etcdChecks(ctx context.Context, cfg coord.Config, r *report) {
	if len(cfg.Endpoints) == 0 {
		r.add("etcd", checkFail, "the etcd backend is selected and no endpoint is configured",
			"set --"+flagEndpoints+" ("+envEndpoints+"), or --"+flagBackend+" file")
		return
	}
	tc, ok := tlsChecks(cfg, r)
	if !ok {
		return
	}
	var reachable []string
	for _, e := range cfg.Endpoints {
		if endpointChecks(ctx, cfg, tc, e, r) {
			reachable = append(reachable, e)
		}
	}
	if len(reachable) == 0 {
		r.skip("etcd auth", "no endpoint answered")
		return
	}
	clusterChecks(ctx, cfg, tc, reachable, r)
}

// tlsChecks reads the CA and client certificates, reports when they
// expire, and builds the client's TLS settings: nil when TLS is not used.
func tlsChecks(cfg coord.Config, r *report) (*tls.Config, bool) {
	https := slices.ContainsFunc(cfg.Endpoints, func(e string) bool { return strings.HasPrefix(e, "https://") })
	if cfg.CACert == "" && cfg.Cert == "" && !https {
		return nil, true
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	ok := true
	if cfg.CACert != "" {
		certs, err := readCerts(cfg.CACert)
		if err != nil {
			r.add("etcd ca-cert", checkFail, err.Error(), "point --"+flagCACert+" ("+envCACert+") at the PEM file of the CA that signed etcd's certificate")
			ok = false
		} else {
			tc.RootCAs = x509.NewCertPool()
			for _, c := range certs {
				tc.RootCAs.AddCert(c)
				expiryCheck("etcd ca-cert", cfg.CACert, c, "have the CA renewed, and every certificate it signed reissued", r)
			}
		}
	}
	if cfg.Cert != "" || cfg.Key != "" {
		pair, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
		if err != nil {
			r.add("etcd client-cert", checkFail, fmt.Sprintf("%s, %s: %v", cfg.Cert, cfg.Key, bareError(err)),
				"point --"+flagCert+" and --"+flagKey+" at a PEM certificate and its key")
			ok = false
		} else {
			tc.Certificates = []tls.Certificate{pair}
			if leaf, err := x509.ParseCertificate(pair.Certificate[0]); err == nil {
				expiryCheck("etcd client-cert", cfg.Cert, leaf, "have a new client certificate issued and set --"+flagCert+"/--"+flagKey, r)
			}
		}
	}
	return tc, ok
}

// readCerts parses the PEM certificates in file.
func readCerts(file string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", file, bareError(err))
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", file, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file)
	}
	return certs, nil
}

// expiryCheck fails a certificate that is expired or not yet valid, and
// warns about one that expires within certWarnBefore.
func expiryCheck(name, where string, c *x509.Certificate, fix string, r *report) {
	now := time.Now()
	what := fmt.Sprintf("%s: %q", where, c.Subject.CommonName)
	switch left := c.NotAfter.Sub(now); {
	case left <= 0:
		r.add(name, checkFail, fmt.Sprintf("%s expired on %s (%s ago)", what, c.NotAfter.UTC().Format(time.DateTime+" MST"), roughly(-left)), fix)
	case now.Before(c.NotBefore):
		r.add(name, checkFail, fmt.Sprintf("%s is not valid before %s: is this host's clock right?", what, c.NotBefore.UTC().Format(time.DateTime+" MST")),
			"set the clock (NTP), or wait until it is valid")
	case left < certWarnBefore:
		r.add(name, checkWarn, fmt.Sprintf("%s expires on %s, in %s", what, c.NotAfter.UTC().Format(time.DateTime+" MST"), roughly(left)), fix)
	default:
		r.pass(name, "%s expires on %s, in %s", what, c.NotAfter.UTC().Format(time.DateOnly), roughly(left))
	}
}

// roughly is d to two units at most: "23h59m", "89 days".
func roughly(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return strconv.Itoa(int(d/(24*time.Hour))) + " days"
	case d >= time.Hour:
		return strings.TrimSuffix(d.Truncate(time.Minute).String(), "0s")
	}
	return d.Truncate(time.Second).String()
}

// endpointChecks dials e alone: the connection, the server's certificate,
// its version and the round-trip time. It reports whether e answered.
func endpointChecks(ctx context.Context, cfg coord.Config, tc *tls.Config, e string, r *report) bool {
	name := "etcd " + redactEndpoint(e)
	addr, host, scheme, err := endpointAddr(e)
	if err != nil {
		r.add(name, checkFail, err.Error(), "write endpoints as https://host:port, http://host:port or host:port")
		return false
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		fix := "check the network and firewall between this host and " + addr
		if errors.Is(err, syscall.ECONNREFUSED) || isRefusedText(err) {
			fix = "nothing listens there: start etcd on " + addr + ", or correct --" + flagEndpoints + " (" + envEndpoints + ")"
		}
		r.add(name, checkFail, fmt.Sprintf("cannot connect: %v", bareNetError(err)), fix)
		return false
	}
	if scheme == "https" {
		serverCertCheck(dctx, conn, host, tc, name, r)
	}
	conn.Close()

	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{e}, DialTimeout: cfg.DialTimeout, TLS: tc,
		Username: cfg.Username, Password: cfg.Password, Logger: zap.NewNop(), Context: ctx,
	})
	if err != nil {
		r.add(name, checkFail, fmt.Sprintf("etcd refuses the client: %v", err), authFix(err, cfg))
		return false
	}
	defer cli.Close()
	sctx, scancel := context.WithTimeout(ctx, cfg.DialTimeout)
	start := time.Now()
	st, err := cli.Status(sctx, e)
	first := time.Since(start)
	scancel()
	if err != nil {
		r.add(name, checkFail, fmt.Sprintf("no answer to a status request within %s: %v", cfg.DialTimeout, err), authFix(err, cfg))
		return false
	}
	msg := fmt.Sprintf("etcd %s, member %x, leader %x, raft term %d, database %s", st.Version, st.Header.MemberId, st.Leader, st.RaftTerm, bytesText(uint64(st.DbSize)))
	if len(st.Errors) > 0 {
		r.add(name, checkWarn, msg+"; it reports: "+strings.Join(st.Errors, "; "), "see etcd's log on that member")
	} else {
		r.pass(name, "%s", msg)
	}
	rtts := make([]time.Duration, 0, rttSamples)
	for range rttSamples {
		sctx, scancel := context.WithTimeout(ctx, cfg.DialTimeout)
		start := time.Now()
		_, err := cli.Status(sctx, e)
		scancel()
		if err != nil {
			break
		}
		rtts = append(rtts, time.Since(start))
	}
	if len(rtts) == 0 {
		rtts = append(rtts, first)
	}
	slices.Sort(rtts)
	rttCheck(name+" rtt", rtts[len(rtts)/2], cfg.TTL, r)
	return true
}

// rttCheck compares a round trip with the lease TTL: a lease is renewed
// every TTL/3, and a holder that cannot reach etcd within the rest of the
// TTL loses its lock.
func rttCheck(name string, rtt, ttl time.Duration, r *report) {
	msg := fmt.Sprintf("round trip %s (median of %d), lease TTL %s", rtt.Round(10*time.Microsecond), rttSamples, ttl)
	fix := "raise --" + flagTTL + " (" + envTTL + "), or use an etcd closer to this host"
	switch {
	case rtt > ttl/3:
		r.add(name, checkFail, msg+": more than a third of the TTL, leases may expire under their holders", fix)
	case rtt > ttl/10:
		r.add(name, checkWarn, msg+": more than a tenth of the TTL", fix)
	default:
		r.pass(name, "%s", msg)
	}
}

// serverCertCheck reads the server's certificate through conn, checks
// that the configured CA vouches for it and when it expires.
func serverCertCheck(ctx context.Context, conn net.Conn, host string, tc *tls.Config, name string, r *report) {
	name += " cert"
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host, InsecureSkipVerify: true}
	if tc != nil {
		cfg.Certificates = tc.Certificates
	}
	tconn := tls.Client(conn, cfg)
	if err := tconn.HandshakeContext(ctx); err != nil {
		r.add(name, checkFail, fmt.Sprintf("TLS handshake: %v", err), "check that the endpoint serves TLS (https://) and accepts this client")
		return
	}
	chain := tconn.ConnectionState().PeerCertificates
	if len(chain) == 0 {
		r.add(name, checkFail, "the server sent no certificate", "configure etcd's --cert-file")
		return
	}
	leaf := chain[0]
	opts := x509.VerifyOptions{DNSName: host, Intermediates: x509.NewCertPool(), CurrentTime: time.Now()}
	if tc != nil {
		opts.Roots = tc.RootCAs
	}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(opts); err != nil {
		var inv x509.CertificateInvalidError
		if !errors.As(err, &inv) || inv.Reason != x509.Expired {
			r.add(name, checkFail, fmt.Sprintf("%q is not trusted: %v", leaf.Subject.CommonName, err),
				"point --"+flagCACert+" ("+envCACert+") at the CA that signed it, and make sure the certificate names "+host)
			return
		}
	}
	expiryCheck(name, "server certificate", leaf, "have etcd's server certificate reissued (etcd's --cert-file)", r)
}

// clusterChecks checks, through the endpoints that answered, whom etcd's
// auth sees, a lease, and that the user may read, write and delete keys
// under the prefix.
func clusterChecks(ctx context.Context, cfg coord.Config, tc *tls.Config, endpoints []string, r *report) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: endpoints, DialTimeout: cfg.DialTimeout, TLS: tc,
		Username: cfg.Username, Password: cfg.Password, Logger: zap.NewNop(), Context: ctx,
	})
	if err != nil {
		r.add("etcd auth", checkFail, err.Error(), authFix(err, cfg))
		return
	}
	defer cli.Close()
	op := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, cfg.DialTimeout) }
	user := cfg.Username
	if user == "" && tc != nil && len(tc.Certificates) > 0 {
		if leaf, err := x509.ParseCertificate(tc.Certificates[0].Certificate[0]); err == nil && leaf.Subject.CommonName != "" {
			user = leaf.Subject.CommonName
		}
	}
	actx, acancel := op()
	as, err := cli.AuthStatus(actx)
	acancel()
	if status.Code(err) == codes.Unimplemented {
		// etcd 3.4 has no AuthStatus; only root may list the users
		// while auth is on.
		actx, acancel := op()
		_, lerr := cli.UserList(actx)
		acancel()
		switch {
		case errors.Is(lerr, rpctypes.ErrPermissionDenied):
			as, err = &clientv3.AuthStatusResponse{Enabled: true}, nil
		case lerr == nil && user != "" && user != "root":
			r.add("etcd auth", checkWarn, fmt.Sprintf("auth is off, or %s has the root role: either way it may change every key, not only coord's", userName(user)),
				"enable etcd's auth, and give coord's user a role with readwrite on "+cfg.Prefix+"/ only")
			err = errAuthReported
		case lerr == nil:
			as, err = &clientv3.AuthStatusResponse{Enabled: user == "root"}, nil
		}
	}
	switch {
	case errors.Is(err, errAuthReported):
	case err != nil:
		r.add("etcd auth", checkWarn, fmt.Sprintf("auth status unknown: %v", err), "")
	case !as.Enabled && tc != nil && len(tc.Certificates) > 0:
		r.pass("etcd auth", "auth is off; clients need a certificate the CA signed")
	case !as.Enabled:
		r.add("etcd auth", checkWarn, "auth is off: any client that reaches etcd can take, break or delete coord's locks",
			"enable etcd's auth (etcdctl user add, role grant-permission, auth enable) or require client certificates (--client-cert-auth)")
	case cfg.Username != "":
		r.pass("etcd auth", "auth is on; signed in as user %q", user)
	case user != "":
		r.pass("etcd auth", "auth is on; etcd sees user %q (the client certificate's common name)", user)
	default:
		r.add("etcd auth", checkFail, "auth is on and no user is given", "set --"+flagUser+" ("+envUser+") and --"+flagPassword)
		return
	}

	lctx, lcancel := op()
	ttl := int64(cfg.TTL / time.Second)
	lease, err := cli.Grant(lctx, ttl)
	lcancel()
	if err != nil {
		r.add("etcd lease", checkFail, fmt.Sprintf("grant a lease of %ds: %v", ttl, err), authFix(err, cfg))
		return
	}
	defer func() {
		rctx, rcancel := op()
		defer rcancel()
		if _, err := cli.Revoke(rctx, lease.ID); err != nil {
			r.add("etcd lease", checkFail, fmt.Sprintf("granted lease %x (TTL %ds), but revoking it: %v", lease.ID, ttl, err), authFix(err, cfg))
			return
		}
		r.pass("etcd lease", "granted lease %x (TTL %ds) and revoked it", lease.ID, ttl)
	}()

	host, _ := os.Hostname()
	key := fmt.Sprintf("%s/doctor/%s-%d", cfg.Prefix, host, os.Getpid())
	grant := grantFix(user, cfg.Prefix)
	pctx, pcancel := op()
	defer pcancel()
	if _, err := cli.Get(pctx, cfg.Prefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		r.add("etcd prefix", checkFail, fmt.Sprintf("%s may not read keys under %s/: %v", userName(user), cfg.Prefix, err), cmp.Or(grant, authFix(err, cfg)))
		return
	}
	if _, err := cli.Put(pctx, key, "coord doctor", clientv3.WithLease(lease.ID)); err != nil {
		r.add("etcd prefix", checkFail, fmt.Sprintf("%s may read but not write keys under %s/: put %s: %v", userName(user), cfg.Prefix, key, err), cmp.Or(grant, authFix(err, cfg)))
		return
	}
	if _, err := cli.Delete(pctx, key); err != nil {
		r.add("etcd prefix", checkFail, fmt.Sprintf("%s may write but not delete keys under %s/: delete %s: %v", userName(user), cfg.Prefix, key, err), cmp.Or(grant, authFix(err, cfg)))
		return
	}
	r.pass("etcd prefix", "%s may read, write and delete keys under %s/ (wrote and deleted %s)", userName(user), cfg.Prefix, key)
}

// errAuthReported: the auth check's line is written already.
var errAuthReported = errors.New("reported")

func userName(user string) string {
	if user == "" {
		return "this client"
	}
	return fmt.Sprintf("user %q", user)
}

// grantFix is the etcdctl commands that give user the rights coord needs
// on prefix; "" without a user.
func grantFix(user, prefix string) string {
	if user == "" {
		return ""
	}
	return fmt.Sprintf("as etcd's root: etcdctl role add coord; etcdctl role grant-permission coord readwrite --prefix %s/; etcdctl user grant-role %s coord",
		prefix, user)
}

// authFix says what to do about an error from etcd.
func authFix(err error, cfg coord.Config) string {
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return "check --" + flagUser + " and --" + flagPassword + " (" + envUser + ", " + envPassword + ")"
	case errors.Is(err, rpctypes.ErrUserEmpty):
		return "set --" + flagUser + " (" + envUser + ") and --" + flagPassword
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return grantFix(cmp.Or(cfg.Username, "USER"), cfg.Prefix)
	case errors.Is(err, context.DeadlineExceeded):
		return "check that etcd runs there and that --" + flagCACert + ", --" + flagCert + " and --" + flagKey + " match its TLS set-up"
	}
	return ""
}

// endpointAddr parses an endpoint as coord takes it: host:port or
// http(s)://host:port.
func endpointAddr(e string) (addr, host, scheme string, err error) {
	s := e
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Hostname() == "" || u.Port() == "" || (u.Scheme != "http" && u.Scheme != "https") ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", "", "", fmt.Errorf("endpoint %q: want scheme://host:port", redactEndpoint(e))
	}
	return u.Host, u.Hostname(), u.Scheme, nil
}

// bareNetError is err without the dial's own words, which repeat the
// address.
func bareNetError(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// isRefusedText catches a refusal that the OS reports in words only.
func isRefusedText(err error) bool {
	return strings.Contains(err.Error(), "refused")
}

// redactEndpoint hides a password written into an endpoint
// (http://user:password@host:port), which coord refuses but a report
// must not show.
func redactEndpoint(e string) string {
	u, err := url.Parse(e)
	if err != nil || u.User == nil {
		return e
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
