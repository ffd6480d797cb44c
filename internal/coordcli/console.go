package coordcli

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// consoleCore writes log entries as coord's own lines, beside the
// "coord: " of its messages (--log-format console, the default):
//
//	coord: warning: destination existed without a completion marker; moved it aside (dest=/x, moved_to=/y)
//
// The level is a word (error, warning, info, debug; DPanic and above say
// error); a named logger's name follows it (etcd-client: ...); fields are
// key=value in the order given, a list [a b], a string quoted as Go quotes it when it
// would not print as it is (see Printable) or holds a space or one of
// `"(),=`. No time: coord's lines are read as they come; --log-format
// json keeps zap's JSON, times and all.
type consoleCore struct {
	zapcore.LevelEnabler
	out    zapcore.WriteSyncer
	fields []zapcore.Field // from With
}

func newConsoleCore(out zapcore.WriteSyncer, lvl zapcore.LevelEnabler) zapcore.Core {
	return &consoleCore{LevelEnabler: lvl, out: zapcore.Lock(out)}
}

func (c *consoleCore) With(fields []zapcore.Field) zapcore.Core {
	return &consoleCore{LevelEnabler: c.LevelEnabler, out: c.out, fields: append(slices.Clip(c.fields), fields...)}
}

func (c *consoleCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *consoleCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	var b strings.Builder
	b.WriteString("coord: ")
	b.WriteString(levelWord(e.Level))
	b.WriteString(": ")
	if e.LoggerName != "" {
		b.WriteString(Printable(e.LoggerName))
		b.WriteString(": ")
	}
	b.WriteString(Printable(e.Message))
	var kvs []string
	ns := "" // the namespace that the fields so far opened: "a.b."
	for _, f := range append(slices.Clip(c.fields), fields...) {
		if f.Type == zapcore.NamespaceType {
			ns += f.Key + "."
			continue
		}
		enc := zapcore.NewMapObjectEncoder()
		f.AddTo(enc)
		for _, k := range fieldKeys(f, enc.Fields) {
			kvs = appendKV(kvs, ns+k, enc.Fields[k])
		}
	}
	if len(kvs) > 0 {
		b.WriteString(" (")
		b.WriteString(strings.Join(kvs, ", "))
		b.WriteString(")")
	}
	b.WriteString("\n")
	_, err := c.out.Write([]byte(b.String()))
	return err
}

func (c *consoleCore) Sync() error { return c.out.Sync() }

// levelWord is the word for l in coord's lines.
func levelWord(l zapcore.Level) string {
	switch {
	case l >= zapcore.ErrorLevel:
		return "error"
	case l == zapcore.WarnLevel:
		return "warning"
	case l == zapcore.InfoLevel:
		return "info"
	}
	return "debug"
}

// fieldKeys are the keys that field f put in m: its own key first, then
// any other (zap.Error's errorVerbose), sorted.
func fieldKeys(f zapcore.Field, m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != f.Key {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	if _, ok := m[f.Key]; ok {
		keys = slices.Insert(keys, 0, f.Key)
	}
	return keys
}

// appendKV appends key=value; a namespace or an object's keys are dotted:
// ns.key=value.
func appendKV(kvs []string, key string, v any) []string {
	if m, ok := v.(map[string]any); ok {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			kvs = appendKV(kvs, key+"."+k, m[k])
		}
		return kvs
	}
	return append(kvs, quoted(key)+"="+fieldValue(v))
}

// fieldValue renders a field's value on one line.
func fieldValue(v any) string {
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case error:
		s = v.Error()
	case time.Duration:
		return v.String()
	case time.Time:
		return v.Format(time.RFC3339Nano)
	case []any:
		items := make([]string, len(v))
		for i, item := range v {
			items[i] = fieldValue(item)
		}
		return "[" + strings.Join(items, " ") + "]"
	case fmt.Stringer:
		s = v.String()
	case bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, uintptr, float32, float64, complex64, complex128:
		return fmt.Sprint(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			s = fmt.Sprint(v)
		} else {
			s = string(b)
		}
	}
	return quoted(s)
}

// quoted is s as a key or value: quoted as Go quotes strings if it is
// empty, would not print as it is (see Printable) or holds a space or one
// of `"(),=`.
func quoted(s string) string {
	if s == "" || Printable(s) != s || strings.ContainsAny(s, " \"(),=") {
		return strconv.Quote(s)
	}
	return s
}
