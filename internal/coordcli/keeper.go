package coordcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/toolchainkit/coord/coord"
)

// keeperResultFD is the descriptor on which the keeper tells `coord hold`
// how it went (ExtraFiles[0]).
const keeperResultFD = 3

// runKeeper is `coord __hold-keeper ID ...`: it takes the lock for the
// hold ID, says how that went on fd 3 and, if it got the lock, holds it
// until it is told to let go (SIGTERM, SIGINT, SIGHUP: coord release), its
// TTL passes without a renewal, the process it follows exits or the lock
// is lost. Then it writes the tombstone and exits.
func runKeeper(c *cli.Context, id string, timeout time.Duration) error {
	result := os.NewFile(keeperResultFD, "result")
	tell := func(r keeperResult) error {
		err := json.NewEncoder(result).Encode(r)
		if cerr := result.Close(); err == nil {
			err = cerr
		}
		return err
	}
	fail := func(err error) error {
		err = &actionError{err}
		tell(keeperResult{Code: exitCode(err), Error: message(err)})
		return err
	}
	if len(id) != 2*holdIDBytes || strings.Trim(id, "0123456789abcdef") != "" {
		return fail(usagef("keeper: bad hold id %q (internal)", id))
	}
	dir, err := holdsDir(false)
	if err != nil {
		return fail(err)
	}
	dir = filepath.Join(dir, id)
	alive, err := lockAlive(dir)
	if err != nil {
		return fail(err)
	}
	defer alive.Close()
	renew, err := openNoFollow(filepath.Join(dir, holdRenew), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fail(err)
	}
	renew.Close()

	name := c.Args().First()
	m, log, err := newManager(c, []string{"coord", "hold", name})
	if err != nil {
		return fail(err)
	}
	defer m.Close()
	opts := []coord.LockOption{coord.WithTimeout(timeout)}
	if c.Bool(flagShared) {
		opts = append(opts, coord.Shared())
	}
	l, err := m.Lock(c.Context, name, opts...)
	if err != nil {
		return fail(err)
	}
	defer l.Unlock()
	host, _ := os.Hostname()
	st := holdState{
		Name:    name,
		Backend: m.Backend(),
		Token:   l.Token(),
		Shared:  c.Bool(flagShared),
		PID:     os.Getpid(),
		TTL:     c.Duration(flagHoldTTL),
		Follow:  c.Int(flagFollow),
		Grace:   max(m.LostMargin()/2, 100*time.Millisecond),
		Since:   time.Now(),
		State:   stateHeld,
	}
	if err := writeHoldState(dir, st); err != nil {
		return fail(err)
	}
	h := holdHandle{uid: os.Getuid(), id: id, host: host}
	if err := tell(keeperResult{Handle: h.String(), Token: st.Token, PID: st.PID}); err != nil {
		// Nobody got the handle (coord hold was killed while it waited):
		// nobody could use the lock or release it.
		st.State, st.Reason = stateLost, fmt.Sprintf("coord hold, which started the keeper, was gone when the lock was granted (%v)", err)
	} else {
		st.State, st.Reason = keep(c.Context, dir, st, l.Lost())
	}
	if err := l.Unlock(); err != nil && st.State == stateReleased {
		st.Reason += fmt.Sprintf(" (unlock: %v)", err)
	}
	now := time.Now()
	st.Ended = &now
	log.Info("hold ended", zap.String("lock", name), zap.String("state", st.State), zap.String("reason", st.Reason))
	return writeHoldState(dir, st)
}

// keep holds on until ctx ends (a signal: coord release) or something
// makes the keeper let go; it returns the hold's end state and why.
func keep(ctx context.Context, dir string, st holdState, lost <-chan struct{}) (state, reason string) {
	// A tick a twentieth of the TTL, so that the keeper lets go within
	// 5% of it, and at least every second for --follow.
	t := time.NewTicker(min(max(st.TTL/20, 50*time.Millisecond), time.Second))
	defer t.Stop()
	renewPath := filepath.Join(dir, holdRenew)
	_, followed := processStat(st.Follow)
	gone := func(pid int) bool {
		state, start := processStat(pid)
		return !processAlive(pid) || state == "Z" || followed != "" && start != followed
	}
	for {
		select {
		case <-ctx.Done():
			if _, err := os.Lstat(filepath.Join(dir, holdReleased)); err == nil {
				return stateReleased, "released by coord release"
			}
			return stateReleased, "the keeper was stopped by a signal"
		case <-lost:
			if st.Backend == coord.BackendEtcd {
				return stateLost, "the lock was lost while held (its etcd lease ended or its key was deleted)"
			}
			return stateLost, "the lock was lost while held (its lock file or directory was removed)"
		case <-t.C:
			fi, err := os.Lstat(renewPath)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil || time.Since(fi.ModTime()) > st.TTL {
				return stateLost, fmt.Sprintf("ttl expired: no coord call with the handle for %s", st.TTL)
			}
			if st.Follow > 0 && gone(st.Follow) {
				return stateLost, fmt.Sprintf("pid %d, which it followed, exited", st.Follow)
			}
		}
	}
}
