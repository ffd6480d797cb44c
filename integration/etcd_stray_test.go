//go:build unix

package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// 15. A key that no lock holder wrote, put under a lock's prefix by
// another client, blocks the lock as a holder would; without a lease it
// never expires. The timeout message and `coord status` (text and JSON)
// name it, say whether it can expire, and give the etcdctl command that
// removes it, quoted for the shell (control characters escaped); that
// command, run as printed, frees the lock.
func TestEtcdStrayKey(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("needs bash, to run the printed etcdctl command")
	}
	if _, err := exec.LookPath("etcdctl"); err != nil {
		t.Skip("needs etcdctl, to run the printed command")
	}
	etcdBackends(t, func(t *testing.T, be *backend) {
		w := newWorld(t, be)
		c := etcdClient(t, be)
		ctx := context.Background()
		pfx := w.prefix + "/locks/"
		plain := pfx + "x/planted by 'someone'"
		hostile := pfx + "y/evil\x1b[31m"
		for _, k := range []string{plain, hostile} {
			if _, err := c.Put(ctx, k, "not a holder record"); err != nil {
				t.Fatal(err)
			}
		}
		g, err := c.Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		leased := pfx + "z/other"
		if _, err := c.Put(ctx, leased, "v", clientv3.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}

		for _, tc := range []struct{ name, say string }{
			{"x", fmt.Sprintf(`blocked by etcd key %q, put by another client, has no lease and never expires; remove it with: etcdctl del '%s'`,
				plain, strings.ReplaceAll(plain, "'", `'\''`))},
			{"y", fmt.Sprintf(`blocked by etcd key %q, put by another client, has no lease and never expires; remove it with: etcdctl del $'%s'`,
				hostile, strings.ReplaceAll(hostile, "\x1b", `\x1b`))},
			{"z", fmt.Sprintf(`blocked by etcd key %q, put by another client on lease %x, stays while that lease lives; remove it with: etcdctl del '%s'`,
				leased, int64(g.ID), leased)},
		} {
			began := time.Now()
			code, out := w.runCoord("lock", "--timeout", "1s", tc.name, "--", "touch", "ran")
			lines := strings.Split(strings.TrimSpace(out), "\n")
			last := lines[len(lines)-1] // after the notice that it waits
			if code != 75 || !strings.Contains(last, tc.say) || strings.Contains(out, "\x1b") {
				t.Errorf("lock %s blocked by a stray key: exit %d, want 75 and a last line saying\n%s\ngot:\n%s", tc.name, code, tc.say, out)
			}
			t.Logf("lock %s: exit %d after %s: %s", tc.name, code, time.Since(began).Round(time.Millisecond), last)
		}

		code, out := w.runCoord("status")
		if code != 0 || !strings.Contains(out, "stray key (below)") || strings.Contains(out, "\x1b") ||
			!strings.Contains(out, `x: blocked by etcd key `+fmt.Sprintf("%q", plain)+`, put by another client, has no lease and never expires`) {
			t.Errorf("status: exit %d, want 0, the stray keys named, escaped:\n%s", code, out)
		}
		t.Logf("status:\n%s", out)
		code, out = w.runCoord("status", "--json")
		var locks []struct {
			Name  string `json:"name"`
			Stray *struct {
				Key     string `json:"key"`
				Lease   int64  `json:"lease"`
				Expires bool   `json:"expires"`
				Remove  string `json:"remove"`
			} `json:"stray"`
		}
		if err := json.Unmarshal([]byte(out), &locks); code != 0 || err != nil || len(locks) != 3 {
			t.Fatalf("status --json: exit %d, %v; want 3 locks:\n%s", code, err, out)
		}
		for _, l := range locks {
			want := map[string]string{"x": plain, "y": hostile, "z": leased}[l.Name]
			if l.Stray == nil || l.Stray.Key != want || l.Stray.Expires != (l.Name == "z") || (l.Stray.Lease != 0) != (l.Name == "z") {
				t.Errorf("status --json: lock %s: stray %+v; want key %q, expiring only for z", l.Name, l.Stray, want)
			}
		}

		// The printed commands, run as they are, free the locks.
		for _, l := range locks {
			cmd := exec.Command(bash, "-c", l.Stray.Remove)
			cmd.Env = append(cleanEnv(), "ETCDCTL_API=3", "ETCDCTL_ENDPOINTS="+be.endpoint)
			if be.caCert != "" {
				cmd.Env = append(cmd.Env, "ETCDCTL_CACERT="+be.caCert, "ETCDCTL_CERT="+be.adminCert, "ETCDCTL_KEY="+be.adminKey)
			}
			if b, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(b)) != "1" {
				t.Fatalf("%s: %v, %s; want 1 key deleted", l.Stray.Remove, err, b)
			}
			if code, out := w.runCoord("lock", "--timeout", "0", l.Name, "--", "true"); code != 0 {
				t.Errorf("lock %s after %s: exit %d:\n%s", l.Name, l.Stray.Remove, code, out)
			}
		}
	})
}
