//go:build linux

package integration_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/toolchainkit/coord/coord"
)

// A fleet's etcd serves a session for every host, most of them idle: what
// do 1000 idle coord Managers cost the cluster, and the hosts that lock
// meanwhile, beside as many bare concurrency sessions? On the local
// 3-member TLS cluster (COORD_TEST_CLUSTER_ENV; bench/report.sh brings one
// up), each benchmark stands up idleSessions sessions, counts the cluster's
// keep-alive requests for idleWindow, then has activeClients clients of
// their own lock and unlock activeOps times each and reports the lock
// latency's median and 99th percentile and the members' CPU during that.

const (
	idleSessions  = 1000
	idleWindow    = 10 * time.Second
	activeClients = 16
	activeOps     = 60
)

// clusterBackend returns the etcd-cluster backend, or skips b.
func benchCluster(b *testing.B) *backend {
	for _, be := range backends {
		if be.name == "etcd-cluster" {
			return be
		}
	}
	b.Skipf("no cluster: set %s to a local-cluster.sh coord.env", envClusterEnv)
	return nil
}

// idleBench stands up the idle sessions with idle(i), measures, and
// reports; active(i) returns client i's lock+unlock.
func idleBench(b *testing.B, be *backend, idle func(i int) (closer func()), active func(i int) (lock func() error, closer func())) {
	for b.Loop() {
		var closers []func()
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for i := range idleSessions {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c := idle(i)
				mu.Lock()
				closers = append(closers, c)
				mu.Unlock()
			}()
		}
		wg.Wait()

		k0 := keepAlives(b, be)
		time.Sleep(idleWindow)
		k1 := keepAlives(b, be)

		locks := make([]func() error, activeClients)
		for i := range locks {
			var c func()
			locks[i], c = active(i)
			closers = append(closers, c)
		}
		lat := make([][]time.Duration, activeClients)
		cpu0, start := membersCPU(b, be), time.Now()
		for i, lock := range locks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range activeOps {
					t := time.Now()
					if err := lock(); err != nil {
						b.Error(err)
						return
					}
					lat[i] = append(lat[i], time.Since(t))
				}
			}()
		}
		wg.Wait()
		cpu := (membersCPU(b, be) - cpu0) / time.Since(start).Seconds()
		all := slices.Concat(lat...)
		slices.Sort(all)
		b.ReportMetric(float64(all[len(all)/2].Nanoseconds()), "ns/lock-p50")
		b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds()), "ns/lock-p99")
		b.ReportMetric(cpu, "etcd-cpu-s/s")
		b.ReportMetric((k1-k0)/idleWindow.Seconds(), "keepalives/s")
		for _, c := range closers {
			c()
		}
	}
}

// membersCPU is the CPU time, in seconds, the cluster's member processes
// have used.
func membersCPU(b *testing.B, be *backend) float64 {
	var ticks int64
	pids, _ := filepath.Glob(filepath.Join(be.dir, "m*.pid"))
	for _, p := range pids {
		pid, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/stat")
		if err != nil {
			b.Fatal(err)
		}
		f := strings.Fields(string(stat)[strings.LastIndexByte(string(stat), ')')+2:])
		u, _ := strconv.ParseInt(f[11], 10, 64) // utime, field 14
		s, _ := strconv.ParseInt(f[12], 10, 64) // stime, field 15
		ticks += u + s
	}
	return float64(ticks) / 100 // USER_HZ
}

// keepAlives sums the LeaseKeepAlive requests the cluster's members have
// received, from their /metrics.
func keepAlives(b *testing.B, be *backend) float64 {
	ca, err := os.ReadFile(be.caCert)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(be.adminCert, be.adminKey)
	if err != nil {
		b.Fatal(err)
	}
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	var n float64
	for _, ep := range strings.Split(be.endpoint, ",") {
		resp, err := cl.Get(ep + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "grpc_server_msg_received_total{") && strings.Contains(line, `grpc_method="LeaseKeepAlive"`) {
				v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
				n += v
			}
		}
		resp.Body.Close()
	}
	return n
}

func clusterConfig(be *backend) coord.Config {
	return coord.Config{Backend: coord.BackendEtcd, Endpoints: strings.Split(be.endpoint, ","), Prefix: be.prefix,
		CACert: be.caCert, Cert: be.cert, Key: be.key, DialTimeout: 30 * time.Second}
}

func BenchmarkIdleSessions_Coord(b *testing.B) {
	be := benchCluster(b)
	ctx := context.Background()
	manager := func() *coord.Manager {
		m, err := coord.New(ctx, clusterConfig(be))
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	idleBench(b, be, func(i int) func() {
		m := manager()
		// A host that locked once, and now stands idle with its session.
		l, err := m.Lock(ctx, fmt.Sprintf("idle/%d", i))
		if err != nil {
			b.Fatal(err)
		}
		l.Unlock()
		return func() { m.Close() }
	}, func(i int) (func() error, func()) {
		m := manager()
		name := fmt.Sprintf("active/%d", i)
		return func() error {
			l, err := m.Lock(ctx, name)
			if err != nil {
				return err
			}
			return l.Unlock()
		}, func() { m.Close() }
	})
}

func BenchmarkIdleSessions_Bare(b *testing.B) {
	be := benchCluster(b)
	ctx := context.Background()
	tlsCfg := func() *tls.Config {
		ca, err := os.ReadFile(be.caCert)
		if err != nil {
			b.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		cert, err := tls.LoadX509KeyPair(be.cert, be.key)
		if err != nil {
			b.Fatal(err)
		}
		return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}
	}()
	session := func() (*clientv3.Client, *concurrency.Session) {
		cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(be.endpoint, ","), TLS: tlsCfg, DialTimeout: 30 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
		if err != nil {
			b.Fatal(err)
		}
		return cli, s
	}
	idleBench(b, be, func(i int) func() {
		cli, s := session()
		mu := concurrency.NewMutex(s, fmt.Sprintf("%s/locks/idle/%d", be.prefix, i))
		if err := mu.Lock(ctx); err != nil {
			b.Fatal(err)
		}
		mu.Unlock(ctx)
		return func() { s.Close(); cli.Close() }
	}, func(i int) (func() error, func()) {
		cli, s := session()
		name := fmt.Sprintf("%s/locks/active/%d", be.prefix, i)
		return func() error {
			mu := concurrency.NewMutex(s, name)
			if err := mu.Lock(ctx); err != nil {
				return err
			}
			return mu.Unlock(ctx)
		}, func() { s.Close(); cli.Close() }
	})
}
