package coordcli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/urfave/cli/v2"

	"github.com/toolchainkit/coord/coord"
)

// serverBinary serves `coord server` and `coord exporter`. coord itself
// leaves the etcd server and Prometheus' client out: linked in, their
// package initialisation costs every coord process (and every guard)
// about 5 ms and 2.5 ms of start-up.
const serverBinary = "coord-server"

// The usage lines of the commands plain coord runs coord-server for.
const (
	serverUsage   = "run a single-member etcd for trying fleet mode (runs " + serverBinary + ")"
	exporterUsage = "serve Prometheus metrics and a live status page of the locks (runs " + serverBinary + ")"
)

// envServerExec is set for the coord-server that coord runs, so that a
// coord-server that is really a plain coord says so instead of running
// itself over and over.
const envServerExec = "COORD_SERVER_EXEC"

// plainHeavy returns plain coord's server and exporter commands, which run
// coord-server. The exporter's keeps its flags, never parsed, so that
// their environment variables are known (see warnUnknownEnv).
func plainHeavy(args []string) (server, exporter *cli.Command) {
	exporter = execServer(args, "exporter", exporterUsage)
	exporter.Flags = exporterFlags(0)
	return execServer(args, "server", serverUsage), exporter
}

// execServer is a command of plain coord that coord-server has (server,
// exporter): it runs coord-server, found beside coord or on PATH, instead
// of this process (see runInstead), with the same arguments (coord-server
// is coord with those commands linked in).
func execServer(args []string, name, usage string) *cli.Command {
	return &cli.Command{
		Name:            name,
		Usage:           usage,
		SkipFlagParsing: true,
		Action: func(*cli.Context) error {
			if os.Getenv(envServerExec) != "" {
				return fmt.Errorf("%w: %s is a plain coord, without the %s", coord.ErrBackendUnavailable, os.Getenv(envServerExec), name)
			}
			path, err := findServer(name)
			if err != nil {
				return err
			}
			env := append(os.Environ(), envServerExec+"="+path)
			err = runInstead(path, append([]string{path}, args[1:]...), env)
			if err == nil || errors.As(err, new(*childExit)) {
				return err
			}
			return fmt.Errorf("%w: run %s: %v", coord.ErrBackendUnavailable, path, err)
		},
	}
}

// findServer looks for coord-server, for `coord name`, beside this
// executable, then on PATH.
func findServer(name string) (string, error) {
	bin := serverBinary
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	if p, ok := besideSelf(bin); ok {
		return p, nil
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%w: `coord %s` runs %s, found neither beside coord nor on PATH (install it with `go install github.com/toolchainkit/coord/cmd/%s`)",
			coord.ErrBackendUnavailable, name, serverBinary, serverBinary)
	}
	return p, nil
}

// besideSelf returns the path of the program name in the directory of this
// executable, if there is one.
func besideSelf(name string) (string, bool) {
	self, err := os.Executable()
	if err != nil {
		return "", false
	}
	p := filepath.Join(filepath.Dir(self), name)
	fi, err := os.Stat(p)
	return p, err == nil && fi.Mode().IsRegular()
}
