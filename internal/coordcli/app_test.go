package coordcli

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/toolchainkit/coord/coord"
)

// TestPrintable: text that prints stays as it is, on one line; anything
// else is quoted and escaped, so no control character reaches a terminal.
func TestPrintable(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"build-cache", "build-cache"},
		{`C:\locks "x"`, `C:\locks "x"`},
		{"a\n  b\tc ", "a b c"},
		{"évité ✓", "évité ✓"},
		{"evil\x1b[31mred", `"evil\x1b[31mred"`},
		{"bad\xffbyte", `"bad\xffbyte"`},
		{"rtl\u202eoverride", `"rtl\u202eoverride"`},
		{"say \"hi\"\x07", `"say \"hi\"\a"`},
	} {
		if got := Printable(tt.in); got != tt.want {
			t.Errorf("Printable(%q) = %s; want %s", tt.in, got, tt.want)
		}
	}
}

// TestMessageNamesTheFlag: coord names its Config fields, the CLI the
// flags (and env vars) that set them, after the message.
func TestMessageNamesTheFlag(t *testing.T) {
	unavailable := fmt.Errorf("%w: etcd: down", coord.ErrBackendUnavailable)
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&coord.ConfigError{Field: "Endpoints", Err: unavailable}, "backend unavailable: etcd: down (--etcd-endpoints, COORD_ETCD_ENDPOINTS)"},
		{&coord.ConfigError{Field: "Cert", Err: unavailable}, "backend unavailable: etcd: down (--etcd-cert/--etcd-key)"},
		{&coord.ConfigError{Field: "CACert", Err: unavailable}, "backend unavailable: etcd: down (--etcd-cacert)"},
		{&coord.ConfigError{Field: "Fallback", Err: unavailable}, "backend unavailable: etcd: down (set --fallback=file or COORD_FALLBACK=file to lock on this host only)"},
		{fmt.Errorf("status: %w", &coord.ConfigError{Field: "Backend", Err: unavailable}), "status: backend unavailable: etcd: down (with --backend etcd coord never falls back to host-local locks)"},
		{&coord.ConfigError{Field: "Prefix", Err: unavailable}, "backend unavailable: etcd: down"},
		{errors.New("line\none"), "line one"},
		{fmt.Errorf("lock %q: %w", "a", context.Canceled), `lock "a": interrupted`},
		{fmt.Errorf("%w: x", context.Canceled), "interrupted: x"},
		{errors.New("context canceled, said the server"), "context canceled, said the server"},
	} {
		if got := message(tt.err); got != tt.want {
			t.Errorf("message(%v) = %q; want %q", tt.err, got, tt.want)
		}
	}
}
