// Package server is coord's `server` command: a single-member etcd,
// embedded. Only coord-server links it (see cmd/coord-server), which hands
// the command to coord's CLI (internal/coordcli). It does not import the
// CLI: what it takes from it (the logger, terminal escaping) is passed to
// Command, and its errors say what they are with coord's sentinels, which
// the CLI turns into exit statuses.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gofrs/flock"
	"github.com/urfave/cli/v2"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"

	"github.com/toolchainkit/coord/coord"
)

// Flag names and the environment variables that set them.
const (
	flagDataDir   = "data-dir"
	flagClientURL = "client-url"
	flagPeerURL   = "peer-url"
	flagCertFile  = "cert-file"
	flagKeyFile   = "key-file"
	flagTrustedCA = "trusted-ca-file"
	flagInsecure  = "insecure-listen"
	envDataDir    = "COORD_SERVER_DATA_DIR"
	envClientURL  = "COORD_SERVER_CLIENT_URL"
	envPeerURL    = "COORD_SERVER_PEER_URL"
)

const serverUsage = "coord server --data-dir DIR [--client-url URL] [--peer-url URL] [--cert-file F --key-file F [--trusted-ca-file F]] [--insecure-listen]"

const (
	defaultClientURL = "http://127.0.0.1:2379"
	defaultPeerURL   = "http://127.0.0.1:2380"
	// serverName names the single member; it is recorded in the data dir.
	serverName = "coord"
	// readyTimeout bounds start-up: a single member elects itself within
	// about one election timeout (1s), plus WAL replay on a restart.
	readyTimeout = 60 * time.Second
	// serverLockFile, in the data dir, is held while a coord server uses it.
	serverLockFile = "coord-server.lock"
)

// Command is coord's `server` command: it serves a single-member etcd,
// embedded, until interrupted. newLogger builds the program's logger from
// its global flags (--log-level, --log-format); printable makes text safe
// to print on a terminal.
func Command(newLogger func(*cli.Context) (*zap.Logger, error), printable func(string) string) *cli.Command {
	s := &server{newLogger: newLogger, printable: printable}
	return &cli.Command{
		Name:  "server",
		Usage: "run a single-member etcd for trying fleet mode (embedded, no etcd to install)",
		Description: "Serves etcd on --client-url until interrupted (SIGINT, SIGTERM), keeping its data in --data-dir.\n" +
			"Prints a line containing \"ready\" on stdout once it serves. Without TLS the client and peer URLs\n" +
			"must be loopback addresses unless --insecure-listen is given: anyone who can reach the port can\n" +
			"take, break and forge every lock. etcd logs to stderr at the global --log-level (default warn).",
		UsageText: serverUsage,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagDataDir, EnvVars: []string{envDataDir}, Usage: "directory for etcd's data (created 0700 if missing)"},
			&cli.StringFlag{Name: flagClientURL, EnvVars: []string{envClientURL}, Value: defaultClientURL, Usage: "URL to serve clients on; https needs --cert-file and --key-file"},
			&cli.StringFlag{Name: flagPeerURL, EnvVars: []string{envPeerURL}, Value: defaultPeerURL, Usage: "URL for etcd's peer (raft) traffic; http only"},
			&cli.StringFlag{Name: flagCertFile, Usage: "TLS certificate for the client URL"},
			&cli.StringFlag{Name: flagKeyFile, Usage: "TLS key for the client URL"},
			&cli.StringFlag{Name: flagTrustedCA, Usage: "CA that client certificates must chain to (enables client certificate authentication)"},
			&cli.BoolFlag{Name: flagInsecure, Usage: "allow plain-HTTP URLs on non-loopback addresses"},
		},
		Action: s.run,
	}
}

// server is what the command takes from the program it is part of.
type server struct {
	newLogger func(*cli.Context) (*zap.Logger, error)
	printable func(string) string
}

// usageError is a mistake in how the server was called: it reads as its
// message alone, and matches coord.ErrInvalidArgument (exit 64 in coord).
type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == coord.ErrInvalidArgument }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// serverConfig is the checked command line of coord server.
type serverConfig struct {
	dataDir      string
	client, peer url.URL
	tls          transport.TLSInfo
}

func (s *server) run(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("server takes no arguments; usage: %s", serverUsage)
	}
	sc, err := serverFlags(c)
	if err != nil {
		return err
	}
	log, err := s.newLogger(c)
	if err != nil {
		return err
	}
	unlock, err := lockDataDir(sc.dataDir)
	if err != nil {
		return err
	}
	defer unlock()

	quiet := &quietCore{}
	stopping, stop := context.WithCancel(context.Background())
	defer stop()
	cfg := embedConfig(sc, log.WithOptions(zap.WrapCore(quiet.wrap)))
	cfg.GRPCAdditionalServerOptions = []grpc.ServerOption{grpc.ChainStreamInterceptor(endStreams(stopping))}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("%w: start etcd: %w", coord.ErrBackendUnavailable, err)
	}
	defer func() {
		// Close logs errors about the listeners and streams it closes; at
		// the default level they would only alarm.
		quiet.closing.Store(true)
		stop()
		e.Close() // waits for the server and its goroutines
	}()

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case <-c.Context.Done():
		return nil // asked to stop before serving: a clean stop all the same
	case err := <-e.Err():
		return fmt.Errorf("%w: etcd: %v", coord.ErrBackendUnavailable, orStopped(err))
	case <-e.Server.StopNotify():
		return fmt.Errorf("%w: etcd stopped while starting", coord.ErrBackendUnavailable)
	case <-timer.C:
		return fmt.Errorf("%w: etcd not ready after %s", coord.ErrBackendUnavailable, readyTimeout)
	}
	fmt.Fprintf(c.App.Writer, "ready: etcd serving on %s (data dir %s)\n", sc.client.String(), s.printable(sc.dataDir))

	select {
	case <-c.Context.Done():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("%w: etcd: %v", coord.ErrBackendUnavailable, orStopped(err))
	case <-e.Server.StopNotify():
		return fmt.Errorf("%w: etcd stopped", coord.ErrBackendUnavailable)
	}
}

func orStopped(err error) error {
	if err == nil {
		return errors.New("server stopped")
	}
	return err
}

// serverFlags checks the flags of coord server before anything is created
// or bound.
func serverFlags(c *cli.Context) (serverConfig, error) {
	var sc serverConfig
	dir := c.String(flagDataDir)
	if dir == "" {
		return sc, usagef("--%s is required; usage: %s", flagDataDir, serverUsage)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return sc, fmt.Errorf("%w: --%s %q: %v", coord.ErrInvalidArgument, flagDataDir, dir, err)
	}
	sc.dataDir = abs

	certFile, keyFile, caFile := c.String(flagCertFile), c.String(flagKeyFile), c.String(flagTrustedCA)
	switch {
	case (certFile == "") != (keyFile == ""):
		return sc, usagef("--%s and --%s go together", flagCertFile, flagKeyFile)
	case caFile != "" && certFile == "":
		return sc, usagef("--%s needs --%s and --%s", flagTrustedCA, flagCertFile, flagKeyFile)
	}
	useTLS := certFile != ""
	insecure := c.Bool(flagInsecure)

	// An empty value, such as an exported but empty variable, is the default.
	rawClient, rawPeer := c.String(flagClientURL), c.String(flagPeerURL)
	if rawClient == "" {
		rawClient = defaultClientURL
	}
	if rawPeer == "" {
		rawPeer = defaultPeerURL
	}
	// TLS alone encrypts; only client certificates keep strangers out.
	client, err := listenURL(flagClientURL, rawClient, useTLS, insecure || caFile != "")
	if err != nil {
		return sc, err
	}
	peer, err := listenURL(flagPeerURL, rawPeer, false, insecure)
	if err != nil {
		return sc, err
	}
	if client.Host == peer.Host {
		return sc, fmt.Errorf("%w: --%s and --%s are both %s", coord.ErrInvalidArgument, flagClientURL, flagPeerURL, client.Host)
	}
	sc.client, sc.peer = client, peer

	if useTLS {
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return sc, fmt.Errorf("%w: --%s/--%s: %v", coord.ErrInvalidArgument, flagCertFile, flagKeyFile, err)
		}
		sc.tls = transport.TLSInfo{CertFile: certFile, KeyFile: keyFile}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return sc, fmt.Errorf("%w: --%s: %v", coord.ErrInvalidArgument, flagTrustedCA, err)
			}
			if !x509.NewCertPool().AppendCertsFromPEM(pem) {
				return sc, fmt.Errorf("%w: --%s %q: no PEM certificate in it", coord.ErrInvalidArgument, flagTrustedCA, caFile)
			}
			sc.tls.TrustedCAFile = caFile
			sc.tls.ClientCertAuth = true
		}
	}
	return sc, nil
}

// listenURL checks a URL to listen on: http (or https when tls) with an IP
// address or localhost and an explicit port, nothing else. A plain-HTTP
// URL must be on loopback unless insecure: etcd has no authentication of
// its own here, so whoever reaches the port controls every lock.
func listenURL(flag, raw string, tls, insecure bool) (url.URL, error) {
	bad := func(format string, a ...any) (url.URL, error) {
		return url.URL{}, fmt.Errorf("%w: --%s %q: %s", coord.ErrInvalidArgument, flag, raw, fmt.Sprintf(format, a...))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("not a URL")
	}
	want := "http"
	if tls {
		want = "https"
	}
	switch {
	case u.Scheme != want:
		if tls {
			return bad("want an https URL with --%s", flagCertFile)
		}
		if u.Scheme == "https" && flag == flagClientURL {
			return bad("https needs --%s and --%s", flagCertFile, flagKeyFile)
		}
		return bad("want an http URL such as http://127.0.0.1:2379")
	case u.Opaque != "", u.User != nil, u.RawQuery != "", u.Fragment != "", u.Path != "" && u.Path != "/":
		return bad("want scheme://host:port and nothing more")
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return bad("want host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return bad("port %q: want 1 to 65535", port)
	}
	loopback := host == "localhost"
	if !loopback {
		ip := net.ParseIP(host)
		if ip == nil {
			return bad("want an IP address or localhost to listen on")
		}
		loopback = ip.IsLoopback()
	}
	if !loopback && !insecure {
		hint := fmt.Sprintf("use https with --%s and client certificates (--%s), or --%s", flagCertFile, flagTrustedCA, flagInsecure)
		if flag == flagPeerURL {
			hint = fmt.Sprintf("--%s is for this host only, or give --%s", flagPeerURL, flagInsecure)
		}
		return bad("not a loopback address: anyone who can reach it could take and break every lock; %s", hint)
	}
	return url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// lockDataDir creates the data dir if needed and makes sure no other
// server uses it: etcd itself would wait forever for its database's lock.
func lockDataDir(dir string) (unlock func(), err error) {
	unusable := func(err error) error {
		return fmt.Errorf("%w: data dir %s: %v", coord.ErrBackendUnavailable, dir, err) // the CLI escapes every message
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, unusable(err)
	}
	l := flock.New(filepath.Join(dir, serverLockFile), flock.SetPermissions(0o600))
	ok, err := l.TryLock()
	if err != nil {
		return nil, unusable(err)
	}
	if !ok {
		return nil, unusable(errors.New("in use by another coord server"))
	}
	// A real etcd on the same dir holds its database's flock.
	db := flock.New(filepath.Join(dir, "member", "snap", "db"), flock.SetFlag(os.O_RDWR))
	if ok, err := db.TryLock(); err == nil {
		if !ok {
			l.Unlock()
			return nil, unusable(errors.New("in use by another etcd"))
		}
		db.Unlock()
	}
	return func() { l.Unlock() }, nil
}

// embedConfig is the etcd configuration of a single development member
// that keeps its data: fsync stays on.
func embedConfig(sc serverConfig, log *zap.Logger) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = serverName
	cfg.Dir = sc.dataDir
	cfg.ListenClientUrls = []url.URL{sc.client}
	cfg.AdvertiseClientUrls = []url.URL{sc.client}
	cfg.ListenPeerUrls = []url.URL{sc.peer}
	cfg.AdvertisePeerUrls = []url.URL{sc.peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.InitialClusterToken = serverName
	cfg.ListenMetricsUrls = nil
	cfg.ClientTLSInfo = sc.tls
	// Every lock and unlock adds revisions; keep an hour of history so
	// that the database does not grow until it hits its quota.
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = "1h"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(log)
	return cfg
}

// endStreams ends every client stream once stopping is done. Without it
// Close waits up to etcd's request timeout (7s) for clients that keep a
// stream open, as every lock holder's lease keep-alive and every waiter's
// watch do.
func endStreams(stopping context.Context) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		defer context.AfterFunc(stopping, cancel)()
		return handler(srv, streamWithContext{ss, ctx})
	}
}

type streamWithContext struct {
	grpc.ServerStream
	ctx context.Context
}

func (s streamWithContext) Context() context.Context { return s.ctx }

// quietCore quiets embedded etcd's logger: it drops noise and, once
// closing, everything below DPanic unless the user asked for info or
// debug, for Close logs errors about each listener and stream it closes.
type quietCore struct {
	closing atomic.Bool
}

// noise reports whether etcd logs msg only to alarm a coord server's user:
// warnings meant for production clusters, logged at every start, and
// errors that etcd also returns, which coord prints.
func noise(msg string) bool {
	switch msg {
	case "Running http and grpc server on single port. This is not recommended for production.",
		"simple token is not cryptographically signed", // auth is off
		"creating peer listener failed":
		return true
	}
	// A restarted single member that cannot campaign before it has applied
	// its log campaigns again once it has (seen on a loaded host).
	return strings.HasSuffix(msg, " since there are still pending configuration changes to apply")
}

func (q *quietCore) wrap(c zapcore.Core) zapcore.Core { return &quietFilter{c, q} }

type quietFilter struct {
	zapcore.Core
	q *quietCore
}

func (f *quietFilter) With(fields []zapcore.Field) zapcore.Core {
	return &quietFilter{f.Core.With(fields), f.q}
}

func (f *quietFilter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if noise(e.Message) {
		return ce
	}
	if f.q.closing.Load() && e.Level < zapcore.DPanicLevel && !f.Core.Enabled(zapcore.InfoLevel) {
		return ce
	}
	if schemaMessage(e.Message) {
		if !f.Core.Enabled(e.Level) {
			return ce
		}
		return ce.AddCore(e, schemaFilter{f.Core}) // the error field decides
	}
	return f.Core.Check(e, ce)
}

// schemaMessage reports whether etcd's storage-version monitor logs msg.
// While a new member has not yet saved its first term or conf state (a
// loaded host makes that wait longer), the monitor logs an error that it
// retries on its own (etcd-io/etcd#18978, #20495); its other errors, such
// as a migration it cannot plan, are shown.
func schemaMessage(msg string) bool {
	return msg == "Failed to detect schema version" || msg == "failed to update storage version"
}

// schemaFilter drops a storage-version message whose error is one of a
// member that has not saved its first term or conf state yet.
type schemaFilter struct{ zapcore.Core }

func (f schemaFilter) Write(e zapcore.Entry, fields []zapcore.Field) error {
	for _, fl := range fields {
		if err, ok := fl.Interface.(error); ok && fl.Type == zapcore.ErrorType &&
			(strings.Contains(err.Error(), "missing term information") || strings.Contains(err.Error(), "missing confstate information")) {
			return nil
		}
	}
	return f.Core.Write(e, fields)
}
