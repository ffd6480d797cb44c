package coordcli

import (
	"strings"
	"testing"
)

// TestOSADistance: insertions, deletions, substitutions and adjacent
// transpositions count one each.
func TestOSADistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"lock", "lock", 0},
		{"lokc", "lock", 1},      // transposition
		{"timout", "timeout", 1}, // insertion
		{"timeoutt", "timeout", 1},
		{"shraed", "shared", 1},
		{"ca", "abc", 3}, // OSA, not Damerau: no substring edited twice
		{"", "gc", 2},
		{"frob", "lock", 4},
	} {
		if got := osaDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("osaDistance(%q, %q) = %d; want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestNearest: a slip gets the name meant; garbage, one or two letters,
// and an exact match get nothing.
func TestNearest(t *testing.T) {
	cmds := []string{"lock", "download", "status", "gc", "server", "version", "help", "h"}
	for _, tt := range []struct{ typed, want string }{
		{"lokc", "lock"},
		{"dowload", "download"},
		{"stauts", "status"},
		{"sever", "server"},
		{"verison", "version"},
		{"LOCK", "lock"}, // names are case-sensitive
		{"Lokc", "lock"},
		{"frob", ""},
		{"xyzzy", ""},
		{"v", ""},
		{"gx", ""},
		{"", ""},
		{"lock", ""},
		{"\x1b[31m", ""},
		{"ééé", ""},
		{strings.Repeat("lock", 1<<18), ""},
	} {
		if got := nearest(tt.typed, cmds); got != tt.want {
			t.Errorf("nearest(%q) = %q; want %q", tt.typed, got, tt.want)
		}
	}
}
