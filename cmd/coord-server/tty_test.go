package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// cmdTty drives a real terminal, Debian's tmux on a private socket, so
// that a script sees what a person at a terminal sees:
//
//	tty start CMD      run the shell command CMD in a new 200x10 terminal
//	tty wait REGEXP    wait (at most 30s) until the screen matches REGEXP
//	tty screen         print the screen, for stdout assertions
//
// The terminal ends with the script. A script that uses it starts with
// `[!tty] skip`: see ttyCondition.
func cmdTty(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 && !(len(args) == 1 && args[0] == "screen") {
		ts.Fatalf("usage: tty start CMD | tty wait REGEXP | tty screen")
	}
	sock := ts.Getenv("TTY_SOCKET")
	switch args[0] {
	case "start":
		// A short path: a unix socket's is limited to ~100 bytes.
		dir, err := os.MkdirTemp("", "ctty")
		ts.Check(err)
		sock = filepath.Join(dir, "s")
		ts.Setenv("TTY_SOCKET", sock)
		ts.Defer(func() {
			exec.Command("tmux", "-S", sock, "kill-server").Run()
			os.RemoveAll(dir)
		})
		ts.Check(ts.Exec("tmux", "-S", sock, "-f", "/dev/null", "new-session", "-d", "-x", "200", "-y", "10", "sh", "-c", args[1]))
	case "wait":
		re, err := regexp.Compile("(?m)" + args[1])
		ts.Check(err)
		start := time.Now()
		for {
			screen := capture(ts, sock)
			if re.MatchString(screen) {
				ts.Logf("tty wait: matched after %s", time.Since(start).Round(time.Millisecond))
				return
			}
			if time.Since(start) > 30*time.Second {
				ts.Fatalf("tty wait: the screen did not match %q within 30s:\n%s", args[1], screen)
			}
			time.Sleep(20 * time.Millisecond)
		}
	case "screen":
		if sock == "" {
			ts.Fatalf("tty: no terminal: tty start first")
		}
		ts.Check(ts.Exec("tmux", "-S", sock, "capture-pane", "-p"))
	default:
		ts.Fatalf("usage: tty start CMD | tty wait REGEXP | tty screen")
	}
}

// capture returns the screen of the terminal on sock.
func capture(ts *testscript.TestScript, sock string) string {
	if sock == "" {
		ts.Fatalf("tty: no terminal: tty start first")
	}
	out, err := exec.Command("tmux", "-S", sock, "capture-pane", "-p").Output()
	ts.Check(err)
	return string(out)
}

// ttyCondition is the script condition [tty]: tmux is installed. Without
// it a script is skipped, except in CI (CI set), where that is a failure:
// .ci/run installs it.
func ttyCondition() (bool, error) {
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("CI") != "" {
			return false, fmt.Errorf("tty: %v (in CI tmux must be installed)", err)
		}
		return false, nil
	}
	return true, nil
}
