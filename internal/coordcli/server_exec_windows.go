package coordcli

import (
	"os"
	"os/exec"
)

// runInstead runs path as a child with this process's standard streams and
// returns its exit status (Windows cannot replace a process; Ctrl-C
// reaches every process of the console, the child included).
func runInstead(path string, argv, env []string) error {
	cmd := exec.Command(path, argv[1:]...)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = env, os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	if cmd.ProcessState == nil {
		return err
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		return &childExit{code}
	}
	return nil
}
