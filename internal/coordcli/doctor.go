package coordcli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/exitcode"
)

const (
	flagPair     = "pair"
	doctorUsage  = "coord doctor [--json] | coord doctor --pair ID [--timeout D]"
	pairDefault  = time.Minute
	doctorPrefix = "coord doctor: "
)

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "check that this host's set-up can hold locks: lock directory, settings, etcd",
		Description: "Each check prints pass, warn, fail or skip, why, and what to do about it; the exit status is 1 when a check fails.\n" +
			"With --pair ID, run at the same time on two hosts that share the lock directory, it tells whether file locks\n" +
			"there exclude each other across those hosts (it meets the other host through files in the directory, not etcd).",
		UsageText: doctorUsage,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: flagJSON, Usage: "print JSON"},
			&cli.StringFlag{Name: flagPair, Usage: "meet the `ID` run on another host and test the lock directory's file locks across both"},
			&cli.DurationFlag{Name: flagTimeout, Value: pairDefault, Usage: "with --pair: how long to wait for the other host"},
		},
		Action: runDoctor,
	}
}

// Check outcomes.
const (
	checkPass = "pass"
	checkWarn = "warn"
	checkFail = "fail"
	checkSkip = "skip"
)

// check is one line of the report, and one item of `coord doctor --json`.
type check struct {
	Name    string `json:"name"`
	Status  string `json:"status"` // pass, warn, fail, skip
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// report collects the checks in the order they ran.
type report struct{ checks []check }

func (r *report) add(name, status, msg, fix string) {
	r.checks = append(r.checks, check{Name: name, Status: status, Message: msg, Fix: fix})
}

func (r *report) pass(name, format string, a ...any) {
	r.add(name, checkPass, fmt.Sprintf(format, a...), "")
}
func (r *report) skip(name, format string, a ...any) {
	r.add(name, checkSkip, fmt.Sprintf(format, a...), "")
}

func (r *report) count(status string) int {
	n := 0
	for _, c := range r.checks {
		if c.Status == status {
			n++
		}
	}
	return n
}

// doctorOut is `coord doctor --json`.
type doctorOut struct {
	Checks   []check `json:"checks"`
	Failed   int     `json:"failed"`
	Warnings int     `json:"warnings"`
}

func runDoctor(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("doctor takes no arguments; usage: %s", doctorUsage)
	}
	if c.IsSet(flagPair) {
		return runPair(c)
	}
	var r report
	cfg, ok := configChecks(c, &r)
	if ok {
		kind := cfg.Backend
		if kind == coord.BackendAuto {
			kind = coord.BackendFile
			if len(cfg.Endpoints) > 0 {
				kind = coord.BackendEtcd
			}
		}
		switch {
		case kind == coord.BackendEtcd && cfg.Fallback == coord.BackendFile && cfg.Backend == coord.BackendAuto:
			r.pass("backend", "etcd, under prefix %s; when etcd is unreachable, file locks that exclude this host only", cfg.Prefix)
		case kind == coord.BackendEtcd:
			r.pass("backend", "etcd, under prefix %s", cfg.Prefix)
		default:
			r.pass("backend", "file: locks exclude the processes that share the lock directory (this host, unless it is shared)")
		}
		if kind == coord.BackendFile || cfg.Fallback == coord.BackendFile && cfg.Backend == coord.BackendAuto {
			dirChecks(c.Context, cfg.LockDir, &r)
		}
		if kind == coord.BackendEtcd {
			etcdChecks(c.Context, cfg, &r)
		}
	}
	if c.Bool(flagJSON) {
		out := doctorOut{Checks: r.checks, Failed: r.count(checkFail), Warnings: r.count(checkWarn)}
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		printReport(c.App.Writer, &r)
	}
	if n := r.count(checkFail); n > 0 {
		return &exitCodeError{exitcode.Failed, fmt.Errorf("doctor: %d %s failed", n, plural(n, "check"))}
	}
	return nil
}

func plural(n int, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}

// printReport writes one aligned line a check, its fix on the line below,
// and a summary.
func printReport(w io.Writer, r *report) {
	width := 0
	for _, c := range r.checks {
		width = max(width, utf8.RuneCountInString(Printable(c.Name)))
	}
	for _, c := range r.checks {
		name := Printable(c.Name) // it may hold an endpoint as typed
		fmt.Fprintf(w, "%-4s  %s%*s  %s\n", c.Status, name, width-utf8.RuneCountInString(name), "", Printable(c.Message))
		if c.Fix != "" {
			fmt.Fprintf(w, "%-4s  %-*s  fix: %s\n", "", width, "", Printable(c.Fix))
		}
	}
	fmt.Fprintf(w, "%s%d passed, %d %s, %d failed, %d skipped\n", doctorPrefix,
		r.count(checkPass), r.count(checkWarn), plural(r.count(checkWarn), "warning"), r.count(checkFail), r.count(checkSkip))
}

// configChecks reports each setting in effect and where it came from, and
// whether together they make a usable configuration.
func configChecks(c *cli.Context, r *report) (coord.Config, bool) {
	g, _, err := loadGlobals(c)
	if err != nil {
		r.add("config", checkFail, message(err), "correct the config file named (--"+flagConfig+", "+envConfig+")")
		return coord.Config{}, false
	}
	for _, s := range globalSettings() {
		v := g[s.name]
		if v.text == "" {
			if s.name == flagLockDir {
				if d, err := coord.DefaultLockDir(); err == nil {
					r.pass("config "+s.name, "%s (default)", d)
				}
			}
			continue
		}
		text := v.text
		switch {
		case s.name == flagPassword:
			text = "set"
		case s.name == flagEndpoints:
			eps := strings.Split(text, ",")
			for i, e := range eps {
				eps[i] = redactEndpoint(e)
			}
			text = strings.Join(eps, ",")
		case s.name == flagUser && strings.Contains(text, ":"):
			user, _, _ := strings.Cut(text, ":")
			text = user + " (with a password)"
		}
		r.pass("config "+s.name, "%s (%s)", text, settingSource(c, s, v))
	}
	cfg, err := g.coordConfig()
	if err != nil {
		r.add("config", checkFail, message(err), "correct the value named, or unset it to take the default")
		return cfg, false
	}
	return cfg, true
}

// settingSource says where a setting's value came from: its flag, its env
// var, a config file (FILE:LINE) or the default, deciding as loadGlobals
// does. urfave/cli reports a value from the env var as the flag's: a
// flag's value that equals the variable's is said to come from the
// variable.
func settingSource(c *cli.Context, s setting, v value) string {
	if !strings.HasPrefix(v.from, "--") {
		file, _, _ := strings.Cut(v.from, ": ")
		return file
	}
	flag := ""
	if c.IsSet(s.name) {
		flag = c.String(s.name)
		if s.duration {
			flag = c.Duration(s.name).String()
		}
	}
	env := os.Getenv(s.env)
	switch {
	case flag != "" && env != "" && (flag == env || s.duration && durationText(env) == flag):
		return s.env
	case flag != "":
		return "--" + s.name
	case env != "":
		return s.env
	}
	return "default"
}

// durationText is a duration as Duration.String writes it, so that "10s"
// and "10000ms" compare equal; "" if it is not one.
func durationText(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil {
		return ""
	}
	return d.String()
}
