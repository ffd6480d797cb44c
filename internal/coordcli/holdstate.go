package coordcli

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/exitcode"
)

// A hold is a lock that a keeper process holds for a job across several of
// its steps (see hold.go). Its state lives in a per-user directory,
// ~/.toolchainkit/holds (mode 0700, owned by the user, not a symbolic
// link), one directory per hold, named by the hold's random ID:
//
//	alive       the keeper holds an exclusive flock on it while it runs:
//	            free means the keeper is gone, however it died
//	renew       its mtime is the last coord call with the handle
//	state.json  holdState: the lock, the keeper, and, once the keeper let
//	            go, why (the tombstone)
//	keeper.log  the keeper's stderr
//
// A hold's directory stays after the keeper ends, so that the handle says
// "released" or "lost: …" rather than "unknown"; coord hold removes those
// of ended holds after holdKeep.
const (
	holdsDirName  = "holds"
	holdAlive     = "alive"
	holdRenew     = "renew"
	holdStateFile = "state.json"
	holdLog       = "keeper.log"
	holdReleased  = "released" // coord release made it: the keeper was asked to let go
	holdKeep      = 24 * time.Hour

	handlePrefix = "hold-"
	holdIDBytes  = 16 // 128 bits from crypto/rand
	maxHandleLen = 300
	maxStateSize = 1 << 16
)

// States of a hold, in holdState.State.
const (
	stateHeld     = "held"
	stateReleased = "released"
	stateLost     = "lost"
)

// errNoHold is a handle that names no hold of this user on this host, or
// one that was released (exit 66).
var errNoHold = errors.New("no such hold")

// noHoldError says why a handle names no hold; it matches errNoHold.
type noHoldError struct{ msg string }

func (e *noHoldError) Error() string        { return e.msg }
func (e *noHoldError) Is(target error) bool { return target == errNoHold }

func noHold(format string, a ...any) error { return &noHoldError{fmt.Sprintf(format, a...)} }

// holdHandle names a hold: hold-UID-ID@HOST. The host and user are in it
// so that a handle used elsewhere is refused by name, not looked up.
type holdHandle struct {
	uid  int
	id   string // holdIDBytes*2 lower-case hex digits
	host string
}

func (h holdHandle) String() string {
	return fmt.Sprintf("%s%d-%s@%s", handlePrefix, h.uid, h.id, h.host)
}

// newHandle makes the handle of a new hold of this user on this host.
func newHandle() (holdHandle, error) {
	b := make([]byte, holdIDBytes)
	if _, err := rand.Read(b); err != nil {
		return holdHandle{}, fmt.Errorf("hold id: %w", err)
	}
	host, err := os.Hostname()
	if err != nil {
		return holdHandle{}, fmt.Errorf("host name: %w", err)
	}
	if !validHost(host) {
		return holdHandle{}, fmt.Errorf("host name %s cannot be part of a handle", Printable(host))
	}
	return holdHandle{uid: os.Getuid(), id: hex.EncodeToString(b), host: host}, nil
}

// parseHandle checks a handle that a user typed and that it is one of this
// user's on this host: anything else is a usage error (64), and no file
// is looked at.
func parseHandle(s string) (holdHandle, error) {
	const want = "want hold-UID-ID@HOST, as coord hold printed it"
	shown := s
	if len(shown) > 64 {
		shown = shown[:64] + "..."
	}
	bad := func(why string) error { return usagef("handle %q: %s; %s", shown, why, want) }
	switch {
	case s == "":
		return holdHandle{}, usagef("missing handle; %s", want)
	case len(s) > maxHandleLen:
		return holdHandle{}, bad(fmt.Sprintf("%d bytes, longer than %d", len(s), maxHandleLen))
	}
	left, host, ok := strings.Cut(s, "@")
	if !ok || !strings.HasPrefix(left, handlePrefix) {
		return holdHandle{}, bad("not a handle")
	}
	uidText, id, ok := strings.Cut(left[len(handlePrefix):], "-")
	uid, err := strconv.Atoi(uidText)
	switch {
	case !ok || err != nil || uid < 0 || len(uidText) > 10 || uidText != strconv.Itoa(uid):
		return holdHandle{}, bad("bad user id")
	case len(id) != 2*holdIDBytes || strings.Trim(id, "0123456789abcdef") != "":
		return holdHandle{}, bad("bad hold id")
	case !validHost(host):
		return holdHandle{}, bad("bad host name")
	}
	h := holdHandle{uid: uid, id: id, host: host}
	if self, _ := os.Hostname(); host != self {
		return h, usagef("handle %q was made on host %s, and this is %s: a hold is kept by a process on its own host and can be used there only", shown, Printable(host), Printable(self))
	}
	if uid != os.Getuid() {
		return h, usagef("handle %q belongs to user id %d, and you are %d: a hold can be used by its own user only", shown, uid, os.Getuid())
	}
	return h, nil
}

// validHost: a host name that can go into a handle, a shell word in quotes
// and a line of $GITHUB_ENV.
func validHost(h string) bool {
	if h == "" || len(h) > 255 || !utf8.ValidString(h) {
		return false
	}
	return strings.IndexFunc(h, func(r rune) bool {
		return !strconv.IsPrint(r) || r == ' ' || r == '@' || r == '/' || r == '\\' || r == '\'' || r == '"'
	}) < 0
}

// holdState is state.json.
type holdState struct {
	Name    string        `json:"name"`
	Backend string        `json:"backend"`
	Token   int64         `json:"token"`
	Shared  bool          `json:"shared,omitempty"`
	PID     int           `json:"pid"` // the keeper's
	TTL     time.Duration `json:"ttl"`
	Follow  int           `json:"follow,omitempty"`
	Grace   time.Duration `json:"grace"` // a command's time to stop once the lock is lost (see child)
	Since   time.Time     `json:"since"`
	State   string        `json:"state"`
	Reason  string        `json:"reason,omitempty"`
	Ended   *time.Time    `json:"ended,omitempty"`
}

// holdsDir returns the user's holds directory, made if create, after
// checking that it is the user's own: a directory, not a symbolic link,
// owned by the user, that no one else may enter. A missing one is
// errNoHold.
func holdsDir(create bool) (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("holds directory: %w", err)
	}
	dir := filepath.Join(home, ".toolchainkit", holdsDirName)
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("holds directory: %w", err)
		}
	}
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", noHold("%s does not exist", dir)
	}
	if err != nil {
		return "", fmt.Errorf("holds directory: %w", err)
	}
	if err := ownDir(dir, fi); err != nil {
		return "", err
	}
	return dir, nil
}

// ownDir refuses a directory that is a symbolic link, is not one, or that
// someone else owns or may enter.
func ownDir(dir string, fi fs.FileInfo) error {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s is a symbolic link: refused (holds are kept in a directory of the user's own)", dir)
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory: refused", dir)
	}
	return checkOwner(dir, fi)
}

// holdDir is one hold's directory in the user's holds directory.
func holdDir(h holdHandle) (string, error) {
	dir, err := holdsDir(false)
	if errors.Is(err, errNoHold) {
		return "", noHold("no hold %s on this host (or it ended more than %s ago)", h, holdKeep)
	}
	if err != nil {
		return "", err
	}
	d := filepath.Join(dir, h.id)
	fi, err := os.Lstat(d)
	if errors.Is(err, fs.ErrNotExist) {
		return "", noHold("no hold %s on this host (or it ended more than %s ago)", h, holdKeep)
	}
	if err != nil {
		return "", fmt.Errorf("hold %s: %w", h.id, err)
	}
	if err := ownDir(d, fi); err != nil {
		return "", err
	}
	return d, nil
}

func readHoldState(dir string) (holdState, error) {
	var st holdState
	f, err := openNoFollow(filepath.Join(dir, holdStateFile), os.O_RDONLY, 0)
	if err != nil {
		return st, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateSize))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", holdStateFile, err)
	}
	return st, nil
}

// writeHoldState replaces state.json in one rename.
func writeHoldState(dir string, st holdState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, holdStateFile+".tmp")
	f, err := openNoFollow(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, holdStateFile))
}

// hold is a hold found by its handle.
type hold struct {
	handle holdHandle
	dir    string
	st     holdState
}

// findHold looks up the hold h names and reports its state: a keeper that
// is gone without a tombstone (killed) makes it lost.
func findHold(text string) (*hold, error) {
	h, err := parseHandle(text)
	if err != nil {
		return nil, err
	}
	dir, err := holdDir(h)
	if err != nil {
		return nil, err
	}
	alive := keeperAlive(dir)
	st, err := readHoldState(dir)
	if err != nil {
		if alive {
			return nil, noHold("hold %s is still being taken", h)
		}
		return nil, noHold("hold %s was never granted (%v)", h, err)
	}
	if st.State == stateHeld && !alive {
		st.State, st.Reason = stateLost, fmt.Sprintf("its keeper, pid %d, died", st.PID)
	}
	return &hold{handle: h, dir: dir, st: st}, nil
}

// renew counts a coord call with the handle: the keeper lets go after its
// TTL without one.
func (h *hold) renew() error {
	now := time.Now()
	return os.Chtimes(filepath.Join(h.dir, holdRenew), now, now)
}

// describe is the lock a hold is about, for messages.
func (h *hold) describe() string {
	mode := ""
	if h.st.Shared {
		mode = "shared, "
	}
	return fmt.Sprintf("lock %q (%s%s, token %d)", h.st.Name, mode, h.st.Backend, h.st.Token)
}

// usable returns nil if the hold is held, else why not: lost wraps
// coord.ErrLockLost (74), released errNoHold (66).
func (h *hold) usable() error {
	switch h.st.State {
	case stateHeld:
		return nil
	case stateLost:
		return fmt.Errorf("hold of %s: %w: %s", h.describe(), coord.ErrLockLost, h.st.Reason)
	}
	return noHold("hold of %s was released (%s)", h.describe(), h.st.Reason)
}

// holdError gives a hold's errors their exit status (see usable).
func holdError(err error) error {
	if errors.Is(err, errNoHold) {
		return &exitCodeError{exitcode.NoHold, err}
	}
	return err
}

// removeEndedHolds removes the directories of holds whose keeper is gone
// and that were last touched more than holdKeep ago.
func removeEndedHolds(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if len(e.Name()) != 2*holdIDBytes || strings.Trim(e.Name(), "0123456789abcdef") != "" {
			continue // not a hold's: not ours to remove
		}
		d := filepath.Join(dir, e.Name())
		fi, err := os.Lstat(d)
		if err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < holdKeep || keeperAlive(d) {
			continue
		}
		if st, err := os.Lstat(filepath.Join(d, holdStateFile)); err == nil && time.Since(st.ModTime()) < holdKeep {
			continue
		}
		os.RemoveAll(d)
	}
}
