package coordcli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/toolchainkit/coord/coord"
)

// Config files hold the settings of the global flags, keyed by flag name.
// A setting's value is the first non-empty one of: its flag, its env var,
// the config files, its default. An empty value (an exported but empty
// variable, an empty flag, `lock-dir:` in a file) counts as not given, so
// that it never hides a value below it.
//
// The files are the --config one (COORD_CONFIG), or else the system's and
// then the user's, both optional; the user's overrides the system's key by
// key. coord reads them only when a command needs the settings: `coord
// version`, help, and a download that is already complete work whatever
// the files hold.
const (
	flagConfig    = "config"
	envConfig     = "COORD_CONFIG"
	configName    = "coord.yaml"
	maxConfigSize = 1 << 20 // settings fit in a few hundred bytes

	maxLocateLines = 1000 // see yamlError
)

// setting is a global flag that a config file can set too, under the
// flag's name.
type setting struct {
	name, env string
	def       string // default, as a flag value
	duration  bool
	path      bool // a file path: relative in a config file means relative to the file's directory
	usage     string
}

func globalSettings() []setting {
	return []setting{
		{name: flagBackend, env: envBackend, def: coord.BackendAuto, usage: "auto, file or etcd"},
		{name: flagLockDir, env: envLockDir, path: true, usage: "lock directory of the file backend (default ~/.toolchainkit/locks)"},
		{name: flagEndpoints, env: envEndpoints, usage: "etcd endpoints, comma-separated"},
		{name: flagFallback, env: envFallback, def: "none", usage: "none, or file: lock on this host only when etcd is unreachable"},
		{name: flagPrefix, env: envPrefix, def: "/toolchainkit", usage: "etcd key prefix"},
		{name: flagTTL, env: envTTL, def: "10s", duration: true, usage: "etcd lease TTL, whole seconds, at least 2s"},
		{name: flagDial, env: envDial, def: "5s", duration: true, usage: "how long to try reaching etcd (1s once every endpoint refuses the connection)"},
		{name: flagCACert, env: envCACert, path: true, usage: "PEM file of the CA that signed etcd's certificate"},
		{name: flagCert, env: envCert, path: true, usage: "PEM client certificate for etcd"},
		{name: flagKey, env: envKey, path: true, usage: "PEM client key for etcd"},
		{name: flagUser, env: envUser, usage: "etcd user (or user:password)"},
		{name: flagPassword, env: envPassword, usage: "etcd password (never logged or shown)"},
		{name: flagLogLevel, env: envLogLevel, def: "warn", usage: "debug, info, warn or error"},
		{name: flagLogFormat, env: envLogFormat, def: "console", usage: "console or json"},
	}
}

// globalFlags are the app's flags: --config and one per setting. They
// carry no Value, only DefaultText: a default set in the flag could not be
// told from a value given on the command line, and would hide the files.
func globalFlags() []cli.Flag {
	flags := []cli.Flag{&cli.StringFlag{Name: flagConfig, EnvVars: []string{envConfig}, TakesFile: true,
		Usage: "YAML file of settings, read instead of " + systemConfigFile() + " and ~/.toolchainkit/" + configName}}
	for _, s := range globalSettings() {
		if s.duration {
			flags = append(flags, &cli.DurationFlag{Name: s.name, EnvVars: []string{s.env}, DefaultText: s.def, Usage: s.usage})
		} else {
			flags = append(flags, &cli.StringFlag{Name: s.name, EnvVars: []string{s.env}, DefaultText: s.def, Usage: s.usage, TakesFile: s.path})
		}
	}
	return flags
}

// value is a setting's effective value and where it came from, for
// messages: "--etcd-ttl" for its flag or env var (and its default), or
// "FILE:LINE: etcd-ttl" for a config file. from never holds the value:
// messages that must not show one (the password) can still say where.
type value struct {
	text string
	from string
}

// globals are the effective settings, by flag name.
type globals map[string]value

// config is what the config files set.
type config struct {
	values map[string]value
	// groupReadable are the files that hold the etcd password and that
	// their group can read.
	groupReadable []string
}

// loadGlobals resolves the settings: flag, env var, config files, default.
func loadGlobals(c *cli.Context) (globals, config, error) {
	cfg, err := readConfigs(configFiles(c))
	if err != nil {
		return nil, config{}, err
	}
	g := make(globals)
	for _, s := range globalSettings() {
		v := value{from: "--" + s.name}
		flag := ""
		if c.IsSet(s.name) {
			flag = c.String(s.name)
			if s.duration {
				flag = c.Duration(s.name).String()
			}
		}
		switch env := os.Getenv(s.env); {
		case flag != "":
			v.text = flag
		case env != "":
			v.text = env // behind an empty --flag '' that urfave/cli preferred
		case cfg.values[s.name].text != "":
			v = cfg.values[s.name]
		default:
			v.text = s.def
		}
		g[s.name] = v
	}
	return g, cfg, nil
}

// configPath is a config file to read; a required one must exist.
type configPath struct {
	path     string
	required bool
}

// configFiles returns the files to read, lowest precedence first: the
// --config one alone, or else the system's and the user's.
func configFiles(c *cli.Context) []configPath {
	if p := c.String(flagConfig); p != "" {
		return []configPath{{path: p, required: true}}
	}
	var paths []configPath
	if p := systemConfigFile(); p != "" {
		paths = append(paths, configPath{path: p})
	}
	if home, err := os.UserHomeDir(); err == nil {
		paths = append(paths, configPath{path: filepath.Join(home, ".toolchainkit", configName)})
	}
	return paths
}

// readConfigs reads the files in order; a later file's key overrides an
// earlier one's.
func readConfigs(paths []configPath) (config, error) {
	cfg := config{values: make(map[string]value)}
	for _, p := range paths {
		vals, secret, fi, err := readConfig(p)
		if err != nil {
			return config{}, err
		}
		if secret {
			group, others := readableBy(fi)
			if others {
				return config{}, usagef("config file %s holds the etcd password but anyone on this host can read it (mode %04o): chmod o-rwx it",
					p.path, fi.Mode().Perm())
			}
			if group {
				cfg.groupReadable = append(cfg.groupReadable, p.path)
			}
		}
		for k, v := range vals {
			cfg.values[k] = v
		}
	}
	return cfg, nil
}

// readConfig reads one file. secret reports that it holds the etcd
// password (or a user:password).
func readConfig(p configPath) (vals map[string]value, secret bool, fi fs.FileInfo, err error) {
	if p.path == os.DevNull {
		return nil, false, nil, nil // --config /dev/null: no file, not even the implicit ones
	}
	fi, err = os.Stat(p.path)
	if err != nil {
		if !p.required && errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil, nil
		}
		return nil, false, nil, usagef("config file %s: %v", p.path, bareError(err))
	}
	// Checked before opening: opening a FIFO would block.
	if !fi.Mode().IsRegular() {
		return nil, false, nil, usagef("config file %s: not a regular file", p.path)
	}
	f, err := os.Open(p.path)
	if err != nil {
		return nil, false, nil, usagef("config file %s: %v", p.path, bareError(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, false, nil, usagef("config file %s: %v", p.path, bareError(err))
	}
	if len(data) > maxConfigSize {
		return nil, false, nil, usagef("config file %s: larger than %d bytes", p.path, maxConfigSize)
	}
	vals, secret, err = parseConfig(p.path, data)
	return vals, secret, fi, err
}

// bareError is err without the operation and path that an *fs.PathError
// adds, for messages that name the file themselves.
func bareError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parseConfig parses a file's content: one YAML mapping from known keys to
// strings (etcd-endpoints may be a list of strings). A null value is no
// value.
func parseConfig(path string, data []byte) (map[string]value, bool, error) {
	if err := checkText(data); err != nil {
		return nil, false, usagef("%s:%v", path, err)
	}
	doc, err := parseYAML(data)
	if err != nil {
		return nil, false, yamlError(path, data, err)
	}
	if doc == nil || len(doc.Content) == 0 {
		return nil, false, nil // empty, or only comments
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, false, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, false, usagef("%s:%d: want a mapping of settings (key: value), not %s", path, root.Line, kindName(root))
	}
	known := make(map[string]setting)
	for _, s := range globalSettings() {
		known[s.name] = s
	}
	vals := make(map[string]value)
	lines := make(map[string]int)
	secret := false
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, false, usagef("%s:%d: want a key, not %s", path, k.Line, kindName(k))
		}
		s, ok := known[k.Value]
		if !ok {
			return nil, false, usagef("%s:%d: unknown key %q%s", path, k.Line, k.Value, suggestKey(k.Value))
		}
		if first, dup := lines[s.name]; dup {
			return nil, false, usagef("%s:%d: %s set twice (first on line %d)", path, k.Line, s.name, first)
		}
		lines[s.name] = k.Line
		from := fmt.Sprintf("%s:%d: %s", path, v.Line, s.name)
		text, line, err := scalarText(v, s.name == flagEndpoints)
		if err != nil {
			return nil, false, usagef("%s:%d: %s: %v", path, line, s.name, err)
		}
		if strings.ContainsRune(text, 0) {
			return nil, false, usagef("%s: contains a NUL byte", from)
		}
		if text == "" {
			continue
		}
		if s.path {
			if text, err = resolvePath(path, text); err != nil {
				return nil, false, usagef("%s: %v", from, err)
			}
		}
		if s.name == flagPassword || s.name == flagUser && strings.Contains(text, ":") {
			secret = true
		}
		vals[s.name] = value{text: text, from: from}
	}
	return vals, secret, nil
}

// scalarText is a value's text; a list, when allowed, is joined with
// commas, as etcd-endpoints is in its flag. An error comes with the line
// of the node at fault.
func scalarText(n *yaml.Node, list bool) (string, int, error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch {
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return "", 0, nil
	case n.Kind == yaml.ScalarNode:
		return n.Value, 0, nil
	case n.Kind == yaml.SequenceNode && list:
		items := make([]string, 0, len(n.Content))
		for _, item := range n.Content {
			if item.Kind == yaml.AliasNode {
				item = item.Alias
			}
			if item.Kind != yaml.ScalarNode || item.Tag == "!!null" {
				return "", item.Line, fmt.Errorf("want a string in the list, not %s", kindName(item))
			}
			items = append(items, item.Value)
		}
		return strings.Join(items, ","), 0, nil
	case list:
		return "", n.Line, fmt.Errorf("want a string or a list of strings, not %s", kindName(n))
	}
	return "", n.Line, fmt.Errorf("want a string, not %s", kindName(n))
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return "a single value"
	}
	return "an alias"
}

// resolvePath makes a path from a config file absolute: ~/ is the home
// directory, and a relative path is relative to the file's directory, not
// to wherever coord runs.
func resolvePath(file, p string) (string, error) {
	if p == "~" || strings.HasPrefix(p, "~/") {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		return filepath.Join(home, p[1:]), nil
	}
	if filepath.IsAbs(p) {
		return p, nil
	}
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, p), nil
}

// suggestKey names the key meant by a near miss such as lock_dir, lockDir
// or COORD_LOCK_DIR.
func suggestKey(key string) string {
	norm := func(s string) string {
		s = strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(s))
		return strings.TrimPrefix(s, "coord")
	}
	for _, s := range globalSettings() {
		if norm(s.name) == norm(key) {
			return "; did you mean " + s.name + "?"
		}
	}
	return " (keys are the global flags' names, such as lock-dir)"
}

// parseYAML parses one YAML document; nil if there is none.
func parseYAML(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return nil, fmt.Errorf("yaml: line %d: a second YAML document; want one", next.Line)
	} else if !errors.Is(err, io.EOF) {
		return nil, err
	}
	return &doc, nil
}

// checkText finds what YAML forbids and yaml.v3 reports without a line:
// control characters and invalid UTF-8. The error starts with the line.
func checkText(data []byte) error {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return fmt.Errorf("%d: invalid UTF-8", line)
		case r == '\n':
			line++
		case r == '\t', r == '\r', r == '\uFEFF':
		case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0 && r != 0x85:
			return fmt.Errorf("%d: control character %U", line, r)
		}
		i += size
	}
	return nil
}

// yamlError is a parse error as "FILE:LINE: msg". yaml.v3's own line is
// unreliable: it leaves out line 0, counts a parser error's line from 0,
// and gives the line where the construct around the error began (the
// mapping, often line 1). The line here is the first one at which the
// file's beginning fails the same way; past maxLocateLines lines (no
// coord config is that long) it is yaml.v3's, if any.
func yamlError(path string, data []byte, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, msg = l, after
			}
		}
	}
	if bytes.Count(data, []byte("\n")) <= maxLocateLines {
		end := 0
		for k := 1; end < len(data); k++ {
			if i := bytes.IndexByte(data[end:], '\n'); i >= 0 {
				end += i + 1
			} else {
				end = len(data)
			}
			if _, err := parseYAML(data[:end]); err != nil && strings.HasSuffix(err.Error(), msg) {
				line = k
				break
			}
		}
	}
	if line == 0 {
		return usagef("%s: %s", path, msg)
	}
	return usagef("%s:%d: %s", path, line, msg)
}

// duration parses a duration setting.
func (g globals) duration(name string) (time.Duration, error) {
	v := g[name]
	d, err := time.ParseDuration(v.text)
	if err != nil {
		return 0, usagef("%s %q: not a duration (such as 10s)", v.from, v.text)
	}
	return d, nil
}
