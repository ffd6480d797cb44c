package coordcli

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestWarnUnknownEnv: a COORD_ variable that coord neither reads nor sets
// gets one warning line, with the nearest known name when one is a slip
// away; the ones coord reads (from every command's flags), sets for its
// command or reserves for its tests and scripts get none.
func TestWarnUnknownEnv(t *testing.T) {
	plainServer, exporter := plainHeavy(nil)
	plain := newApp(io.Discard, io.Discard, plainServer, exporter)
	server := newApp(io.Discard, io.Discard, &cli.Command{Name: "server", Flags: []cli.Flag{
		&cli.StringFlag{Name: "data-dir", EnvVars: []string{"COORD_SERVER_DATA_DIR"}},
	}}, exporter)
	for _, tt := range []struct {
		name string
		app  *cli.App
		env  []string
		want string
	}{
		{"mistyped", plain, []string{"COORD_ETCD_ENDPOINT=http://x"},
			"coord: warning: unknown environment variable COORD_ETCD_ENDPOINT ignored; did you mean COORD_ETCD_ENDPOINTS?\n"},
		{"lower case", plain, []string{"coord_lock_dir=/x"},
			"coord: warning: unknown environment variable coord_lock_dir ignored; did you mean COORD_LOCK_DIR?\n"},
		{"garbage", plain, []string{"COORD_XYZZY=1"},
			"coord: warning: unknown environment variable COORD_XYZZY ignored (coord --help shows those it reads)\n"},
		{"near a child's", plain, []string{"COORD_FENCING_TOKN=1"},
			"coord: warning: unknown environment variable COORD_FENCING_TOKN ignored; did you mean COORD_FENCING_TOKEN?\n"},
		{"two", plain, []string{"COORD_A=1", "PATH=/bin", "COORD_BACKNED=file"},
			"coord: warning: unknown environment variable COORD_A ignored (coord --help shows those it reads)\n" +
				"coord: warning: unknown environment variable COORD_BACKNED ignored; did you mean COORD_BACKEND?\n"},
		{"hostile", plain, []string{"COORD_\x1b[31m=1"},
			"coord: warning: unknown environment variable \"COORD_\\x1b[31m\" ignored (coord --help shows those it reads)\n"},
		{"empty is unset", plain, []string{"COORD_NOPE="}, ""},
		{"not coord's", plain, []string{"COORDINATE=1", "MY_COORD_X=1", "=C:=C:\\"}, ""},
		{"read", plain, []string{"COORD_BACKEND=file", "COORD_LOCK_DIR=/x", "COORD_ETCD_ENDPOINTS=a:1", "COORD_ETCD_DIAL_TIMEOUT=1s",
			"COORD_LOG_LEVEL=warn", "COORD_LOG_FORMAT=json", "COORD_CONFIG=/dev/null", "COORD_ETCD_PASSWORD=p"}, ""},
		{"set for the command", plain, []string{"COORD_LOCK_NAME=a", "COORD_FENCING_TOKEN=1", "COORD_DEST=/x",
			"COORD_TOOLCHAIN_ID=t", "COORD_PID=1", "COORD_TOTAL_FILE=/x"}, ""},
		{"reserved", plain, []string{"COORD_TEST_BACKENDS=file", "COORD_TEST_X=1", "COORD_BENCH_PEER=1", "COORD_HERD=1",
			"COORD_HERD_LIB=1", "COORD_SOAK=1", "COORD_CLUSTER_DIR=/x", "COORD_PREFIX=/p", "COORD_SERVER_EXEC=/x"}, ""},
		{"server's in plain coord", plain, []string{"COORD_SERVER_DATA_DIR=/x", "COORD_SERVER_DATADIR=/x"}, ""},
		{"server's in coord-server", server, []string{"COORD_SERVER_DATA_DIR=/x", "COORD_SERVER_EXEC=/x"}, ""},
		{"server's mistyped in coord-server", server, []string{"COORD_SERVER_DATADIR=/x"},
			"coord: warning: unknown environment variable COORD_SERVER_DATADIR ignored; did you mean COORD_SERVER_DATA_DIR?\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			warnUnknownEnv(&buf, tt.env, tt.app)
			if got := buf.String(); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestKnownEnvFromFlags: every env var of a global flag is known, so the
// list cannot drift from the flags.
func TestKnownEnvFromFlags(t *testing.T) {
	server, exporter := plainHeavy(nil)
	known := knownEnv(newApp(io.Discard, io.Discard, server, exporter))
	for _, s := range globalSettings() {
		if !strings.Contains(strings.Join(known, " "), s.env) {
			t.Errorf("%s (--%s) not known", s.env, s.name)
		}
	}
	// And COORD_CONFIG, and the exporter's --listen and --max-names.
	if len(known) != len(globalSettings())+3 || !slices.Contains(known, envListen) || !slices.Contains(known, envMaxNames) {
		t.Errorf("known = %v; want the %d settings', COORD_CONFIG, %s and %s", known, len(globalSettings()), envListen, envMaxNames)
	}
}
