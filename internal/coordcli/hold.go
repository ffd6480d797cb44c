package coordcli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/exitcode"
)

const (
	holdUsage = "coord hold [--timeout D] [--shared] [--ttl D] [--follow PID] [--export sh|github] NAME\n" +
		"   coord hold --status [HANDLE]"

	flagHoldTTL = "ttl"
	flagFollow  = "follow"
	flagExport  = "export"
	flagStatus  = "status"
	envHold     = "COORD_HOLD"

	// defaultHoldTTL is how long a keeper holds on without a coord call
	// with its handle.
	defaultHoldTTL = 10 * time.Minute

	// keeperCommand is the hidden first argument that makes coord a hold's
	// keeper: `coord __hold-keeper ID ARGS...`, ARGS being those of the
	// `coord hold` that started it; the result goes to fd 3.
	keeperCommand = "__hold-keeper"
	// Keys of cli.App.Metadata: the args coord was run with, and, in a
	// keeper, the hold's ID.
	metaArgs   = "args"
	metaKeeper = "keeper"
)

func holdCommand() *cli.Command {
	return &cli.Command{
		Name:  "hold",
		Usage: "take a lock and keep it held across several commands (CI steps) until coord release",
		Description: "coord hold takes the lock, leaves a keeper process holding it (file: the lock's descriptor;\n" +
			"etcd: the lease's keep-alive), prints a handle and returns. Use the handle with\n" +
			"`coord run --held HANDLE -- CMD` (CMD gets COORD_LOCK_NAME and COORD_FENCING_TOKEN),\n" +
			"`coord hold --status HANDLE` (0 held, 74 lost, 66 released or unknown) and `coord release HANDLE`;\n" +
			"each renews the hold. The keeper lets go by itself when --ttl passes without such a call,\n" +
			"when the process --follow names exits, or when the lock is lost; the handle then reports\n" +
			"\"lost\". --export sh prints `export COORD_HOLD='HANDLE'` for eval; --export github prints\n" +
			"COORD_HOLD=HANDLE for >> \"$GITHUB_ENV\". Handles work for their own user on their own host only.\n" +
			"Not supported on Windows yet.",
		UsageText: holdUsage,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: flagTimeout, Value: coord.DefaultLockTimeout, Usage: "how long to wait for the lock; 0 tries once"},
			&cli.BoolFlag{Name: flagShared, Usage: "take a shared lock"},
			&cli.DurationFlag{Name: flagHoldTTL, Value: defaultHoldTTL, Usage: "let go after this long without a coord call with the handle"},
			&cli.IntFlag{Name: flagFollow, Usage: "let go when process `PID` exits (e.g. the CI job's)"},
			&cli.StringFlag{Name: flagExport, Usage: "print the handle as sh (export COORD_HOLD=...) or github (COORD_HOLD=..., for $GITHUB_ENV)"},
			&cli.BoolFlag{Name: flagStatus, Usage: "say whether HANDLE (default $COORD_HOLD) is still held: exit 0 held, 74 lost, 66 released or unknown"},
		},
		Action: runHold,
	}
}

// keeperResult is what the keeper tells `coord hold` on fd 3: the handle,
// or the error and its exit status.
type keeperResult struct {
	Handle string `json:"handle,omitempty"`
	Token  int64  `json:"token,omitempty"`
	PID    int    `json:"pid,omitempty"`
	Code   int    `json:"code"`
	Error  string `json:"error,omitempty"`
}

func runHold(c *cli.Context) error {
	if err := holdSupported(); err != nil {
		return &exitCodeError{exitcode.Unavailable, err}
	}
	if c.Bool(flagStatus) {
		return runHoldStatus(c)
	}
	if c.NArg() != 1 {
		return usagef("want one lock name; usage: %s", holdUsage)
	}
	timeout, err := timeoutFlag(c)
	if err != nil {
		return err
	}
	if id, ok := c.App.Metadata[metaKeeper].(string); ok {
		// `coord hold` checked the flags; a followed pid gone since
		// makes the hold lost at once.
		return runKeeper(c, id, timeout)
	}
	if ttl := c.Duration(flagHoldTTL); ttl < time.Second {
		return usagef("--%s %s: want at least 1s", flagHoldTTL, ttl)
	}
	if pid := c.Int(flagFollow); c.IsSet(flagFollow) && (pid <= 0 || !processAlive(pid)) {
		return usagef("--%s %d: no such process", flagFollow, pid)
	}
	export := c.String(flagExport)
	if export != "" && export != "sh" && export != "github" {
		return usagef("--%s %q: want sh or github", flagExport, export)
	}
	return startHold(c, export)
}

// startHold starts the keeper, waits for its word and prints the handle.
func startHold(c *cli.Context, export string) error {
	h, err := newHandle()
	if err != nil {
		return err
	}
	dir, err := holdsDir(true)
	if err != nil {
		return err
	}
	removeEndedHolds(dir)
	hdir := filepath.Join(dir, h.id)
	if err := os.Mkdir(hdir, 0o700); err != nil {
		return fmt.Errorf("hold directory: %w", err)
	}
	res, err := runKeeperProcess(c, h, hdir)
	if err != nil {
		os.RemoveAll(hdir)
		return err
	}
	if res.Code != exitcode.OK {
		os.RemoveAll(hdir)
		return &exitCodeError{res.Code, errors.New(res.Error)}
	}
	out := c.App.Writer
	switch export {
	case "sh":
		fmt.Fprintf(out, "export %s='%s'\n", envHold, res.Handle)
	case "github":
		fmt.Fprintf(out, "%s=%s\n", envHold, res.Handle)
	default:
		fmt.Fprintln(out, res.Handle)
	}
	follow := ""
	if pid := c.Int(flagFollow); pid > 0 {
		follow = fmt.Sprintf(", when pid %d exits", pid)
	}
	fmt.Fprintf(c.App.ErrWriter, "coord: holding lock %q (token %d) in keeper pid %d; it lets go on coord release, after %s without a coord call with the handle%s, or if the lock is lost\n",
		c.Args().First(), res.Token, res.PID, c.Duration(flagHoldTTL), follow)
	return nil
}

// runKeeperProcess starts coord as the keeper of hold h, detached (a
// session of its own, stdin and stdout /dev/null, stderr its log) and
// reads its result. A signal to coord while the keeper waits for the lock
// is passed on, and the keeper gives up.
func runKeeperProcess(c *cli.Context, h holdHandle, dir string) (keeperResult, error) {
	var res keeperResult
	self, err := os.Executable()
	if err != nil {
		return res, fmt.Errorf("start keeper: %w", err)
	}
	args, _ := c.App.Metadata[metaArgs].([]string)
	if len(args) == 0 {
		args = os.Args
	}
	log, err := openNoFollow(filepath.Join(dir, holdLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return res, fmt.Errorf("keeper log: %w", err)
	}
	defer log.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return res, fmt.Errorf("start keeper: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(self, append([]string{keeperCommand, h.id}, args[1:]...)...)
	cmd.Stderr = log
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = keeperSysProcAttr()
	err = cmd.Start()
	w.Close()
	if err != nil {
		return res, fmt.Errorf("start keeper: %w", err)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-c.Context.Done():
			stopKeeper(cmd.Process.Pid)
		case <-done:
		}
	}()
	err = json.NewDecoder(io.LimitReader(r, maxStateSize)).Decode(&res)
	close(done)
	<-stopped
	if err != nil {
		cmd.Wait()
		msg, _ := os.ReadFile(filepath.Join(dir, holdLog))
		return res, fmt.Errorf("keeper exited (%s) without a word: %s", cmd.ProcessState, strings.TrimSpace(string(msg)))
	}
	if res.Code != exitcode.OK {
		cmd.Wait()
	} else {
		cmd.Process.Release()
	}
	return res, nil
}

func runHoldStatus(c *cli.Context) error {
	text, err := handleArg(c)
	if err != nil {
		return err
	}
	h, err := findHold(text)
	if err != nil {
		return holdError(err)
	}
	out := c.App.Writer
	switch h.st.State {
	case stateHeld:
		if err := h.renew(); err != nil {
			return fmt.Errorf("renew hold: %w", err)
		}
		follow := ""
		if h.st.Follow > 0 {
			follow = fmt.Sprintf(" or when pid %d exits", h.st.Follow)
		}
		fmt.Fprintf(out, "held: %s by keeper pid %d since %s; lets go after %s without use%s\n",
			h.describe(), h.st.PID, h.st.Since.Format(time.RFC3339), h.st.TTL, follow)
		return nil
	case stateLost:
		fmt.Fprintf(out, "lost: %s: %s\n", h.describe(), Printable(h.st.Reason))
		return &childExit{exitcode.Lost} // said on stdout: no message
	}
	fmt.Fprintf(out, "released: %s: %s\n", h.describe(), Printable(h.st.Reason))
	return &childExit{exitcode.NoHold}
}

// handleArg is the one argument, HANDLE, or else $COORD_HOLD.
func handleArg(c *cli.Context) (string, error) {
	switch c.NArg() {
	case 0:
		if v := os.Getenv(envHold); v != "" {
			return v, nil
		}
		return "", usagef("missing handle (and %s is not set)", envHold)
	case 1:
		return c.Args().First(), nil
	}
	return "", usagef("want one handle, got %d arguments", c.NArg())
}
