package coordcli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/toolchainkit/coord/coord"
)

// How soon a waiting coord first says what it waits for, how often it looks
// again, and how often it repeats itself when nothing changed.
const (
	noticeAfter   = time.Second
	noticeCheck   = 2 * time.Second
	noticeRepeat  = 30 * time.Second
	noticeTimeout = time.Second
)

// waitNotice tells stderr, once a wait has lasted noticeAfter, what coord
// waits for and who holds it, and again when the holder changes. It looks
// at the holder record only to inform the user; the wait itself is woken by
// the backend. The returned stop waits for the notice goroutine to end.
func waitNotice(ctx context.Context, m *coord.Manager, name, what string, timeout time.Duration, w io.Writer) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		var last string
		var lastAt time.Time
		t := time.NewTimer(noticeAfter)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			ictx, icancel := context.WithTimeout(ctx, noticeTimeout)
			s, err := m.Inspect(ictx, name)
			icancel()
			if ctx.Err() != nil {
				return
			}
			who := Printable(describeHolder(s, err)) // a holder record is anyone's to write
			key := who
			if s.Holder != nil { // the same holder: do not repeat for its clock
				key = fmt.Sprintf("%d@%s#%d", s.Holder.PID, s.Holder.Host, s.Holder.Token)
			}
			if key != last || time.Since(lastAt) >= noticeRepeat {
				msg := fmt.Sprintf("coord: waiting for %s: %s; waited %s", what, who, time.Since(start).Round(time.Second))
				if timeout > 0 {
					msg += fmt.Sprintf(" of %s", timeout)
				}
				fmt.Fprintln(w, msg)
				last, lastAt = key, time.Now()
			}
			t.Reset(noticeCheck)
		}
	}()
	return func() { cancel(); <-done }
}

// describeHolder says who holds a lock, as far as the backend knows.
func describeHolder(s coord.Status, err error) string {
	holders := pids(s.Holders)
	switch {
	case err != nil:
		return "holder unknown (" + err.Error() + ")"
	case s.Holder != nil:
		return "held by " + s.Holder.String()
	case s.Held && s.Shared && len(holders) > 0:
		return fmt.Sprintf("held in shared mode by pid %s", joinInts(holders))
	case s.Held && s.Shared:
		return "held in shared mode"
	case len(holders) > 0:
		return fmt.Sprintf("held by pid %s", joinInts(holders))
	}
	return "held by another process"
}

// pids returns the known process IDs of ps.
func pids(ps []coord.Process) []int {
	var out []int
	for _, p := range ps {
		if p.PID > 0 {
			out = append(out, p.PID)
		}
	}
	return out
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}
