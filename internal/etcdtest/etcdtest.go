// Package etcdtest runs etcd servers on loopback for tests: an embedded
// etcd (the server library coord is built against) or, when it is
// installed, the etcd binary from the system (Debian's etcd-server 3.4),
// so that tests also meet an etcd nobody here built.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running single-member etcd.
type Server struct {
	Endpoint string // client URL
	Version  string // "embedded" or "system"
	Peer     string // peer URL; set for "system"
	DataDir  string // set for "system"
	stop     func() error
}

// Stop stops the server and waits for it.
func (s *Server) Stop() error { return s.stop() }

// FreePorts returns n distinct loopback ports that were free a moment ago:
// each is held until all are chosen.
func FreePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Option changes an embedded etcd's configuration.
type Option func(*embed.Config)

// WithTLS serves clients over TLS with c's server certificate, requiring
// client certificates signed by c's CA when clientAuth is set.
func WithTLS(c Certs, clientAuth bool) Option {
	return func(cfg *embed.Config) {
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = c.ServerCert, c.ServerKey
		if clientAuth {
			cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = c.CA, true
		}
	}
}

// FastAuth makes etcd hash passwords at bcrypt's lowest cost: it checks
// one at every login, which at the default cost takes seconds under -race
// on a loaded machine.
func FastAuth(cfg *embed.Config) { cfg.BcryptCost = 4 }

// StartEmbedded starts an embedded etcd with its data in dir, tuned for
// tests: 10 ms heartbeats, 100 ms elections, no fsync.
func StartEmbedded(dir string, opts ...Option) (*Server, error) {
	ports, err := FreePorts(2)
	if err != nil {
		return nil, err
	}
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[0]))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[1]))
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.TickMs, cfg.ElectionMs = 10, 100
	cfg.UnsafeNoFsync = true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	for _, opt := range opts {
		opt(cfg)
	}
	if cfg.ClientTLSInfo.CertFile != "" {
		cu.Scheme = "https"
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, errors.New("embedded etcd not ready after 30s")
	}
	return &Server{Endpoint: cu.String(), Version: "embedded", stop: func() error { e.Close(); return nil }}, nil
}

// SystemBinary returns the path of an installed etcd, or "".
func SystemBinary() string {
	p, err := exec.LookPath("etcd")
	if err != nil {
		return ""
	}
	return p
}

// StartSystem starts the installed etcd binary with its data in dir and
// waits until it answers on its client URL.
func StartSystem(dir string) (*Server, error) {
	ports, err := FreePorts(2)
	if err != nil {
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	return StartSystemOn(dir, filepath.Join(dir, "data"), client, peer)
}

// StartSystemOn starts the installed etcd binary as member "test" on the
// given client and peer URLs with its data in dataDir (which may hold a
// restored snapshot: see Restore), logging to dir/etcd.log, and waits
// until it answers on its client URL.
func StartSystemOn(dir, dataDir, client, peer string) (*Server, error) {
	bin := SystemBinary()
	if bin == "" {
		return nil, errors.New("no etcd binary on PATH")
	}
	log, err := os.OpenFile(filepath.Join(dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin,
		"--name", "test", "--data-dir", dataDir,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "test="+peer,
		"--heartbeat-interval", "10", "--election-timeout", "100",
		"--unsafe-no-fsync", "--log-level", "error")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); log.Close(); close(done) }()
	stop := func() error {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			return nil, fmt.Errorf("etcd exited: %s", strings.TrimSpace(string(b)))
		case <-time.After(20 * time.Millisecond):
		}
		if ready(client) {
			return &Server{Endpoint: client, Version: "system", Peer: peer, DataDir: dataDir, stop: stop}, nil
		}
	}
	stop()
	return nil, errors.New("system etcd not ready after 30s")
}

// ready reports whether etcd answers /health with health true.
func ready(client string) bool {
	c := &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(client + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.Contains(string(b), `"health":"true"`)
}

// Restore restores the snapshot file into a new data directory, dataDir,
// for the member s is (etcdctl snapshot restore, as on etcd 3.4): start it
// with StartSystemOn(dir, dataDir, s.Endpoint, s.Peer) once s is stopped.
func (s *Server) Restore(ctx context.Context, snapshot, dataDir string) error {
	out, err := exec.CommandContext(ctx, "etcdctl", "snapshot", "restore", snapshot, "--data-dir", dataDir,
		"--name", "test", "--initial-cluster", "test="+s.Peer, "--initial-advertise-peer-urls", s.Peer).CombinedOutput()
	if err != nil {
		return fmt.Errorf("etcdctl snapshot restore: %v: %s", err, out)
	}
	return nil
}

// Snapshot saves a snapshot of s in path (etcdctl snapshot save).
func (s *Server) Snapshot(ctx context.Context, path string) error {
	out, err := exec.CommandContext(ctx, "etcdctl", "--endpoints", s.Endpoint, "snapshot", "save", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("etcdctl snapshot save: %v: %s", err, out)
	}
	return nil
}
