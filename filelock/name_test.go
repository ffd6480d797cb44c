package filelock

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode"
)

func TestFileNameHostile(t *testing.T) {
	names := []string{
		"a", "registry", "toolchain/llvm-18.1.8-linux-x64", "../x", "/abs", ".", "..", "...",
		"a/../../b", "a\x00b", "\x01\x1b[31m", "\xff\xfe", "CON", "con.txt", "COM1", "a.", "a ",
		"%", "%25", "~", "a~b", strings.Repeat("x", 300), strings.Repeat("/", 4096),
		strings.Repeat("é", 100), "A", "x.lock", "\\", "C:\\x",
	}
	seen := map[string]string{}
	for _, n := range names {
		f, err := FileName(n)
		if err != nil {
			t.Errorf("FileName(%q): %v", n, err)
			continue
		}
		checkFileName(t, n, f)
		if prev, ok := seen[f]; ok {
			t.Errorf("FileName(%q) = FileName(%q) = %q", n, prev, f)
		}
		seen[f] = n
		if back, ok := nameFromFile(f); !ok || (!strings.HasSuffix(back, "…") && back != n) {
			t.Errorf("nameFromFile(%q) = %q, %v; want %q", f, back, ok, n)
		}
	}
}

func TestFileNameRefused(t *testing.T) {
	for _, n := range []string{"", strings.Repeat("x", MaxNameLen+1)} {
		if _, err := FileName(n); !errors.Is(err, ErrInvalidName) {
			t.Errorf("FileName(%d bytes) = %v; want ErrInvalidName", len(n), err)
		}
	}
}

// checkFileName asserts that f is one harmless path element.
func checkFileName(t *testing.T, name, f string) {
	t.Helper()
	switch {
	case f == "." || f == ".." || strings.HasPrefix(f, "."):
		t.Errorf("FileName(%q) = %q starts with a dot", name, f)
	case strings.ContainsAny(f, "/\\:"):
		t.Errorf("FileName(%q) = %q has a separator", name, f)
	case len(f) > maxFileLen:
		t.Errorf("FileName(%q) = %d bytes, over %d", name, len(f), maxFileLen)
	case !strings.HasSuffix(f, fileSuffix):
		t.Errorf("FileName(%q) = %q lacks %s", name, f, fileSuffix)
	case reservedOnWindows(f):
		t.Errorf("FileName(%q) = %q is a Windows device name", name, f)
	}
	for _, r := range f {
		if r > unicode.MaxASCII || unicode.IsControl(r) || r == ' ' {
			t.Errorf("FileName(%q) = %q has byte %q", name, f, r)
		}
	}
}

func FuzzFileName(f *testing.F) {
	for _, s := range []string{"a", "../x", "\x00", "%41", "a~b", strings.Repeat("%", 100), "CON"} {
		f.Add(s, s+"x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		fa, erra := FileName(a)
		fb, errb := FileName(b)
		if erra != nil || errb != nil {
			if (a == "" || len(a) > MaxNameLen) != (erra != nil) {
				t.Fatalf("FileName(%q): %v", a, erra)
			}
			return
		}
		checkFileName(t, a, fa)
		if a != b && fa == fb {
			t.Fatalf("FileName(%q) = FileName(%q) = %q", a, b, fa)
		}
		if back, ok := nameFromFile(fa); !ok || (!strings.HasSuffix(back, "…") && back != a) {
			t.Fatalf("nameFromFile(%q) = %q, %v; want %q", fa, back, ok, a)
		}
	})
}

func FuzzDecodeHeader(f *testing.F) {
	f.Add(encodeHeader(nil, 7, testTime, []byte(`{"pid":1}`)))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeader(b)
		if err == nil && h.record != nil && len(h.record) > MaxRecordLen {
			t.Fatalf("record of %d bytes", len(h.record))
		}
	})
}

var testTime = time.Unix(1700000000, 5)
