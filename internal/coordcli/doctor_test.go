package coordcli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/toolchainkit/coord/internal/coordcli"
	"github.com/toolchainkit/coord/internal/etcdtest"
)

// The settings' variables: cleared for each test, so that the caller's
// environment does not change what doctor checks.
var settingEnv = []string{
	"COORD_BACKEND", "COORD_LOCK_DIR", "COORD_ETCD_ENDPOINTS", "COORD_FALLBACK", "COORD_ETCD_PREFIX",
	"COORD_ETCD_TTL", "COORD_ETCD_DIAL_TIMEOUT", "COORD_ETCD_CACERT", "COORD_ETCD_CERT", "COORD_ETCD_KEY",
	"COORD_ETCD_USER", "COORD_ETCD_PASSWORD", "COORD_LOG_LEVEL", "COORD_LOG_FORMAT", "COORD_CONFIG",
}

// doctor runs `coord --config /dev/null ARGS…` in this process and returns
// its exit status and output.
func doctor(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	for _, e := range settingEnv {
		t.Setenv(e, "")
	}
	var out, errb bytes.Buffer
	code = coordcli.Run(context.Background(), append([]string{"coord", "--config", os.DevNull}, args...), &out, &errb, nil)
	t.Logf("coord %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
	return code, out.String(), errb.String()
}

// line finds the report's line for check name and returns its status and
// message; "" if there is none.
func line(out, name string) (status, msg string) {
	re := regexp.MustCompile(`(?m)^(pass|warn|fail|skip)  ` + regexp.QuoteMeta(name) + `  +(.*)$`)
	m := re.FindStringSubmatch(out)
	if m == nil {
		return "", ""
	}
	return m[1], m[2]
}

// wantLine fails t unless check name has the status and its message
// matches pattern.
func wantLine(t *testing.T, out, name, status, pattern string) {
	t.Helper()
	got, msg := line(out, name)
	if got != status || !regexp.MustCompile(pattern).MatchString(msg) {
		t.Errorf("check %q: %s %q; want %s matching %q", name, got, msg, status, pattern)
	}
}

func TestDoctorLocalDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "locks")
	code, out, stderr := doctor(t, "--lock-dir", dir, "--etcd-user", "ci:pw", "doctor")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q; want 0 and nothing", code, stderr)
	}
	wantLine(t, out, "config lock-dir", "pass", `^`+regexp.QuoteMeta(dir)+` \(--lock-dir\)$`)
	wantLine(t, out, "config backend", "pass", `^auto \(default\)$`) // COORD_BACKEND is set, empty
	wantLine(t, out, "config etcd-user", "pass", `^ci \(with a password\) \(--etcd-user\)$`)
	wantLine(t, out, "lock-dir fs", "pass", `a local file system`)
	wantLine(t, out, "lock-dir probe", "pass", `^created .* then created, locked, unlocked and removed coord-doctor-\d+\.lock$`)
	wantLine(t, out, "lock-dir permissions", "pass", `mode 0755`)
	if strings.Contains(out, "pw") {
		t.Errorf("the report shows the password:\n%s", out)
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 0 {
		t.Errorf("lock directory after doctor: %v, %v; want it empty", ents, err)
	}
}

func TestDoctorJSON(t *testing.T) {
	code, out, _ := doctor(t, "--lock-dir", t.TempDir(), "doctor", "--json")
	var got struct {
		Checks []struct{ Name, Status, Message, Fix string }
		Failed int
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if code != 0 || got.Failed != 0 || len(got.Checks) < 10 {
		t.Fatalf("exit %d, %d failed, %d checks; want 0, 0, 10 or more", code, got.Failed, len(got.Checks))
	}
	for _, c := range got.Checks {
		if c.Name == "" || c.Message == "" || c.Status != "pass" && c.Status != "warn" && c.Status != "skip" {
			t.Errorf("check %+v", c)
		}
	}
}

// TestDoctorReadOnlyDir: a lock directory nobody can write to fails the
// probe, with the fix. As root, whom mode bits do not stop, the
// directory is a read-only tmpfs.
func TestDoctorReadOnlyDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fix := `^ +fix: let this user create files in `
	if os.Geteuid() == 0 {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
			t.Skipf("mount a read-only tmpfs: %v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", dir).Run() })
		fix = `^ +fix: the file system is read-only: remount it read-write, or choose another --lock-dir \(COORD_LOCK_DIR\)$`
	} else {
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
	}
	code, out, stderr := doctor(t, "--lock-dir", dir, "doctor")
	if code != 1 || stderr != "coord: doctor: "+fmt.Sprint(strings.Count(out, "\nfail  "))+" check"+map[bool]string{true: "", false: "s"}[strings.Count(out, "\nfail  ") == 1]+" failed\n" {
		t.Errorf("exit %d, stderr %q; want 1 and the count of failed checks", code, stderr)
	}
	wantLine(t, out, "lock-dir probe", "fail", `^cannot (open|create and lock) `+regexp.QuoteMeta(dir))
	if !regexp.MustCompile(`(?m)` + fix).MatchString(out) {
		t.Errorf("no line matches %q", fix)
	}
	if os.Geteuid() == 0 {
		wantLine(t, out, "lock-dir mount", "fail", `^tmpfs on `+regexp.QuoteMeta(dir)+` type tmpfs \(ro,.*\): mounted read-only$`)
	}
}

// TestDoctorFUSEDir: a FUSE mount, standing in for a network file system,
// is a warning that says how to find out: --pair.
func TestDoctorFUSEDir(t *testing.T) {
	mnt := fatMount(t)
	code, out, _ := doctor(t, "--lock-dir", mnt, "doctor")
	if code != 0 {
		t.Errorf("exit %d; want 0: a warning is not a failure", code)
	}
	wantLine(t, out, "lock-dir fs", "warn", `^`+regexp.QuoteMeta(mnt)+` is on fuse\S*, a network or FUSE file system: coord cannot prove`)
	if !strings.Contains(out, "fix: run `coord doctor --pair ID` at the same time on two hosts that share it") {
		t.Errorf("the fix does not name --pair")
	}
	wantLine(t, out, "lock-dir mount", "pass", `^\S+ on `+regexp.QuoteMeta(mnt)+` type fuse`)
	wantLine(t, out, "lock-dir probe", "pass", `removed coord-doctor-\d+\.lock$`)
}

// fatMount mounts a FAT image through fusefat (root, with fusefat and
// dosfstools installed) and returns the mount point.
func fatMount(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting fusefat needs root")
	}
	for _, tool := range []string{"mkfs.vfat", "fusefat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install fusefat dosfstools)", tool)
		}
	}
	tmp := t.TempDir()
	img, mnt := filepath.Join(tmp, "fs.img"), filepath.Join(tmp, "mnt")
	for _, cmd := range [][]string{{"truncate", "-s", "16M", img}, {"mkfs.vfat", img}, {"mkdir", mnt}, {"fusefat", "-o", "rw+", img, mnt}} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", cmd, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	return mnt
}

// TestDoctorRefusedEndpoint: an endpoint where nothing listens fails, the
// others are still checked one by one.
func TestDoctorRefusedEndpoint(t *testing.T) {
	srv := startEtcd(t)
	ports, err := etcdtest.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	closed := fmt.Sprintf("127.0.0.1:%d", ports[0])
	code, out, _ := doctor(t, "--etcd-endpoints", closed+","+srv.Endpoint, "--etcd-dial-timeout", "2s", "--etcd-prefix", "/t", "doctor")
	if code != 1 {
		t.Errorf("exit %d; want 1", code)
	}
	wantLine(t, out, "etcd "+closed, "fail", `^cannot connect: connection refused$`)
	if !strings.Contains(out, "fix: nothing listens there: start etcd on "+closed+", or correct --etcd-endpoints (COORD_ETCD_ENDPOINTS)") {
		t.Errorf("no fix for the refused endpoint")
	}
	wantLine(t, out, "etcd "+srv.Endpoint, "pass", `^etcd 3\.\d+\.\d+, member [0-9a-f]+, leader [0-9a-f]+`)
	wantLine(t, out, "etcd "+srv.Endpoint+" rtt", "pass", `^round trip \S+ \(median of 3\), lease TTL 10s$`)
	wantLine(t, out, "etcd auth", "warn", `^auth is off: any client`)
	wantLine(t, out, "etcd lease", "pass", `^granted lease [0-9a-f]+ \(TTL 10s\) and revoked it$`)
	wantLine(t, out, "etcd prefix", "pass", `^this client may read, write and delete keys under /t/`)
	if n := strings.Count(out, "\nfail  "); n != 1 {
		t.Errorf("%d failed checks; want 1", n)
	}
}

// TestDoctorTLS: a mutual-TLS etcd passes; the test CA's certificates
// expire within a day, which is a warning each.
func TestDoctorTLS(t *testing.T) {
	certs, err := etcdtest.WriteCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := startEtcd(t, etcdtest.WithTLS(certs, true))
	code, out, _ := doctor(t, "--etcd-endpoints", srv.Endpoint, "--etcd-cacert", certs.CA, "--etcd-cert", certs.ClientCert,
		"--etcd-key", certs.ClientKey, "doctor")
	if code != 0 {
		t.Errorf("exit %d; want 0", code)
	}
	wantLine(t, out, "etcd ca-cert", "warn", `^`+regexp.QuoteMeta(certs.CA)+`: "coord test CA" expires on .*, in 2[0-9]h[0-9]+m$`)
	wantLine(t, out, "etcd client-cert", "warn", `: "client" expires on `)
	wantLine(t, out, "etcd "+srv.Endpoint+" cert", "warn", `^server certificate: "server" expires on `)
	wantLine(t, out, "etcd "+srv.Endpoint, "pass", `^etcd 3\.`)
	wantLine(t, out, "etcd auth", "pass", `^auth is off; clients need a certificate the CA signed$`)
	wantLine(t, out, "etcd prefix", "pass", `^user "client" may read, write and delete keys under /toolchainkit/`)
}

// TestDoctorExpiredServerCert: a server certificate that has expired fails,
// and so does the endpoint that no client can trust.
func TestDoctorExpiredServerCert(t *testing.T) {
	certs, err := etcdtest.WriteCerts(t.TempDir(), etcdtest.ExpiredServer())
	if err != nil {
		t.Fatal(err)
	}
	srv := startEtcd(t, etcdtest.WithTLS(certs, false))
	code, out, _ := doctor(t, "--etcd-endpoints", srv.Endpoint, "--etcd-cacert", certs.CA, "--etcd-dial-timeout", "2s", "doctor")
	if code != 1 {
		t.Errorf("exit %d; want 1", code)
	}
	wantLine(t, out, "etcd "+srv.Endpoint+" cert", "fail", `^server certificate: "server" expired on .* \(1h0m ago\)$`)
	if !strings.Contains(out, "fix: have etcd's server certificate reissued") {
		t.Errorf("no fix for the expired certificate")
	}
}

// TestDoctorExpiredClientCert: the client certificate has expired.
func TestDoctorExpiredClientCert(t *testing.T) {
	certs, err := etcdtest.WriteCerts(t.TempDir(), etcdtest.ExpiredClient())
	if err != nil {
		t.Fatal(err)
	}
	srv := startEtcd(t, etcdtest.WithTLS(certs, true))
	code, out, _ := doctor(t, "--etcd-endpoints", srv.Endpoint, "--etcd-cacert", certs.CA, "--etcd-cert", certs.ClientCert,
		"--etcd-key", certs.ClientKey, "--etcd-dial-timeout", "2s", "doctor")
	if code != 1 {
		t.Errorf("exit %d; want 1", code)
	}
	wantLine(t, out, "etcd client-cert", "fail", `^`+regexp.QuoteMeta(certs.ClientCert)+`: "client" expired on .* \(1h0m ago\)$`)
}

// TestDoctorPermission: a user who may not write under the prefix, or not
// even read, fails the prefix check, with the etcdctl commands that grant
// it; one who may passes.
func TestDoctorPermission(t *testing.T) {
	srv := startEtcd(t, etcdtest.FastAuth)
	root, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// A reader may read keys under /ro/ only.
	for _, step := range []func() error{
		func() error { _, err := root.UserAdd(ctx, "reader", "rpw"); return err },
		func() error { _, err := root.RoleAdd(ctx, "ro"); return err },
		func() error {
			_, err := root.RoleGrantPermission(ctx, "ro", "/ro/", clientv3.GetPrefixRangeEnd("/ro/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error { _, err := root.UserGrantRole(ctx, "reader", "ro"); return err },
		func() error { return etcdtest.EnableAuth(ctx, root, "rootpw", "lpw") },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	root.Close()

	for _, tt := range []struct {
		user, pass, prefix, status, msg string
	}{
		{"limited", "lpw", "/mine", "pass", `^user "limited" may read, write and delete keys under /mine/ \(wrote and deleted /mine/doctor/\S+-\d+\)$`},
		{"limited", "lpw", "/theirs", "fail", `^user "limited" may not read keys under /theirs/: etcdserver: permission denied$`},
		{"reader", "rpw", "/ro", "fail", `^user "reader" may read but not write keys under /ro/: put /ro/doctor/\S+: etcdserver: permission denied$`},
	} {
		t.Run(tt.user+tt.prefix, func(t *testing.T) {
			code, out, _ := doctor(t, "--etcd-endpoints", srv.Endpoint, "--etcd-user", tt.user, "--etcd-password", tt.pass, "--etcd-prefix", tt.prefix, "doctor")
			if want := map[string]int{"pass": 0, "fail": 1}[tt.status]; code != want {
				t.Errorf("exit %d; want %d", code, want)
			}
			wantLine(t, out, "etcd auth", "pass", `^auth is on; signed in as user "`+tt.user+`"$`)
			wantLine(t, out, "etcd lease", "pass", `and revoked it$`)
			wantLine(t, out, "etcd prefix", tt.status, tt.msg)
			if tt.status == "fail" && !strings.Contains(out, "fix: as etcd's root: etcdctl role add coord; etcdctl role grant-permission coord readwrite --prefix "+tt.prefix+"/; etcdctl user grant-role "+tt.user+" coord") {
				t.Errorf("no etcdctl fix")
			}
			if strings.Contains(out, tt.pass+" ") || strings.Contains(out, tt.pass+")") {
				t.Errorf("the report shows the password")
			}
		})
	}
	code, out, _ := doctor(t, "--etcd-endpoints", srv.Endpoint, "--etcd-user", "limited", "--etcd-password", "wrong", "--etcd-prefix", "/mine", "doctor")
	if code != 1 {
		t.Errorf("wrong password: exit %d; want 1", code)
	}
	wantLine(t, out, "etcd "+srv.Endpoint, "fail", `^etcd refuses the client: etcdserver: authentication failed`)
}

// TestDoctorSlowEtcd: a round trip over a third of the TTL fails. The
// proxy holds each read 400ms each way: 800ms at least, over 2s/3.
func TestDoctorSlowEtcd(t *testing.T) {
	srv := startEtcd(t)
	p, err := etcdtest.StartProxy(strings.TrimPrefix(srv.Endpoint, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	p.Delay(400 * time.Millisecond)
	code, out, _ := doctor(t, "--etcd-endpoints", p.Endpoint(), "--etcd-ttl", "2s", "--etcd-dial-timeout", "30s", "doctor")
	if code != 1 {
		t.Errorf("exit %d; want 1", code)
	}
	wantLine(t, out, "etcd "+p.Endpoint()+" rtt", "fail", `^round trip \S+ \(median of 3\), lease TTL 2s: more than a third of the TTL, leases may expire under their holders$`)
}

func startEtcd(t *testing.T, opts ...etcdtest.Option) *etcdtest.Server {
	t.Helper()
	srv, err := etcdtest.StartEmbedded(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	return srv
}

// envPairDir makes TestDoctorPairSide run `coord doctor --pair ID` with
// this lock directory (ID in envPairID), as one side of a pair test.
const (
	envPairDir = "COORD_TEST_DOCTOR_PAIR_DIR"
	envPairID  = "COORD_TEST_DOCTOR_PAIR_ID"
)

// TestDoctorPairSide is one side of a pair test, in a process of its own.
func TestDoctorPairSide(t *testing.T) {
	dir := os.Getenv(envPairDir)
	if dir == "" {
		t.Skip("a helper process of TestDoctorPair")
	}
	code := coordcli.Run(context.Background(), []string{"coord", "--config", os.DevNull, "--lock-dir", dir, "doctor", "--pair", os.Getenv(envPairID), "--timeout", "1m"},
		os.Stdout, os.Stderr, nil)
	os.Exit(code)
}

// pairSides runs a pair test between two processes, one on each
// directory, and returns their exit statuses and outputs.
func pairSides(t *testing.T, id, dirA, dirB string) (codes [2]int, outs [2]string) {
	t.Helper()
	var cmds [2]*exec.Cmd
	var bufs [2]bytes.Buffer
	for i, dir := range []string{dirA, dirB} {
		cmds[i] = exec.Command(os.Args[0], "-test.run=^TestDoctorPairSide$", "-test.count=1")
		cmds[i].Env = append(os.Environ(), envPairDir+"="+dir, envPairID+"="+id)
		cmds[i].Stdout, cmds[i].Stderr = &bufs[i], &bufs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i, cmd := range cmds {
		err := cmd.Wait()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		codes[i], outs[i] = cmd.ProcessState.ExitCode(), bufs[i].String()
		t.Logf("side %d: exit %d\n%s", i, codes[i], outs[i])
	}
	return codes, outs
}

// TestDoctorPair: two processes that share a directory find that its
// file locks exclude them both ways, and leave nothing behind.
func TestDoctorPair(t *testing.T) {
	dir := t.TempDir()
	codes, outs := pairSides(t, "same", dir, dir)
	re := regexp.MustCompile(`(?m)^coord doctor: file locks in ` + regexp.QuoteMeta(dir) + ` exclude between pid \d+ on \S+ and pid \d+ on \S+, both ways$`)
	for i := range 2 {
		if codes[i] != 0 || !re.MatchString(outs[i]) {
			t.Errorf("side %d: exit %d; want 0 and the verdict that locks exclude", i, codes[i])
		}
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("left behind: %v (%v)", ents, err)
	}
}

// TestDoctorPairNotExcluding: bindfs shows a directory at a second path;
// without --enable-lock-forwarding its FUSE daemon keeps flock to itself,
// so a lock taken through it does not exclude one taken on the directory
// itself (as NFS with local_lock=flock does between hosts). The pair test
// says so; with lock forwarding it finds that they exclude.
func TestDoctorPairNotExcluding(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting bindfs needs root")
	}
	if _, err := exec.LookPath("bindfs"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("bindfs is not installed; .ci/run installs it")
		}
		t.Skip("bindfs is not installed (apt-get install bindfs)")
	}
	for _, tt := range []struct {
		name    string
		opts    []string
		code    int
		verdict string
	}{
		{"local-locks", nil, 1, ` do NOT exclude between pid \d+ on \S+ and pid \d+ on \S+: pid \d+ on \S+ took the lock while pid \d+ on \S+ held it$`},
		{"forwarded", []string{"--multithreaded", "--enable-lock-forwarding"}, 0, ` exclude between pid \d+ on \S+ and pid \d+ on \S+, both ways$`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			real, view := filepath.Join(tmp, "real"), filepath.Join(tmp, "view")
			for _, d := range []string{real, view} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if out, err := exec.Command("bindfs", append(tt.opts, real, view)...).CombinedOutput(); err != nil {
				t.Fatalf("bindfs: %v: %s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", view).Run() })
			codes, outs := pairSides(t, tt.name, real, view)
			for i, dir := range []string{real, view} {
				re := regexp.MustCompile(`(?m)^coord doctor: file locks in ` + regexp.QuoteMeta(dir) + tt.verdict)
				if codes[i] != tt.code || !re.MatchString(outs[i]) {
					t.Errorf("side %d: exit %d; want %d and a verdict matching %q", i, codes[i], tt.code, re)
				}
			}
			if ents, err := os.ReadDir(real); err != nil || len(ents) != 0 {
				t.Errorf("left behind: %v (%v)", ents, err)
			}
		})
	}
}

// TestDoctorHostileValues: what a user types into doctor's own flags
// never panics and is refused in one escaped line.
func TestDoctorHostileValues(t *testing.T) {
	for _, args := range [][]string{
		{"doctor", "--pair", ""},
		{"doctor", "--pair", "../../etc"},
		{"doctor", "--pair", "a/b"},
		{"doctor", "--pair", ".hidden"},
		{"doctor", "--pair", strings.Repeat("x", 65)},
		{"doctor", "--pair", "\x1b[2J"},
		{"doctor", "--pair", "ok", "--timeout", "-1s"},
		{"doctor", "--pair", "ok", "--timeout", "soon"},
		{"doctor", "extra"},
	} {
		code, out, stderr := doctor(t, append([]string{"--lock-dir", t.TempDir()}, args...)...)
		if code != 64 || out != "" || strings.Count(stderr, "\n") != 1 || strings.ContainsRune(stderr, 0x1b) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 64 and one escaped line on stderr", args, code, out, stderr)
		}
	}
}

// TestDoctorEtcd34: Debian's etcd 3.4 has no AuthStatus; doctor tells
// whether auth is on by whether it may list the users.
func TestDoctorEtcd34(t *testing.T) {
	if etcdtest.SystemBinary() == "" {
		t.Skip("no etcd binary installed (apt-get install etcd-server)")
	}
	srv, err := etcdtest.StartSystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	code, out, _ := doctor(t, "--etcd-endpoints", srv.Endpoint, "doctor")
	if code != 0 {
		t.Errorf("exit %d; want 0", code)
	}
	wantLine(t, out, "etcd "+srv.Endpoint, "pass", `^etcd 3\.4\.`)
	wantLine(t, out, "etcd auth", "warn", `^auth is off: any client`)
	wantLine(t, out, "etcd prefix", "pass", `^this client may read, write and delete keys under /toolchainkit/`)
}

// TestDoctorHostileEndpoints: endpoints that are not scheme://host:port
// fail one line each, escaped, and are never dialled.
func TestDoctorHostileEndpoints(t *testing.T) {
	eps := []string{"http://[::1", "ftp://x:1", "h:1/path", "http://u:p@h:1", "\x1b[2J:1", "h:1?q=1"}
	code, out, _ := doctor(t, "--etcd-endpoints", strings.Join(eps, ","), "doctor")
	if code != 1 || strings.ContainsRune(out, 0x1b) {
		t.Errorf("exit %d; want 1, and no escape character in the report", code)
	}
	if n := strings.Count(out, ": want scheme://host:port\n"); n != len(eps) {
		t.Errorf("%d endpoints refused as malformed; want %d", n, len(eps))
	}
	wantLine(t, out, "etcd auth", "skip", `^no endpoint answered$`)
	if strings.Contains(out, "u:p@") {
		t.Errorf("the report shows the password written into an endpoint")
	}
}
