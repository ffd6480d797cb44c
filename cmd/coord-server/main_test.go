package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the test binary stand in for the coord binary: scripts run
// `coord` as a real process, through main, exactly as users do.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"coord": main})
}

// TestScript runs the CLI scripts in testdata/script. Each script gets its
// own lock directory ($WORK/locks) and home ($WORK/home), and these extra
// variables: HOSTNAME (this host, as holder records name it) and ESC (the
// escape control character, for names that could drive a terminal).
//
// Extra script commands:
//
//	exitcode N prog [args...]  run prog; fail unless it exits with status N
//	lines stdout|stderr N      fail unless the last output has exactly N lines
//	waitfile path              wait (at most 10s) until path exists
//	envfile VAR path           set VAR to path's content, spaces trimmed
//	validjson stdout|path      fail unless the text is one valid JSON value
//	ls dir                     print dir's entries, dot files too, one a line
//	waitwaiters NAME N         run `coord status --json` until lock NAME has
//	                           N waiters (at most 10s)
//	freeport VAR...            set each VAR to a distinct free loopback TCP port
//	waitline path regexp       wait (at most 10s) until a line of path matches
//	stopbg SIG MAX             send SIG (TERM, INT or HUP) to the background
//	                           commands still running; fail unless they all
//	                           exit within the duration MAX
//	gencert dir                write a CA, a server certificate for 127.0.0.1
//	                           and a client certificate into dir (PEM)
//	etcdkv [-tls dir] URL put KEY VALUE | get KEY | watch KEY
//	                           talk to the etcd at URL, no retries (TLS with
//	                           gencert's files in dir); get prints the value;
//	                           watch leaves a watch open until the script ends
//	waitstatus REGEXP          run `coord status` until its output matches
//	                           REGEXP (at most 30s)
//	tty start CMD | wait REGEXP | screen
//	                           a real terminal (tmux): see cmdTty
func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 filepath.Join("testdata", "script"),
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			host, err := os.Hostname()
			if err != nil {
				return err
			}
			env.Setenv("COORD_LOCK_DIR", filepath.Join(env.WorkDir, "locks"))
			env.Setenv("HOME", filepath.Join(env.WorkDir, "home"))
			// No config file of this host's or user's may change a script.
			env.Setenv("COORD_CONFIG", "/dev/null")
			env.Setenv("HOSTNAME", host)
			env.Setenv("ESC", "\x1b")
			return nil
		},
		Condition: func(cond string) (bool, error) {
			if cond == "tty" {
				return ttyCondition()
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode":    cmdExitcode,
			"lines":       cmdLines,
			"waitfile":    cmdWaitfile,
			"envfile":     cmdEnvfile,
			"validjson":   cmdValidJSON,
			"ls":          cmdLs,
			"waitwaiters": cmdWaitwaiters,
			"freeport":    cmdFreeport,
			"waitline":    cmdWaitline,
			"stopbg":      cmdStopbg,
			"gencert":     cmdGencert,
			"etcdkv":      cmdEtcdkv,
			"tty":         cmdTty,
			"waitstatus":  cmdWaitstatus,
		},
	})
}

// cmdExitcode runs a program like exec and asserts its exact exit status;
// stdout and stderr are then available to the stdout and stderr commands.
func cmdExitcode(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! exitcode")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: exitcode N program [args...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: bad status %q", args[0])
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		got = ee.ExitCode() // -1 if killed by a signal
	default:
		ts.Fatalf("exitcode: %v", err)
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

func cmdLines(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! lines")
	}
	if len(args) != 2 || (args[0] != "stdout" && args[0] != "stderr") {
		ts.Fatalf("usage: lines stdout|stderr N")
	}
	want, err := strconv.Atoi(args[1])
	if err != nil {
		ts.Fatalf("lines: bad count %q", args[1])
	}
	text := ts.ReadFile(args[0])
	got := strings.Count(text, "\n")
	if text != "" && !strings.HasSuffix(text, "\n") {
		got++
	}
	if got != want {
		ts.Fatalf("%s has %d lines, want %d:\n%s", args[0], got, want, text)
	}
}

func cmdWaitfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! waitfile")
	}
	if len(args) != 1 {
		ts.Fatalf("usage: waitfile path")
	}
	path := ts.MkAbs(args[0])
	waitUntil(ts, 10*time.Second, func() error {
		_, err := os.Stat(path)
		return err
	})
}

func cmdEnvfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! envfile")
	}
	if len(args) != 2 {
		ts.Fatalf("usage: envfile VAR path")
	}
	ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile(args[1])))
}

func cmdValidJSON(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: validjson stdout|path")
	}
	text := ts.ReadFile(args[0])
	if ok := json.Valid([]byte(text)); ok == neg {
		ts.Fatalf("%s: valid JSON is %v, want %v:\n%s", args[0], ok, !neg, text)
	}
}

func cmdLs(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! ls")
	}
	if len(args) != 1 {
		ts.Fatalf("usage: ls dir")
	}
	ents, err := os.ReadDir(ts.MkAbs(args[0]))
	ts.Check(err)
	w := ts.Stdout() // even for an empty dir: replaces the last stdout
	for _, e := range ents {
		w.Write([]byte(e.Name() + "\n"))
	}
}

func cmdWaitwaiters(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! waitwaiters")
	}
	if len(args) != 2 {
		ts.Fatalf("usage: waitwaiters NAME N")
	}
	want, err := strconv.Atoi(args[1])
	if err != nil {
		ts.Fatalf("waitwaiters: bad count %q", args[1])
	}
	waitUntil(ts, 10*time.Second, func() error {
		if err := ts.Exec("coord", "status", "--json"); err != nil {
			return err
		}
		var locks []struct {
			Name    string `json:"name"`
			Waiters *int   `json:"waiters"`
		}
		if err := json.Unmarshal([]byte(ts.ReadFile("stdout")), &locks); err != nil {
			return err
		}
		for _, l := range locks {
			if l.Name == args[0] && l.Waiters != nil && *l.Waiters == want {
				return nil
			}
		}
		return fmt.Errorf("lock %q does not have %d waiters", args[0], want)
	})
}

func cmdWaitstatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitstatus REGEXP")
	}
	re, err := regexp.Compile("(?m)" + args[0])
	ts.Check(err)
	waitUntil(ts, 30*time.Second, func() error {
		if err := ts.Exec("coord", "status"); err != nil {
			return err
		}
		if out := ts.ReadFile("stdout"); !re.MatchString(out) {
			return fmt.Errorf("coord status did not match %q:\n%s", args[0], out)
		}
		return nil
	})
}
