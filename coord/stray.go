package coord

import (
	"fmt"
	"strings"
)

// Stray is a key under a lock's etcd prefix that no lock holder wrote
// (coord, etcdctl lock and concurrency.Mutex name their keys by their
// lease): another client's put. It blocks the lock as a holder would.
type Stray struct {
	Key   string // the etcd key
	Lease int64  // its lease; 0 if it has none: then it never expires
}

// String says which key blocks, whether it can expire and how to remove
// it. Control characters in the key are escaped.
func (s *Stray) String() string {
	msg := fmt.Sprintf("etcd key %q, put by another client", s.Key)
	if s.Lease == 0 {
		msg += ", has no lease and never expires"
	} else {
		msg += fmt.Sprintf(" on lease %x, stays while that lease lives", s.Lease)
	}
	return msg + "; remove it with: " + s.RemoveCommand()
}

// RemoveCommand is the etcdctl command that deletes the key, quoted for a
// POSIX shell (bash's $'…' when the key has bytes that are not printable
// ASCII).
func (s *Stray) RemoveCommand() string { return "etcdctl del " + shellQuote(s.Key) }

func shellQuote(s string) string {
	plain := true
	for i := 0; i < len(s); i++ {
		plain = plain && s[i] >= 0x20 && s[i] < 0x7f
	}
	if plain {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	var b strings.Builder
	b.WriteString("$'")
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\'' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}
