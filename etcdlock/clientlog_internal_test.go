package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The etcd client's logger passes errors, drops what is below Error, and
// demotes to Debug an error about a request we cancelled ourselves.
func TestClientLogger(t *testing.T) {
	for _, level := range []zapcore.Level{zapcore.InfoLevel, zapcore.DebugLevel} {
		core, logs := observer.New(level)
		log := clientLogger(zap.New(core))
		log.Error("clientv3/retry_interceptor: getToken failed", zap.Error(context.Canceled))
		log.Error("streamer failed", zap.Error(fmt.Errorf("wrapped: %w", status.Error(codes.Canceled, "context canceled"))))
		log.Error("real", zap.Error(errors.New("etcdserver: permission denied")))
		log.Warn("retrying of unary invoker failed", zap.Error(errors.New("x")))
		var got []string
		for _, e := range logs.All() {
			got = append(got, e.Level.String()+" "+e.LoggerName+" "+e.Message)
		}
		want := []string{"error etcd-client real"}
		if level == zapcore.DebugLevel {
			want = []string{"debug etcd-client clientv3/retry_interceptor: getToken failed", "debug etcd-client streamer failed", "error etcd-client real"}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("at level %s the client logged %q; want %q", level, got, want)
		}
	}
}
