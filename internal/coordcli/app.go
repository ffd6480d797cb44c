package coordcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/exitcode"
	"github.com/toolchainkit/coord/internal/guard"
)

// Flag names and the environment variables that set them.
const (
	flagBackend    = "backend"
	flagLockDir    = "lock-dir"
	flagEndpoints  = "etcd-endpoints"
	flagFallback   = "fallback"
	flagPrefix     = "etcd-prefix"
	flagTTL        = "etcd-ttl"
	flagDial       = "etcd-dial-timeout"
	flagCACert     = "etcd-cacert"
	flagCert       = "etcd-cert"
	flagKey        = "etcd-key"
	flagUser       = "etcd-user"
	flagPassword   = "etcd-password"
	flagLogLevel   = "log-level"
	flagLogFormat  = "log-format"
	flagTimeout    = "timeout"
	flagShared     = "shared"
	flagConflict   = "conflict-exit-code"
	flagOnLost     = "on-lost"
	flagJSON       = "json"
	flagAll        = "all"
	flagOlderThan  = "older-than"
	flagDryRun     = "dry-run"
	flagStaging    = "staging"
	flagReplaced   = "replaced"
	flagRecords    = "etcd-records"
	envBackend     = "COORD_BACKEND"
	envLockDir     = "COORD_LOCK_DIR"
	envEndpoints   = "COORD_ETCD_ENDPOINTS"
	envFallback    = "COORD_FALLBACK"
	envPrefix      = "COORD_ETCD_PREFIX"
	envTTL         = "COORD_ETCD_TTL"
	envDial        = "COORD_ETCD_DIAL_TIMEOUT"
	envCACert      = "COORD_ETCD_CACERT"
	envCert        = "COORD_ETCD_CERT"
	envKey         = "COORD_ETCD_KEY"
	envUser        = "COORD_ETCD_USER"
	envPassword    = "COORD_ETCD_PASSWORD"
	envLogLevel    = "COORD_LOG_LEVEL"
	envLogFormat   = "COORD_LOG_FORMAT"
	envLockName    = "COORD_LOCK_NAME"
	envToken       = "COORD_FENCING_TOKEN"
	envDest        = "COORD_DEST"
	envToolchainID = "COORD_TOOLCHAIN_ID"
	envPID         = "COORD_PID"
)

// Main runs the program with os.Args and exits with its status; SIGINT,
// SIGTERM and SIGHUP cancel the command's context. heavy are the commands
// that plain coord leaves to coord-server (`server`, `exporter`), for
// coord-server to pass in; each one not passed runs the coord-server
// binary instead (see execServer).
func Main(heavy ...*cli.Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	code := Run(ctx, os.Args, os.Stdout, os.Stderr, heavy...)
	stop()
	os.Exit(code)
}

// Run is the whole program: it parses args, runs one command and returns
// the exit status. It writes only to stdout and stderr.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, heavy ...*cli.Command) int {
	if len(args) > 1 && args[1] == guardCommand {
		return guard.Main(args[2:], stderr)
	}
	var keeper string
	if len(args) > 2 && args[1] == keeperCommand {
		keeper, args = args[2], append([]string{args[0]}, args[3:]...)
	}
	server, exporter := plainHeavy(args)
	for _, cmd := range heavy {
		switch {
		case cmd == nil:
		case cmd.Name == server.Name:
			server = cmd
		case cmd.Name == exporter.Name:
			exporter = cmd
		}
	}
	app := newApp(stdout, stderr, server, exporter)
	app.Metadata = map[string]any{metaArgs: args}
	if keeper != "" {
		app.Metadata[metaKeeper] = keeper
	}
	warnUnknownEnv(stderr, os.Environ(), app)
	err := app.RunContext(ctx, args)
	code := exitCode(err)
	if err != nil && !errors.As(err, new(*childExit)) && !errors.Is(err, errVersionShown) {
		fmt.Fprintf(stderr, "coord: %s\n", message(err))
	}
	return code
}

func newApp(stdout, stderr io.Writer, server, exporter *cli.Command) *cli.App {
	cmds := []*cli.Command{lockCommand(), holdCommand(), runCommand(), releaseCommand(), downloadCommand(), statusCommand(), gcCommand(), doctorCommand(), exporter, server, versionCommand()}
	flags := append(globalFlags(), versionFlag())
	for i, cmd := range cmds {
		cmds[i] = command(cmd, flags)
	}
	return &cli.App{
		Name:           "coord",
		Usage:          "locks and download coordination for shared toolchain storage",
		Writer:         stdout,
		ErrWriter:      stderr,
		HideVersion:    true,
		ExitErrHandler: func(*cli.Context, error) {}, // exit codes are ours
		OnUsageError:   usageErrFor(flags, nil),
		Flags:          flags,
		Commands:       cmds,
		Before: func(c *cli.Context) error {
			if c.Bool(flagVersion) {
				printVersion(c.App.Writer)
				return errVersionShown
			}
			return nil
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return unknownCommand(c.App, c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
	}
}

// command makes cmd one of coord's, the server command that
// cmd/coord-server injects as much as coord's own: a flag that does not
// parse is a usage error (an unknown one named with the nearest of cmd's
// flags or of the global ones), and the errors of its action are told
// apart from those of parsing the command line (see exitCode).
func command(cmd *cli.Command, global []cli.Flag) *cli.Command {
	wrapped := *cmd // the injected command is not ours to change
	wrapped.OnUsageError = usageErrFor(cmd.Flags, global)
	if action := cmd.Action; action != nil {
		wrapped.Action = func(c *cli.Context) error {
			if err := action(c); err != nil {
				return &actionError{err}
			}
			return nil
		}
	}
	return &wrapped
}

// usageError marks a mistake in how coord was called (exit 64).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usage error (exit 64).
func usagef(format string, a ...any) error { return &usageError{fmt.Errorf(format, a...)} }

// childExit carries the status of the command coord ran.
type childExit struct{ code int }

func (e *childExit) Error() string { return fmt.Sprintf("command exited with status %d", e.code) }

// exitCodeError is an explicit status, such as --conflict-exit-code.
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string { return e.err.Error() }
func (e *exitCodeError) Unwrap() error { return e.err }

// actionError marks an error returned by a command's action; every other
// error comes from parsing the command line.
type actionError struct{ err error }

func (e *actionError) Error() string { return e.err.Error() }
func (e *actionError) Unwrap() error { return e.err }

// exitCode maps an error to coord's exit status.
func exitCode(err error) int {
	var ce *childExit
	var xe *exitCodeError
	switch {
	case err == nil, errors.Is(err, errVersionShown):
		return exitcode.OK
	case errors.As(err, &ce):
		return ce.code
	case errors.As(err, &xe):
		return xe.code
	case errors.As(err, new(*usageError)), !errors.As(err, new(*actionError)):
		return exitcode.Usage
	case errors.Is(err, coord.ErrInvalidName), errors.Is(err, coord.ErrInvalidArgument):
		return exitcode.Usage
	case errors.Is(err, coord.ErrBackendUnavailable):
		return exitcode.Unavailable
	case errors.Is(err, coord.ErrLockLost):
		return exitcode.Lost
	case errors.Is(err, coord.ErrTimeout):
		return exitcode.Timeout
	case errors.Is(err, context.Canceled):
		return exitcode.Interrupted
	}
	return exitcode.Internal
}

// message is err as coord prints it: one line, escaped (see Printable),
// and, when a coord setting bears on it, naming the flag that sets it. A
// signal (SIGINT, SIGTERM, SIGHUP) cancels the command's context, the only
// cancellation coord has: the "context canceled" it left in err is said as
// "interrupted".
func message(err error) string {
	text := err.Error()
	if errors.Is(err, context.Canceled) {
		if i := strings.LastIndex(text, context.Canceled.Error()); i >= 0 {
			text = text[:i] + "interrupted" + text[i+len(context.Canceled.Error()):]
		}
	}
	return Printable(text) + settingHint(err)
}

// settingHint names the flag (and env var) for the coord.Config field that
// a ConfigError is about; the library names only its own fields.
func settingHint(err error) string {
	var ce *coord.ConfigError
	if !errors.As(err, &ce) {
		return ""
	}
	switch ce.Field {
	case "Endpoints":
		return fmt.Sprintf(" (--%s, %s)", flagEndpoints, envEndpoints)
	case "Cert":
		return fmt.Sprintf(" (--%s/--%s)", flagCert, flagKey)
	case "CACert":
		return fmt.Sprintf(" (--%s)", flagCACert)
	case "Fallback":
		return fmt.Sprintf(" (set --%s=file or %s=file to lock on this host only)", flagFallback, envFallback)
	case "Backend":
		return fmt.Sprintf(" (with --%s etcd coord never falls back to host-local locks)", flagBackend)
	}
	return ""
}

// Printable makes text safe to print on one line of a terminal: a lock
// name, a path, a holder record that anyone who can write the lock
// directory may have written, or a whole message. Runs of white space
// become one space; if anything else would not print (a control or format
// character, invalid UTF-8), the text is quoted and escaped as Go quotes
// strings, so that a hostile name cannot drive the terminal and the reader
// sees where it starts and ends.
func Printable(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return !strconv.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// NewLogger builds the logger from the effective --log-level and
// --log-format (flag, env var, config file); it writes to stderr.
func NewLogger(c *cli.Context) (*zap.Logger, error) {
	g, cfg, err := loadGlobals(c)
	if err != nil {
		return nil, err
	}
	return g.logger(c.App.ErrWriter, cfg)
}

// logger builds the logger, then warns about the config files that hold
// the etcd password and that their group can read. (A group is how one
// shares a system file with chosen users; a file that anyone can read is
// refused, see readConfigs.)
func (g globals) logger(w io.Writer, cfg config) (*zap.Logger, error) {
	level, format := g[flagLogLevel], g[flagLogFormat]
	lvl, err := zapcore.ParseLevel(level.text)
	if err != nil {
		return nil, usagef("%s: %v", level.from, err)
	}
	var core zapcore.Core
	switch format.text {
	case "console":
		core = newConsoleCore(zapcore.AddSync(w), lvl)
	case "json":
		enc := zap.NewProductionEncoderConfig()
		enc.EncodeTime = zapcore.ISO8601TimeEncoder
		core = zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(w), lvl)
	default:
		return nil, usagef("%s %q: want console or json", format.from, format.text)
	}
	log := zap.New(core)
	for _, f := range cfg.groupReadable {
		log.Warn("the config file holds the etcd password and its group can read it", zap.String("file", f))
	}
	return log, nil
}

// newManager opens the backend that the global settings select. cmd is
// recorded as the holder's command line.
func newManager(c *cli.Context, cmd []string, opts ...coord.Option) (*coord.Manager, *zap.Logger, error) {
	g, fileCfg, err := loadGlobals(c)
	if err != nil {
		return nil, nil, err
	}
	log, err := g.logger(c.App.ErrWriter, fileCfg)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := g.coordConfig()
	if err != nil {
		return nil, nil, err
	}
	if cmd == nil {
		cmd = os.Args
	}
	m, err := coord.New(c.Context, cfg, append([]coord.Option{coord.WithLogger(log), coord.WithCommand(cmd)}, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	return m, log, nil
}

// coordConfig checks the settings and makes them a coord.Config. Messages
// name where a bad value came from: its flag (or env var), or its config
// file and line.
func (g globals) coordConfig() (coord.Config, error) {
	cfg := coord.Config{
		Backend:  g[flagBackend].text,
		LockDir:  g[flagLockDir].text,
		Fallback: g[flagFallback].text,
		Prefix:   g[flagPrefix].text,
		CACert:   g[flagCACert].text,
		Cert:     g[flagCert].text,
		Key:      g[flagKey].text,
		Username: g[flagUser].text,
		Password: g[flagPassword].text,
	}
	switch cfg.Backend {
	case coord.BackendAuto, coord.BackendFile, coord.BackendEtcd:
	default:
		return cfg, usagef("%s %q: want auto, file or etcd", g[flagBackend].from, cfg.Backend)
	}
	if cfg.Fallback != "none" && cfg.Fallback != coord.BackendFile {
		return cfg, usagef("%s %q: want none or file", g[flagFallback].from, cfg.Fallback)
	}
	var err error
	if cfg.TTL, err = g.duration(flagTTL); err != nil {
		return cfg, err
	}
	if cfg.TTL < 2*time.Second || cfg.TTL%time.Second != 0 {
		return cfg, usagef("%s %s: want whole seconds, at least 2s", g[flagTTL].from, cfg.TTL)
	}
	if cfg.DialTimeout, err = g.duration(flagDial); err != nil {
		return cfg, err
	}
	if cfg.DialTimeout <= 0 {
		return cfg, usagef("%s %s: must be positive", g[flagDial].from, cfg.DialTimeout)
	}
	if !strings.HasPrefix(cfg.Prefix, "/") || strings.HasSuffix(cfg.Prefix, "/") {
		return cfg, usagef("%s %q: must start with '/' and not end with one", g[flagPrefix].from, cfg.Prefix)
	}
	if user, pass, ok := strings.Cut(cfg.Username, ":"); ok && cfg.Password == "" {
		cfg.Username, cfg.Password = user, pass
	}
	raw := g[flagEndpoints].text
	for _, e := range strings.Split(raw, ",") {
		if e = strings.TrimSpace(e); e != "" {
			cfg.Endpoints = append(cfg.Endpoints, e)
		}
	}
	if strings.TrimSpace(raw) != "" && len(cfg.Endpoints) == 0 {
		return cfg, usagef("%s %q: no endpoint in it", g[flagEndpoints].from, raw)
	}
	return cfg, nil
}

// timeoutFlag reads a --timeout, refusing negative values.
func timeoutFlag(c *cli.Context) (time.Duration, error) {
	d := c.Duration(flagTimeout)
	if d < 0 {
		return 0, usagef("--%s %s: must not be negative (0 tries once)", flagTimeout, d)
	}
	return d, nil
}

// splitCommand separates the n leading arguments (NAME, or ID DEST) from
// the command after them ("--" between the two is optional).
func splitCommand(args []string, n int, usage string) (head, cmd []string, err error) {
	if len(args) < n {
		return nil, nil, usagef("missing arguments; usage: %s", usage)
	}
	head, cmd = args[:n], args[n:]
	if len(cmd) > 0 && cmd[0] == "--" {
		cmd = cmd[1:]
	}
	if len(cmd) == 0 || cmd[0] == "" {
		return nil, nil, usagef("missing command; usage: %s", usage)
	}
	if cmd[0] == args[n] && strings.HasPrefix(cmd[0], "-") {
		return nil, nil, usagef("%q after the arguments: flags go first; usage: %s", cmd[0], usage)
	}
	return head, cmd, nil
}

// lookCommand finds the command, so that a missing one fails before any
// lock is taken.
func lookCommand(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", execError(name, err)
	}
	return path, nil
}

// execError is the error for a command that cannot be run: 127 if it is
// not found, 126 if it is not executable, as in the shell.
func execError(name string, err error) error {
	code := exitcode.NotFound
	if errors.Is(err, os.ErrPermission) {
		code = exitcode.NotExec
	}
	return &exitCodeError{code, fmt.Errorf("run %q: %w", name, err)}
}
