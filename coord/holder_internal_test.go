package coord

import (
	"strings"
	"testing"
)

// Records come from files that anyone who can write the lock directory can
// change: parsing must never panic, and what it accepts must round-trip.
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
		if again := parseRecord(h.record()); again == nil || again.PID != h.PID || again.Host != h.Host {
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
