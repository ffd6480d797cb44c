package coordcli

// An internal test: the system file is /etc/toolchainkit/coord.yaml, which
// a test must not write, so the merge of the system and the user file is
// tested here on readConfigs, with both paths in a temp dir. Everything
// else about config files is tested on the real CLI, in
// cmd/coord-server/testdata/script/config.txtar.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toolchainkit/coord/internal/exitcode"
)

func TestReadConfigsUserOverridesSystem(t *testing.T) {
	dir := t.TempDir()
	sys := filepath.Join(dir, "etc", configName)
	user := filepath.Join(dir, "home", configName)
	write(t, sys, "backend: etcd\netcd-endpoints: [https://a:2379, https://b:2379]\netcd-cacert: ca.pem\nlog-level: info\n")
	write(t, user, "# mine\nlog-level: debug\nlock-dir: locks\netcd-prefix:\n")

	cfg, err := readConfigs([]configPath{{path: sys}, {path: user}, {path: filepath.Join(dir, "missing.yaml")}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]value{
		flagBackend:   {"etcd", sys + ":1: backend"},
		flagEndpoints: {"https://a:2379,https://b:2379", sys + ":2: etcd-endpoints"},
		flagCACert:    {filepath.Join(dir, "etc", "ca.pem"), sys + ":3: etcd-cacert"},
		flagLogLevel:  {"debug", user + ":2: log-level"},
		flagLockDir:   {filepath.Join(dir, "home", "locks"), user + ":3: lock-dir"},
	}
	if len(cfg.values) != len(want) {
		t.Errorf("got %d settings, want %d: %v", len(cfg.values), len(want), cfg.values)
	}
	for k, w := range want {
		if got := cfg.values[k]; got != w {
			t.Errorf("%s = %+v, want %+v", k, got, w)
		}
	}
}

func TestReadConfigsErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	write(t, good, "backend: file\n")
	bad := filepath.Join(dir, "bad.yaml")
	write(t, bad, "backend: file\nlock-dir: [x\n")

	// A bad file fails the whole read, wherever it is in the order.
	for _, paths := range [][]configPath{{{path: good}, {path: bad}}, {{path: bad}, {path: good}}} {
		if _, err := readConfigs(paths); err == nil || !strings.HasPrefix(err.Error(), bad+":2: ") {
			t.Errorf("readConfigs(%v) = %v, want an error at %s:2", paths, err, bad)
		}
	}
	// Only a missing file that was not asked for is skipped.
	missing := configPath{path: filepath.Join(dir, "missing.yaml"), required: true}
	if _, err := readConfigs([]configPath{missing}); err == nil || exitCode(&actionError{err}) != exitcode.Usage {
		t.Errorf("readConfigs(required missing) = %v, want a usage error", err)
	}
}

// TestParseConfigLines pins the lines of syntax errors, which yaml.v3
// does not always give right (see yamlError).
func TestParseConfigLines(t *testing.T) {
	for _, tc := range []struct {
		text string
		want string
	}{
		{"backend: [file\n", "f.yaml:1: "},
		{"a: b: c\n", "f.yaml:1: "},
		{"\tbackend: file\n", "f.yaml:1: "},
		{"backend: file\n\nlock-dir: [x\n", "f.yaml:3: "},
		{"backend: file\n\nlock-dir: {x\n", "f.yaml:3: "},
		{"backend: file\n  lock-dir: x\n", "f.yaml:2: "},
		{"backend: file\nlock-dir: \"x\n", "f.yaml:2: "},
		{"backend: file\n- x\n", "f.yaml:2: "},
		{"backend: file\nlock-dir: x\nlog-level: warn\n- x\nfallback: none\n", "f.yaml:4: did not find expected key"},
		{"# settings\nbackend: file\nlock-dir: x\nlog-level: warn\n  bad: indent\nfallback: none\n", "f.yaml:5: mapping values are not allowed"},
		{"backend: file\n%YAML 1.2\n", "f.yaml:2: "},
		{"backend: !x!y file\n", "f.yaml:1: "},
		{"backend: file\nlock-dir: a\x01b\n", "f.yaml:2: control character U+0001"},
		{"backend: file\n\nlock-dir: a\xffb\n", "f.yaml:3: invalid UTF-8"},
		{"backend: file\nfallback: *nope\n", "f.yaml:2: unknown anchor 'nope' referenced"},
		{"backend: file\n---\nbackend: etcd\n", "f.yaml:2: a second YAML document; want one"},
		{"backend: file\nbackend: etcd\n", "f.yaml:2: backend set twice (first on line 1)"},
		{"backend: file\nlock-dir:\n  - x\n", "f.yaml:3: lock-dir: want a string, not a list"},
		{"etcd-endpoints:\n  - a\n  - {x: y}\n", "f.yaml:3: etcd-endpoints: want a string in the list, not a mapping"},
		{"42\n", "f.yaml:1: want a mapping of settings (key: value), not a single value"},
	} {
		_, _, err := parseConfig("f.yaml", []byte(tc.text))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("parseConfig(%q) = %v, want %q...", tc.text, err, tc.want)
		}
	}
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}
