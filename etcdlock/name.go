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

// unescapeName undoes EscapeName.
func unescapeName(seg string) string {
	if !strings.Contains(seg, "%") {
		return seg
	}
	r := strings.NewReplacer("%2F", "/", "%25", "%")
	return r.Replace(seg)
}
