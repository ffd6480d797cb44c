package filelock_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/toolchainkit/coord/filelock"
	"github.com/toolchainkit/coord/internal/wintest"
)

// A held lock never shows as free while other locks come and go: the
// kernel serves /proc/locks a page per read, and a lock released between
// two reads shifts the rest (Linux; elsewhere Inspect probes).
func TestInspectSeesHeldLockDuringChurn(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/locks is Linux's")
	}
	l, err := filelock.New(wintest.TempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Listed newest first: the oldest lock is read last, after every page
	// the churn shifts.
	held := lock(t, l, "target", filelock.Exclusive)
	defer held.Unlock()
	var others []*filelock.Lock
	for i := range 300 {
		others = append(others, lock(t, l, fmt.Sprint("other", i), filelock.Exclusive))
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for g := range 2 { // each lets go of a batch, then takes it again
		wg.Go(func() {
			for ctx.Err() == nil {
				for i := g; i < len(others); i += 2 {
					others[i].Unlock()
				}
				for i := g; i < len(others); i += 2 {
					k, err := l.TryLock(ctx, fmt.Sprint("other", i), filelock.Exclusive, nil)
					if err != nil {
						t.Error(err)
						return
					}
					others[i] = k
				}
			}
		})
	}
	free := 0
	for range 2000 {
		info, err := l.Inspect("target")
		if err != nil {
			t.Fatal(err)
		}
		if !info.Held {
			free++
		}
	}
	stop()
	wg.Wait()
	for _, k := range others {
		k.Unlock()
	}
	if free > 0 {
		t.Fatalf("the held lock showed as free in %d of 2000 Inspects", free)
	}
}
