package coord_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/toolchainkit/coord/coord"
)

// Keys named by their own lease, as coord, concurrency.Mutex and etcdctl
// lock write them, are holders; any other key under a lock's prefix is a
// stray, with or without a lease.
func TestEtcdStray(t *testing.T) {
	cfg := sharedConfig(t)
	p := cfg.Prefix
	ctx := context.Background()
	m := etcdManager(t, cfg)
	for range 2 { // the second key of one Manager is <lease>-1.s
		l, err := m.Lock(ctx, "shared", coord.Shared())
		if err != nil {
			t.Fatal(err)
		}
		defer l.Unlock()
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := concurrency.NewSession(c)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	mu := concurrency.NewMutex(sess, p+"/locks/mutex")
	if err := mu.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	defer mu.Unlock(ctx)
	for _, kv := range []struct {
		key   string
		lease clientv3.LeaseID
	}{
		{p + "/locks/nolease/k", 0},
		{fmt.Sprintf("%s/locks/otherlease/%x", p, int64(sess.Lease())+1), sess.Lease()},
		{fmt.Sprintf("%s/locks/badseq/%x-x", p, int64(sess.Lease())), sess.Lease()},
	} {
		var opts []clientv3.OpOption
		if kv.lease != 0 {
			opts = append(opts, clientv3.WithLease(kv.lease))
		}
		if _, err := c.Put(ctx, kv.key, "v", opts...); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		stray *coord.Stray
	}{
		{"shared", nil},
		{"mutex", nil},
		{"nolease", &coord.Stray{Key: p + "/locks/nolease/k"}},
		{"otherlease", &coord.Stray{Key: fmt.Sprintf("%s/locks/otherlease/%x", p, int64(sess.Lease())+1), Lease: int64(sess.Lease())}},
		{"badseq", &coord.Stray{Key: fmt.Sprintf("%s/locks/badseq/%x-x", p, int64(sess.Lease())), Lease: int64(sess.Lease())}},
	} {
		st, err := m.Inspect(ctx, tc.name)
		switch {
		case err != nil:
			t.Errorf("Inspect(%s): %v", tc.name, err)
		case !st.Held:
			t.Errorf("Inspect(%s): not held", tc.name)
		case (st.Stray == nil) != (tc.stray == nil) || (st.Stray != nil && *st.Stray != *tc.stray):
			t.Errorf("Inspect(%s).Stray = %+v; want %+v", tc.name, st.Stray, tc.stray)
		}
	}
	_, err = m.Lock(ctx, "nolease", coord.WithTimeout(0))
	if want := `lock "nolease": blocked by etcd key "` + p + `/locks/nolease/k", put by another client, has no lease and never expires; remove it with: etcdctl del '` + p + `/locks/nolease/k'`; err == nil || err.Error() != want {
		t.Errorf("Lock(nolease) = %v; want %s", err, want)
	}
}
