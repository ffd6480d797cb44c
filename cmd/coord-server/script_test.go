package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/toolchainkit/coord/internal/etcdtest"
)

func cmdFreeport(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: freeport VAR...")
	}
	ports, err := etcdtest.FreePorts(len(args))
	ts.Check(err)
	for i, name := range args {
		ts.Setenv(name, strconv.Itoa(ports[i]))
	}
}

func cmdWaitline(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: waitline path regexp")
	}
	re, err := regexp.Compile("(?m)" + args[1])
	ts.Check(err)
	path := ts.MkAbs(args[0])
	// A server starts in ~0.1 s on a quiet host; a loaded one took over
	// 10 s.
	took := waitUntil(ts, time.Minute, func() error {
		b, err := os.ReadFile(path)
		if err == nil && re.Match(b) {
			return nil
		}
		return fmt.Errorf("no line of %s matched %q:\n%s", args[0], args[1], b)
	})
	ts.Logf("waitline: matched after %s", took.Round(time.Millisecond))
}

// waitUntil returns once cond returns nil, and how long that took; it
// fails ts with cond's last error if that takes longer than d.
func waitUntil(ts *testscript.TestScript, d time.Duration, cond func() error) time.Duration {
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > d {
			ts.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func cmdStopbg(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: stopbg TERM|INT|HUP MAX")
	}
	sig, ok := map[string]os.Signal{"TERM": syscall.SIGTERM, "INT": os.Interrupt, "HUP": syscall.SIGHUP}[args[0]]
	if !ok {
		ts.Fatalf("stopbg: unknown signal %q", args[0])
	}
	max, err := time.ParseDuration(args[1])
	ts.Check(err)
	start := time.Now()
	cmds := ts.BackgroundCmds()
	for _, cmd := range cmds {
		if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			ts.Fatalf("stopbg: %v", err)
		}
	}
	// Once testscript has reaped a process, signalling it reports
	// ErrProcessDone.
	waitUntil(ts, max-time.Since(start), func() error {
		for _, cmd := range cmds {
			if !errors.Is(cmd.Process.Signal(syscall.Signal(0)), os.ErrProcessDone) {
				return fmt.Errorf("%s still running after SIG%s", strings.Join(cmd.Args, " "), args[0])
			}
		}
		return nil
	})
	ts.Logf("stopbg: stopped after %s", time.Since(start).Round(time.Millisecond))
}

func cmdGencert(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: gencert dir")
	}
	dir := ts.MkAbs(args[0])
	ts.Check(os.MkdirAll(dir, 0o700))
	_, err := etcdtest.WriteCerts(dir)
	ts.Check(err)
}

func cmdEtcdkv(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "usage: etcdkv [-tls dir] URL put KEY VALUE | get KEY | watch KEY"
	if neg {
		ts.Fatalf("unsupported: ! etcdkv")
	}
	cfg := clientv3.Config{DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if len(args) > 2 && args[0] == "-tls" {
		dir := ts.MkAbs(args[1])
		tc, err := transport.TLSInfo{
			CertFile:      filepath.Join(dir, "client.pem"),
			KeyFile:       filepath.Join(dir, "client-key.pem"),
			TrustedCAFile: filepath.Join(dir, "ca.pem"),
		}.ClientConfig()
		ts.Check(err)
		cfg.TLS = tc
		args = args[2:]
	}
	if len(args) < 3 {
		ts.Fatalf(usage)
	}
	cfg.Endpoints = []string{args[0]}
	cli, err := clientv3.New(cfg)
	ts.Check(err)
	if args[1] == "watch" && len(args) == 3 {
		// The watch outlives the command, as a waiting lock's would.
		ts.Defer(func() { cli.Close() })
		wch := cli.Watch(context.Background(), args[2], clientv3.WithCreatedNotify())
		select {
		case resp := <-wch:
			if !resp.Created {
				ts.Fatalf("etcdkv: watch %q: %v", args[2], resp.Err())
			}
		case <-time.After(5 * time.Second):
			ts.Fatalf("etcdkv: watch %q not created within 5s", args[2])
		}
		return
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch {
	case args[1] == "put" && len(args) == 4:
		_, err := cli.Put(ctx, args[2], args[3])
		ts.Check(err)
	case args[1] == "get" && len(args) == 3:
		resp, err := cli.Get(ctx, args[2])
		ts.Check(err)
		if len(resp.Kvs) != 1 {
			ts.Fatalf("etcdkv: %d keys %q, want 1", len(resp.Kvs), args[2])
		}
		ts.Stdout().Write(append(resp.Kvs[0].Value, '\n'))
	default:
		ts.Fatalf(usage)
	}
}
