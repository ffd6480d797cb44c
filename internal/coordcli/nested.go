package coordcli

import (
	"context"
	"os"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/toolchainkit/coord/coord"
)

// refuseNested refuses, at once, a lock that the coord running this
// process already holds: coord sets COORD_LOCK_NAME and COORD_PID for its
// command, so `coord lock a -- coord lock a -- CMD` would otherwise wait
// for itself until its timeout. The backend must confirm that pid holds
// it, so a stale environment (a daemon started under coord) changes
// nothing. Shared under shared is refused too: on etcd an exclusive
// waiter queued between the two would wait for the outer lock, and the
// inner one for it. Only the innermost lock of a chain is in the
// environment.
func refuseNested(c *cli.Context, m *coord.Manager, name string) error {
	pid, err := strconv.Atoi(os.Getenv(envPID))
	if os.Getenv(envLockName) != name || err != nil || pid <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.Context, 2*time.Second)
	defer cancel()
	s, err := m.Inspect(ctx, name)
	if err != nil || !heldBy(s, pid) {
		return nil
	}
	return usagef("lock %q is held by coord pid %d, which runs this command: a nested coord on the same lock would wait for itself (refused, also in shared mode); use another name or run the command directly", name, pid)
}

// heldBy reports whether pid on this host holds the lock s is about.
func heldBy(s coord.Status, pid int) bool {
	host, _ := os.Hostname()
	if h := s.Holder; h != nil && h.PID == pid && h.Host == host {
		return true
	}
	for _, p := range s.Holders {
		if p.PID == pid && (p.Host == host || p.Host == "") {
			return true
		}
	}
	return false
}
