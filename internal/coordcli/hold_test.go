//go:build unix

package coordcli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/toolchainkit/coord/internal/coordcli"
	"github.com/toolchainkit/coord/internal/exitcode"
)

// TestHostileHandles: what a user may pass as a handle to release, hold
// --status and run --held is refused with a usage error and one line,
// before any file is looked at: HOME stays empty.
func TestHostileHandles(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("COORD_CONFIG", os.DevNull)
	t.Setenv("COORD_HOLD", "")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	uid := strconv.Itoa(os.Getuid())
	id := strings.Repeat("0123456789abcdef", 2)
	for _, tc := range []struct {
		handle string
		want   string // in the message
	}{
		{"", "missing handle"},
		{"../../etc/passwd", "not a handle"},
		{"hold-" + uid + "-../../../etc@" + host, "bad hold id"},
		{"hold-" + uid + "-" + id + "/../x@" + host, "bad hold id"},
		{"hold-" + uid + "-" + strings.ToUpper(id) + "@" + host, "bad hold id"},
		{"hold-" + uid + "-" + id + "0@" + host, "bad hold id"},
		{"hold-" + uid + "-" + id + "\x00@" + host, "bad hold id"},
		{"hold-" + uid + "-" + id + "@" + host + "\x00", "bad host name"},
		{"hold-" + uid + "-" + id + "@" + host + "\n", "bad host name"},
		{"hold-" + uid + "-" + id + "@a/b", "bad host name"},
		{"hold-" + uid + "-" + id + "@", "bad host name"},
		{"hold-" + uid + "-" + id + "@\x1b[31m", "bad host name"},
		{"hold--1-" + id + "@" + host, "bad user id"},
		{"hold-+1-" + id + "@" + host, "bad user id"},
		{"hold-01-" + id + "@" + host, "bad user id"},
		{"hold-99999999999999999999-" + id + "@" + host, "bad user id"},
		{"hold-" + uid + "-" + id + "@" + strings.Repeat("h", 300), "longer than 300"},
		{strings.Repeat("\xff", 1<<20), "longer than 300"},
		{"hold-" + uid + "-" + id + "@not-" + host, "was made on host not-"},
		{"hold-4000000000-" + id + "@" + host, "belongs to user id 4000000000"},
	} {
		for _, args := range [][]string{
			{"coord", "release", tc.handle},
			{"coord", "hold", "--status", tc.handle},
			{"coord", "run", "--held", tc.handle, "--", "true"},
		} {
			var stdout, stderr bytes.Buffer
			code := coordcli.Run(context.Background(), args, &stdout, &stderr, nil)
			msg := stderr.String()
			if code != exitcode.Usage || !strings.Contains(msg, tc.want) || strings.Count(msg, "\n") != 1 || stdout.Len() != 0 {
				t.Errorf("%s %q: exit %d, stdout %q, stderr %q; want %d and one line with %q", args[1], tc.handle, code, stdout.String(), msg, exitcode.Usage, tc.want)
			}
			if regexp.MustCompile("[\x00-\x09\x0b-\x1f]").MatchString(msg) {
				t.Errorf("%s %q: a control character reached the message: %q", args[1], tc.handle, msg)
			}
		}
	}
	if entries, _ := os.ReadDir(home); len(entries) != 0 {
		t.Errorf("hostile handles made files in HOME: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(home, ".toolchainkit")); !os.IsNotExist(err) {
		t.Errorf("~/.toolchainkit: %v; want none", err)
	}
}
