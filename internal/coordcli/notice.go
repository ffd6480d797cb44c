package coordcli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/toolchainkit/coord/coord"
)

// How soon a waiting coord first says what it waits for, how often it looks
// again, and how often it repeats itself when nothing changed; on a
// terminal, how often its one live line is redrawn.
const (
	noticeAfter   = time.Second
	noticeCheck   = 2 * time.Second
	noticeRepeat  = 10 * time.Second
	noticeLive    = time.Second
	noticeTimeout = time.Second
)

// waitNotice tells w, once a wait has lasted noticeAfter, what coord waits
// for, who holds it and how far their download has come. On a terminal it
// keeps one line up to date in place and clears it when the wait ends;
// elsewhere (a CI log) it writes a line when the holder changes and every
// noticeRepeat, never falling silent. It looks at the holder record only
// to inform the user; the wait itself is woken by the backend. The
// returned stop waits for the notice goroutine to end.
func waitNotice(ctx context.Context, m *coord.Manager, name, what string, timeout time.Duration, w io.Writer) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	width, live := terminalWidth(w)
	drawn := false
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
			msg := noticeLine(what, s, err, time.Since(start), timeout)
			if live {
				fmt.Fprint(w, "\r\033[K"+clip(msg, width-1))
				drawn = true
				t.Reset(noticeLive)
				continue
			}
			key := describeHolder(s, err)
			if s.Holder != nil { // the same holder: do not repeat for its clock
				key = fmt.Sprintf("%d@%s#%d", s.Holder.PID, s.Holder.Host, s.Holder.Token)
			}
			if key != last || time.Since(lastAt) >= noticeRepeat {
				fmt.Fprintln(w, msg)
				last, lastAt = key, time.Now()
			}
			t.Reset(noticeCheck)
		}
	}()
	return func() {
		cancel()
		<-done
		if drawn {
			fmt.Fprint(w, "\r\033[K")
		}
	}
}

// noticeLine is what a waiter shows: `coord: waiting 12s of 30m0s for
// download of "llvm" by pid 4242 on ci-7: 1.2 GiB of 2.0 GiB (60%), 15.3
// MiB/s, 53s left`; for a lock, who holds it.
func noticeLine(what string, s coord.Status, err error, waited, timeout time.Duration) string {
	msg := "coord: waiting " + waited.Round(time.Second).String()
	if timeout > 0 {
		msg += " of " + timeout.String()
	}
	msg += " for " + what
	// A holder record is anyone's to write: Printable.
	if h := s.Holder; err == nil && h != nil && h.Progress != nil {
		return msg + " " + Printable(fmt.Sprintf("by pid %d on %s: %s", h.PID, h.Host, h.Progress))
	}
	return msg + ": " + Printable(describeHolder(s, err))
}

// terminalWidth reports whether w is a terminal, and its width in columns
// (80 if it does not say).
func terminalWidth(w io.Writer) (int, bool) {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0, false
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil || width <= 0 {
		width = 80
	}
	return width, true
}

// clip shortens s to at most n runes, marking the cut with "…", so that a
// line redrawn in place never wraps.
func clip(s string, n int) string {
	r := []rune(s)
	if n < 1 || len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
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
