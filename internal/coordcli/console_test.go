package coordcli

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestConsoleCore: each entry is one line in coord's voice, its fields
// key=value in order, strings quoted when they would not read as one
// value, hostile text escaped.
func TestConsoleCore(t *testing.T) {
	for _, tt := range []struct {
		name string
		log  func(*zap.Logger)
		want string
	}{
		{"warn", func(l *zap.Logger) {
			l.Warn("destination existed without a completion marker; moved it aside", zap.String("dest", "/x"), zap.String("moved_to", "/y"))
		}, "coord: warning: destination existed without a completion marker; moved it aside (dest=/x, moved_to=/y)\n"},
		{"error", func(l *zap.Logger) { l.Error("lost", zap.Error(errors.New("lease expired"))) },
			"coord: error: lost (error=\"lease expired\")\n"},
		{"info", func(l *zap.Logger) { l.Info("ok") }, "coord: info: ok\n"},
		{"debug", func(l *zap.Logger) { l.Debug("d", zap.Int("n", 3), zap.Bool("b", true)) }, "coord: debug: d (n=3, b=true)\n"},
		{"dpanic", func(l *zap.Logger) { l.DPanic("bad") }, "coord: error: bad\n"},
		{"with and named", func(l *zap.Logger) {
			l.Named("etcd-client").With(zap.String("a", "1")).Error("m", zap.String("b", "2"))
		}, "coord: error: etcd-client: m (a=1, b=2)\n"},
		{"types", func(l *zap.Logger) {
			l.Warn("t", zap.Duration("d", 1500*time.Millisecond), zap.Strings("eps", []string{"http://a:1", "b:2"}),
				zap.Time("at", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), zap.String("empty", ""))
		}, "coord: warning: t (d=1.5s, eps=[http://a:1 b:2], at=2026-01-02T03:04:05Z, empty=\"\")\n"},
		{"namespace", func(l *zap.Logger) { l.Warn("n", zap.Namespace("lock"), zap.String("name", "a")) },
			"coord: warning: n (lock.name=a)\n"},
		{"hostile", func(l *zap.Logger) {
			l.Warn("evil\x1b[31m\nmsg", zap.String("path", "/tmp/a b\x1b[0m"), zap.String("k=v", "x,y"))
		}, "coord: warning: \"evil\\x1b[31m msg\" (path=\"/tmp/a b\\x1b[0m\", \"k=v\"=\"x,y\")\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(zap.New(newConsoleCore(zapcore.AddSync(&buf), zapcore.DebugLevel)))
			if got := buf.String(); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestConsoleCoreLevel: entries below the level are not written.
func TestConsoleCoreLevel(t *testing.T) {
	var buf bytes.Buffer
	l := zap.New(newConsoleCore(zapcore.AddSync(&buf), zapcore.WarnLevel))
	l.Info("no")
	l.Debug("no")
	l.Warn("yes")
	if got, want := buf.String(), "coord: warning: yes\n"; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}
