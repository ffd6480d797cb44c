package etcdlock

import (
	"strings"
	"testing"
)

func FuzzEscapeName(f *testing.F) {
	for _, s := range []string{"a", "a/b", "%2F", "a%", "%%2F/", "/", "..", "\x00"} {
		f.Add(s, s+"/")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ea, eb := EscapeName(a), EscapeName(b)
		if strings.Contains(ea, "/") {
			t.Fatalf("EscapeName(%q) = %q has a '/'", a, ea)
		}
		if !strings.ContainsAny(a, "%/") && ea != a {
			t.Fatalf("EscapeName(%q) = %q; want it unchanged", a, ea)
		}
		if unescapeName(ea) != a {
			t.Fatalf("unescapeName(EscapeName(%q)) = %q", a, unescapeName(ea))
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
