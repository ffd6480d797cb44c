package coordcli

import (
	"strings"
	"testing"
	"time"
)

// TestJudgeFS: NFS whose flock is host-local fails, other network or FUSE
// file systems warn, local ones pass. (No
// NFS server runs here: the mount is as /proc/mounts would show it.)
func TestJudgeFS(t *testing.T) {
	for _, tt := range []struct {
		info   fsInfo
		opts   string
		status string
		msg    string
	}{
		{fsInfo{typ: "nfs4", network: true, nfs: true}, "rw,vers=4.2,local_lock=none", checkWarn, "cannot prove"},
		{fsInfo{typ: "nfs", network: true, nfs: true}, "rw,vers=3,local_lock=all", checkFail, "mounted with local_lock=all: flock there is host-local"},
		{fsInfo{typ: "nfs", network: true, nfs: true}, "rw,vers=3,local_lock=flock", checkFail, "mounted with local_lock=flock"},
		{fsInfo{typ: "nfs", network: true, nfs: true}, "rw,nolock", checkFail, "mounted with nolock"},
		{fsInfo{typ: "cifs", network: true}, "rw", checkWarn, "a network or FUSE file system"},
		{fsInfo{typ: "fuse.sshfs", network: true}, "rw", checkWarn, "on fuse.sshfs"},
		{fsInfo{typ: "ext4"}, "rw,relatime", checkPass, "a local file system"},
		{fsInfo{typ: "overlay"}, "rw", checkPass, "a local file system"},
	} {
		var r report
		judgeFS("/locks", tt.info, mountInfo{point: "/", typ: tt.info.typ, options: strings.Split(tt.opts, ",")}, &r)
		if len(r.checks) != 1 || r.checks[0].Status != tt.status || !strings.Contains(r.checks[0].Message, tt.msg) {
			t.Errorf("%s (%s): %+v; want %s, %q", tt.info.typ, tt.opts, r.checks, tt.status, tt.msg)
		}
		if tt.status != checkPass && r.checks[0].Fix == "" {
			t.Errorf("%s (%s): no fix", tt.info.typ, tt.opts)
		}
	}
}

// TestRTTCheck: a round trip over a tenth of the TTL warns, over a third
// fails.
func TestRTTCheck(t *testing.T) {
	for _, tt := range []struct {
		rtt, ttl time.Duration
		want     string
	}{
		{time.Millisecond, 10 * time.Second, checkPass},
		{time.Second, 10 * time.Second, checkPass},
		{1001 * time.Millisecond, 10 * time.Second, checkWarn},
		{3334 * time.Millisecond, 10 * time.Second, checkFail},
		{700 * time.Millisecond, 2 * time.Second, checkFail},
	} {
		var r report
		rttCheck("rtt", tt.rtt, tt.ttl, &r)
		if r.checks[0].Status != tt.want {
			t.Errorf("rtt %s, TTL %s: %s; want %s", tt.rtt, tt.ttl, r.checks[0].Status, tt.want)
		}
	}
}

func TestBytesText(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 1 << 30: "1 GiB", 72_800 << 20: "71.1 GiB", 300 << 30: "300 GiB"} {
		if got := bytesText(n); got != want {
			t.Errorf("bytesText(%d) = %q; want %q", n, got, want)
		}
	}
}

// TestSpaceCheck: nearly full warns, full fails; a small file system of
// its own is judged by its share free.
func TestSpaceCheck(t *testing.T) {
	const gib = 1 << 30
	for _, tt := range []struct {
		free, total uint64
		want        string
	}{
		{100 * gib, 250 * gib, checkPass},
		{10 * gib, 250 * gib, checkWarn}, // 4%
		{gib / 2, 10 * gib, checkWarn},
		{15 << 20, 16 << 20, checkPass},
		{0, 16 << 20, checkFail},
	} {
		var r report
		spaceCheck("/locks", fsInfo{free: tt.free, total: tt.total, known: true}, &r)
		if r.checks[0].Status != tt.want {
			t.Errorf("%d free of %d: %+v; want %s", tt.free, tt.total, r.checks[0], tt.want)
		}
	}
}
