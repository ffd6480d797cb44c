package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Cluster is a multi-member etcd made of the installed etcd binary: one
// real process per member, on loopback ports, with 50 ms heartbeats and
// 500 ms elections (as deploy/local-cluster.sh; 10/100 ms made a loaded
// 2-core host elect over and over, and leases lapse), no fsync. Members can be killed and
// restarted to inject faults. Its methods are safe for concurrent use.
type Cluster struct {
	bin     string
	initial string // --initial-cluster
	mu      sync.Mutex
	members []*member
}

// member is one etcd process of a Cluster, with the ports and data
// directory it keeps across restarts.
type member struct {
	name, client, peer string
	data, log          string    // data dir; log file, appended to by every run
	cmd                *exec.Cmd // nil while it is not running
	done               chan struct{}
}

// StartCluster starts n members of the installed etcd with their data and
// logs in dir (m<i>/data, m<i>.log) and waits until every member answers
// /health with a leader elected, at most 30 s.
func StartCluster(dir string, n int) (*Cluster, error) {
	bin := SystemBinary()
	if bin == "" {
		return nil, errors.New("no etcd binary on PATH")
	}
	ports, err := FreePorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin}
	var initial []string
	for i := range n {
		m := &member{
			name:   fmt.Sprintf("m%d", i),
			client: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			peer:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
		m.data, m.log = filepath.Join(dir, m.name, "data"), filepath.Join(dir, m.name+".log")
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peer)
	}
	c.initial = strings.Join(initial, ",")
	for i := range c.members {
		if err := c.start(i, "new"); err != nil {
			c.Stop()
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range c.members {
		if err := c.waitReady(ctx, i); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// start runs member i; state is "new" or "existing".
func (c *Cluster) start(i int, state string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.cmd != nil {
		return fmt.Errorf("etcd member %s is running already", m.name)
	}
	log, err := os.OpenFile(m.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin,
		"--name", m.name, "--data-dir", m.data,
		"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
		"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
		"--initial-cluster", c.initial, "--initial-cluster-state", state,
		"--initial-cluster-token", "coord-test",
		"--heartbeat-interval", "50", "--election-timeout", "500",
		"--unsafe-no-fsync", "--log-level", "error")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start etcd member %s: %w", m.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); log.Close(); close(done) }()
	m.cmd, m.done = cmd, done
	return nil
}

// waitReady waits until member i answers /health with health true, which
// etcd says only once the member knows a leader.
func (c *Cluster) waitReady(ctx context.Context, i int) error {
	c.mu.Lock()
	m, done := c.members[i], c.members[i].done
	c.mu.Unlock()
	for {
		if ready(m.client) {
			return nil
		}
		select {
		case <-done:
			b, _ := os.ReadFile(m.log)
			return fmt.Errorf("etcd member %s exited: %s", m.name, strings.TrimSpace(string(b)))
		case <-ctx.Done():
			return fmt.Errorf("etcd member %s not ready: %w", m.name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Len returns the number of members, running or not.
func (c *Cluster) Len() int { return len(c.members) }

// Endpoints returns the client URLs of all members, in member order.
func (c *Cluster) Endpoints() []string {
	e := make([]string, len(c.members))
	for i, m := range c.members {
		e[i] = m.client
	}
	return e
}

// Endpoint returns the client URL of member i.
func (c *Cluster) Endpoint(i int) string { return c.members[i].client }

// Running reports whether member i's process is running (it was started
// and has not been killed or stopped).
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].cmd != nil
}

// Leader returns the index of the member that says it is the leader,
// asking every running member. It waits, polling, until one does: right
// after the leader died the others need an election timeout or more. It
// returns ctx's error if none does before ctx ends.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	for {
		for i := range c.members {
			if c.Running(i) && c.isLeader(ctx, i) {
				return i, nil
			}
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("no etcd leader: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// isLeader reports whether member i answers a status request saying that
// it is the leader itself.
func (c *Cluster) isLeader(ctx context.Context, i int) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ep := c.members[i].client
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: time.Second, Logger: zap.NewNop(), Context: ctx})
	if err != nil {
		return false
	}
	defer cli.Close()
	s, err := cli.Status(ctx, ep)
	return err == nil && s.Leader != 0 && s.Leader == s.Header.MemberId
}

// Kill sends member i SIGKILL and waits until it is gone. Its data stays
// for Restart.
func (c *Cluster) Kill(i int) error {
	c.mu.Lock()
	m := c.members[i]
	cmd, done := m.cmd, m.done
	m.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("etcd member %s is not running", m.name)
	}
	err := cmd.Process.Kill()
	<-done
	return err
}

// Restart starts the killed member i again on its data directory and
// ports, and waits until it answers /health or ctx ends. On error it may
// still be running; Stop stops it.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	if err := c.start(i, "existing"); err != nil {
		return err
	}
	return c.waitReady(ctx, i)
}

// Stop kills every running member (SIGKILL) and waits for them. A
// graceful stop would wait seconds for a quorum that is leaving too, for
// data that is thrown away.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	var running []chan struct{}
	for _, m := range c.members {
		if m.cmd != nil {
			running = append(running, m.done)
			m.cmd.Process.Kill()
			m.cmd = nil
		}
	}
	c.mu.Unlock()
	for _, done := range running {
		<-done
	}
	return nil
}
