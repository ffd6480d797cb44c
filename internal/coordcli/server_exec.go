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

// serverBinary serves `coord server`. coord itself leaves the etcd server
// out: linked in, its package initialisation costs every coord process
// (and every guard) about 5 ms of start-up, twice the rest of coord's.
const serverBinary = "coord-server"

// envServerExec is set for the coord-server that coord runs, so that a
// coord-server that is really a plain coord says so instead of running
// itself over and over.
const envServerExec = "COORD_SERVER_EXEC"

// execServer is the `server` command of plain coord: it runs coord-server,
// found beside coord or on PATH, instead of this process (see runInstead),
// with the same arguments (coord-server is coord with the server linked
// in).
func execServer(args []string) *cli.Command {
	return &cli.Command{
		Name:            "server",
		Usage:           "run a single-member etcd for trying fleet mode (runs " + serverBinary + ")",
		SkipFlagParsing: true,
		Action: func(*cli.Context) error {
			if os.Getenv(envServerExec) != "" {
				return fmt.Errorf("%w: %s is a plain coord, without the server", coord.ErrBackendUnavailable, os.Getenv(envServerExec))
			}
			path, err := findServer()
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

// findServer looks for coord-server beside this executable, then on PATH.
func findServer() (string, error) {
	name := serverBinary
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	if p, ok := besideSelf(name); ok {
		return p, nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: `coord server` runs %s, found neither beside coord nor on PATH (install it with `go install github.com/toolchainkit/coord/cmd/%s`)",
			coord.ErrBackendUnavailable, serverBinary, serverBinary)
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
