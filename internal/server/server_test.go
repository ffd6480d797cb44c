package server

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/toolchainkit/coord/coord"
)

// TestListenURL covers what cannot be run for real in a test: listening
// on a non-loopback address.
func TestListenURL(t *testing.T) {
	tests := []struct {
		flag, raw       string
		tls, insecure   bool
		want, wantError string // want is the URL to listen on
	}{
		{flagClientURL, "http://127.0.0.1:2379", false, false, "http://127.0.0.1:2379", ""},
		{flagClientURL, "http://127.8.9.10:2379/", false, false, "http://127.8.9.10:2379", ""},
		{flagClientURL, "http://localhost:2379", false, false, "http://localhost:2379", ""},
		{flagClientURL, "http://[::1]:2379", false, false, "http://[::1]:2379", ""},
		{flagClientURL, "http://10.1.2.3:2379", false, false, "", "not a loopback address"},
		{flagClientURL, "http://0.0.0.0:2379", false, false, "", "not a loopback address"},
		{flagClientURL, "http://[::]:2379", false, false, "", "not a loopback address"},
		{flagClientURL, "http://10.1.2.3:2379", false, true, "http://10.1.2.3:2379", ""},
		// TLS without client certificates is refused off loopback; with a
		// client CA (passed as insecure=true by the caller) it is fine.
		{flagClientURL, "https://10.1.2.3:2379", true, false, "", "client certificates"},
		{flagClientURL, "https://10.1.2.3:2379", true, true, "https://10.1.2.3:2379", ""},
		{flagClientURL, "https://127.0.0.1:2379", false, false, "", "https needs --cert-file"},
		{flagClientURL, "http://127.0.0.1:2379", true, false, "", "want an https URL"},
		{flagPeerURL, "https://127.0.0.1:2380", false, false, "", "want an http URL"},
		{flagPeerURL, "http://10.1.2.3:2380", false, false, "", "not a loopback address"},
		{flagClientURL, "http://example.com:2379", false, true, "", "IP address or localhost"},
		{flagClientURL, "http://127.0.0.1", false, false, "", "want host:port"},
		{flagClientURL, "http://127.0.0.1:0", false, false, "", "want 1 to 65535"},
		{flagClientURL, "http://127.0.0.1:65536", false, false, "", "want 1 to 65535"},
		{flagClientURL, "http://127.0.0.1:x", false, false, "", "not a URL"},
		{flagClientURL, "127.0.0.1:2379", false, false, "", "not a URL"},
		{flagClientURL, "unix:///tmp/sock", false, false, "", "want an http URL"},
		{flagClientURL, "http://127.0.0.1:2379/v3", false, false, "", "nothing more"},
		{flagClientURL, "http://u:p@127.0.0.1:2379", false, false, "", "nothing more"},
		{flagClientURL, "http://127.0.0.1:2379?a=b", false, false, "", "nothing more"},
		{flagClientURL, "", false, false, "", "want an http URL"},
	}
	for _, tt := range tests {
		u, err := listenURL(tt.flag, tt.raw, tt.tls, tt.insecure)
		if tt.wantError != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantError) || !errors.Is(err, coord.ErrInvalidArgument) {
				t.Errorf("listenURL(%q, %q, tls %v, insecure %v) = %v, want an invalid argument error with %q", tt.flag, tt.raw, tt.tls, tt.insecure, err, tt.wantError)
			}
			continue
		}
		if err != nil || u.String() != tt.want {
			t.Errorf("listenURL(%q, %q, tls %v, insecure %v) = %q, %v; want %q", tt.flag, tt.raw, tt.tls, tt.insecure, u.String(), err, tt.want)
		}
	}
}

// TestUsageErrorIsInvalidArgument: the server's usage errors read as their
// message alone and match coord.ErrInvalidArgument, which coord's CLI
// reports with exit 64; the server does not import the CLI.
func TestUsageErrorIsInvalidArgument(t *testing.T) {
	err := usagef("--%s is required", flagDataDir)
	if err.Error() != "--data-dir is required" || !errors.Is(err, coord.ErrInvalidArgument) {
		t.Fatalf("usagef = %q (invalid argument: %v); want %q, an invalid argument", err, errors.Is(err, coord.ErrInvalidArgument), "--data-dir is required")
	}
}

// The storage-version monitor's errors of a member that has not saved its
// first term are dropped; its other errors and everything else are shown.
func TestQuietDropsBootstrapSchemaErrors(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New((&quietCore{}).wrap(core))
	log.Warn("Failed to detect schema version", zap.Error(errors.New("missing term information")))
	log.Error("failed to update storage version", zap.String("cluster-version", "3.7.0"),
		zap.Error(errors.New("cannot detect storage schema version: missing term information")))
	log.Error("failed to update storage version", zap.Error(errors.New("cannot detect storage schema version: missing confstate information")))
	log.Error("failed to update storage version", zap.Error(errors.New(`cannot create migration plan: version "3.5.0" is not supported`)))
	log.Warn("Failed to detect schema version")
	log.Info("simple token is not cryptographically signed")
	log.Info("serving client traffic")
	var got []string
	for _, e := range logs.All() {
		got = append(got, e.Message)
	}
	want := []string{"failed to update storage version", "Failed to detect schema version", "serving client traffic"}
	if !slices.Equal(got, want) {
		t.Fatalf("logged %q; want %q", got, want)
	}
}
