//go:build unix

package integration_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/toolchainkit/coord/internal/etcdtest"
)

// authEtcd starts an embedded etcd with auth enabled: user root (password
// root-pw) and user limited (limited-pw), who may use keys under /mine/
// only.
func authEtcd(t *testing.T) string {
	t.Helper()
	// bcrypt at its default cost, as in production: a login takes long
	// enough that a short lock cancels its watch while that logs in.
	s, err := etcdtest.StartEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := etcdtest.EnableAuth(ctx, c, "root-pw", "limited-pw"); err != nil {
		t.Fatal(err)
	}
	return s.Endpoint
}

// 4. etcd that answers "no" (a wrong password, a user denied the prefix,
// no user at all) is a mistake to fix: coord fails closed (69) in one line
// that says why, whatever --fallback says, and suggests no fallback; the
// command does not run and no lock directory appears. With the right
// password a run prints nothing but the command's output.
func TestEtcdAuthRefusal(t *testing.T) {
	endpoint := authEtcd(t)
	dir := t.TempDir()
	env := append(cleanEnv(), "COORD_LOCK_DIR="+dir+"/locks", "COORD_ETCD_ENDPOINTS="+endpoint, "COORD_ETCD_DIAL_TIMEOUT=20s")
	for _, tc := range []struct {
		what string
		args []string
		say  string
	}{
		{"wrong password, --fallback file", []string{"--etcd-user", "root:wrong", "--fallback", "file"},
			`etcd refused the user name or password: etcd user "root": authentication failed (wrong user name or password): ` + endpoint},
		{"wrong password", []string{"--etcd-user", "root:wrong"}, "authentication failed"},
		{"no user, --fallback file", []string{"--fallback", "file"}, "etcd's auth is enabled and no user name is given"},
		{"user denied the prefix, --fallback file", []string{"--etcd-user", "limited:limited-pw", "--fallback", "file"},
			`etcd user "limited" may not use prefix /toolchainkit: permission denied`},
	} {
		began := time.Now()
		p := start(t, dir, env, coordBin, append(tc.args, "lock", "a", "--", "echo", "RAN")...)
		code := p.wait(30 * time.Second)
		took := p.end.Sub(began)
		out := p.output()
		switch {
		case code != 69:
			t.Errorf("%s: exit %d, want 69:\n%s", tc.what, code, out)
		case strings.Contains(out, "RAN"):
			t.Errorf("%s: the command ran:\n%s", tc.what, out)
		case strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, tc.say):
			t.Errorf("%s: stderr is not one line saying %q:\n%s", tc.what, tc.say, out)
		case strings.Contains(out, "fallback") || strings.Contains(out, "wrong-pw") || strings.Contains(out, ":wrong"):
			t.Errorf("%s: stderr suggests a fallback or shows the password:\n%s", tc.what, out)
		}
		if _, err := os.Stat(dir + "/locks"); err == nil {
			t.Fatalf("%s: a lock directory was created: coord fell back to file locks", tc.what)
		}
		t.Logf("%s: exit %d after %s: %s", tc.what, code, took.Round(time.Millisecond), strings.TrimSpace(out))
	}
	// The right password: nothing on stderr at the default log level, run
	// after run (the client's "getToken failed: context canceled" came
	// from cancelling a watch while it logged in).
	const runs = 5
	var total time.Duration
	for i := range runs {
		began := time.Now()
		p := start(t, dir, env, coordBin, "--etcd-user", "root:root-pw", "lock", "a", "--", "echo", "RAN")
		code := p.wait(30 * time.Second)
		total += p.end.Sub(began)
		if out := p.output(); code != 0 || out != "RAN\n" {
			t.Fatalf("run %d with the right password: exit %d, want 0 and only RAN on the output:\n%s", i, code, out)
		}
	}
	t.Logf("right password: %d runs, exit 0, output only RAN, %s a run on average", runs, (total / runs).Round(time.Millisecond))
}
