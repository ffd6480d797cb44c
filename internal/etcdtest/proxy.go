package etcdtest

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// Proxy is a TCP proxy on a loopback port that a test can partition from
// its target: the network between a client and etcd, with a switch.
//
// Cut is a partition that drops packets rather than refusing them: no byte
// passes in either direction and no connection is closed, so both ends see
// silence, never a reset, as behind a firewall that drops everything or a
// pulled cable. New connections are accepted and then left silent too; the
// target sees none of them until Restore. Bytes held back are delivered
// after Restore, as TCP would retransmit them, and so is a connection's
// end: a client that goes away during a cut is closed on the target's side
// only once the cut ends.
//
// The client's kernel still accepts what the client writes until the
// socket buffers fill: a cut shows as requests that get no answer, which
// is how a client meets a real partition.
type Proxy struct {
	target string
	ln     net.Listener
	ctx    context.Context // ends with Close; bounds dials to target
	cancel context.CancelFunc

	mu     sync.Mutex
	flow   chan struct{} // closed while bytes may pass; a new one on each Cut
	cut    bool
	delay  time.Duration // how long each read is held before it is passed on
	closed bool
	conns  map[net.Conn]struct{} // both sides of every forwarded connection
	wg     sync.WaitGroup        // the accept loop and every connection's goroutines
}

// StartProxy listens on a free loopback port and forwards every connection
// to target (host:port). Close stops it.
func StartProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{target: target, ln: ln, ctx: ctx, cancel: cancel, flow: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.flow)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Endpoint returns the proxy's address as an etcd client URL.
func (p *Proxy) Endpoint() string { return "http://" + p.Addr() }

// Cut partitions the proxy: from now on no byte passes either way, on the
// connections it forwards and on those it accepts later, until Restore.
// Bytes already written to the other side before Cut still arrive.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cut {
		p.cut, p.flow = true, make(chan struct{})
	}
}

// Restore ends a Cut: what was held back is delivered, and bytes flow again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		p.cut = false
		close(p.flow)
	}
}

// Delay makes the network slow: from now on every read, either way, is
// held for d before it is passed on (d each way, 2d a round trip, more
// while bytes queue), as on a congested link or before an etcd that is
// slow to answer. Delay(0) ends it.
func (p *Proxy) Delay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// Close stops listening, closes every connection, cut or not, and returns
// once all of the proxy's goroutines have ended. Calling it again does
// nothing.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.cancel() // wakes every goroutine waiting for bytes to flow
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

// track registers c to be closed by Close, and counts a goroutine that
// will serve it; it refuses once Close has begun.
func (p *Proxy) track(c net.Conn, goroutines int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	p.wg.Add(goroutines)
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// passable waits until bytes may pass; it reports false if the proxy
// closed first.
func (p *Proxy) passable() bool {
	p.mu.Lock()
	flow := p.flow
	p.mu.Unlock()
	select {
	case <-flow:
		return p.ctx.Err() == nil
	case <-p.ctx.Done():
		return false
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a client that went away before we took it
		}
		if !p.track(c, 1) {
			c.Close()
			return
		}
		go p.serve(c)
	}
}

// serve connects c to the target once bytes may pass, and forwards both
// ways until either side ends.
func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	defer p.untrack(c)
	if !p.passable() {
		return
	}
	var d net.Dialer
	up, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(up, 1) {
		up.Close()
		return
	}
	defer p.untrack(up)
	go func() {
		defer p.wg.Done()
		p.pipe(up, c)
		up.Close() // ends the other direction's read
		c.Close()
	}()
	p.pipe(c, up)
	up.Close()
	c.Close()
}

// pipe copies src to dst while bytes may pass, until src ends, dst fails
// or the proxy closes. A read already under way when Cut comes is held
// until Restore; src's end is held the same way.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		d := p.delay
		p.mu.Unlock()
		if d > 0 {
			select {
			case <-time.After(d):
			case <-p.ctx.Done():
				return
			}
		}
		if !p.passable() {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
