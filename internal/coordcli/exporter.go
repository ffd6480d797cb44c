package coordcli

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/toolchainkit/coord/coord"
)

// The exporter command's flags and their environment variables.
const (
	flagListen          = "listen"
	flagInsecureListen  = "insecure-listen"
	flagMaxNames        = "max-names"
	flagInterval        = "interval"
	flagTLSCert         = "cert-file"
	flagTLSKey          = "key-file"
	envListen           = "COORD_EXPORTER_LISTEN"
	envMaxNames         = "COORD_EXPORTER_MAX_NAMES"
	defaultExporterAddr = "127.0.0.1:9479"
)

// Exporter is what `coord exporter` serves: package internal/exporter,
// which coord-server links in and passes to ExporterCommand; plain coord
// runs coord-server for it (see execServer), so that Prometheus' client is
// not initialised in every coord process.
type Exporter interface {
	Handler() http.Handler
	Run(ctx context.Context) error
}

// NewExporter makes the exporter of the locks m sees, with series of their
// own for at most maxNames names, reading (file) or checking (etcd) every
// interval.
type NewExporter func(m *coord.Manager, maxNames int, interval time.Duration, log *zap.Logger) Exporter

// ExporterCommand is `coord exporter`, serving what newExporter makes;
// defaultMaxNames is --max-names' default.
func ExporterCommand(newExporter NewExporter, defaultMaxNames int) *cli.Command {
	return &cli.Command{
		Name:      "exporter",
		Usage:     "serve Prometheus metrics and a live status page of the locks",
		UsageText: "coord exporter [--listen ADDR] [--insecure-listen] [--cert-file F --key-file F] [--max-names N] [--interval D]",
		Description: "Watches the locks (etcd: one watch on the prefix; file: reads the lock directory every --interval) and serves\n" +
			"/metrics for Prometheus, a live status page at / and /healthz on --listen, until interrupted. It holds no\n" +
			"lock and writes nothing. Prints a line containing \"ready\" on stdout once it serves. Without TLS\n" +
			"(--cert-file, --key-file) --listen must be a loopback address unless --insecure-listen is given: the page\n" +
			"shows every lock name, holder and command line to whoever reaches the port.",
		Flags:  exporterFlags(defaultMaxNames),
		Action: func(c *cli.Context) error { return runExporter(c, newExporter) },
	}
}

// exporterFlags are the exporter's flags; --max-names defaults to
// defaultMaxNames.
func exporterFlags(defaultMaxNames int) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagListen, EnvVars: []string{envListen}, Value: defaultExporterAddr, Usage: "host:port to serve on (an IP address or localhost; port 0 picks one)"},
		&cli.BoolFlag{Name: flagInsecureListen, Usage: "allow plain HTTP on a non-loopback address"},
		&cli.StringFlag{Name: flagTLSCert, Usage: "TLS certificate to serve https with"},
		&cli.StringFlag{Name: flagTLSKey, Usage: "TLS key to serve https with"},
		&cli.StringFlag{Name: flagMaxNames, EnvVars: []string{envMaxNames}, Value: strconv.Itoa(defaultMaxNames), Usage: "lock names with series of their own; the rest are summed in name=\"other\""},
		&cli.StringFlag{Name: flagInterval, Value: coord.DefaultWatchInterval.String(), Usage: "how often to read the lock directory (file) or check that etcd answers"},
	}
}

// Bounds of the exporter's numeric flags.
const (
	maxMaxNames    = 10000
	minInterval    = 100 * time.Millisecond
	maxInterval    = time.Minute
	shutdownBound  = 5 * time.Second
	readHeaderTime = 10 * time.Second
)

func runExporter(c *cli.Context, newExporter NewExporter) error {
	if c.NArg() > 0 {
		return usagef("exporter takes no arguments")
	}
	cert, key := c.String(flagTLSCert), c.String(flagTLSKey)
	if (cert == "") != (key == "") {
		return usagef("--%s and --%s go together", flagTLSCert, flagTLSKey)
	}
	addr, err := listenAddr(c.String(flagListen), cert != "", c.Bool(flagInsecureListen))
	if err != nil {
		return err
	}
	maxNames, err := strconv.Atoi(strings.TrimSpace(c.String(flagMaxNames)))
	if err != nil || maxNames < 1 || maxNames > maxMaxNames {
		return usagef("--%s %q: want a whole number from 1 to %d", flagMaxNames, c.String(flagMaxNames), maxMaxNames)
	}
	interval, err := time.ParseDuration(c.String(flagInterval))
	if err != nil || interval < minInterval || interval > maxInterval {
		return usagef("--%s %q: want a duration from %s to %s, such as 1s", flagInterval, c.String(flagInterval), minInterval, maxInterval)
	}
	var tc *tls.Config
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return fmt.Errorf("%w: --%s %s, --%s %s: %v", coord.ErrInvalidArgument, flagTLSCert, cert, flagTLSKey, key, err)
		}
		tc = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	}
	// No lease, no writes: it only watches.
	m, log, err := newManager(c, nil, coord.ReportOnly())
	if err != nil {
		return err
	}
	defer m.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%w: --%s %s: %v", coord.ErrInvalidArgument, flagListen, addr, err)
	}
	e := newExporter(m, maxNames, interval, log)
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	srv := &http.Server{
		Handler:           e.Handler(),
		ReadHeaderTimeout: readHeaderTime,
		TLSConfig:         tc,
		BaseContext:       func(net.Listener) context.Context { return ctx }, // ends /events streams on shutdown
		ErrorLog:          zap.NewStdLog(log),
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.Run(ctx) // returns when ctx ends
	}()
	scheme := "http"
	if cert != "" {
		scheme = "https"
	}
	fmt.Fprintf(c.App.Writer, "coord: exporter ready on %s://%s (%s backend)\n", scheme, ln.Addr(), m.Backend())
	serveErr := make(chan error, 1)
	go func() {
		if tc != nil {
			serveErr <- srv.ServeTLS(ln, "", "")
		} else {
			serveErr <- srv.Serve(ln)
		}
	}()
	select {
	case <-c.Context.Done():
		err = nil
	case err = <-serveErr:
		err = fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.WithoutCancel(c.Context), shutdownBound)
	srv.Shutdown(sctx)
	scancel()
	wg.Wait()
	return err
}

// listenAddr checks --listen: host:port with an IP address or localhost and
// a port from 0 to 65535. Without TLS it must be loopback unless insecure,
// as coord server's URLs must: the page shows every lock, holder and
// command line to whoever reaches it.
func listenAddr(raw string, tls, insecure bool) (string, error) {
	bad := func(format string, a ...any) (string, error) {
		return "", usagef("--%s %q: %s", flagListen, raw, fmt.Sprintf(format, a...))
	}
	if strings.Contains(raw, "://") {
		return bad("want host:port, such as %s, not a URL", defaultExporterAddr)
	}
	host, port, err := net.SplitHostPort(raw)
	if err != nil {
		return bad("want host:port, such as %s", defaultExporterAddr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 || port != strconv.Itoa(n) {
		return bad("port %q: want 0 to 65535", port)
	}
	loopback := host == "localhost"
	if !loopback {
		ip := net.ParseIP(host)
		if host != "" && ip == nil {
			return bad("want an IP address or localhost to listen on")
		}
		loopback = ip != nil && ip.IsLoopback()
	}
	if !loopback && !tls && !insecure {
		return bad("not a loopback address: anyone who can reach it could read every lock name, holder and command line; use --%s and --%s, or --%s",
			flagTLSCert, flagTLSKey, flagInsecureListen)
	}
	return net.JoinHostPort(host, port), nil
}
