package etcdlock

import (
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// holderKey reports whether kv, a key under the lock prefix pfx, is named
// as lock holders name theirs: by its own lease in hex (coord,
// concurrency.Mutex, etcdctl lock), then, for coord's, "-N" and ".s". Any
// other key was put there by some other client: a stray, which blocks
// the lock as a holder would, and without a lease never expires.
func holderKey(pfx string, kv *mvccpb.KeyValue) bool {
	if kv.Lease == 0 {
		return false
	}
	name := strings.TrimSuffix(strings.TrimPrefix(string(kv.Key), pfx), sharedSuffix)
	if lease, seq, ok := strings.Cut(name, "-"); ok {
		if seq == "" || strings.Trim(seq, "0123456789") != "" {
			return false
		}
		name = lease
	}
	return name == fmt.Sprintf("%x", kv.Lease)
}
