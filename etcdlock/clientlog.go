package etcdlock

import (
	"context"
	"errors"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// clientLogger is the etcd client's logger: log's, named "etcd-client",
// at Error and above only (the client returns what goes wrong to us, and
// we report it), and an error about a request we cancelled ourselves
// at Debug: with etcd's auth on, the client logs "getToken failed:
// context canceled" at Error whenever a stream (a lock's watch, a
// keep-alive) is cancelled while it logs in, which Unlock right after
// Lock does on every short lock.
func clientLogger(log *zap.Logger) *zap.Logger {
	return log.Named("etcd-client").WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return quietCore{c}
	}))
}

// quietCore passes entries at Error and above to its Core, those about a
// cancelled request at Debug.
type quietCore struct{ zapcore.Core }

func (c quietCore) Enabled(l zapcore.Level) bool {
	return l >= zapcore.ErrorLevel && c.Core.Enabled(l)
}

func (c quietCore) With(fields []zapcore.Field) zapcore.Core { return quietCore{c.Core.With(fields)} }

func (c quietCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if !c.Enabled(e.Level) {
		return ce
	}
	return ce.AddCore(e, c)
}

func (c quietCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	if e.Level < zapcore.DPanicLevel && cancelled(fields) {
		if !c.Core.Enabled(zapcore.DebugLevel) {
			return nil
		}
		e.Level = zapcore.DebugLevel
	}
	return c.Core.Write(e, fields)
}

// cancelled reports whether an error among fields is a cancelled request.
func cancelled(fields []zapcore.Field) bool {
	for _, f := range fields {
		if err, ok := f.Interface.(error); ok && f.Type == zapcore.ErrorType &&
			(errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled) {
			return true
		}
	}
	return false
}
