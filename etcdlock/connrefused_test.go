package etcdlock_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/toolchainkit/coord/etcdlock"
	"github.com/toolchainkit/coord/internal/etcdtest"
)

// connects are New and NewInspector, the two ways of connecting.
var connects = []struct {
	name    string
	connect func(context.Context, etcdlock.Config) (func() error, error)
}{
	{"New", func(ctx context.Context, cfg etcdlock.Config) (func() error, error) {
		l, err := etcdlock.New(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return l.Close, nil
	}},
	{"NewInspector", func(ctx context.Context, cfg etcdlock.Config) (func() error, error) {
		in, err := etcdlock.NewInspector(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return in.Close, nil
	}},
}

// TestEveryEndpointRefuses: with nothing listening on any endpoint,
// connecting fails after the grace (etcdlock.RefusedGrace), not after the
// dial timeout, and says so for each endpoint.
func TestEveryEndpointRefuses(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ports, err := etcdtest.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	eps := []string{fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])}
	const dial = 30 * time.Second
	for _, c := range connects {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			_, err := c.connect(context.Background(), etcdlock.Config{Endpoints: eps, DialTimeout: dial})
			took := time.Since(start)
			if !errors.Is(err, etcdlock.ErrUnavailable) {
				t.Fatalf("err = %v; want ErrUnavailable", err)
			}
			want := fmt.Sprintf("every etcd endpoint refused the connection (%s: connection refused, %s: connection refused)", eps[0], eps[1])
			if !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v; want it to say %q", err, want)
			}
			if took < etcdlock.RefusedGrace || took > dial/2 {
				t.Errorf("failed after %s; want between the grace %s and half the dial timeout %s", took, etcdlock.RefusedGrace, dial/2)
			}
		})
	}
}

// TestOneEndpointAnswers: an endpoint that refuses beside one that
// answers does not stop coord from connecting.
func TestOneEndpointAnswers(t *testing.T) {
	ports, err := etcdtest.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	eps := []string{fmt.Sprintf("http://127.0.0.1:%d", ports[0]), servers[0].Endpoint}
	for _, c := range connects {
		t.Run(c.name, func(t *testing.T) {
			closeFn, err := c.connect(context.Background(), etcdlock.Config{Endpoints: eps, DialTimeout: 30 * time.Second})
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			closeFn()
		})
	}
}

// TestBlackholeWaitsTheDialTimeout: an endpoint that takes the TCP
// connection (the kernel's backlog of a listener that never accepts) and
// then says nothing is no refusal: coord waits the whole dial timeout.
func TestBlackholeWaitsTheDialTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const dial = 2 * time.Second
	start := time.Now()
	_, err = etcdlock.New(context.Background(), etcdlock.Config{Endpoints: []string{ln.Addr().String()}, DialTimeout: dial})
	took := time.Since(start)
	if !errors.Is(err, etcdlock.ErrUnavailable) {
		t.Fatalf("err = %v; want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "refused") {
		t.Errorf("err = %v; want no refusal", err)
	}
	if took < dial {
		t.Errorf("failed after %s; want the dial timeout %s", took, dial)
	}
}
