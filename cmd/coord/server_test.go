package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/toolchainkit/coord/coord"

	"github.com/toolchainkit/coord/internal/etcdtest"
)

// TestListenURL covers what cannot be run for real in a test: listening
// on a non-loopback address.
func TestListenURL(t *testing.T) {
	tests := []struct {
		flag, raw       string
		tls, insecure   bool
		want, wantError string // want is the URL to listen on
	}{
		{flagClientURL, "http://127.0.0.1:2379", false, false, "http://127.0.0.1:2379", ""},
		{flagClientURL, "http://127.8.9.10:2379/", false, false, "http://127.8.9.10:2379", ""},
		{flagClientURL, "http://localhost:2379", false, false, "http://localhost:2379", ""},
		{flagClientURL, "http://[::1]:2379", false, false, "http://[::1]:2379", ""},
		{flagClientURL, "http://10.1.2.3:2379", false, false, "", "not a loopback address"},
		{flagClientURL, "http://0.0.0.0:2379", false, false, "", "not a loopback address"},
		{flagClientURL, "http://[::]:2379", false, false, "", "not a loopback address"},
		{flagClientURL, "http://10.1.2.3:2379", false, true, "http://10.1.2.3:2379", ""},
		// TLS without client certificates is refused off loopback; with a
		// client CA (passed as insecure=true by the caller) it is fine.
		{flagClientURL, "https://10.1.2.3:2379", true, false, "", "client certificates"},
		{flagClientURL, "https://10.1.2.3:2379", true, true, "https://10.1.2.3:2379", ""},
		{flagClientURL, "https://127.0.0.1:2379", false, false, "", "https needs --cert-file"},
		{flagClientURL, "http://127.0.0.1:2379", true, false, "", "want an https URL"},
		{flagPeerURL, "https://127.0.0.1:2380", false, false, "", "want an http URL"},
		{flagPeerURL, "http://10.1.2.3:2380", false, false, "", "not a loopback address"},
		{flagClientURL, "http://example.com:2379", false, true, "", "IP address or localhost"},
		{flagClientURL, "http://127.0.0.1", false, false, "", "want host:port"},
		{flagClientURL, "http://127.0.0.1:0", false, false, "", "want 1 to 65535"},
		{flagClientURL, "http://127.0.0.1:65536", false, false, "", "want 1 to 65535"},
		{flagClientURL, "http://127.0.0.1:x", false, false, "", "not a URL"},
		{flagClientURL, "127.0.0.1:2379", false, false, "", "not a URL"},
		{flagClientURL, "unix:///tmp/sock", false, false, "", "want an http URL"},
		{flagClientURL, "http://127.0.0.1:2379/v3", false, false, "", "nothing more"},
		{flagClientURL, "http://u:p@127.0.0.1:2379", false, false, "", "nothing more"},
		{flagClientURL, "http://127.0.0.1:2379?a=b", false, false, "", "nothing more"},
		{flagClientURL, "", false, false, "", "want an http URL"},
	}
	for _, tt := range tests {
		u, err := listenURL(tt.flag, tt.raw, tt.tls, tt.insecure)
		if tt.wantError != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantError) || !errors.Is(err, coord.ErrInvalidArgument) {
				t.Errorf("listenURL(%q, %q, tls %v, insecure %v) = %v, want an invalid argument error with %q", tt.flag, tt.raw, tt.tls, tt.insecure, err, tt.wantError)
			}
			continue
		}
		if err != nil || u.String() != tt.want {
			t.Errorf("listenURL(%q, %q, tls %v, insecure %v) = %q, %v; want %q", tt.flag, tt.raw, tt.tls, tt.insecure, u.String(), err, tt.want)
		}
	}
}

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
	start := time.Now()
	for {
		if b, err := os.ReadFile(path); err == nil && re.Match(b) {
			ts.Logf("waitline: matched after %s", time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > 10*time.Second {
			b, _ := os.ReadFile(path)
			ts.Fatalf("no line of %s matched %q within 10s:\n%s", args[0], args[1], b)
		}
		time.Sleep(5 * time.Millisecond)
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
	for _, cmd := range cmds {
		for !errors.Is(cmd.Process.Signal(syscall.Signal(0)), os.ErrProcessDone) {
			if time.Since(start) > max {
				ts.Fatalf("%s still running %s after SIG%s", strings.Join(cmd.Args, " "), max, args[0])
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
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
