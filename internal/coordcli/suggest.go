package coordcli

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// A mistyped command, flag or env var name is answered with the nearest
// name coord knows, when there is one near enough to be a slip of the
// fingers: a letter left out, added, changed, or two letters swapped.
// urfave/cli's own Suggest (Jaro-Winkler) always names something, even
// for garbage.

// nearest returns the candidate nearest to typed in optimal string
// alignment distance (case ignored), or "" if none is within a third of
// typed's length: 1 edit for 3 to 5 letters, 2 for 6 to 8 and so on, none
// for one or two letters. Ties go to the earlier candidate.
func nearest(typed string, candidates []string) string {
	limit := len(typed) / 3
	best, bestD := "", limit+1
	for _, c := range candidates {
		if c == "" || c == typed || len(typed) > len(c)+limit || len(c) > len(typed)+limit {
			continue // too far apart by length alone (and a long name costs nothing)
		}
		if d := osaDistance(strings.ToLower(typed), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// osaDistance is the optimal string alignment distance between a and b:
// the fewest insertions, deletions, substitutions and transpositions of
// adjacent bytes that turn a into b, no substring edited twice.
func osaDistance(a, b string) int {
	// Three rows: the one two back is needed for transpositions.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// commandNames are the names and aliases of the app's visible commands.
func commandNames(app *cli.App) []string {
	var names []string
	for _, cmd := range app.VisibleCommands() {
		names = append(names, cmd.Names()...)
	}
	return names
}

// flagNames are the names and aliases of flags, and help's.
func flagNames(flags []cli.Flag) []string {
	names := []string{"help", "h"}
	for _, f := range flags {
		names = append(names, f.Names()...)
	}
	return names
}

// unknownCommand is the usage error for a command coord does not have.
func unknownCommand(app *cli.App, name string) error {
	if s := nearest(name, commandNames(app)); s != "" {
		return usagef("unknown command %q; did you mean %q?", name, s)
	}
	return usagef("unknown command %q", name)
}

// providedButNotDefined starts the error of package flag for an unknown
// flag; the name follows with one dash, however many were typed.
const providedButNotDefined = "flag provided but not defined: -"

// usageErrFor is the OnUsageError of a command (global, nil for the app):
// a flag that does not parse is a usage error (exit 64); an unknown flag
// is named, with the nearest of the command's own flags, or else of the
// global flags, which go before the command.
func usageErrFor(own []cli.Flag, global []cli.Flag) cli.OnUsageErrorFunc {
	return func(_ *cli.Context, err error, _ bool) error {
		name, ok := strings.CutPrefix(err.Error(), providedButNotDefined)
		if !ok {
			return &usageError{err}
		}
		msg := "unknown flag " + dashes(name)
		switch g := flagNames(global)[2:]; {
		case len(global) > 0 && slices.Contains(g, name):
			msg += fmt.Sprintf("; %s is a global flag: put it before the command", dashes(name))
		case nearest(name, flagNames(own)) != "":
			msg += fmt.Sprintf("; did you mean %s?", dashes(nearest(name, flagNames(own))))
		case len(global) > 0 && nearest(name, g) != "":
			msg += fmt.Sprintf("; did you mean the global flag %s (before the command)?", dashes(nearest(name, g)))
		}
		return &usageError{errors.New(msg)}
	}
}

// dashes writes a flag name as it is typed: -h, --timeout.
func dashes(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}
