package coordcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/filelock"
	"github.com/toolchainkit/coord/internal/exitcode"
)

// A pair test meets its peer through files in <lock dir>/.coord-doctor-ID:
// each process writes join-<host>-<pid>, and, round by round,
// held-<round>-<self>, probed-<round>-<self> (holding "busy" or "got") and
// released-<round>-<self>. In round 1 the process whose name sorts first
// holds the lock file "probe.lock" there and the other tries it without
// waiting; in round 2 they swap. The first removes the directory at the
// end.
const (
	pairDirPrefix = ".coord-doctor-"
	pairLock      = "probe"
	pairPoll      = 50 * time.Millisecond
	probeBusy     = "busy"
	probeGot      = "got"
)

// pairID is what --pair accepts: it names a directory.
var pairID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// errNoExclusion is a pair test's finding that file locks do not exclude.
var errNoExclusion = errors.New("file locks do not exclude")

func runPair(c *cli.Context) error {
	id := c.String(flagPair)
	if !pairID.MatchString(id) {
		return usagef("--%s %q: want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", flagPair, id)
	}
	timeout := c.Duration(flagTimeout)
	if timeout <= 0 {
		return usagef("--%s %s: must be positive", flagTimeout, timeout)
	}
	g, _, err := loadGlobals(c)
	if err != nil {
		return err
	}
	cfg, err := g.coordConfig()
	if err != nil {
		return err
	}
	dir := cfg.LockDir
	if dir == "" {
		if dir, err = coord.DefaultLockDir(); err != nil {
			return err
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Context, timeout)
	defer cancel()
	p, err := newPair(dir, id)
	if err != nil {
		return err
	}
	peer, err := p.run(ctx)
	var ch check
	var ret error
	switch {
	case errors.Is(err, errNoExclusion):
		ch = check{Name: "lock-dir pair", Status: checkFail,
			Message: fmt.Sprintf("file locks in %s do NOT exclude between %s and %s: %s", dir, who(p.self), who(peer), strings.TrimPrefix(err.Error(), errNoExclusion.Error()+": ")),
			Fix:     "use the etcd backend (--" + flagBackend + " etcd) to coordinate these hosts, or a file system whose locks reach both (NFSv4 without local_lock)"}
		ret = &exitCodeError{exitcode.Failed, fmt.Errorf("doctor --%s %s: file locks do not exclude here: %s", flagPair, id, ch.Fix)}
	case errors.Is(err, context.DeadlineExceeded) && c.Context.Err() == nil:
		what := "no other process joined"
		if peer != "" {
			what = who(peer) + " stopped answering"
		}
		return &exitCodeError{exitcode.Timeout, fmt.Errorf("doctor --%s %s: %s within %s: run `coord doctor --%s %s` on the other host at the same time, with the same lock directory",
			flagPair, id, what, timeout, flagPair, id)}
	case err != nil:
		return fmt.Errorf("doctor --%s %s: %w", flagPair, id, err)
	default:
		ch = check{Name: "lock-dir pair", Status: checkPass,
			Message: fmt.Sprintf("file locks in %s exclude between %s and %s, both ways", dir, who(p.self), who(peer))}
	}
	if c.Bool(flagJSON) {
		out := doctorOut{Checks: []check{ch}}
		if ch.Status == checkFail {
			out.Failed = 1
		}
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.App.Writer, "%s%s\n", doctorPrefix, Printable(ch.Message))
	}
	return ret
}

// pair is one side of a pair test.
type pair struct {
	dir  string // the rendezvous directory
	self string // host-pid
}

func newPair(lockDir, id string) (*pair, error) {
	host, err := os.Hostname()
	if err != nil {
		return nil, err
	}
	host = strings.Map(func(r rune) rune {
		if r < 0x80 && (r == '.' || r == '-' || r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return r
		}
		return '_'
	}, host)
	return &pair{dir: filepath.Join(lockDir, pairDirPrefix+id), self: host + "-" + strconv.Itoa(os.Getpid())}, nil
}

// run meets the peer and runs both rounds; it returns the peer's name.
// errNoExclusion says that one side took the lock while the other held
// it.
func (p *pair) run(ctx context.Context) (peer string, err error) {
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return "", err
	}
	if err := p.write("join-"+p.self, p.self); err != nil {
		return "", err
	}
	// Whoever reads the peer's last file removes the directory: the
	// prober of round 2 when the locks exclude, the holder of the round
	// whose probe took the lock when they do not. The other leaves it.
	last := false
	defer func() {
		switch {
		case last:
			os.RemoveAll(p.dir)
		case err != nil && !errors.Is(err, errNoExclusion):
			p.removeOwn()
		}
	}()
	if peer, err = p.awaitPeer(ctx); err != nil {
		return "", err
	}
	first := p.self < peer
	l, err := filelock.New(p.dir)
	if err != nil {
		return peer, err
	}
	defer l.Close()
	for round := 1; round <= 2; round++ {
		if first == (round == 1) {
			got, err := p.hold(ctx, l, round, peer)
			if err != nil {
				return peer, err
			}
			if got {
				last = true
				return peer, fmt.Errorf("%w: %s took the lock while %s held it", errNoExclusion, who(peer), who(p.self))
			}
			continue
		}
		got, err := p.probe(ctx, l, round, peer)
		if err != nil {
			return peer, err
		}
		if got {
			return peer, fmt.Errorf("%w: %s took the lock while %s held it", errNoExclusion, who(p.self), who(peer))
		}
	}
	last = first
	return peer, nil
}

// who names a side of a pair test, host-pid, for people: "pid 42 on ci-7".
func who(side string) string {
	i := strings.LastIndexByte(side, '-')
	if i < 0 {
		return side
	}
	return "pid " + side[i+1:] + " on " + side[:i]
}

// awaitPeer waits for exactly one other process to join.
func (p *pair) awaitPeer(ctx context.Context) (string, error) {
	for {
		ents, err := os.ReadDir(p.dir)
		if err != nil {
			return "", err
		}
		var others []string
		for _, e := range ents {
			if name, ok := strings.CutPrefix(e.Name(), "join-"); ok && name != p.self {
				others = append(others, name)
			}
		}
		switch {
		case len(others) == 1:
			return others[0], nil
		case len(others) > 1:
			return "", fmt.Errorf("more than one other process joined (%s): use an ID of your own for each pair", strings.Join(others, ", "))
		}
		if err := sleep(ctx, pairPoll); err != nil {
			return "", err
		}
	}
}

// hold takes the lock, says so, waits for the peer's try and lets go. got
// reports that the peer's try succeeded.
func (p *pair) hold(ctx context.Context, l *filelock.Locker, round int, peer string) (got bool, err error) {
	k, err := l.Lock(ctx, pairLock, filelock.Exclusive, []byte(`{"cmd":["coord","doctor","--pair"]}`))
	if err != nil {
		return false, fmt.Errorf("lock %s: %w", filepath.Join(p.dir, pairLock+".lock"), err)
	}
	defer k.Unlock()
	if err := p.write(fmt.Sprintf("held-%d-%s", round, p.self), "held"); err != nil {
		return false, err
	}
	res, err := p.await(ctx, fmt.Sprintf("probed-%d-%s", round, peer))
	if err != nil {
		return false, err
	}
	if err := k.Unlock(); err != nil {
		return false, err
	}
	if err := p.write(fmt.Sprintf("released-%d-%s", round, p.self), "released"); err != nil {
		return false, err
	}
	return res == probeGot, nil
}

// probe waits until the peer holds the lock, tries it without waiting,
// says what it found, and waits for the peer to let go. Once it has, the
// lock must be free: else something other than the peer held it, and the
// refusal proved nothing.
func (p *pair) probe(ctx context.Context, l *filelock.Locker, round int, peer string) (got bool, err error) {
	if _, err := p.await(ctx, fmt.Sprintf("held-%d-%s", round, peer)); err != nil {
		return false, err
	}
	res := probeBusy
	k, err := l.TryLock(ctx, pairLock, filelock.Exclusive, nil)
	switch {
	case err == nil:
		res = probeGot
		if err := k.Unlock(); err != nil {
			return false, err
		}
	case !errors.Is(err, filelock.ErrBusy):
		return false, fmt.Errorf("try %s: %w", filepath.Join(p.dir, pairLock+".lock"), err)
	}
	if err := p.write(fmt.Sprintf("probed-%d-%s", round, p.self), res); err != nil {
		return false, err
	}
	if res == probeGot {
		return true, nil // the holder, who reads this last, cleans up
	}
	if _, err := p.await(ctx, fmt.Sprintf("released-%d-%s", round, peer)); err != nil {
		return false, err
	}
	k, err = l.TryLock(ctx, pairLock, filelock.Exclusive, nil)
	if err != nil {
		return false, fmt.Errorf("the probe lock is still busy after %s let go of it (another process holds %s?): %w",
			peer, filepath.Join(p.dir, pairLock+".lock"), err)
	}
	return false, k.Unlock()
}

// write creates the file name in the rendezvous directory whole: written
// beside it, then renamed, so that the peer never reads half of it.
func (p *pair) write(name, content string) error {
	tmp := filepath.Join(p.dir, ".tmp-"+p.self)
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(p.dir, name))
}

// await waits for the file name to appear and returns its content. It
// lists the directory rather than stat the name: on NFS a listing is
// revalidated, a name looked up in vain may be cached as missing.
func (p *pair) await(ctx context.Context, name string) (string, error) {
	for {
		ents, err := os.ReadDir(p.dir)
		if err != nil {
			return "", err
		}
		if slices.ContainsFunc(ents, func(e os.DirEntry) bool { return e.Name() == name }) {
			b, err := os.ReadFile(filepath.Join(p.dir, name))
			return string(b), err
		}
		if err := sleep(ctx, pairPoll); err != nil {
			return "", err
		}
	}
}

// removeOwn removes this side's files, and the directory if it is empty.
func (p *pair) removeOwn() {
	ents, _ := os.ReadDir(p.dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), "-"+p.self) {
			os.Remove(filepath.Join(p.dir, e.Name()))
		}
	}
	os.Remove(p.dir)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
