package coordcli

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// envNamespace starts the name of every environment variable coord reads or
// sets.
const envNamespace = "COORD_"

// serverEnvPrefix starts the variables of the server command.
const serverEnvPrefix = "COORD_SERVER_"

// reservedEnv are the COORD_ variables that coord does not read but that
// belong to it: those it sets for the command it runs (a coord inside that
// command sees them), and those that coord's own tests, benchmarks and
// deploy scripts read. Names ending in "_" are prefixes.
func reservedEnv() []string {
	return []string{
		envLockName, envToken, envDest, envToolchainID, envPID, envTotalFile, envHold,
		envServerExec,
		serverEnvPrefix, // the server command's, which plain coord does not have
		"COORD_TEST_", "COORD_BENCH_", "COORD_HERD", "COORD_HERD_", "COORD_SOAK",
		"COORD_CLUSTER_", "COORD_PREFIX", // deploy/local-cluster.sh
	}
}

// knownEnv are the variables that some flag of app or of its commands
// reads: derived from the flags, so that the list cannot drift from them.
func knownEnv(app *cli.App) []string {
	var names []string
	add := func(flags []cli.Flag) {
		for _, f := range flags {
			if e, ok := f.(interface{ GetEnvVars() []string }); ok {
				names = append(names, e.GetEnvVars()...)
			}
		}
	}
	add(app.Flags)
	for _, cmd := range app.Commands {
		add(cmd.Flags)
	}
	return names
}

// warnUnknownEnv warns, one line each, about the non-empty COORD_
// variables in env (as os.Environ gives it) that coord neither reads nor reserves: a
// mistyped name would otherwise be ignored without a word, and coord run
// with settings other than those meant (COORD_ETCD_ENDPOINT: the file
// backend). A warning, not an error: the exit status is unchanged.
func warnUnknownEnv(w io.Writer, env []string, app *cli.App) {
	known := knownEnv(app)
	reserved := reservedEnv()
	if slices.ContainsFunc(known, func(k string) bool { return strings.HasPrefix(k, serverEnvPrefix) }) {
		// coord-server: its server command's flags name them all.
		reserved = slices.DeleteFunc(reserved, func(r string) bool { return r == serverEnvPrefix })
	}
	var suffixes []string
	for _, k := range append(slices.Clone(known), reserved...) {
		if !strings.HasSuffix(k, "_") {
			suffixes = append(suffixes, strings.TrimPrefix(k, envNamespace))
		}
	}
	for _, kv := range env {
		name, val, _ := strings.Cut(kv, "=")
		if val == "" || !strings.HasPrefix(strings.ToUpper(name), envNamespace) {
			// Empty is as good as unset for coord (see config.go).
			continue
		}
		if isKnownEnv(name, known, reserved) {
			continue
		}
		msg := fmt.Sprintf("coord: warning: unknown environment variable %s ignored", Printable(name))
		if s := nearest(name[len(envNamespace):], suffixes); s != "" {
			msg += "; did you mean " + envNamespace + s + "?"
		} else {
			msg += " (coord --help shows those it reads)"
		}
		fmt.Fprintln(w, msg)
	}
}

// isKnownEnv reports whether coord reads or reserves name. Windows's
// environment ignores case, as os.Getenv does there.
func isKnownEnv(name string, known, reserved []string) bool {
	if runtime.GOOS == "windows" {
		name = strings.ToUpper(name)
	}
	if slices.Contains(known, name) {
		return true
	}
	for _, r := range reserved {
		if name == r || strings.HasSuffix(r, "_") && strings.HasPrefix(name, r) {
			return true
		}
	}
	return false
}
