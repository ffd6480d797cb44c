package etcdlock

import (
	"strings"
)

// EscapeName maps a lock name or download id to one key segment: '%' and
// '/' are written %25 and %2F, everything else stays, so that names without
// either are unchanged (and `etcdctl lock <prefix>/locks/NAME` meets
// `coord lock NAME`) and no name's keys can fall under another's prefix.
func EscapeName(name string) string {
	if !strings.ContainsAny(name, "%/") {
		return name
	}
	r := strings.NewReplacer("%", "%25", "/", "%2F")
	return r.Replace(name)
}

// unescapeName undoes EscapeName. It reports false for a segment that
// EscapeName never writes (a key put by another tool, or planted), so that
// no such key passes for another name's lock.
func unescapeName(seg string) (string, bool) {
	name := seg
	if strings.Contains(seg, "%") {
		name = strings.NewReplacer("%2F", "/", "%25", "%").Replace(seg)
	}
	return name, EscapeName(name) == seg
}
