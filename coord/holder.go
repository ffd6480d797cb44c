package coord

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Holder describes who holds a lock. Backends store it with the lock so
// that waiters and `coord status` can name the holder.
type Holder struct {
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Command  []string  `json:"cmd,omitempty"`
	Dest     string    `json:"dest,omitempty"`     // a download's destination
	Progress *Progress `json:"progress,omitempty"` // a download's progress
	Since    time.Time `json:"-"`                  // when it acquired; zero if unknown
	Token    int64     `json:"-"`
	Backend  string    `json:"-"`
	Shared   bool      `json:"-"`
}

// Progress is how far a download has come, in bytes; Total is 0 if
// unknown. Rate is the downloader's recent speed in bytes per second, as
// SetProgress measured it; 0 until it has two reports.
type Progress struct {
	Done  int64   `json:"done"`
	Total int64   `json:"total,omitempty"`
	Rate  float64 `json:"rate,omitempty"`
}

// String says how far a download has come, for people: `1.2 GiB of 2.0
// GiB (60%), 15.3 MiB/s, 53s left`; the total, percent and time left only
// when the total is known and not yet passed.
func (p Progress) String() string {
	s := bytesString(p.Done)
	known := p.Total > 0 && p.Done <= p.Total
	if known {
		s += fmt.Sprintf(" of %s (%d%%)", bytesString(p.Total), p.Done*100/p.Total)
	}
	if p.Rate >= 1 {
		s += fmt.Sprintf(", %s/s", bytesString(int64(p.Rate)))
		if known {
			left := time.Duration(float64(p.Total-p.Done) / p.Rate * float64(time.Second))
			s += fmt.Sprintf(", %s left", left.Round(time.Second))
		}
	}
	return s
}

// Bounds of a stored record: the command line is clipped to maxCommand
// bytes, and a record still over maxRecord (JSON escaping can make it six
// times longer) drops the command, then the destination.
const (
	maxCommand = 2048
	maxRecord  = 8 << 10
)

// record encodes the parts of h that the backend stores.
func (h Holder) record() []byte {
	h.Command = clipCommand(h.Command)
	b, _ := json.Marshal(h) // strings and numbers: cannot fail
	if len(b) > maxRecord {
		h.Command = []string{"…"}
		b, _ = json.Marshal(h)
	}
	if len(b) > maxRecord {
		h.Dest = "…"
		b, _ = json.Marshal(h)
	}
	return b
}

func clipCommand(cmd []string) []string {
	var out []string
	n := 0
	for _, a := range cmd {
		if n += len(a) + 3; n > maxCommand { // 3: quotes and comma
			return append(out, "…")
		}
		out = append(out, a)
	}
	return out
}

// parseRecord decodes a stored record; nil for an empty or corrupt one.
func parseRecord(b []byte) *Holder {
	if len(b) == 0 {
		return nil
	}
	var h struct {
		Holder
		Since time.Time `json:"since"` // in etcd records only
	}
	if err := json.Unmarshal(b, &h); err != nil || h.PID <= 0 {
		return nil
	}
	h.Holder.Since = h.Since
	return &h.Holder
}

// String says who holds the lock, for messages: `pid 4242 on host ci-7
// for 12s (token 9), downloaded 1.2 GiB of 2.0 GiB (60%), 15.3 MiB/s, 53s
// left`.
func (h Holder) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pid %d on host %s", h.PID, h.Host)
	if !h.Since.IsZero() {
		fmt.Fprintf(&b, " for %s", time.Since(h.Since).Round(100*time.Millisecond))
	}
	if h.Token > 0 {
		fmt.Fprintf(&b, " (token %d)", h.Token)
	}
	if p := h.Progress; p != nil {
		fmt.Fprintf(&b, ", downloaded %s", p)
	}
	return b.String()
}

func bytesString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
