package exporter_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/etcdtest"
	"github.com/toolchainkit/coord/internal/exporter"
)

// The helper process a test starts as a waiter: it takes the lock
// envName on the backend its env names, says so, and lets go.
const (
	envHelper   = "EXPORTER_TEST_HELPER"
	envName     = "EXPORTER_TEST_NAME"
	envDir      = "EXPORTER_TEST_DIR"
	envEndpoint = "EXPORTER_TEST_ENDPOINT"
)

func TestMain(m *testing.M) {
	if os.Getenv(envHelper) != "" {
		os.Exit(helper())
	}
	goleak.VerifyTestMain(m)
}

func helper() int {
	ctx := context.Background()
	m, err := coord.New(ctx, helperConfig(os.Getenv(envDir), os.Getenv(envEndpoint)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer m.Close()
	l, err := m.Lock(ctx, os.Getenv(envName), coord.WithTimeout(2*time.Minute))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("granted")
	l.Unlock()
	return 0
}

func helperConfig(dir, endpoint string) coord.Config {
	if endpoint != "" {
		return coord.Config{Backend: coord.BackendEtcd, Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second}
	}
	return coord.Config{Backend: coord.BackendFile, LockDir: dir}
}

// backend is one backend a test runs on: a lock directory or an embedded
// etcd.
type backend struct {
	name          string
	dir, endpoint string
}

func backends(t *testing.T) []backend {
	return []backend{{name: "file", dir: t.TempDir()}, {name: "etcd"}}
}

func (b *backend) start(t *testing.T) {
	if b.name != "etcd" || b.endpoint != "" {
		if runtime.GOOS != "linux" {
			t.Skip("the file backend lists holders and waiters where the OS tells: Linux")
		}
		return
	}
	srv, err := etcdtest.StartEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	b.endpoint = srv.Endpoint
}

func (b backend) manager(t *testing.T, opts ...coord.Option) *coord.Manager {
	t.Helper()
	m, err := coord.New(context.Background(), helperConfig(b.dir, b.endpoint), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// serve runs an exporter of src over HTTP until the test ends.
func serve(t *testing.T, src exporter.Source, opts ...exporter.Option) string {
	t.Helper()
	e := exporter.New(src, opts...)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.Run(ctx)
	}()
	srv := httptest.NewUnstartedServer(e.Handler())
	srv.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	srv.Start()
	t.Cleanup(func() {
		cancel()
		srv.Close()
		wg.Wait()
	})
	return srv.URL
}

// scrape reads /metrics with the Prometheus text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// value is the metric's value: the series whose name label is name, or
// the only series when name is "".
func value(mfs map[string]*dto.MetricFamily, metric, name string) (float64, bool) {
	mf := mfs[metric]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.Metric {
		label := ""
		for _, l := range m.Label {
			if l.GetName() == "name" {
				label = l.GetValue()
			}
		}
		if label != name {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func sum(mfs map[string]*dto.MetricFamily, metric string) float64 {
	var s float64
	if mf := mfs[metric]; mf != nil {
		for _, m := range mf.Metric {
			s += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return s
}

// waitMetrics scrapes until cond holds, for at most d.
func waitMetrics(t *testing.T, url string, d time.Duration, what string, cond func(map[string]*dto.MetricFamily) bool) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		mfs := scrape(t, url)
		if cond(mfs) {
			return mfs
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for name, mf := range mfs {
				if strings.HasPrefix(name, "coord_") {
					fmt.Fprintf(&b, "%s %v\n", name, mf.Metric)
				}
			}
			t.Fatalf("after %s: want %s; /metrics:\n%s", d, what, b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startWaiter starts a helper process that waits for name and returns
// once it is granted it; the test waits for it at the end.
func startWaiter(t *testing.T, b backend, name string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHelper+"=1", envName+"="+name, envDir+"="+b.dir, envEndpoint+"="+b.endpoint)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// The metrics follow a workload of real Managers and processes: 3 locks
// held, 5 processes waiting on one, the grants they then get, N
// lock/unlock cycles, and (etcd) a download's commit.
func TestMetricsFollowWorkload(t *testing.T) {
	const (
		waiters = 5
		cycles  = 20
		bound   = 60 * time.Second // a state the workload reached shows within this
	)
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			b.start(t)
			ctx := context.Background()
			url := serve(t, b.manager(t, coord.ReportOnly()), exporter.WithInterval(100*time.Millisecond),
				exporter.WithLogger(zaptest.NewLogger(t)))
			waitMetrics(t, url, bound, "coord_backend_up 1", func(mfs map[string]*dto.MetricFamily) bool {
				v, _ := value(mfs, "coord_backend_up", "")
				return v == 1
			})
			holder := b.manager(t)
			var held []*coord.Lock
			for _, name := range []string{"a", "b", "x"} {
				l, err := holder.Lock(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, l)
			}
			var procs []*exec.Cmd
			for range waiters {
				procs = append(procs, startWaiter(t, b, "x"))
			}
			mfs := waitMetrics(t, url, bound, fmt.Sprintf("3 locks held and %d waiters on x", waiters), func(mfs map[string]*dto.MetricFamily) bool {
				n, _ := value(mfs, "coord_lock_waiters", "x")
				return sum(mfs, "coord_locks_held") == 3 && n == waiters
			})
			for _, name := range []string{"a", "b", "x"} {
				if v, ok := value(mfs, "coord_locks_held", name); !ok || v != 1 {
					t.Errorf("coord_locks_held{name=%q} = %v, %v; want 1", name, v, ok)
				}
			}
			if v, _ := value(mfs, "coord_oldest_wait_seconds", ""); v <= 0 {
				t.Errorf("coord_oldest_wait_seconds = %v; want > 0 with %d waiting", v, waiters)
			}
			// The holder's three grants, each seen: they last.
			if v, _ := value(mfs, "coord_grants_total", ""); v != 3 {
				t.Errorf("coord_grants_total = %v after 3 locks were taken; want 3", v)
			}

			// x goes to each waiter in turn; each lets go at once.
			held[2].Unlock()
			for _, p := range procs {
				if err := p.Wait(); err != nil {
					t.Fatalf("waiter: %v", err)
				}
			}
			mfs = waitMetrics(t, url, bound, "x free, no waiters", func(mfs map[string]*dto.MetricFamily) bool {
				_, ok := value(mfs, "coord_locks_held", "x")
				return !ok && sum(mfs, "coord_lock_waiters") == 0
			})
			if v, _ := value(mfs, "coord_oldest_wait_seconds", ""); v != 0 {
				t.Errorf("coord_oldest_wait_seconds = %v with nobody waiting; want 0", v)
			}
			grants, _ := value(mfs, "coord_grants_total", "")
			if n, _ := value(mfs, "coord_wait_duration_seconds", ""); n != grants {
				t.Errorf("coord_wait_duration_seconds count = %v; want one per grant, %v", n, grants)
			}
			if b.name == "etcd" && grants != 3+waiters {
				// The watch sees every event: each waiter's grant.
				t.Errorf("coord_grants_total = %v after %d waiters were granted x; want %d", grants, waiters, 3+waiters)
			} else if grants > 3+waiters {
				t.Errorf("coord_grants_total = %v after %d grants; want at most that (a read of the directory sees some)", grants, 3+waiters)
			}

			// N lock/unlock cycles. The watch sees them all at any pace; a
			// read of the directory only those that last past a read, so
			// on file each cycle waits to be seen.
			for i := range cycles {
				l, err := holder.Lock(ctx, "cycle")
				if err != nil {
					t.Fatal(err)
				}
				if b.name == "file" {
					want := grants + float64(i) + 1
					waitMetrics(t, url, bound, fmt.Sprintf("coord_grants_total %v", want), func(mfs map[string]*dto.MetricFamily) bool {
						v, _ := value(mfs, "coord_grants_total", "")
						return v == want
					})
				}
				l.Unlock()
			}
			want := grants + cycles
			mfs = waitMetrics(t, url, bound, fmt.Sprintf("coord_grants_total %v after %d cycles", want, cycles), func(mfs map[string]*dto.MetricFamily) bool {
				v, _ := value(mfs, "coord_grants_total", "")
				_, held := value(mfs, "coord_locks_held", "cycle")
				return v == want && !held
			})
			if v, _ := value(mfs, "coord_releases_total", ""); v != want-2 {
				t.Errorf("coord_releases_total = %v; want %v, one per grant seen but a's and b's", v, want-2)
			}
			if v, _ := value(mfs, "coord_locks_lost_total", ""); v != 0 {
				t.Errorf("coord_locks_lost_total = %v; want 0", v)
			}
			if v := sum(mfs, "coord_locks_held"); v != 2 {
				t.Errorf("sum of coord_locks_held = %v; want 2 (a and b)", v)
			}
			held[0].Unlock()
			held[1].Unlock()

			if b.name == "etcd" {
				dc := coord.NewDownloadCoordinator(holder)
				dest := filepath.Join(t.TempDir(), "tc")
				if _, err := dc.Do(ctx, "tc", dest, func(ctx context.Context, dir string) error {
					return os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
				}); err != nil {
					t.Fatal(err)
				}
				waitMetrics(t, url, bound, "coord_download_commits_total 1", func(mfs map[string]*dto.MetricFamily) bool {
					v, _ := value(mfs, "coord_download_commits_total", "")
					return v == 1
				})
			}
		})
	}
}

// A lock file removed while it is held is a lost lock.
func TestFileLostLock(t *testing.T) {
	b := backend{name: "file", dir: t.TempDir()}
	b.start(t)
	url := serve(t, b.manager(t, coord.ReportOnly()), exporter.WithInterval(100*time.Millisecond))
	l, err := b.manager(t).Lock(context.Background(), "gone")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	waitMetrics(t, url, time.Minute, "gone held", func(mfs map[string]*dto.MetricFamily) bool {
		v, _ := value(mfs, "coord_locks_held", "gone")
		return v == 1
	})
	ents, _ := os.ReadDir(b.dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), "gone") {
			os.Remove(filepath.Join(b.dir, e.Name()))
		}
	}
	<-l.Lost()
	mfs := waitMetrics(t, url, time.Minute, "coord_locks_lost_total 1", func(mfs map[string]*dto.MetricFamily) bool {
		v, _ := value(mfs, "coord_locks_lost_total", "")
		return v == 1
	})
	if v, _ := value(mfs, "coord_releases_total", ""); v != 0 {
		t.Errorf("coord_releases_total = %v; want 0: the lock was lost, not released", v)
	}
}

// coord_backend_up is 0 while etcd cannot be reached, and 1 again once it
// can, by itself; the page's data says so too.
func TestBackendUpFollowsEtcd(t *testing.T) {
	b := backend{name: "etcd"}
	b.start(t)
	proxy, err := etcdtest.StartProxy(strings.TrimPrefix(b.endpoint, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	m, err := coord.New(context.Background(), coord.Config{Backend: coord.BackendEtcd, Endpoints: []string{proxy.Endpoint()}, DialTimeout: 2 * time.Second}, coord.ReportOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	url := serve(t, m, exporter.WithInterval(200*time.Millisecond))
	up := func(want float64) func(map[string]*dto.MetricFamily) bool {
		return func(mfs map[string]*dto.MetricFamily) bool {
			v, _ := value(mfs, "coord_backend_up", "")
			return v == want
		}
	}
	waitMetrics(t, url, time.Minute, "coord_backend_up 1", up(1))
	proxy.Cut()
	waitMetrics(t, url, time.Minute, "coord_backend_up 0 with etcd cut off", up(0))
	resp, err := http.Get(url + "/state.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"up":false`) || !strings.Contains(string(body), `"error":"`) {
		t.Errorf("/state.json = %s; want up false and the error", body)
	}
	proxy.Restore()
	waitMetrics(t, url, time.Minute, "coord_backend_up 1 once etcd is back", up(1))
	// And it follows the locks again.
	l, err := b.manager(t).Lock(context.Background(), "after")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	waitMetrics(t, url, time.Minute, "after held", func(mfs map[string]*dto.MetricFamily) bool {
		v, _ := value(mfs, "coord_locks_held", "after")
		return v == 1
	})
}

// The exporter holds no lock and writes nothing: etcd's revision does not
// move while it watches, reads and is scraped, and it takes no lease. Its
// requests are counted: the first read and the watch, then one check read
// per interval.
func TestExporterWritesNothing(t *testing.T) {
	b := backend{name: "etcd"}
	b.start(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{b.endpoint}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	before, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, b.manager(t, coord.ReportOnly()), exporter.WithInterval(100*time.Millisecond))
	waitMetrics(t, url, time.Minute, "up and 5 requests (some check reads)", func(mfs map[string]*dto.MetricFamily) bool {
		v, _ := value(mfs, "coord_exporter_backend_requests_total", "")
		up, _ := value(mfs, "coord_backend_up", "")
		return up == 1 && v >= 5
	})
	resp, err := http.Get(url + "/state.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	after, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if after.Header.Revision != before.Header.Revision {
		t.Errorf("etcd revision %d -> %d while the exporter ran; want no write", before.Header.Revision, after.Header.Revision)
	}
	leases, err := cli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 0 {
		t.Errorf("%d leases while the exporter ran; want none", len(leases.Leases))
	}
}
