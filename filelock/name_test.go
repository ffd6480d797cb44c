package filelock

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
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
		"LLVM", "llvm", "Llvm", "Con", "cOn.txt", "com1", "LPT9.x", "%4C", "%4c",
		strings.Repeat("X", 300), strings.Repeat("x", 299) + "X",
	}
	seen := map[string]string{} // by the lower-case file name
	for _, n := range names {
		f, err := FileName(n)
		if err != nil {
			t.Errorf("FileName(%q): %v", n, err)
			continue
		}
		checkFileName(t, n, f)
		checkCaseless(t, n, f)
		if prev, ok := seen[strings.ToLower(f)]; ok {
			t.Errorf("FileName(%q) and FileName(%q) differ only in case: %q", n, prev, f)
		}
		seen[strings.ToLower(f)] = n
		if back, ok := nameFromFile(f); !ok || (!strings.HasSuffix(back, "…") && back != n) {
			t.Errorf("nameFromFile(%q) = %q, %v; want %q", f, back, ok, n)
		}
	}
}

// TestFileNameSpelling pins the mapping: a lock file is found by its name,
// so a change of spelling is a change of protocol between coords on a host.
func TestFileNameSpelling(t *testing.T) {
	for _, tc := range []struct{ name, file, legacy string }{
		{"llvm", "llvm.lock", "llvm.lock"},
		{"toolchain/llvm-18.1.8", "toolchain%2Fllvm-18.1.8.lock", "toolchain%2Fllvm-18.1.8.lock"},
		{"LLVM", "%4C%4C%56%4D.lock", "LLVM.lock"},
		{"Llvm", "%4Clvm.lock", "Llvm.lock"},
		{"toolchain/LLVM-18", "toolchain%2F%4C%4C%56%4D-18.lock", "toolchain%2FLLVM-18.lock"},
		{"con", "%63on.lock", "%63on.lock"},
		{"CON", "%43%4F%4E.lock", "%43ON.lock"},
		{"a.", "a..lock", "a..lock"},
		{"a ", "a%20.lock", "a%20.lock"},
		{".x", "%2Ex.lock", "%2Ex.lock"},
		{"%4C", "%254%43.lock", "%254C.lock"},
	} {
		if f, err := FileName(tc.name); err != nil || f != tc.file {
			t.Errorf("FileName(%q) = %q, %v; want %q", tc.name, f, err, tc.file)
		}
		if f, _ := fileName(tc.name, true); f != tc.legacy {
			t.Errorf("legacy FileName(%q) = %q; want %q", tc.name, f, tc.legacy)
		}
		// status and gc find the files of this coord and of older ones.
		for _, f := range []string{tc.file, tc.legacy} {
			if back, ok := nameFromFile(f); !ok || back != tc.name {
				t.Errorf("nameFromFile(%q) = %q, %v; want %q", f, back, ok, tc.name)
			}
		}
	}
	long := strings.Repeat("AB", 100)
	for _, legacy := range []bool{false, true} {
		f, _ := fileName(long, legacy)
		if back, ok := nameFromFile(f); !ok || !strings.HasSuffix(back, "…") || !strings.HasPrefix(long, strings.TrimSuffix(back, "…")) {
			t.Errorf("nameFromFile(%q) = %q, %v; want a prefix of %q and \"…\"", f, back, ok, long)
		}
	}
	// Neither spelling, or a mix of both: planted, not a lock's.
	for _, f := range []string{"%61.lock", "%4c%4c%56%4d.lock", "L%4C%56%4D.lock", "%4CLVM.lock", "CON.lock", "%43%4FN.lock"} {
		if back, ok := nameFromFile(f); ok {
			t.Errorf("nameFromFile(%q) = %q; want refused", f, back)
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
}

// checkCaseless asserts that f has no upper-case letter outside a %XX
// escape, so that a file system that ignores case cannot merge two names.
func checkCaseless(t *testing.T, name, f string) {
	t.Helper()
	for i := 0; i < len(f); i++ {
		switch {
		case f[i] == '%':
			i += 2
		case isUpper(f[i]):
			t.Errorf("FileName(%q) = %q has an upper-case letter outside an escape", name, f)
		}
	}
	for _, r := range f {
		if r > unicode.MaxASCII || unicode.IsControl(r) || r == ' ' {
			t.Errorf("FileName(%q) = %q has byte %q", name, f, r)
		}
	}
}

// FuzzFileName checks that lock names map to harmless, distinct file names
// in the lock directory, distinct also where case is ignored (NTFS, APFS),
// and that nameFromFile gives the name back.
// testdata/fuzz/FuzzFileName holds hostile seeds.
func FuzzFileName(f *testing.F) {
	for _, s := range []string{"a", "../x", "\x00", "%41", "a~b", strings.Repeat("%", 100), "CON", ".", "..", "\xff\xfe"} {
		f.Add(s, s+"x")
	}
	for _, s := range []string{"LLVM", "CON", "Com1.x", "%4C", strings.Repeat("Ab", 150), "x/Y\xff"} {
		f.Add(s, strings.ToLower(s))
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		fa, erra := FileName(a)
		fb, errb := FileName(b)
		if (a == "" || len(a) > MaxNameLen) != (erra != nil) {
			t.Fatalf("FileName(%d bytes): %v", len(a), erra)
		}
		if erra != nil || errb != nil {
			return
		}
		checkFileName(t, a, fa)
		checkCaseless(t, a, fa)
		// The file is one entry of the lock directory, never the directory
		// itself, its parent or anything below or beside it.
		if dir := filepath.FromSlash("/locks"); filepath.Dir(filepath.Join(dir, fa)) != dir || strings.IndexByte(fa, 0) >= 0 {
			t.Fatalf("FileName(%q) = %q escapes the lock directory", a, fa)
		}
		if a != b && strings.EqualFold(fa, fb) {
			t.Fatalf("FileName(%q) = %q and FileName(%q) = %q differ at most in case", a, fa, b, fb)
		}
		if a == b && fa != fb {
			t.Fatalf("FileName(%q) is not deterministic: %q, %q", a, fa, fb)
		}
		back, ok := nameFromFile(fa)
		switch {
		case !ok:
			t.Fatalf("nameFromFile(%q) refuses FileName(%q)", fa, a)
		case strings.Contains(fa, "~"):
			if kept := strings.TrimSuffix(back, "…"); kept == back || !strings.HasPrefix(a, kept) {
				t.Fatalf("nameFromFile(%q) = %q; want a prefix of %q and \"…\"", fa, back, a)
			}
		case back != a:
			t.Fatalf("nameFromFile(%q) = %q; want %q", fa, back, a)
		}
	})
}

// FuzzNameFromFile feeds nameFromFile what anyone who can write the lock
// directory can put there: it must not panic, and it accepts only the file
// names that FileName produces (or produced before it escaped upper-case
// letters), so that `coord status` cannot be made to show a planted file
// as some other lock.
func FuzzNameFromFile(f *testing.F) {
	for _, s := range []string{"a.lock", "%61.lock", "%2f.lock", "%2F.lock", ".lock", "%.lock", "%4.lock", "a~.lock", "..lock", "CON.lock", "%43ON.lock", "LLVM.lock", "%4C%4C%56%4D.lock", "L%4CVM.lock"} {
		f.Add(s)
	}
	long, _ := FileName(strings.Repeat("x", 300))
	f.Add(long)
	long, _ = fileName(strings.Repeat("X", 300), true)
	f.Add(long)
	f.Fuzz(func(t *testing.T, file string) {
		name, ok := nameFromFile(file)
		if !ok {
			if name != "" {
				t.Fatalf("nameFromFile(%q) = %q, false; want no name", file, name)
			}
			return
		}
		checkFileName(t, name, file)
		if kept, short := strings.CutSuffix(name, "…"); short && strings.Contains(file, "~") {
			// A shortened name: FileName of any name with the kept prefix
			// that is long enough to be shortened starts the same way.
			esc, _, _ := strings.Cut(file, "~")
			got, _ := fileName(kept+strings.Repeat("%", 100), false)
			old, _ := fileName(kept+strings.Repeat("%", 100), true)
			if !strings.HasPrefix(got, esc) && !strings.HasPrefix(old, esc) {
				t.Fatalf("nameFromFile(%q) = %q, but names with that prefix map to %q (before: %q)", file, name, got, old)
			}
			return
		}
		got, err := fileName(name, false)
		old, _ := fileName(name, true)
		if err != nil || got != file && old != file {
			t.Fatalf("nameFromFile(%q) = %q, but FileName(%q) = %q, %v (before: %q)", file, name, name, got, err, old)
		}
	})
}

// FuzzDecodeHeader feeds decodeHeader the bytes of a lock file, which
// anyone who can write the lock directory can corrupt: it must not panic,
// and it returns a record only if length and checksum hold.
// testdata/fuzz/FuzzDecodeHeader holds truncated headers, huge lengths and
// bad checksums.
func FuzzDecodeHeader(f *testing.F) {
	f.Add(encodeHeader(nil, 7, testTime, []byte(`{"pid":1}`)))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeader(b)
		if len(b) >= 8 && h.token != binary.LittleEndian.Uint64(b) {
			t.Fatalf("token %d; want the first 8 bytes, %d", h.token, binary.LittleEndian.Uint64(b))
		}
		if err != nil || h.record == nil {
			if h.record != nil {
				t.Fatalf("record of %d bytes with error %v", len(h.record), err)
			}
			return
		}
		if len(h.record) > MaxRecordLen || len(h.record) > len(b)-hdrLen {
			t.Fatalf("record of %d bytes from %d bytes of header", len(h.record), len(b))
		}
		// What was accepted is what encodeHeader writes for it.
		if again := encodeHeader(nil, h.token, h.since, h.record); !bytes.Equal(again, b[:len(again)]) {
			t.Fatalf("accepted header %x does not re-encode: %x", b[:len(again)], again)
		}
	})
}

// FuzzHeaderRoundTrip checks that every header encodeHeader writes decodes
// to what was written, and that a reader who caught it half-written sees
// no record or an error, never a wrong record.
func FuzzHeaderRoundTrip(f *testing.F) {
	f.Add(uint64(1), int64(0), []byte(`{"pid":1}`), 10)
	f.Add(uint64(1<<63), int64(-1), []byte{}, 0)
	f.Fuzz(func(t *testing.T, token uint64, since int64, rec []byte, cut int) {
		if len(rec) > MaxRecordLen {
			rec = rec[:MaxRecordLen]
		}
		b := encodeHeader(nil, token, time.Unix(0, since), rec)
		h, err := decodeHeader(b)
		if err != nil || h.token != token {
			t.Fatalf("decodeHeader(encodeHeader(%d, %d, %q)) = %+v, %v", token, since, rec, h, err)
		}
		if len(rec) > 0 && (!bytes.Equal(h.record, rec) || h.since.UnixNano() != since) {
			t.Fatalf("record %q since %d came back as %q since %d", rec, since, h.record, h.since.UnixNano())
		}
		if cut < 0 || cut >= len(b) {
			return
		}
		if h, err := decodeHeader(b[:cut]); err == nil && h.record != nil && !bytes.Equal(h.record, rec) {
			t.Fatalf("%d of %d bytes decoded to record %q; want none", cut, len(b), h.record)
		}
	})
}

var testTime = time.Unix(1700000000, 5)
