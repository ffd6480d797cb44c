package etcdlock

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"
)

// When every endpoint actively refuses the connection (nothing listens on
// its port), connecting fails after RefusedGrace instead of the whole
// dial timeout. The grace lets a member that is restarting come back.
// Nothing is probed while etcd answers: the first probe is sent only if
// the client has not connected within refusedFirstProbe.
const (
	RefusedGrace      = time.Second
	refusedFirstProbe = 250 * time.Millisecond
	refusedEvery      = 250 * time.Millisecond
	// refusedDial bounds a probe's dial: a refusal comes back in a round
	// trip (on Windows, after about 2 s of retries).
	refusedDial = 3 * time.Second
)

// refusedWatch watches, while the client connects, for every endpoint
// refusing the TCP connection: a dial answered with ECONNREFUSED (a
// reset), not one that times out. When that is still so once RefusedGrace has passed since
// the start, it calls giveUp and keeps what it saw for err.
type refusedWatch struct {
	cancel context.CancelFunc // ends the watch and its dials
	wg     sync.WaitGroup
	why    string // set before giveUp is called; read after stop
}

// watchRefused starts a refusedWatch over cfg's endpoints; stop it.
func watchRefused(ctx context.Context, cfg Config, giveUp func()) *refusedWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &refusedWatch{cancel: cancel}
	if cfg.DialTimeout <= RefusedGrace {
		return w // the dial timeout ends it as soon
	}
	start := time.Now()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTimer(refusedFirstProbe)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			why, all := allRefuse(ctx, cfg.Endpoints)
			if all && time.Since(start) >= RefusedGrace && ctx.Err() == nil {
				w.why = why
				giveUp()
				return
			}
			t.Reset(refusedEvery)
		}
	}()
	return w
}

// stop ends the watch and waits for it. err is ErrUnavailable with what
// the endpoints said, if the watch gave up.
func (w *refusedWatch) stop() error {
	w.cancel()
	w.wg.Wait()
	if w.why == "" {
		return nil
	}
	return fmt.Errorf("%w: every etcd endpoint refused the connection (%s)", ErrUnavailable, w.why)
}

// allRefuse dials every endpoint at once; all reports whether each dial
// was refused, why lists them ("E: connection refused, ..."). A dial that
// connects is closed at once, before any TLS handshake.
func allRefuse(ctx context.Context, endpoints []string) (why string, all bool) {
	refused := make([]bool, len(endpoints))
	var wg sync.WaitGroup
	for i, e := range endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dctx, cancel := context.WithTimeout(ctx, refusedDial)
			defer cancel()
			var d net.Dialer
			c, err := d.DialContext(dctx, "tcp", endpointHost(e))
			if err == nil {
				c.Close()
			}
			refused[i] = isConnRefused(err)
		}()
	}
	wg.Wait()
	whys := make([]string, len(endpoints))
	for i, e := range endpoints {
		if !refused[i] {
			return "", false
		}
		whys[i] = e + ": connection refused"
	}
	return strings.Join(whys, ", "), len(endpoints) > 0
}

// endpointHost is the host:port of endpoint e (a URL or host:port).
func endpointHost(e string) string {
	if u, err := url.Parse(e); err == nil && u.Host != "" {
		return u.Host
	}
	return e
}
