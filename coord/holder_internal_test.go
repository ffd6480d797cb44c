package coord

import (
	"strings"
	"testing"
)

// Records come from files that anyone who can write the lock directory can
// change (and from etcd values anyone with write access to the prefix can
// put): parsing must never panic, what it accepts must round-trip, and what
// is shown of it stays bounded. testdata/fuzz/FuzzParseRecord holds hostile
// seeds: deep nesting, huge numbers, invalid UTF-8, truncated JSON.
//
// Nothing parses the completion marker (MarkerName): Complete only checks
// that a regular file of that name exists, so corrupt marker content cannot
// mislead it.
func FuzzParseRecord(f *testing.F) {
	f.Add(Holder{Host: "h", PID: 1, Command: []string{"a"}}.record())
	f.Add([]byte(`{"host":"h","pid":2,"progress":{"done":5,"total":10}}`))
	f.Add([]byte(`{"pid":-1}`))
	f.Add([]byte(`nul`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h := parseRecord(b)
		if h == nil {
			return
		}
		if h.PID <= 0 {
			t.Fatalf("accepted pid %d", h.PID)
		}
		_ = h.String()
		rec := h.record()
		if len(rec) > maxRecord+len(h.Host)*6 {
			t.Fatalf("record of %d bytes from a host of %d", len(rec), len(h.Host))
		}
		if again := parseRecord(rec); again == nil || again.PID != h.PID || again.Host != h.Host {
			t.Fatalf("record of %+v does not parse back: %+v", h, again)
		}
	})
}

func TestRecordBounded(t *testing.T) {
	h := Holder{Host: "h", PID: 1, Command: []string{strings.Repeat("\x00", 1<<16)}, Dest: strings.Repeat("\x01", 1<<16)}
	if n := len(h.record()); n > maxRecord {
		t.Fatalf("record of %d bytes; want at most %d", n, maxRecord)
	}
}
