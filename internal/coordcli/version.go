package coordcli

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// flagVersion is the global --version (-v): the same as `coord version`,
// the habit of most command-line tools.
const flagVersion = "version"

// errVersionShown ends a run whose --version was answered: exit 0, no
// command run, no message.
var errVersionShown = errors.New("version shown")

func versionFlag() cli.Flag {
	return &cli.BoolFlag{Name: flagVersion, Aliases: []string{"v"}, Usage: "print the version, as the version command does"}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			printVersion(c.App.Writer)
			return nil
		},
	}
}

// printVersion prints coord's version line.
func printVersion(w io.Writer) {
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	fmt.Fprintf(w, "coord %s %s %s/%s\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
