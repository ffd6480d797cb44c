package etcdlock

import (
	"strings"
	"testing"
)

// FuzzEscapeName checks that names map to distinct key segments that stay
// under the prefix: no '/', and no lock's keys under another's. etcd keys
// are flat byte strings, so "..", "." or NUL in a segment lead nowhere and
// stay as they are (`etcdctl lock <prefix>/locks/..` meets `coord lock ..`).
// It also feeds unescapeName arbitrary segments, as List does with keys
// that anyone with write access to the prefix can put.
// testdata/fuzz/FuzzEscapeName holds hostile seeds.
func FuzzEscapeName(f *testing.F) {
	for _, s := range []string{"a", "a/b", "%2F", "a%", "%%2F/", "/", "..", "\x00"} {
		f.Add(s, s+"/")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		// A planted key segment: no panic, and a name only if EscapeName
		// spells it so.
		if n, ok := unescapeName(a); ok && EscapeName(n) != a {
			t.Fatalf("unescapeName(%q) = %q, which EscapeName spells %q", a, n, EscapeName(n))
		}
		ea, eb := EscapeName(a), EscapeName(b)
		if len(ea) > 3*len(a) {
			t.Fatalf("EscapeName(%d bytes) = %d bytes", len(a), len(ea))
		}
		if key := "/p/locks/" + ea + "/"; !strings.HasPrefix(key, "/p/locks/") || strings.Count(key, "/") != 4 {
			t.Fatalf("key %q of %q is not one segment under the prefix", key, a)
		}
		if strings.Contains(ea, "/") {
			t.Fatalf("EscapeName(%q) = %q has a '/'", a, ea)
		}
		if !strings.ContainsAny(a, "%/") && ea != a {
			t.Fatalf("EscapeName(%q) = %q; want it unchanged", a, ea)
		}
		if n, ok := unescapeName(ea); !ok || n != a {
			t.Fatalf("unescapeName(EscapeName(%q)) = %q, %v", a, n, ok)
		}
		if a != b && ea == eb {
			t.Fatalf("EscapeName(%q) = EscapeName(%q) = %q", a, b, ea)
		}
		// One lock's key prefix is never a prefix of another's.
		if a != b && strings.HasPrefix(eb+"/", ea+"/") {
			t.Fatalf("keys of %q fall under %q's prefix", b, a)
		}
	})
}
