package coordcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/toolchainkit/coord/coord"
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

// Exit statuses (sysexits), decided only in exitCode.
const (
	exitOK          = 0
	exitUsage       = 64
	exitUnavailable = 69
	exitInternal    = 70
	exitLost        = 74
	exitTimeout     = 75
	exitInterrupted = 130
	exitNotFound    = 127
	exitNotExec     = 126
)

// Main runs the program with os.Args and exits with its status; SIGINT,
// SIGTERM and SIGHUP cancel the command's context. server is the `server`
// command; nil runs the coord-server binary for it (see execServer).
func Main(server *cli.Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	code := Run(ctx, os.Args, os.Stdout, os.Stderr, server)
	stop()
	os.Exit(code)
}

// Run is the whole program: it parses args, runs one command and returns
// the exit status. It writes only to stdout and stderr.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, server *cli.Command) int {
	if len(args) > 1 && args[1] == guardCommand {
		return guard.Main(args[2:], stderr)
	}
	if server == nil {
		server = execServer(args)
	}
	app := newApp(stdout, stderr, server)
	err := app.RunContext(ctx, args)
	code := exitCode(err)
	if err != nil && !errors.As(err, new(*childExit)) {
		fmt.Fprintf(stderr, "coord: %s\n", oneLine(err))
	}
	return code
}

func newApp(stdout, stderr io.Writer, server *cli.Command) *cli.App {
	return &cli.App{
		Name:           "coord",
		Usage:          "locks and download coordination for shared toolchain storage",
		Writer:         stdout,
		ErrWriter:      stderr,
		HideVersion:    true,
		ExitErrHandler: func(*cli.Context, error) {}, // exit codes are ours
		OnUsageError:   UsageErr,
		Flags:          globalFlags(),
		Commands:       []*cli.Command{lockCommand(), downloadCommand(), statusCommand(), gcCommand(), server, versionCommand()},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return Usagef("unknown command %q", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
	}
}

// UsageErr is the OnUsageError of every command: a flag that does not
// parse is a usage error (exit 64).
func UsageErr(_ *cli.Context, err error, _ bool) error { return &usageError{err} }

// usageError marks a mistake in how coord was called (exit 64).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// Usagef returns a usage error (exit 64).
func Usagef(format string, a ...any) error { return &usageError{fmt.Errorf(format, a...)} }

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

// Action wraps a command's action so that its errors are told apart from
// those of parsing the command line (see exitCode).
func Action(fn func(*cli.Context) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if err := fn(c); err != nil {
			return &actionError{err}
		}
		return nil
	}
}

// exitCode maps an error to coord's exit status.
func exitCode(err error) int {
	var ce *childExit
	var xe *exitCodeError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce):
		return ce.code
	case errors.As(err, &xe):
		return xe.code
	case errors.As(err, new(*usageError)), !errors.As(err, new(*actionError)):
		return exitUsage
	case errors.Is(err, coord.ErrInvalidName), errors.Is(err, coord.ErrInvalidArgument):
		return exitUsage
	case errors.Is(err, coord.ErrBackendUnavailable):
		return exitUnavailable
	case errors.Is(err, coord.ErrLockLost):
		return exitLost
	case errors.Is(err, coord.ErrTimeout):
		return exitTimeout
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	}
	return exitInternal
}

// oneLine makes a message one Printable line: whitespace runs become one
// space, other control characters and invalid UTF-8 are escaped, so that a
// hostile name or path cannot drive the terminal.
func oneLine(err error) string { return sanitize(err.Error()) }

// sanitize is oneLine for any text, such as a holder record that anyone
// who can write the lock directory may have written.
func sanitize(s string) string {
	var b strings.Builder
	for _, f := range strings.Fields(s) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		for i, r := range f {
			switch {
			case r == utf8.RuneError:
				fmt.Fprintf(&b, "\\x%02x", f[i])
			case unicode.IsControl(r):
				fmt.Fprintf(&b, "\\x%02x", r)
			default:
				b.WriteRune(r)
			}
		}
	}
	return b.String()
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
		return nil, Usagef("%s: %v", level.from, err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	var e zapcore.Encoder
	switch format.text {
	case "console":
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		e = zapcore.NewConsoleEncoder(enc)
	case "json":
		e = zapcore.NewJSONEncoder(enc)
	default:
		return nil, Usagef("%s %q: want console or json", format.from, format.text)
	}
	log := zap.New(zapcore.NewCore(e, zapcore.AddSync(w), lvl))
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
		return cfg, Usagef("%s %q: want auto, file or etcd", g[flagBackend].from, cfg.Backend)
	}
	if cfg.Fallback != "none" && cfg.Fallback != coord.BackendFile {
		return cfg, Usagef("%s %q: want none or file", g[flagFallback].from, cfg.Fallback)
	}
	var err error
	if cfg.TTL, err = g.duration(flagTTL); err != nil {
		return cfg, err
	}
	if cfg.TTL < 2*time.Second || cfg.TTL%time.Second != 0 {
		return cfg, Usagef("%s %s: want whole seconds, at least 2s", g[flagTTL].from, cfg.TTL)
	}
	if cfg.DialTimeout, err = g.duration(flagDial); err != nil {
		return cfg, err
	}
	if cfg.DialTimeout <= 0 {
		return cfg, Usagef("%s %s: must be positive", g[flagDial].from, cfg.DialTimeout)
	}
	if !strings.HasPrefix(cfg.Prefix, "/") || strings.HasSuffix(cfg.Prefix, "/") {
		return cfg, Usagef("%s %q: must start with '/' and not end with one", g[flagPrefix].from, cfg.Prefix)
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
		return cfg, Usagef("%s %q: no endpoint in it", g[flagEndpoints].from, raw)
	}
	return cfg, nil
}

// timeoutFlag reads a --timeout, refusing negative values.
func timeoutFlag(c *cli.Context) (time.Duration, error) {
	d := c.Duration(flagTimeout)
	if d < 0 {
		return 0, Usagef("--%s %s: must not be negative (0 tries once)", flagTimeout, d)
	}
	return d, nil
}

// splitCommand separates the n leading arguments (NAME, or ID DEST) from
// the command after them ("--" between the two is optional).
func splitCommand(args []string, n int, usage string) (head, cmd []string, err error) {
	if len(args) < n {
		return nil, nil, Usagef("missing arguments; usage: %s", usage)
	}
	head, cmd = args[:n], args[n:]
	if len(cmd) > 0 && cmd[0] == "--" {
		cmd = cmd[1:]
	}
	if len(cmd) == 0 || cmd[0] == "" {
		return nil, nil, Usagef("missing command; usage: %s", usage)
	}
	if cmd[0] == args[n] && strings.HasPrefix(cmd[0], "-") {
		return nil, nil, Usagef("%q after the arguments: flags go first; usage: %s", cmd[0], usage)
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
	code := exitNotFound
	if errors.Is(err, os.ErrPermission) {
		code = exitNotExec
	}
	return &exitCodeError{code, fmt.Errorf("run %q: %w", name, err)}
}
