package coord_test

import (
	"context"
	"errors"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/wintest"
)

// Status names the processes that hold and wait, on both backends, in one
// shape: host and pid.
func TestStatusNamesHoldersAndWaiters(t *testing.T) {
	host, _ := os.Hostname()
	me := []coord.Process{{Host: host, PID: os.Getpid()}}
	for _, tc := range []struct {
		name     string
		managers func(t *testing.T) (a, b *coord.Manager)
	}{
		{"file", func(t *testing.T) (a, b *coord.Manager) {
			if runtime.GOOS != "linux" {
				t.Skip("the file backend lists holders where the OS tells: Linux")
			}
			dir := wintest.TempDir(t)
			return newManager(t, dir), newManager(t, dir)
		}},
		{"etcd", func(t *testing.T) (a, b *coord.Manager) {
			cfg := coord.Config{Endpoints: []string{startEtcd(t).Endpoint}, DialTimeout: loadedDial}
			return etcdManager(t, cfg), etcdManager(t, cfg)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tc.managers(t)
			ctx := context.Background()
			held, err := a.Lock(ctx, "st", coord.Shared())
			if err != nil {
				t.Fatal(err)
			}
			defer held.Unlock()
			wctx, cancel := context.WithCancel(ctx)
			waited := make(chan error, 1)
			go func() {
				l, err := b.Lock(wctx, "st", coord.WithTimeout(time.Minute))
				if err == nil {
					l.Unlock()
				}
				waited <- err
			}()
			defer func() {
				cancel()
				if err := <-waited; !errors.Is(err, context.Canceled) {
					t.Errorf("the waiter's Lock = %v; want it cancelled", err)
				}
			}()
			var s coord.Status
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if s, err = a.Inspect(ctx, "st"); err == nil && len(s.Waiters) == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Inspect = %+v, %v; want a waiter", s, err)
				}
			}
			if !s.Known || !s.Held || !s.Shared || !slices.Equal(hostPIDs(s.Holders), me) || !slices.Equal(hostPIDs(s.Waiters), me) {
				t.Errorf("Inspect = %+v; want known, held shared by %v, awaited by %v", s, me, me)
			}
			if (s.File != "") != (tc.name == "file") || (s.Key != "") != (tc.name == "etcd") {
				t.Errorf("Inspect: file %q, key %q; want the %s backend's alone", s.File, s.Key, tc.name)
			}
		})
	}
}

// hostPIDs keeps the host and pid of each process: the part both backends
// fill in.
func hostPIDs(ps []coord.Process) []coord.Process {
	var out []coord.Process
	for _, p := range ps {
		out = append(out, coord.Process{Host: p.Host, PID: p.PID})
	}
	return out
}
